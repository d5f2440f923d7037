// The training loop as steps: W data-parallel workers (in-process or one per MPI rank) whose gradients cross a
// compressed exchange, an optimizer and schedule, per-epoch evaluation, atomic checkpoints, results.json.
//
// run_training() composes the steps; a caller (compress's fine-tuning, a sweep's trials) can use them alone:
//
//   TrainSpec spec = parse_train_spec(cfg);          // train_options.h: every key checked, no data read yet
//   Trainer t(spec, opts);                           // loads data, builds models (+ approximate layers), exchange
//   if (resuming) t.restore(io::load_tensor_file(ck), ck);   // ck = dir + "/checkpoint.bin"
//   while (!t.done()) { t.run_epoch(); t.save_checkpoint(); }
//   t.finish();                                      // SWA averaging when configured
//   nlohmann::json r = t.results();  t.write_outputs(r);
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <tbb/task_arena.h>

#include "data/dataset.h"
#include "data/loader.h"
#include "io/config.h"
#include "io/tensor_file.h"
#include "nn/layer.h"
#include "nn/model.h"
#include "optim/optimizer.h"
#include "train/evaluate.h"
#include "train/train_options.h"

namespace frugal::comm {
class Communicator;
}
namespace frugal::gradcomp {
class GradientExchange;
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

/// The data of a run: the training set (minus the held-out validation split), the validation and test sets,
/// inputs passed through JPEG when asked, and provenance for results.json.
struct TrainingData {
  data::DataSplit split;   ///< split.train: what the loader draws from (validation images removed)
  data::Dataset val;       ///< held out of the training set; empty when val_split is 0
  data::Normalization norm;
  nlohmann::json val_split;    ///< results.json data.val_split
  nlohmann::json input_jpeg;   ///< results.json data.input_jpeg (null when off)
  double load_s = 0;
};

/// Reads the dataset, holds out the validation split (drawn stratified with data::kValSplitSeed) and applies the
/// JPEG input round trip.
TrainingData load_training_data(const DataOptions& d, const std::string& schedule_kind);
/// The number of training images config key val_split holds out: `asked` when >= 0; -1 (auto): 5000 when the
/// schedule is plateau (it watches the validation loss) on mnist, fashion-mnist, cifar10 or cifar100, else 0.
int64_t resolve_val_split(int64_t asked, bool plateau, const std::string& dataset_name);

/// The model's JSON spec: a preset (with width, depth) or a spec file, for inputs shaped like `ds`.
nlohmann::json model_spec_for(const ModelOptions& m, const data::Dataset& ds);

/// The checkpoint's stored config with the keys of `cfg` that differ from the defaults laid over it (e.g. more
/// epochs): what a resumed run trains with. Loads the checkpoint into `state`.
io::Config resume_config(const io::Config& cfg, const std::string& resume_dir, io::TensorFile& state);

class Trainer {
 public:
  /// Loads the data and builds one model per in-process worker (approximate layers attached and calibrated),
  /// the optimizer, schedule and gradient exchange. Under MPI every rank must call it with the same spec.
  Trainer(TrainSpec spec, TrainOptions opts);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Continues from a checkpoint of this experiment (weights, optimizer, schedule, compressor and SWA state).
  void restore(const io::TensorFile& checkpoint, const std::string& path);
  /// True when every epoch (or max_steps) has run.
  bool done() const;
  /// Trains one epoch, then evaluates on the test (and validation) set; returns the epoch's record, also kept for
  /// results(). Throws on divergence (NaN/Inf loss), leaving the last checkpoint as it was.
  nlohmann::json run_epoch();
  /// Writes out_dir/checkpoint.bin atomically (every MPI rank takes part; rank 0 writes).
  void save_checkpoint();
  /// After the last epoch: the SWA average with re-estimated batch-norm statistics, when swa_epochs > 0.
  void finish();
  /// Metrics of the trained model (worker 0's).
  EvalMetrics evaluate_test();
  EvalMetrics evaluate_val();  ///< requires a validation split
  /// results.json's content; `completed` false for a run stopped early (stop_after_epoch).
  nlohmann::json results(bool completed = true);
  /// Rank 0: out_dir/model.bin and out_dir/results.json (each written atomically).
  void write_outputs(const nlohmann::json& results);
  /// One line naming the run: model, data sizes, parameters, workers, compressor, multiplier.
  std::string describe();
  /// A progress line: to out_dir/train.log and the progress sink (rank 0 only).
  void log(const std::string& line);

