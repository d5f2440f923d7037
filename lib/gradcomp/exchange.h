// GradientExchange: the trainer-facing step that turns every worker's local gradients into the averaged,
// compressed-and-decoded gradient to apply, and counts what crossed the (real or simulated) network.
//
// Usage (trainer):
//   GradientExchange ex(opts, shapes, /*local_workers=*/W, /*comm=*/nullptr);   // in-process W workers
//   GradientExchange ex(opts, shapes, 1, &mpi_comm);                             // one worker per MPI rank
//   if (ex.handles_momentum()) the optimizer applies momentum to weight decay only, and
//   ex.set_momentum(optimizer's momentum, nesterov);
//   each step: ex.exchange(grads, step, epoch);   // grads[w][p]: worker w's gradient of parameter p
//   each epoch: auto s = ex.take_stats();         // s.period (since last call), s.total
//
// Determinism: workers are numbered globally (rank * local_workers + w); every sum over workers runs in
// that order ((g0 + g1) + g2) + ..., so W in-process workers and W MPI ranks (one worker each) give
// bit-identical results. Compressor randomness is seeded from (seed, parameter index, global worker).
//
// Which tensors stay dense (fp32, allreduce) is a rule in the options, reported by describe():
//   numel < dense_below, or 1-D when dense_1d (biases, BatchNorm), or 1-D for powersgd always.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/cost_model.h"
#include "gradcomp/compressor.h"

namespace frugal::gradcomp {

struct ExchangeOptions {
  std::string compressor = "none";     ///< spec, see compressor.h
  size_t dense_below = 1024;           ///< tensors with fewer elements stay dense fp32
  bool dense_1d = true;                ///< 1-D tensors (biases, BatchNorm) stay dense fp32
  bool error_feedback_default = true;  ///< EF for topk/threshold/adaptive unless the spec says +noef
  uint64_t seed = 0;
  int warmup_epochs = 0;             ///< DGC density warm-up epochs (spec :warmup=E overrides)
  int64_t powersgd_dense_steps = 0;  ///< powersgd: plain dense allreduce for steps < this (or spec :warmup=N)
  std::string comm_pattern = "auto";  ///< cost model: auto (ring allreduce for summable payloads, allgather for
                                      ///< the rest) | allreduce | allgather | ps (everything by that pattern)
  float momentum = 0.9f;             ///< DGC momentum correction (set_momentum overrides)
  bool nesterov = false;             ///< DGC momentum correction with Nesterov momentum
  int64_t sample_every = 0;          ///< every N steps also compute the dense mean and the error (0: never)
  bool parallel = true;              ///< encode (workers x tensors) in parallel with TBB
};

/// Counters over a period of steps. Bytes are per worker (mean over this process's workers), summed
/// over steps. bytes_sent is what a worker hands to the collectives: the summable bodies of allreduce messages
/// (their identical headers stay local), PowerSGD's P and Q, and the length-framed bundle of allgather
/// messages. Under MPI, bytes_handed_to_comm is the communicator's own count of the same and must equal it.
struct ExchangeCounters {
  int64_t steps = 0;
  double bytes_sent = 0;                          ///< allreduce + allgather parts
  double bytes_allreduce = 0;                     ///< part exchanged with allreduce (dense, fp16/bf16, randk, powersgd)
  double bytes_allgather = 0;                     ///< part exchanged with allgatherv (sparse, sign, quantized)
  double bytes_encoded = 0;                       ///< the compressors' whole messages, headers included
  double bytes_handed_to_comm = 0;                ///< MPI: payload bytes the communicator handed to MPI
  bool over_comm = false;                         ///< a communicator (MPI) carried the exchange
  std::optional<comm::Pattern> pattern;           ///< cost model override (comm_pattern); none: auto
  double bytes_dense_fp32 = 0;                    ///< what dense fp32 would have sent (4 * numel per step)
  double encode_s = 0, decode_s = 0, comm_s = 0;  ///< wall time in this process
  int64_t error_samples = 0;
  double rel_l2_err_sum = 0, cosine_sum = 0;
  int world = 1;

