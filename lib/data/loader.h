// Mini-batch loader over an in-RAM Dataset: shuffles, augments and normalizes into NHWC float
// batches, preparing the next batch on a background thread while the caller computes.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/transforms.h"

namespace frugal::data {

struct LoaderOptions {
  int batch = 128;
  bool shuffle = true;
  bool drop_last = true;   // drop the last partial batch of an epoch
  Augment augment;         // default: none (use {4, true} for CIFAR training)
  Normalization norm;      // empty: default_normalization(ds.name)
  uint64_t seed = 0;
  bool prefetch = true;    // false: every batch is built inside next(); results are identical
  int num_shards = 1;      // data-parallel workers: shard k takes positions k, k+S, k+2S ... of
  int shard = 0;           //   the epoch's permutation (the same for all shards)
};

struct Batch {
  int n = 0;
  std::vector<float> x;    // (n, H, W, C) normalized float, NHWC
  std::vector<int32_t> y;  // (n)
};

/// Determinism contract: the epoch's permutation depends only on (seed, epoch); the augmentation of
/// an example depends only on (seed, epoch, its position in the epoch). So a run resumed at
/// start_epoch(e) sees exactly the batches it would have seen, with or without prefetching, for any
/// number of TBB threads. Shuffling uses its own Fisher-Yates (std::shuffle is library-specific).
class Loader {
 public:
  /// Keeps a reference to ds: ds must outlive the loader and not change while it is in use.
  Loader(const Dataset& ds, LoaderOptions opt);
  ~Loader();  // joins the prefetch thread
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Begins epoch `epoch` (any order, any number of times); discards the rest of the current one.
  void start_epoch(int epoch);
  /// Fills out with the next batch; false at the end of the epoch. Requires start_epoch() first.
  bool next(Batch& out);
  size_t batches_per_epoch() const;
  size_t batch_index() const;      // batches handed out so far this epoch
  size_t examples_per_epoch() const;  // this shard's examples per epoch (after drop_last)
  const LoaderOptions& options() const { return opt_; }

 private:
  void build(size_t batch, Batch& out) const;  // pure function of (opt_, epoch_, order_, batch)
  void worker_loop();
  void request(size_t batch);                  // asks the worker for `batch` (mutex held by caller)

  const Dataset& ds_;
  LoaderOptions opt_;
  size_t shard_size_ = 0;       // examples of this shard before drop_last
  int epoch_ = -1;
  std::vector<uint32_t> order_;  // (shard_size_) dataset indices in this epoch's order
  size_t next_batch_ = 0;

  // prefetch state, guarded by mu_
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread worker_;
  bool stop_ = false;
  long requested_ = -1;  // batch index the worker should build, -1: none
  long ready_index_ = -1;  // batch index held in ready_, -1: none
  bool busy_ = false;      // worker is building
  Batch ready_;
  std::exception_ptr error_;
};

}  // namespace frugal::data
