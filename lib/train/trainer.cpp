#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>

#include "comm/communicator.h"
#include "comm/cost_model.h"
#include "data/jpeg.h"
#include "data/split.h"
#include "gradcomp/exchange.h"
#include "io/environment.h"
#include "io/files.h"
#include "nn/model_io.h"
#include "train/approx_attach.h"
#include "util/check.h"
#include "util/random.h"
#include "util/threads.h"

namespace frugal::train {

using json = nlohmann::json;
using clk = std::chrono::steady_clock;

namespace {

double seconds_since(double t0) {
  return std::chrono::duration<double>(clk::now().time_since_epoch()).count() - t0;
}
double now_s() { return std::chrono::duration<double>(clk::now().time_since_epoch()).count(); }

std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

/// Resolves val_split (-1 = auto) and moves that many training images, drawn stratified with the fixed
/// data::kValSplitSeed, from train into val. Returns results.json's data.val_split.
json hold_out_validation(int64_t asked, bool plateau, data::Dataset& train, data::Dataset& val) {
  const int64_t n = resolve_val_split(asked, plateau, train.name);
  const std::string how = asked == -1 ? " (val_split = -1, auto)" : "";
  FRUGAL_CHECK(!plateau || n > 0, "schedule=plateau watches the validation loss, but config key 'val_split' is 0",
               how, " for dataset '", train.name, "'; set val_split=N to hold out N training images");
  FRUGAL_CHECK(n < static_cast<int64_t>(train.size()), "config key 'val_split' = ", n, how,
               " must be smaller than the training set of dataset '", train.name, "' (", train.size(),
               " images); set a smaller val_split");
  if (n == 0) return json{{"size", 0}};
  const size_t from = train.size();
  data::HoldoutSplit s = data::hold_out_validation(train, static_cast<size_t>(n));
  train = std::move(s.train);
  val = std::move(s.val);
  return json{{"size", n},
              {"seed", data::kValSplitSeed},
              {"stratified", true},
              {"from_train_size", from},
              {"indices_sha256", s.val_indices_sha256}};
}

/// Under MPI each rank counts its own bytes; results report the mean over ranks, like the in-process mean
/// over workers (exchanged as doubles, summed in rank order).
void average_over_ranks(gradcomp::ExchangeCounters& c, comm::Communicator* comm) {
  if (!comm || comm->world() == 1) return;
  double* fields[] = {&c.bytes_sent, &c.bytes_allreduce, &c.bytes_allgather, &c.bytes_dense_fp32, &c.bytes_encoded,
                      &c.bytes_handed_to_comm};
  constexpr size_t kFields = sizeof fields / sizeof fields[0];
  std::vector<uint8_t> bytes(8 * kFields);
  for (size_t i = 0; i < kFields; ++i) std::memcpy(bytes.data() + 8 * i, fields[i], 8);
  auto all = comm->allgatherv(bytes);
  double sum[kFields] = {};
  for (auto& b : all)
    for (size_t i = 0; i < kFields; ++i) {
      double v;
      std::memcpy(&v, b.data() + 8 * i, 8);
      sum[i] += v;
    }
  for (size_t i = 0; i < kFields; ++i) *fields[i] = sum[i] / static_cast<double>(all.size());
}

gradcomp::ExchangeStats take_stats(gradcomp::GradientExchange& ex, comm::Communicator* comm) {
  auto st = ex.take_stats();
  average_over_ranks(st.period, comm);
  average_over_ranks(st.total, comm);
  return st;
}

/// The first epoch whose test accuracy reaches `target` and the simulated time until its end: per-worker compute
/// plus modelled communication at the configured bandwidth (and at 1 and 10 Gbit/s). null when target <= 0.
json time_to_accuracy(const json& epochs, double target, double configured_gbps) {
  if (target <= 0) return nullptr;
  json out{{"target_accuracy", target}, {"reached", false}, {"epoch", nullptr}};
  double compute = 0, c1 = 0, c10 = 0, cc = 0;
  for (const auto& e : epochs) {
    compute += e.value("worker_compute_s", 0.0);
    if (e.contains("communication")) {
      const json& c = e.at("communication");
      c1 += c.value("simulated_comm_s_1gbit", 0.0);
      c10 += c.value("simulated_comm_s_10gbit", 0.0);
      cc += c.value("simulated_comm_s_configured", 0.0);
    }
    if (e.at("test_accuracy").get<double>() >= target) {
      out["reached"] = true;
      out["epoch"] = e.at("epoch");
      out["test_accuracy"] = e.at("test_accuracy");
      out["worker_compute_s"] = compute;
      out["total_s"] = {{"1Gbps", compute + c1}, {"10Gbps", compute + c10}, {fmt("%gGbps", configured_gbps), compute + cc}};
      break;
    }
  }
  return out;
}

/// Every rank must run the same experiment: names the keys that differ.
void check_same_config_on_all_ranks(const io::Config& cfg, comm::Communicator* comm) {
  if (!comm || comm->world() == 1) return;
  std::string mine = cfg.values().dump();
  auto all = comm->allgatherv(std::vector<uint8_t>(mine.begin(), mine.end()));
  json first = json::parse(std::string(all[0].begin(), all[0].end()));
  for (size_t r = 1; r < all.size(); ++r) {
    json other = json::parse(std::string(all[r].begin(), all[r].end()));
    std::string diff;
    for (auto& [k, v] : first.items())
      if (other[k] != v)
        diff += " " + k + " (rank 0: " + v.dump() + ", rank " + std::to_string(r) + ": " + other[k].dump() + ")";
    FRUGAL_CHECK(diff.empty(), "ranks were started with different configs:", diff,
                 ". Start every rank with the same config.");
  }
}

/// Compressor state as a float tensor (checkpoints hold tensors): bytes padded to whole floats.
Tensor bytes_as_tensor(const std::vector<uint8_t>& bytes) {
  Tensor t({static_cast<int64_t>((bytes.size() + 3) / 4)});
  std::memset(t.data(), 0, sizeof(float) * static_cast<size_t>(t.size()));
  std::memcpy(t.data(), bytes.data(), bytes.size());
  return t;
}

}  // namespace

// ------------------------------------------------------------------------------------------------ free steps

TrainingData load_training_data(const DataOptions& d, const std::string& schedule_kind) {
  const double t0 = now_s();
  TrainingData td;
  td.split = data::load_dataset(d.dataset, data::data_roots(d.data_dir));
  td.val_split = hold_out_validation(d.val_split, schedule_kind == "plateau", td.split.train, td.val);
  if (const int q = d.input_jpeg_quality; q != 0) {  // test images, and with input_jpeg_train the others too
    const data::JpegStats t = data::jpeg_roundtrip(td.split.test, q);
    td.input_jpeg = {{"quality", q}, {"test_bits_per_pixel", t.bits_per_pixel}, {"test_mean_abs_error", t.mean_abs_error}};
    if (d.input_jpeg_train) {
      const data::JpegStats tr = data::jpeg_roundtrip(td.split.train, q);
      td.input_jpeg["train_bits_per_pixel"] = tr.bits_per_pixel;
      if (td.val.size() > 0) data::jpeg_roundtrip(td.val, q);
    }
  }
  td.norm = data::default_normalization(td.split.train.name);
  td.load_s = seconds_since(t0);
  return td;
}

json model_spec_for(const ModelOptions& m, const data::Dataset& ds) {
  Dims chw{ds.channels, ds.height, ds.width};
  const std::string& name = m.model;
  if (name.size() > 5 && name.substr(name.size() - 5) == ".json") {
    json spec = io::read_json_file(name);
    spec["input"] = chw;
    spec["classes"] = ds.num_classes;
    return spec;
  }
  return nn::preset_spec(name, m.width, m.depth, chw, ds.num_classes);
}

io::Config resume_config(const io::Config& cfg, const std::string& resume_dir, io::TensorFile& state) {
  const std::string ck = resume_dir + "/checkpoint.bin";
  FRUGAL_CHECK(io::file_exists(ck), "--resume ", resume_dir, ": no checkpoint.bin there (nothing to resume)");
  state = io::load_tensor_file(ck);
  FRUGAL_CHECK(state.meta.value("kind", "") == "checkpoint", "'", ck, "' is not a checkpoint");
  io::Config stored;
  stored.merge(state.meta["config"], ck);
  // keys given on the command line (differing from defaults) override the stored ones, e.g. more epochs
  io::Config defaults;
  for (auto& [k, v] : cfg.values().items())
    if (v != defaults.values()[k]) stored.merge(json{{k, v}}, "--set");
  return stored;
}

// ------------------------------------------------------------------------------------------------ Trainer

/// Progress lines: appended to train.log and handed to the sink (TrainOptions::progress, or stderr unless quiet).
class Trainer::Log {
 public:
  Log(const std::string& path, const TrainOptions& o, bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
    f_.open(path, std::ios::app);
    if (o.progress)
      sink_ = o.progress;
    else if (!o.quiet)
      sink_ = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
  }
  void line(const std::string& s) {
    if (!enabled_) return;
    if (sink_) sink_(s);
    f_ << s << "\n";
    f_.flush();
  }