  nn::Model& model() { return *models_[0]; }
  const TrainingData& data() const { return data_; }
  int epochs_done() const { return epoch_; }
  int64_t steps_done() const { return step_; }

 private:
  struct WorkerState;
  class Log;
  void attach_teacher(WorkerState& w) const;
  void build_models();
  void build_exchange();
  void sync_replicas(bool with_buffers);
  void apply_constraint();
  void check_weights_finite(int epoch);  // throws the divergence error on NaN/Inf weights
  void run_worker(int lw);
  void run_workers();  // every local worker's forward and backward, concurrently
  struct StepResult {
    double loss = 0;          // mean over workers
    int64_t correct = 0;      // over this process's workers
    double compute_s = 0;     // this process's wall time of the step
    double worker_compute_s = 0;  // the slowest worker plus the exchange and update
  };
  StepResult train_step(int epoch);  // one global batch: workers, exchange, update
  void average_swa();
  nlohmann::json communication_results();
  nlohmann::json parallelism_results();

  TrainSpec spec_;
  TrainOptions opts_;
  int rank_ = 0, world_ranks_ = 1;
  bool writer_ = true;
  std::unique_ptr<Log> log_;
  TrainingData data_;
  nlohmann::json model_spec_;
  Dims chw_;
  int local_workers_ = 1, threads_ = 1, concurrent_workers_ = 1, shard_b_ = 0;
  std::vector<std::unique_ptr<nn::Model>> models_;
  std::vector<nn::Param*> params_;
  std::vector<std::vector<nn::Param*>> model_params_;
  std::vector<nn::Buffer> buffers_;
  nlohmann::json approx_info_;
  std::unique_ptr<data::Loader> loader_;
  int64_t steps_per_epoch_ = 0, total_steps_ = 0;
  std::unique_ptr<gradcomp::GradientExchange> exchange_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::unique_ptr<optim::Schedule> schedule_;
  std::unique_ptr<tbb::task_arena> worker_arena_;
  std::vector<std::unique_ptr<WorkerState>> workers_;
  std::vector<std::vector<Tensor>> worker_grads_;      // [worker][param], only with an exchange
  std::vector<std::vector<float*>> worker_grad_ptrs_;
  data::Batch batch_;
  // progress
  int epoch_ = 0;        // epochs done
  int64_t step_ = 0;     // optimizer steps done
  bool ran_dry_ = false; // an epoch yielded no step (max_steps reached)
  double last_loss_ = -1;  // the previous step's loss (for the error message of a failing step)
  nlohmann::json epochs_log_ = nlohmann::json::array();
  double train_compute_s_ = 0, worker_compute_s_ = 0;
  std::vector<double> step_ms_;  // per-step compute time (the first 5, with primitive creation, are not timed)
  std::vector<Tensor> swa_avg_;  // running mean of the end-of-epoch weights of the last swa_epochs epochs
  int swa_n_ = 0;
  nlohmann::json swa_info_;
  double t_start_ = 0;
};

/// Runs training per cfg; returns the results JSON (also written to out_dir/results.json by rank 0).
/// Throws frugal::Error on bad config/data and on divergence (NaN/Inf loss), keeping the last good checkpoint.
nlohmann::json run_training(const io::Config& cfg, const TrainOptions& opts);

}  // namespace frugal::train