  double ratio_fp32() const { return bytes_sent > 0 ? bytes_dense_fp32 / bytes_sent : 0; }
  double ratio_fp16() const { return bytes_sent > 0 ? 0.5 * bytes_dense_fp32 / bytes_sent : 0; }
  double rel_l2_err() const { return error_samples ? rel_l2_err_sum / double(error_samples) : 0; }
  double cosine() const { return error_samples ? cosine_sum / double(error_samples) : 0; }
  /// Simulated communication seconds for these steps: ring allreduce of the allreduce part plus
  /// allgather of the allgather part, per step, summed; with a pattern override, all bytes by that pattern.
  double simulated_comm_s(const comm::Network& net) const;
  nlohmann::json to_json() const;  // includes simulated seconds at 1 and 10 Gbit/s (50 us latency)
};

struct ExchangeStats {
  ExchangeCounters period;  ///< since the previous take_stats()
  ExchangeCounters total;   ///< since construction
};

class GradientExchange {
 public:
  /// param_shapes: one per parameter tensor, e.g. (OC, IC, KH, KW), (OUT, IN), (C).
  /// local_workers: W for in-process, 1 per rank under MPI. comm: nullptr for in-process; otherwise the
  /// constructor checks that every rank has the same config (throws on all ranks if not).
  GradientExchange(const ExchangeOptions& opts, const std::vector<std::vector<int64_t>>& param_shapes,
                   int local_workers, comm::Communicator* comm);
  ~GradientExchange();

  /// grads[w][p]: (numel of p) floats of local worker w. On return every grads[w][p] holds the averaged
  /// decoded gradient (for dgc: the momentum-corrected update; the optimizer then applies momentum to weight
  /// decay only, OptimizerOptions::momentum_decay_only).
  /// Throws frugal::Error on wrong sizes or a non-finite gradient (naming worker and parameter).
  void exchange(std::vector<std::vector<float*>>& grads, int64_t step, int epoch);

  bool handles_momentum() const { return handles_momentum_; }
  void set_momentum(float m, bool nesterov) {
    momentum_ = m;
    nesterov_ = nesterov;
  }
  ExchangeStats take_stats();
  /// {"compressor", "dense_rule", "tensors": [{index, shape, numel, codec, collective, dense_reason}], ...}
  nlohmann::json describe() const;
  int world() const { return world_; }
  /// Checkpoint state of this process's workers: every compressor's residual / momentum / warm start /
  /// random state, the dense-tensor velocity of dgc runs, and the byte counters. load_state throws
  /// frugal::Error when the bytes do not fit this exchange (other model, compressor or worker count).
  std::vector<uint8_t> save_state() const;
  void load_state(const std::vector<uint8_t>& bytes);
  /// Compressor of local worker w for parameter p (tests, diagnostics).
  const Compressor& compressor(int w, size_t p) const;

 private:
  struct Slot;
  struct Step;
  enum class Mode { allreduce, allgather, rounds };  // rounds: multi-round summable protocol (powersgd)
  // the steps of exchange(), in order
  void check_gradients(const std::vector<std::vector<float*>>& grads, int64_t step) const;
  void encode_all(Step& st);
  void dense_reference(Step& st);
  void count_bytes(Step& st) const;
  void reduce_summable(Step& st);
  void allreduce_bodies(std::vector<Message>& sum, const std::vector<SummableBody>& body, Step& st);
  void gather_and_aggregate(Step& st);
  void run_rounds(Step& st);
  void apply_dense_momentum(Step& st);
  void record_stats(const Step& st, double handed);
  Mode mode_of(const Slot& s, const Step& st) const;

  ExchangeOptions opts_;
  int local_, world_, rank_;
  comm::Communicator* comm_;
  bool handles_momentum_ = false;
  std::optional<comm::Pattern> pattern_;
  int64_t powersgd_dense_steps_ = 0;
  float momentum_;
  bool nesterov_;
  std::vector<std::unique_ptr<Slot>> slots_;
  ExchangeCounters period_, total_;
};

}  // namespace frugal::gradcomp