 private:
  bool enabled_;
  std::function<void(const std::string&)> sink_;
  std::ofstream f_;
};

struct Trainer::WorkerState {
  explicit WorkerState(float smoothing) : ce(smoothing) {}
  Tensor x, diff;
  std::vector<int32_t> y;
  nn::SoftmaxCrossEntropy ce;
  std::unique_ptr<nn::Model> teacher;       // distillation (distill_from): this worker's copy of the teacher
  std::unique_ptr<nn::DistillationLoss> kd;  // and the combined loss
  Tensor teacher_logits;
  double loss = 0, compute_s = 0;
  int64_t correct = 0;
  int threads_seen = 0;  // the OpenMP thread count in force on the thread that ran it
};

Trainer::Trainer(TrainSpec spec, TrainOptions opts) : spec_(std::move(spec)), opts_(std::move(opts)) {
  t_start_ = now_s();
  rank_ = opts_.comm ? opts_.comm->rank() : 0;
  world_ranks_ = opts_.comm ? opts_.comm->world() : 1;
  writer_ = rank_ == 0;
  if (writer_) io::make_dirs(opts_.out_dir);
  log_ = std::make_unique<Log>(opts_.out_dir + "/train.log", opts_, writer_);

  const LoopOptions& L = spec_.loop;
  FRUGAL_CHECK(!opts_.comm || L.workers == world_ranks_, "config 'workers' = ", L.workers, " but the MPI job has ",
               world_ranks_, " ranks; run mpirun -np ", L.workers, " or set workers=", world_ranks_);
  data_ = load_training_data(spec_.data, spec_.schedule.kind);
  const data::Dataset& train = data_.split.train;
  model_spec_ = model_spec_for(spec_.model, train);
  chw_ = {train.channels, train.height, train.width};

  // The threads each worker computes with (and this thread evaluates with): see util/threads.h.
  local_workers_ = opts_.comm ? 1 : L.workers;
  threads_ = L.threads > 0 ? L.threads : util::default_threads_per_worker(local_workers_, opts_.comm);
  util::set_compute_threads(threads_);
  shard_b_ = spec_.data.batch / L.workers;

  data::LoaderOptions lo;
  lo.batch = spec_.data.batch;
  lo.shuffle = true;
  lo.drop_last = true;
  lo.augment = spec_.data.augment;
  lo.norm = data_.norm;
  lo.seed = L.seed;
  loader_ = std::make_unique<data::Loader>(train, lo);
  steps_per_epoch_ = static_cast<int64_t>(loader_->batches_per_epoch());
  FRUGAL_CHECK(steps_per_epoch_ > 0, "dataset '", train.name, "' has ", train.size(),
               " training images, fewer than one batch of ", spec_.data.batch);
  total_steps_ = L.max_steps > 0 ? std::min<int64_t>(L.max_steps, steps_per_epoch_ * L.epochs)
                                 : steps_per_epoch_ * L.epochs;

  build_models();
  build_exchange();
  optimizer_ = std::make_unique<optim::Optimizer>(spec_.optimizer, params_);
  optim::ScheduleOptions so = spec_.schedule;
  so.swa_steps = L.swa_epochs * steps_per_epoch_;
  schedule_ = std::make_unique<optim::Schedule>(so, steps_per_epoch_, total_steps_);
  if (L.swa_epochs > 0)
    for (auto* p : params_) {
      swa_avg_.emplace_back(p->value.dims());
      swa_avg_.back().zero();  // the first average, 0 + (v - 0) / 1, is then exactly v
    }
  if (exchange_) {  // per-worker gradient buffers
    worker_grads_.resize(static_cast<size_t>(local_workers_));
    worker_grad_ptrs_.resize(worker_grads_.size());
    for (size_t w = 0; w < worker_grads_.size(); ++w)
      for (auto* p : params_) {
        worker_grads_[w].emplace_back(p->value.dims());
        worker_grad_ptrs_[w].push_back(worker_grads_[w].back().data());
      }
  }
  for (int lw = 0; lw < local_workers_; ++lw) {
    workers_.push_back(std::make_unique<WorkerState>(L.label_smoothing));
    if (!L.distill_from.empty()) attach_teacher(*workers_.back());
  }
  // Workers run concurrently, each with `threads` oneDNN threads, as many at once as the cores allow.
  concurrent_workers_ = std::max(1, std::min(local_workers_, util::available_cores() / threads_));
  worker_arena_ = std::make_unique<tbb::task_arena>(concurrent_workers_);
  apply_constraint();
  sync_replicas(true);
}

Trainer::~Trainer() = default;

// Distillation: the worker's own copy of the teacher (workers run concurrently), in inference mode.
void Trainer::attach_teacher(WorkerState& w) const {
  const LoopOptions& L = spec_.loop;
  nn::LoadedModel t = nn::load_model(L.distill_from);
  const nn::Model& student = *models_.front();
  FRUGAL_CHECK(t.model->classes() == student.classes() && t.model->input_chw() == student.input_chw(),
               "config key 'distill_from': the teacher '", L.distill_from, "' takes ", dims_str(t.model->input_chw()),
               " to ", t.model->classes(), " classes, but the trained model takes ", dims_str(student.input_chw()),
               " to ", student.classes(), "; distil from a model of the same dataset");
  w.teacher = std::move(t.model);
  w.kd = std::make_unique<nn::DistillationLoss>(L.distill_temperature, L.distill_weight, L.label_smoothing);
}

void Trainer::log(const std::string& line) { log_->line(line); }

std::string Trainer::describe() {
  const data::Dataset& train = data_.split.train;
  const size_t nval = data_.val.size();
  const int W = spec_.loop.workers;
  return "[train] " + spec_.model.model + " on " + train.name + " (" + std::to_string(train.size()) + " train / " +
         (nval > 0 ? std::to_string(nval) + " val / " : "") + std::to_string(data_.split.test.size()) + " test), " +
         std::to_string(model().num_params()) + " params, " + std::to_string(model().macs_per_image()) +
         " MACs/img, workers " + std::to_string(W) + (opts_.comm ? " (MPI ranks)" : " (in-process)") +
         ", compressor " + spec_.exchange.compressor +
         (approx_info_.is_null() ? "" : ", multiplier " + spec_.approx.multiplier);
}

// One model per in-process worker, built the same way (same init, approximate layers, calibration); worker 0's
// is the model that is optimized, evaluated and saved, the others are replicas that follow its weights.
void Trainer::build_models() {
  const bool from_init = !spec_.model.init.empty() && opts_.resume_dir.empty();
  for (int lw = 0; lw < local_workers_; ++lw) {
    auto m = std::make_unique<nn::Model>(model_spec_, spec_.loop.seed);
    if (from_init) {  // fine-tuning: weights and BN statistics from a model file
      io::TensorFile init = io::load_tensor_file(spec_.model.init);
      nn::load_model_tensors(*m, init, spec_.model.init);
    }
    json info = attach_approx(*m, spec_.approx);
    if (json cal = calibrate_approx(*m, spec_.approx, data_.split.train, data_.norm, spec_.data.eval_batch);
        !cal.is_null())
      info["calibration"] = cal;
    if (lw == 0) approx_info_ = info;
    models_.push_back(std::move(m));
    model_params_.push_back(models_.back()->params());
  }
  params_ = model_params_[0];
  buffers_ = models_[0]->buffers();
}

void Trainer::build_exchange() {
  if (!spec_.uses_exchange) return;
  std::vector<std::vector<int64_t>> shapes;
  for (auto* p : params_) shapes.push_back(p->value.dims());
  exchange_ = std::make_unique<gradcomp::GradientExchange>(spec_.exchange, shapes, local_workers_, opts_.comm);
  if (exchange_->handles_momentum()) {
    FRUGAL_CHECK(spec_.optimizer.kind == "sgd", "compressor '", spec_.exchange.compressor,
                 "' applies momentum correction itself; use optimizer=sgd");
    // DGC momentum correction: the gradient's momentum lives in the compressor (Lin et al. 2018, Sec. 3.2);
    // the optimizer keeps momentum for the weight-decay term only (the authors' DGCSGD).
    exchange_->set_momentum(spec_.optimizer.momentum, spec_.optimizer.nesterov);
    spec_.optimizer.momentum_decay_only = true;
  }
}

// Replicas of the model for in-process workers 1..W-1 take worker 0's weights (and statistics).
void Trainer::sync_replicas(bool with_buffers) {
  for (size_t r = 1; r < models_.size(); ++r) {
    for (size_t i = 0; i < params_.size(); ++i) {
      model_params_[r][i]->value.copy_from(params_[i]->value);
      ++model_params_[r][i]->version;
    }
    if (with_buffers) {
      auto rb = models_[r]->buffers();
      for (size_t i = 0; i < buffers_.size(); ++i) rb[i].value->copy_from(*buffers_[i].value);
    }
  }
}

// A caller's constraint on the weights (TrainOptions::after_update), from the start and after every update.
void Trainer::apply_constraint() {
  if (!opts_.after_update) return;
  opts_.after_update(params_);
  for (auto* p : params_) ++p->version;
}

void Trainer::restore(const io::TensorFile& ck, const std::string& path) {
  nn::load_model_tensors(model(), ck, path);
  for (auto& [name, t] : optimizer_->state()) {
    const Tensor* s = ck.find("optim." + name);
    FRUGAL_CHECK(s && s->dims() == t->dims(), "checkpoint lacks optimizer state '", name, "'");
    std::memcpy(t->data(), s->data(), sizeof(float) * static_cast<size_t>(t->size()));
  }
  const json& st = ck.meta["state"];
  epoch_ = st["epoch"].get<int>();
  step_ = st["step"].get<int64_t>();
  optimizer_->set_steps(st["optimizer_steps"].get<int64_t>());
  schedule_->restore(st["plateau_scale"].get<double>(), st["plateau_best"].get<double>(), st["plateau_bad"].get<int>());
  epochs_log_ = ck.meta["epochs"];
  const std::string val_sha = data_.val_split.value("indices_sha256", "");
  FRUGAL_CHECK(st.value("val_split_sha256", "") == val_sha, "checkpoint '", path,
               "' was trained with another validation split (val_split ", st.value("val_split", 0),
               " images) than this run's (", data_.val_split["size"], "); resume with the stored val_split");
  train_compute_s_ = st.value("train_compute_s", 0.0);
  worker_compute_s_ = st.value("worker_compute_s", 0.0);
  swa_n_ = st.value("swa_n", 0);
  FRUGAL_CHECK(swa_n_ == 0 || !swa_avg_.empty(), "checkpoint '", path,
               "' holds SWA averages but swa_epochs is 0; resume with the stored swa_epochs");
  for (size_t i = 0; i < swa_avg_.size() && swa_n_ > 0; ++i) {
    const Tensor* s = ck.find("swa." + params_[i]->name);
    FRUGAL_CHECK(s && s->dims() == swa_avg_[i].dims(), "checkpoint lacks SWA average '", params_[i]->name, "'");
    swa_avg_[i].copy_from(*s);
  }
  log_->line(fmt("[train] resuming %s at epoch %d (step %lld)", opts_.resume_dir.c_str(), epoch_, (long long)step_));
  if (exchange_) {
    // In-process runs store one state ("gradcomp.state", all W local workers); MPI runs one per rank
    // ("gradcomp.state.rank<r>"), gathered to rank 0 when the checkpoint is written.
    const bool per_rank = opts_.comm && world_ranks_ > 1;
    const std::string tname = per_rank ? "gradcomp.state.rank" + std::to_string(rank_) : "gradcomp.state";
    const Tensor* gs = ck.find(tname);
    const bool other_layout = ck.find(per_rank ? "gradcomp.state" : "gradcomp.state.rank0") != nullptr;
    FRUGAL_CHECK(!other_layout || gs, "checkpoint '", path, "' was written by ",
                 per_rank ? "an in-process run" : "an MPI run", ": resume it the same way (",
                 per_rank ? "without --dist mpi" : "mpirun ... --dist mpi", ")");
    if (gs) {
      const json& nb = st.value("gradcomp_state_bytes", json());
      FRUGAL_CHECK(per_rank ? nb.is_array() && nb.size() == size_t(world_ranks_) : nb.is_number_unsigned(),
                   "checkpoint '", path, "': state.gradcomp_state_bytes should be ",
                   per_rank ? "a list with one size per rank" : "a byte count", ", found ", nb.dump());
      const size_t nbytes = per_rank ? nb.at(static_cast<size_t>(rank_)).get<size_t>() : nb.get<size_t>();
      FRUGAL_CHECK(nbytes <= sizeof(float) * size_t(gs->size()), "checkpoint '", path,
                   "': gradcomp_state_bytes = ", nbytes, " exceeds its ", tname, " tensor");
      std::vector<uint8_t> bytes(nbytes);
      std::memcpy(bytes.data(), gs->data(), nbytes);
      exchange_->load_state(bytes);
    } else {
      FRUGAL_CHECK(spec_.exchange.compressor == "none" || epoch_ == 0, "checkpoint '", path,
                   "' has no compressor state (written by an older frugal); restart the run");
    }
  }
  apply_constraint();
  sync_replicas(true);
}

bool Trainer::done() const { return ran_dry_ || epoch_ >= spec_.loop.epochs || step_ >= total_steps_; }

// One worker's forward and backward on its shard; gradients go to worker_grad_ptrs_[lw] when there is an exchange.
void Trainer::run_worker(int lw) {
  WorkerState& w = *workers_[static_cast<size_t>(lw)];
  auto t0 = clk::now();
  w.threads_seen = util::set_compute_threads(threads_);
  const int gw = rank_ * local_workers_ + lw;  // global worker index: its shard of the global batch
  const size_t per_image = static_cast<size_t>(chw_[0] * chw_[1] * chw_[2]);
  w.x.resize({shard_b_, chw_[0], chw_[1], chw_[2]});
  std::memcpy(w.x.data(), batch_.x.data() + static_cast<size_t>(gw) * shard_b_ * per_image,
              sizeof(float) * shard_b_ * per_image);
  w.y.assign(batch_.y.begin() + gw * shard_b_, batch_.y.begin() + (gw + 1) * shard_b_);
  nn::Model& m = *models_[static_cast<size_t>(lw)];
  const uint64_t seed = spec_.loop.seed;
  nn::ForwardContext ctx{
      true, splitmix64(seed ^ splitmix64(static_cast<uint64_t>(step_) * 1024 + static_cast<uint64_t>(gw)))};
  if (w.teacher) w.teacher_logits = w.teacher->forward(w.x, nn::ForwardContext{false, 0});  // (before the
  // student's forward: nothing of the teacher's can then touch what the student's backward reads)
  const Tensor& logits = m.forward(w.x, ctx);
  if (w.teacher)
    w.loss = w.kd->forward(logits, w.teacher_logits, w.y.data());
  else
    w.loss = w.ce.forward(logits, w.y.data());
  const int K = m.classes();
  w.correct = 0;
  for (int i = 0; i < shard_b_; ++i) {
    const float* l = logits.data() + i * K;
    w.correct += (std::max_element(l, l + K) - l) == w.y[static_cast<size_t>(i)];
  }
  if (w.teacher)
    w.kd->backward(w.diff);
  else
    w.ce.backward(w.diff);
  m.backward(w.diff);
  if (exchange_) {
    const auto& mp = model_params_[static_cast<size_t>(lw)];
    for (size_t p = 0; p < mp.size(); ++p)
      std::memcpy(worker_grad_ptrs_[static_cast<size_t>(lw)][p], mp[p]->grad.data(),
                  sizeof(float) * static_cast<size_t>(mp[p]->grad.size()));
  }
  w.compute_s = std::chrono::duration<double>(clk::now() - t0).count();
}

void Trainer::run_workers() {
  if (local_workers_ == 1) {
    run_worker(0);
    return;
  }
  worker_arena_->execute([&] {
    tbb::parallel_for(
        tbb::blocked_range<int>(0, local_workers_, 1),
        [&](const tbb::blocked_range<int>& r) {
          for (int lw = r.begin(); lw < r.end(); ++lw) run_worker(lw);
        },
        tbb::simple_partitioner());
  });
}

Trainer::StepResult Trainer::train_step(int epoch) {
  if (opts_.before_step) opts_.before_step(step_);
  const int W = spec_.loop.workers;
  auto s0 = clk::now();
  try {
    run_workers();
  } catch (const Error& e) {
    // Huge but finite weights can overflow the activations, and an approximate layer's quantizer then refuses
    // its input before any loss is computed: after an update, say what that most likely means.
    if (last_loss_ < 0) throw;  // no update yet in this process: a plain error
    log_->line(fmt("[train] step %lld failed after a loss of %g: %s", (long long)step_, last_loss_, e.what()));
    FRUGAL_FAIL("training step ", step_, " (epoch ", epoch + 1, ") failed: ", e.what(),
                ". The previous step's loss was ", last_loss_, ": training has most likely diverged; the last good "
                "checkpoint is ", opts_.out_dir, "/checkpoint.bin — lower lr (now ",
                spec_.schedule.lr, ") or add warmup_epochs, then --resume");
  }
  const double workers_wall = std::chrono::duration<double>(clk::now() - s0).count();
  StepResult r;
  double slowest = 0;
  for (auto& w : workers_) {  // worker order: the same sums as one worker after another
    r.loss += w->loss;
    r.correct += w->correct;
    slowest = std::max(slowest, w->compute_s);
  }
  if (opts_.comm) {  // mean loss over ranks, for identical logs everywhere
    float l = static_cast<float>(r.loss);
    opts_.comm->allreduce_sum(&l, 1);
    r.loss = l / W;
  } else {
    r.loss /= W;
  }
  if (!std::isfinite(r.loss)) {
    log_->line(fmt("[train] diverged: loss is %f at epoch %d step %lld", r.loss, epoch + 1, (long long)step_));
    FRUGAL_FAIL("training diverged (loss ", r.loss, " at epoch ", epoch + 1, ", step ", step_,
                "); the last good checkpoint is ", opts_.out_dir, "/checkpoint.bin — lower lr (now ",
                spec_.schedule.lr, ") or add warmup_epochs, then --resume");
  }
  if (exchange_) {
    exchange_->exchange(worker_grad_ptrs_, step_, epoch);
    for (size_t p = 0; p < params_.size(); ++p)
      std::memcpy(params_[p]->grad.data(), worker_grad_ptrs_[0][p],
                  sizeof(float) * static_cast<size_t>(params_[p]->grad.size()));
  }
  last_loss_ = r.loss;
  optimizer_->step(schedule_->lr(step_));
  check_weights_finite(epoch);
  apply_constraint();
  sync_replicas(false);
  ++step_;
  r.compute_s = std::chrono::duration<double>(clk::now() - s0).count();
  // what one worker on its own cores would spend: the slowest worker plus the exchange and update
  r.worker_compute_s = slowest + (r.compute_s - workers_wall);
  return r;
}

// A finite loss can still end in non-finite weights (a huge update); the next forward would then fail somewhere
// less helpful (an approximate layer's quantizer reports an invalid range), so stop here with the reason.
void Trainer::check_weights_finite(int epoch) {
  for (const nn::Param* p : params_) {
    const float* v = p->value.data();
    const int64_t n = p->value.size();
    float sum = 0;  // x * 0 is 0 for finite x and NaN for NaN/Inf: one NaN anywhere makes the sum NaN
    for (int64_t i = 0; i < n; ++i) sum += v[i] * 0.f;
    if (std::isfinite(sum)) continue;
    log_->line(fmt("[train] diverged: parameter %s has non-finite values after step %lld", p->name.c_str(),
                   (long long)step_));
    FRUGAL_FAIL("training diverged (parameter '", p->name, "' has NaN/Inf values after the update of epoch ",
                epoch + 1, ", step ", step_, "); the last good checkpoint is ", opts_.out_dir,
                "/checkpoint.bin — lower lr (now ", spec_.schedule.lr, ") or add warmup_epochs, then --resume");
  }
}

json Trainer::run_epoch() {
  const int epoch = epoch_, epochs = spec_.loop.epochs, B = spec_.data.batch;
  loader_->start_epoch(epoch);
  auto ep_start = clk::now(), last_print = clk::now();
  double loss_sum = 0, ep_compute = 0, ep_worker_compute = 0;
  int64_t correct = 0, seen = 0, ep_steps = 0;
  while (step_ < total_steps_ && loader_->next(batch_)) {
    const StepResult r = train_step(epoch);
    ++ep_steps;
    ep_compute += r.compute_s;
    ep_worker_compute += r.worker_compute_s;
    correct += r.correct;
    step_ms_.push_back(r.compute_s * 1e3);
    loss_sum += r.loss;
    seen += shard_b_ * local_workers_;
    double since = std::chrono::duration<double>(clk::now() - last_print).count();
    if (since >= spec_.loop.progress_s) {
      last_print = clk::now();
      double ips = B * ep_steps / std::max(1e-9, ep_compute);
      int64_t left =
          std::min<int64_t>(total_steps_ - step_, static_cast<int64_t>(epochs - epoch) * steps_per_epoch_ - ep_steps);
      log_->line(fmt("[train] epoch %d/%d step %lld/%lld loss %.4f acc %.4f lr %.4g %.0f img/s ETA %.0fs", epoch + 1,
                     epochs, (long long)ep_steps, (long long)steps_per_epoch_, loss_sum / ep_steps,
                     double(correct) / seen, schedule_->lr(step_), ips, left * B / std::max(1.0, ips)));
    }
  }
  train_compute_s_ += ep_compute;
  worker_compute_s_ += ep_worker_compute;
  if (ep_steps == 0) {
    ran_dry_ = true;
    return nullptr;
  }
  if (spec_.loop.swa_epochs > 0 && epoch >= epochs - spec_.loop.swa_epochs) average_swa();
  EvalMetrics em = evaluate_test();
  const bool has_val = data_.val.size() > 0;
  EvalMetrics vm = has_val ? evaluate_val() : EvalMetrics{};
  // reduce-on-plateau watches the validation loss, never the test loss (plateau requires val_split > 0)
  bool reduced = has_val && schedule_->end_epoch(vm.loss);
  double ep_wall = std::chrono::duration<double>(clk::now() - ep_start).count();
  json ej{{"epoch", epoch + 1},
          {"steps", ep_steps},
          {"train_loss", loss_sum / ep_steps},
          {"train_accuracy", double(correct) / seen},
          {"test_loss", em.loss},
          {"test_accuracy", em.top1},
          {"lr_end", schedule_->lr(step_)},
          {"train_images_per_second", B * ep_steps / std::max(1e-9, ep_compute)},
          {"worker_compute_s", ep_worker_compute},
          {"wall_s", ep_wall}};
  if (has_val) {
    ej["val_loss"] = vm.loss;
    ej["val_accuracy"] = vm.top1;
  }
  if (exchange_) {
    auto period = take_stats(*exchange_, opts_.comm).period;
    ej["communication"] = period.to_json();
    ej["communication"]["simulated_comm_s_configured"] = period.simulated_comm_s(spec_.network);
  }
  epochs_log_.push_back(ej);
  log_->line(fmt("[train] epoch %d/%d done: train loss %.4f acc %.4f%s | test loss %.4f acc %.4f | %.0f img/s, %.1fs%s",
                 epoch + 1, epochs, loss_sum / ep_steps, double(correct) / seen,
                 has_val ? fmt(" | val loss %.4f acc %.4f", vm.loss, vm.top1).c_str() : "", em.loss, em.top1,
                 B * ep_steps / std::max(1e-9, ep_compute), ep_wall, reduced ? " | lr reduced" : ""));
  ++epoch_;
  return ej;
}

void Trainer::average_swa() {  // average in this epoch's weights
  ++swa_n_;
  const float w = 1.f / static_cast<float>(swa_n_);
  for (size_t i = 0; i < params_.size(); ++i) {
    float* a = swa_avg_[i].data();
    const float* v = params_[i]->value.data();
    for (int64_t j = 0; j < swa_avg_[i].size(); ++j) a[j] += (v[j] - a[j]) * w;
  }
}

EvalMetrics Trainer::evaluate_test() { return evaluate(model(), data_.split.test, data_.norm, spec_.data.eval_batch, 0.f); }

EvalMetrics Trainer::evaluate_val() {
  FRUGAL_CHECK(data_.val.size() > 0, "evaluate_val: this run has no validation split (set val_split=N)");
  return evaluate(model(), data_.val, data_.norm, spec_.data.eval_batch, 0.f);
}

void Trainer::save_checkpoint() {
  // compressor states: residuals, momentum, warm starts, random state and byte counters; MPI ranks each
  // hold their own, so every rank takes part in gathering them to the writer
  std::vector<std::vector<uint8_t>> states;
  if (exchange_) {
    std::vector<uint8_t> mine = exchange_->save_state();
    if (opts_.comm && world_ranks_ > 1)
      states = opts_.comm->allgatherv(mine);
    else
      states.push_back(std::move(mine));
  }
  if (!writer_) return;
  io::TensorFile f;
  f.meta = {{"kind", "checkpoint"},
            {"spec", model().spec()},
            {"config", spec_.config.values()},
            {"epochs", epochs_log_},
            {"state",
             {{"epoch", epoch_},
              {"step", step_},
              {"optimizer_steps", optimizer_->steps()},
              {"plateau_scale", schedule_->plateau_scale()},
              {"plateau_best", schedule_->plateau_best()},
              {"plateau_bad", schedule_->plateau_bad()},
              {"train_compute_s", train_compute_s_},
              {"worker_compute_s", worker_compute_s_},
              {"swa_n", swa_n_},
              {"val_split", data_.val_split["size"]},
              {"val_split_sha256", data_.val_split.value("indices_sha256", "")}}}};
  nn::add_model_tensors(model(), f);
  if (swa_n_ > 0)
    for (size_t i = 0; i < swa_avg_.size(); ++i) f.tensors.emplace_back("swa." + params_[i]->name, swa_avg_[i]);
  for (auto& [name, t] : optimizer_->state()) f.tensors.emplace_back("optim." + name, *t);
  if (states.size() == 1) {
    f.tensors.emplace_back("gradcomp.state", bytes_as_tensor(states[0]));
    f.meta["state"]["gradcomp_state_bytes"] = states[0].size();
  } else if (states.size() > 1) {
    json sizes = json::array();
    for (size_t r = 0; r < states.size(); ++r) {
      f.tensors.emplace_back("gradcomp.state.rank" + std::to_string(r), bytes_as_tensor(states[r]));
      sizes.push_back(states[r].size());
    }
    f.meta["state"]["gradcomp_state_bytes"] = sizes;
  }
  io::save_tensor_file(opts_.out_dir + "/checkpoint.bin", f);
}

// The averaged weights never saw the running statistics of any one of them: re-estimate them as the cumulative
// average over one pass of the (augmented) training set, as torch.optim.swa_utils.update_bn.
void Trainer::finish() {
  if (swa_n_ == 0) return;
  auto s0 = clk::now();
  for (size_t i = 0; i < params_.size(); ++i) {
    params_[i]->value.copy_from(swa_avg_[i]);
    ++params_[i]->version;
  }
  int64_t bn_batches = 0;
  if (!buffers_.empty()) {
    const size_t per_image = static_cast<size_t>(chw_[0] * chw_[1] * chw_[2]);
    Tensor x;
    loader_->start_epoch(spec_.loop.epochs);
    while (loader_->next(batch_)) {
      for (int lw = 0; lw < local_workers_; ++lw) {
        const int gw = rank_ * local_workers_ + lw;
        x.resize({shard_b_, chw_[0], chw_[1], chw_[2]});
        std::memcpy(x.data(), batch_.x.data() + static_cast<size_t>(gw) * shard_b_ * per_image,
                    sizeof(float) * shard_b_ * per_image);
        nn::ForwardContext ctx{true, splitmix64(spec_.loop.seed ^ 0x5ea5ea5eull ^ static_cast<uint64_t>(bn_batches))};
        ctx.bn_momentum = 1.f / static_cast<float>(bn_batches + 1);
        model().forward(x, ctx);
        ++bn_batches;
      }
    }
  }
  swa_info_ = {{"epochs_averaged", swa_n_},
               {"swa_lr", spec_.config.f("swa_lr")},  // as configured (the schedule holds it as float)
               {"last_epoch_test_accuracy", epochs_log_.back()["test_accuracy"]},
               {"bn_update_batches", bn_batches},
               {"bn_update_s", std::chrono::duration<double>(clk::now() - s0).count()}};
  log_->line(fmt("[train] SWA: averaged the weights of %d epochs, re-estimated batch-norm statistics on %lld batches",
                 swa_n_, (long long)bn_batches));
}

json Trainer::communication_results() {
  auto st = take_stats(*exchange_, opts_.comm);
  json c = st.total.to_json();
  c["exchange"] = exchange_->describe();
  c["mode"] = opts_.comm ? "mpi" : "in-process";
  // Simulated time of the whole run: per-worker compute (the slowest worker of each step, as if every worker
  // had its own cores) plus modelled communication at each bandwidth.
  json sim = json::object();
  for (double gbps : {1.0, 10.0, spec_.bandwidth_gbps}) {
    comm::Network net = spec_.network;
    net.bandwidth_bps = gbps * 1e9;
    const double comm_s = st.total.simulated_comm_s(net);
    sim[fmt("%gGbps", gbps)] = {
        {"worker_compute_s", worker_compute_s_}, {"comm_s", comm_s}, {"total_s", worker_compute_s_ + comm_s}};
  }
  c["simulated_time"] = sim;
  return c;
}

json Trainer::parallelism_results() {  // what each worker really computed with
  json seen = json::array();
  for (auto& w : workers_) seen.push_back(w->threads_seen);
  if (opts_.comm && world_ranks_ > 1) {
    std::vector<uint8_t> mine(4);
    const int32_t t = workers_[0]->threads_seen;
    std::memcpy(mine.data(), &t, 4);
    seen = json::array();
    for (auto& b : opts_.comm->allgatherv(mine)) {
      int32_t v;
      std::memcpy(&v, b.data(), 4);
      seen.push_back(v);
    }
  }
  return {{"mode", opts_.comm ? "mpi" : "in-process"},
          {"workers", spec_.loop.workers},
          {"threads_per_worker", threads_},
          {"threads_key", spec_.loop.threads},
          {"worker_threads_seen", seen},
          {"concurrent_in_process_workers", concurrent_workers_},
          {"available_cores", util::available_cores()}};
}

json Trainer::results(bool completed) {
  const int B = spec_.data.batch;
  EvalMetrics final_m = evaluate_test();
  const data::Dataset& train = data_.split.train;
  data::DataFiles files = data::data_files(data_.split);  // paths relative to files.root, not this machine's
  json data_j{{"dataset", train.name},
              {"train_size", train.size()},
              {"test_size", data_.split.test.size()},
              {"root", files.root},
              {"val_split", data_.val_split},
              {"input_jpeg", data_.input_jpeg},
              {"files", json::array()}};
  for (auto& f : files.files) data_j["files"].push_back({{"path", f.path}, {"sha256", f.sha256}, {"bytes", f.bytes}});
  json metrics = final_m.to_json(true);
  metrics["test_accuracy"] = final_m.top1;
  if (data_.val.size() > 0) {
    EvalMetrics final_v = evaluate_val();
    metrics["val_accuracy"] = final_v.top1;
    metrics["val_loss"] = final_v.loss;
  }
  metrics["train_images_per_second"] =
      train_compute_s_ > 0 ? static_cast<double>(step_) * B / train_compute_s_ : 0.0;
  if (step_ms_.size() > 10) {
    std::vector<double> warm(step_ms_.begin() + 5, step_ms_.end());
    double sum = 0;
    for (double v : warm) sum += v;
    metrics["train_images_per_second"] = 1e3 * static_cast<double>(warm.size()) * B / sum;
    std::nth_element(warm.begin(), warm.begin() + static_cast<long>(warm.size() / 2), warm.end());
    metrics["train_step_ms_median"] = warm[warm.size() / 2];
    metrics["timed_steps"] = warm.size();
  }
  metrics["train_gflops_est"] =
      metrics["train_images_per_second"].get<double>() * 3.0 * 2.0 * static_cast<double>(model().macs_per_image()) / 1e9;
  metrics["params"] = model().num_params();
  metrics["macs_per_image"] = model().macs_per_image();
  metrics["steps"] = step_;
  json results{{"kind", "train"},
               {"config", spec_.config.values()},
               {"model", {{"spec", model_spec_}, {"summary", model().summary()}}},
               {"metrics", metrics},
               {"epochs", epochs_log_},
               {"environment", io::environment_info()},
               {"data", data_j},
               {"timing",
                {{"wall_s", seconds_since(t_start_)},
                 {"data_load_s", data_.load_s},
                 {"train_compute_s", train_compute_s_}}},
               {"completed", completed}};
  if (!approx_info_.is_null()) results["approx"] = approx_info_;
  if (!swa_info_.is_null()) {
    swa_info_["test_accuracy"] = final_m.top1;
    results["swa"] = swa_info_;
  }
  if (exchange_) results["communication"] = communication_results();
  results["time_to_accuracy"] = time_to_accuracy(epochs_log_, spec_.loop.target_accuracy, spec_.bandwidth_gbps);
  results["parallelism"] = parallelism_results();
  return results;
}

void Trainer::write_outputs(const json& results) {
  if (!writer_) return;
  const double acc = results["metrics"]["test_accuracy"].get<double>();
  nn::save_model(opts_.out_dir + "/model.bin", model(), {{"config", spec_.config.values()}, {"test_accuracy", acc}});
  io::write_file_atomic(opts_.out_dir + "/results.json", results.dump(2) + "\n");
  log_->line(
      fmt("[train] done: test accuracy %.4f, %.0f img/s; wrote %s/{results.json,model.bin,checkpoint.bin,train.log}",
          acc, results["metrics"]["train_images_per_second"].get<double>(), opts_.out_dir.c_str()));
}

// ------------------------------------------------------------------------------------------------ composition

json run_training(const io::Config& cfg_in, const TrainOptions& opts_in) {
  TrainOptions opts = opts_in;
  io::Config cfg = cfg_in;
  io::TensorFile checkpoint;
  if (!opts.resume_dir.empty()) {
    opts.out_dir = opts.resume_dir;
    cfg = resume_config(cfg, opts.resume_dir, checkpoint);
  }
  check_same_config_on_all_ranks(cfg, opts.comm);
  Trainer t(parse_train_spec(cfg), opts);
  if (!opts.resume_dir.empty()) t.restore(checkpoint, opts.resume_dir + "/checkpoint.bin");
  t.log(t.describe());
  bool stopped_early = false;
  while (!t.done()) {
    if (opts.stop_after_epoch >= 0 && t.epochs_done() >= opts.stop_after_epoch) {
      stopped_early = true;
      break;
    }
    if (t.run_epoch().is_null()) break;
    t.save_checkpoint();
  }
  if (!stopped_early) t.finish();
  json results = t.results(!stopped_early);
  t.write_outputs(results);
  return results;
}

int64_t resolve_val_split(int64_t asked, bool plateau, const std::string& dataset_name) {
  if (asked != -1) return asked;
  static const std::set<std::string> standard{"mnist", "fashion-mnist", "cifar10", "cifar100"};
  return plateau && standard.count(dataset_name) ? 5000 : 0;
}

}  // namespace frugal::train
