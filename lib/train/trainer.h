// The training loop: W data-parallel workers (in-process or one per MPI rank) whose gradients cross a
// compressed exchange, an optimizer and schedule, per-epoch evaluation, atomic checkpoints, results.json.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "io/config.h"
#include "nn/layer.h"

namespace frugal::comm {
class Communicator;
}

namespace frugal::train {

struct TrainOptions {
  std::string out_dir = "runs/last";   // model.bin, checkpoint.bin, train.log, results.json
  std::string resume_dir;              // continue from resume_dir/checkpoint.bin (out_dir := resume_dir)
  int stop_after_epoch = -1;           // end (as if interrupted) after this many epochs; for resume tests
  comm::Communicator* comm = nullptr;  // MPI: one worker per rank; nullptr: in-process workers
  bool quiet = false;                  // no progress lines on stderr
  /// Where progress lines go (rank 0 only), besides out_dir/train.log: by default stderr unless quiet. A sweep
  /// running many trainers sets its own sink (or quiet) and shows its own progress.
  std::function<void(const std::string& line)> progress;
  /// If set, called after every optimizer update with the trained model's parameters, before the other workers'
  /// replicas take them: a constraint such as a pruning mask or shared weights (compress's fine-tuning) edits the
  /// values in place. Also applied once before the first step.
  std::function<void(const std::vector<nn::Param*>& params)> after_update;
  std::function<void(int64_t step)> before_step;  // if set, called before every training step (0-based,
                                                  // counted across epochs); the app's fault-injection test hook
};

/// Runs training per cfg; returns the results JSON (also written to out_dir/results.json by rank 0).
/// Throws frugal::Error on bad config/data and on divergence (NaN/Inf loss), keeping the last good checkpoint.
nlohmann::json run_training(const io::Config& cfg, const TrainOptions& opts);

}  // namespace frugal::train
