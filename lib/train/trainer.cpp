#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include "data/dataset.h"
#include "data/jpeg.h"
#include "data/loader.h"
#include "data/split.h"
#include "approx/multiplier.h"
#include "comm/communicator.h"
#include "comm/cost_model.h"
#include "gradcomp/compressor.h"
#include "gradcomp/exchange.h"
#include "io/files.h"
#include "io/tensor_file.h"
#include "nn/model.h"
#include "optim/optimizer.h"
#include "train/approx_attach.h"
#include "train/evaluate.h"
#include "io/environment.h"
#include "nn/model_io.h"
#include "util/check.h"
#include "util/random.h"
#include "util/threads.h"

namespace frugal::train {

using json = nlohmann::json;
using clk = std::chrono::steady_clock;

namespace {

data::Augment parse_augment(const std::string& a, int pad, int cutout) {
  FRUGAL_CHECK(cutout >= 0, "config key 'cutout': must be >= 0 (0 = off), got ", cutout);
  data::Augment aug;
  aug.cutout = cutout;
  if (a == "none") return aug;
  FRUGAL_CHECK(a == "flip" || a == "crop" || a == "crop+flip" || a == "flip+crop",
               "config key 'augment': unknown value '", a, "'; known: none, flip, crop, crop+flip");
  if (a.find("crop") != std::string::npos) aug.crop_pad = pad;
  aug.flip = a.find("flip") != std::string::npos;
  return aug;
}

/// Resolves config key val_split (-1 = auto) and moves that many training images, drawn stratified with the
/// fixed data::kValSplitSeed, from train into val. Returns results.json's data.val_split.
json hold_out_validation(const io::Config& cfg, data::Dataset& train, data::Dataset& val) {
  const int64_t asked = cfg.i("val_split");
  const bool plateau = cfg.s("schedule") == "plateau";
  FRUGAL_CHECK(asked >= -1, "config key 'val_split' must be -1 (auto) or a count of images >= 0, got ", asked);
  int64_t n = asked;
  if (asked == -1) {
    static const std::set<std::string> standard{"mnist", "fashion-mnist", "cifar10", "cifar100"};
    n = plateau && standard.count(train.name) ? 5000 : 0;
  }
  const std::string how = asked == -1 ? " (val_split = -1, auto)" : "";
  FRUGAL_CHECK(!plateau || n > 0, "schedule=plateau watches the validation loss, but config key 'val_split' is 0",
               how, " for dataset '", train.name, "'; set val_split=N to hold out N training images");
  FRUGAL_CHECK(n < static_cast<int64_t>(train.size()), "config key 'val_split' = ", n, how,
               " must be smaller than the training set of dataset '", train.name, "' (", train.size(),
               " images); set a smaller val_split");
  if (n == 0) return json{{"size", 0}};
  const size_t from = train.size();
  data::HoldoutSplit s = data::split_holdout(train, static_cast<size_t>(n), data::kValSplitSeed, true);
  train = std::move(s.train);
  val = std::move(s.val);
  return json{{"size", n},
              {"seed", data::kValSplitSeed},
              {"stratified", true},
              {"from_train_size", from},
              {"indices_sha256", s.val_indices_sha256}};
}

/// Progress lines: appended to train.log and handed to the sink (TrainOptions::progress, or stderr unless quiet).
class Log {
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

std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
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

/// The spec strings that need no data, checked before any file is read: a typo fails at once, naming the key.
void check_specs_before_data(const io::Config& cfg) {
  gradcomp::CompressorContext probe;
  probe.shape = {64, 64};
  gradcomp::make_compressor(cfg.s("compressor"), probe);
  if (!cfg.s("multiplier").empty()) approx::make_multiplier(cfg.s("multiplier"));
  if (cfg.s("comm_pattern") != "auto") comm::parse_pattern(cfg.s("comm_pattern"));
  parse_augment(cfg.s("augment"), static_cast<int>(cfg.i("crop_pad")), static_cast<int>(cfg.i("cutout")));
  optim::ScheduleOptions so;
  so.kind = cfg.s("schedule");
  optim::Schedule probe_schedule(so, 1, 2);
  FRUGAL_CHECK(cfg.i("workers") >= 1, "config key 'workers' must be >= 1, got ", cfg.i("workers"));
  FRUGAL_CHECK(cfg.i("threads") >= 0, "config key 'threads' must be >= 0 (0: automatic), got ", cfg.i("threads"));
}

gradcomp::ExchangeStats take_stats(gradcomp::GradientExchange& ex, comm::Communicator* comm) {
  auto st = ex.take_stats();
  average_over_ranks(st.period, comm);
  average_over_ranks(st.total, comm);
  return st;
}

}  // namespace

json run_training(const io::Config& cfg_in, const TrainOptions& opts_in) {
  TrainOptions opts = opts_in;
  io::Config cfg = cfg_in;
  const int rank = opts.comm ? opts.comm->rank() : 0;
  const int world_ranks = opts.comm ? opts.comm->world() : 1;
  const bool writer = rank == 0;

  // ---------------------------------------------------------------- resume: config and state
  io::TensorFile resume_state;
  bool resuming = !opts.resume_dir.empty();
  if (resuming) {
    opts.out_dir = opts.resume_dir;
    std::string ck = opts.resume_dir + "/checkpoint.bin";
    FRUGAL_CHECK(io::file_exists(ck), "--resume ", opts.resume_dir, ": no checkpoint.bin there (nothing to resume)");
    resume_state = io::load_tensor_file(ck);
    FRUGAL_CHECK(resume_state.meta.value("kind", "") == "checkpoint", "'", ck, "' is not a checkpoint");
    io::Config stored;
    stored.merge(resume_state.meta["config"], ck);
    // keys given on the command line (differing from defaults) override the stored ones, e.g. more epochs
    io::Config defaults;
    for (auto& [k, v] : cfg.values().items())
      if (v != defaults.values()[k]) stored.merge(json{{k, v}}, "--set");
    cfg = stored;
  }
  if (opts.comm && world_ranks > 1) {  // every rank must run the same experiment: name the keys that differ
    std::string mine = cfg.values().dump();
    auto all = opts.comm->allgatherv(std::vector<uint8_t>(mine.begin(), mine.end()));
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
  if (writer) io::make_dirs(opts.out_dir);
  Log log(opts.out_dir + "/train.log", opts, writer);

  check_specs_before_data(cfg);

  // ---------------------------------------------------------------- data
  auto t_start = clk::now();
  auto roots = data::data_roots(cfg.s("data_dir"));
  data::DataSplit ds = data::load_dataset(cfg.s("dataset"), roots);
  data::Dataset val_ds;  // held out of ds.train: the loader never sees it
  const json val_split = hold_out_validation(cfg, ds.train, val_ds);
  const bool has_val = val_ds.size() > 0;
  const std::string val_sha = val_split.value("indices_sha256", "");
  json input_jpeg;  // compressed inputs (data/jpeg.h): test images, and with input_jpeg_train the others too
  if (const int q = static_cast<int>(cfg.i("input_jpeg_quality")); q != 0) {
    const data::JpegStats t = data::jpeg_roundtrip(ds.test, q);
    input_jpeg = {{"quality", q}, {"test_bits_per_pixel", t.bits_per_pixel}, {"test_mean_abs_error", t.mean_abs_error}};
    if (cfg.b("input_jpeg_train")) {
      const data::JpegStats tr = data::jpeg_roundtrip(ds.train, q);
      input_jpeg["train_bits_per_pixel"] = tr.bits_per_pixel;
      if (has_val) data::jpeg_roundtrip(val_ds, q);
    }
  }
  const data::Dataset& train_ds = ds.train;
  data::Normalization norm = data::default_normalization(train_ds.name);
  double load_s = std::chrono::duration<double>(clk::now() - t_start).count();

  // ---------------------------------------------------------------- model
  const std::string model_name = cfg.s("model");
  json spec;
  Dims chw{train_ds.channels, train_ds.height, train_ds.width};
  if (model_name.size() > 5 && model_name.substr(model_name.size() - 5) == ".json") {
    spec = io::read_json_file(model_name);
    spec["input"] = chw;
    spec["classes"] = train_ds.num_classes;
  } else {
    spec = nn::preset_spec(model_name, cfg.f("width"), static_cast<int>(cfg.i("depth")), chw, train_ds.num_classes);
  }
  const uint64_t seed = static_cast<uint64_t>(cfg.i("seed"));
  // The threads each worker computes with (and this thread evaluates with): see util/threads.h.
  const int W = static_cast<int>(cfg.i("workers"));  // >= 1 and threads >= 0: check_specs_before_data
  const int local_workers = opts.comm ? 1 : W;
  const int threads_key = static_cast<int>(cfg.i("threads"));
  const int threads = threads_key > 0 ? threads_key : util::default_threads_per_worker(local_workers, opts.comm);
  util::set_compute_threads(threads);

  // One model per in-process worker, built the same way (same init, approximate layers, calibration); worker 0's
  // is the model that is optimized, evaluated and saved, the others are replicas that follow its weights.
  json approx_info;
  auto build_model = [&](bool first) {
    auto m = std::make_unique<nn::Model>(spec, seed);
    if (!cfg.s("init").empty() && !resuming) {  // fine-tuning: weights and BN statistics from a model file
      io::TensorFile init = io::load_tensor_file(cfg.s("init"));
      nn::load_model_tensors(*m, init, cfg.s("init"));
    }
    json info = attach_approx(*m, cfg);
    if (json cal = calibrate_approx(*m, cfg, train_ds, norm, static_cast<int>(cfg.i("eval_batch"))); !cal.is_null())
      info["calibration"] = cal;
    if (first) approx_info = info;
    return m;
  };
  std::vector<std::unique_ptr<nn::Model>> models;
  models.push_back(build_model(true));
  nn::Model& model = *models[0];
  auto params = model.params();

  // ---------------------------------------------------------------- workers
  FRUGAL_CHECK(!opts.comm || W == world_ranks, "config 'workers' = ", W, " but the MPI job has ", world_ranks,
               " ranks; run mpirun -np ", W, " or set workers=", world_ranks);
  const int B = static_cast<int>(cfg.i("batch"));
  FRUGAL_CHECK(B >= W && B % W == 0, "config 'batch' = ", B, " must be a positive multiple of workers = ", W);
  const int shard_b = B / W;

  data::LoaderOptions lo;
  lo.batch = B;
  lo.shuffle = true;
  lo.drop_last = true;
  lo.augment = parse_augment(cfg.s("augment"), static_cast<int>(cfg.i("crop_pad")), static_cast<int>(cfg.i("cutout")));
  lo.norm = norm;
  lo.seed = seed;
  data::Loader loader(train_ds, lo);
  const int64_t spe = static_cast<int64_t>(loader.batches_per_epoch());
  FRUGAL_CHECK(spe > 0, "dataset '", train_ds.name, "' has ", train_ds.size(),
               " training images, fewer than one batch of ", B);
  const int epochs = static_cast<int>(cfg.i("epochs"));
  FRUGAL_CHECK(epochs >= 1, "config key 'epochs' must be >= 1, got ", epochs);
  const int64_t max_steps = cfg.i("max_steps");
  const int64_t total_steps = max_steps > 0 ? std::min<int64_t>(max_steps, spe * epochs) : spe * epochs;

  optim::OptimizerOptions oo;
  oo.kind = cfg.s("optimizer");
  oo.momentum = static_cast<float>(cfg.f("momentum"));
  oo.nesterov = cfg.b("nesterov");
  oo.weight_decay = static_cast<float>(cfg.f("weight_decay"));
  oo.decay_1d = cfg.b("decay_1d");
  oo.lars = cfg.b("lars");
  oo.lars_eta = static_cast<float>(cfg.f("lars_eta"));

  std::unique_ptr<gradcomp::GradientExchange> exchange;
  std::vector<std::vector<int64_t>> shapes;
  for (auto* p : params) shapes.push_back(p->value.dims());
  if (W > 1 || cfg.s("compressor") != "none") {
    gradcomp::ExchangeOptions eo;
    eo.compressor = cfg.s("compressor");
    eo.dense_below = static_cast<size_t>(cfg.i("dense_below"));
    eo.dense_1d = cfg.b("dense_1d");
    eo.seed = seed;
    eo.warmup_epochs = static_cast<int>(cfg.i("compress_warmup_epochs"));
    eo.momentum = oo.momentum;
    eo.sample_every = cfg.i("error_sample_every");
    eo.comm_pattern = cfg.s("comm_pattern");
    exchange = std::make_unique<gradcomp::GradientExchange>(eo, shapes, local_workers, opts.comm);
    if (exchange->handles_momentum()) {
      FRUGAL_CHECK(oo.kind == "sgd", "compressor '", eo.compressor,
                   "' applies momentum correction itself; use optimizer=sgd");
      // DGC momentum correction: the gradient's momentum lives in the compressor (Lin et al. 2018, Sec. 3.2);
      // the optimizer keeps momentum for the weight-decay term only (the authors' DGCSGD).
      exchange->set_momentum(oo.momentum, oo.nesterov);
      oo.momentum_decay_only = true;
    }
  }
  optim::Optimizer opt(oo, params);
  optim::ScheduleOptions so;
  so.kind = cfg.s("schedule");
  so.lr = static_cast<float>(cfg.f("lr"));
  so.warmup_epochs = static_cast<float>(cfg.f("warmup_epochs"));
  so.step_epochs = static_cast<float>(cfg.f("step_epochs"));
  so.gamma = static_cast<float>(cfg.f("gamma"));
  so.plateau_patience = static_cast<int>(cfg.i("plateau_patience"));
  so.plateau_factor = static_cast<float>(cfg.f("plateau_factor"));
  const int swa_epochs = static_cast<int>(cfg.i("swa_epochs"));
  FRUGAL_CHECK(swa_epochs >= 0 && swa_epochs < epochs, "config key 'swa_epochs' = ", swa_epochs,
               " must be in [0, epochs = ", epochs, "): the schedule needs at least one epoch before averaging");
  FRUGAL_CHECK(swa_epochs == 0 || max_steps <= 0, "config key 'swa_epochs' cannot be combined with max_steps ",
               "(SWA averages whole epochs); set max_steps=-1");
  so.swa_steps = swa_epochs * spe;
  so.swa_lr = static_cast<float>(cfg.f("swa_lr"));
  optim::Schedule sched(so, spe, total_steps);
  nn::SoftmaxCrossEntropy ce(static_cast<float>(cfg.f("label_smoothing")));

  // ---------------------------------------------------------------- resume: tensors
  int start_epoch = 0;
  int64_t step = 0;
  // SWA: running mean of the end-of-epoch weights of the last swa_epochs epochs
  std::vector<Tensor> swa_avg;
  int swa_n = 0;
  if (swa_epochs > 0)
    for (auto* p : params) {
      swa_avg.emplace_back(p->value.dims());
      swa_avg.back().zero();  // the first average, 0 + (v - 0) / 1, is then exactly v
    }
  json epochs_log = json::array();
  double train_compute_s = 0, worker_compute_s = 0;
  if (resuming) {
    nn::load_model_tensors(model, resume_state, opts.resume_dir + "/checkpoint.bin");
    for (auto& [name, t] : opt.state()) {
      const Tensor* s = resume_state.find("optim." + name);
      FRUGAL_CHECK(s && s->dims() == t->dims(), "checkpoint lacks optimizer state '", name, "'");
      std::memcpy(t->data(), s->data(), sizeof(float) * static_cast<size_t>(t->size()));
    }
    const json& st = resume_state.meta["state"];
    start_epoch = st["epoch"].get<int>();
    step = st["step"].get<int64_t>();
    opt.set_steps(st["optimizer_steps"].get<int64_t>());
    sched.restore(st["plateau_scale"].get<double>(), st["plateau_best"].get<double>(), st["plateau_bad"].get<int>());
    epochs_log = resume_state.meta["epochs"];
    FRUGAL_CHECK(st.value("val_split_sha256", "") == val_sha, "checkpoint '", opts.resume_dir,
                 "/checkpoint.bin' was trained with another validation split (val_split ", st.value("val_split", 0),
                 " images) than this run's (", val_split["size"], "); resume with the stored val_split");
    train_compute_s = st.value("train_compute_s", 0.0);
    worker_compute_s = st.value("worker_compute_s", 0.0);
    swa_n = st.value("swa_n", 0);
    FRUGAL_CHECK(swa_n == 0 || !swa_avg.empty(), "checkpoint '", opts.resume_dir,
                 "/checkpoint.bin' holds SWA averages but swa_epochs is 0; resume with the stored swa_epochs");
    for (size_t i = 0; i < swa_avg.size() && swa_n > 0; ++i) {
      const Tensor* s = resume_state.find("swa." + params[i]->name);
      FRUGAL_CHECK(s && s->dims() == swa_avg[i].dims(), "checkpoint lacks SWA average '", params[i]->name, "'");
      swa_avg[i].copy_from(*s);
    }
    log.line(fmt("[train] resuming %s at epoch %d (step %lld)", opts.resume_dir.c_str(), start_epoch, (long long)step));
    if (exchange) {
      // In-process runs store one state ("gradcomp.state", all W local workers); MPI runs one per rank
      // ("gradcomp.state.rank<r>"), gathered to rank 0 when the checkpoint is written.
      const bool per_rank = opts.comm && world_ranks > 1;
      const std::string tname = per_rank ? "gradcomp.state.rank" + std::to_string(rank) : "gradcomp.state";
      const Tensor* gs = resume_state.find(tname);
      const bool other_layout = resume_state.find(per_rank ? "gradcomp.state" : "gradcomp.state.rank0") != nullptr;
      FRUGAL_CHECK(!other_layout || gs, "checkpoint '", opts.resume_dir, "/checkpoint.bin' was written by ",
                   per_rank ? "an in-process run" : "an MPI run", ": resume it the same way (",
                   per_rank ? "without --dist mpi" : "mpirun ... --dist mpi", ")");
      if (gs) {
        const json& nb = st.value("gradcomp_state_bytes", json());
        FRUGAL_CHECK(per_rank ? nb.is_array() && nb.size() == size_t(world_ranks) : nb.is_number_unsigned(),
                     "checkpoint '", opts.resume_dir, "/checkpoint.bin': state.gradcomp_state_bytes should be ",
                     per_rank ? "a list with one size per rank" : "a byte count", ", found ", nb.dump());
        const size_t nbytes = per_rank ? nb.at(static_cast<size_t>(rank)).get<size_t>() : nb.get<size_t>();
        FRUGAL_CHECK(nbytes <= sizeof(float) * size_t(gs->size()), "checkpoint '", opts.resume_dir,
                     "/checkpoint.bin': gradcomp_state_bytes = ", nbytes, " exceeds its ", tname, " tensor");
        std::vector<uint8_t> bytes(nbytes);
        std::memcpy(bytes.data(), gs->data(), nbytes);
        exchange->load_state(bytes);
      } else {
        FRUGAL_CHECK(cfg.s("compressor") == "none" || start_epoch == 0, "checkpoint '", opts.resume_dir,
                     "/checkpoint.bin' has no compressor state (written by an older frugal); restart the run");
      }
    }
  }

  log.line("[train] " + model_name + " on " + train_ds.name + " (" + std::to_string(train_ds.size()) + " train / " +
           (has_val ? std::to_string(val_ds.size()) + " val / " : "") +
           std::to_string(ds.test.size()) + " test), " + std::to_string(model.num_params()) + " params, " +
           std::to_string(model.macs_per_image()) + " MACs/img, workers " + std::to_string(W) +
           (opts.comm ? " (MPI ranks)" : " (in-process)") + ", compressor " + cfg.s("compressor") +
           (approx_info.is_null() ? "" : ", multiplier " + cfg.s("multiplier")));

  // per-worker gradient buffers (only when an exchange is used)
  std::vector<std::vector<Tensor>> wgrads(exchange ? local_workers : 0);
  std::vector<std::vector<float*>> gptrs(wgrads.size());
  for (size_t w = 0; w < wgrads.size(); ++w)
    for (auto* p : params) {
      wgrads[w].emplace_back(p->value.dims());
      gptrs[w].push_back(wgrads[w].back().data());
    }
  auto buffers = model.buffers();

  // Replicas of the model for in-process workers 1..W-1: built like worker 0's, then given its (possibly
  // restored) weights and statistics; after every optimizer step they take its new weights.
  for (int lw = 1; lw < local_workers; ++lw) models.push_back(build_model(false));
  std::vector<std::vector<nn::Param*>> model_params;
  for (auto& m : models) model_params.push_back(m->params());
  auto sync_replicas = [&](bool with_buffers) {
    for (size_t r = 1; r < models.size(); ++r) {
      for (size_t i = 0; i < params.size(); ++i) {
        model_params[r][i]->value.copy_from(params[i]->value);
        ++model_params[r][i]->version;
      }
      if (with_buffers) {
        auto rb = models[r]->buffers();
        for (size_t i = 0; i < buffers.size(); ++i) rb[i].value->copy_from(*buffers[i].value);
      }
    }
  };
  // A caller's constraint on the weights (TrainOptions::after_update), from the start and after every update.
  auto apply_constraint = [&] {
    if (!opts.after_update) return;
    opts.after_update(params);
    for (auto* p : params) ++p->version;
  };
  apply_constraint();
  sync_replicas(true);
  // Workers run concurrently, each with `threads` oneDNN threads, as many at once as the cores allow.
  const int concurrent_workers = std::max(1, std::min(local_workers, util::available_cores() / threads));
  tbb::task_arena worker_arena(concurrent_workers);

  auto save_checkpoint = [&](int epoch_done) {
    // compressor states: residuals, momentum, warm starts, random state and byte counters; MPI ranks each
    // hold their own, so every rank takes part in gathering them to the writer
    std::vector<std::vector<uint8_t>> states;
    if (exchange) {
      std::vector<uint8_t> mine = exchange->save_state();
      if (opts.comm && world_ranks > 1)
        states = opts.comm->allgatherv(mine);
      else
        states.push_back(std::move(mine));
    }
    if (!writer) return;
    io::TensorFile f;
    f.meta = {{"kind", "checkpoint"},
              {"spec", model.spec()},
              {"config", cfg.values()},
              {"epochs", epochs_log},
              {"state",
               {{"epoch", epoch_done},
                {"step", step},
                {"optimizer_steps", opt.steps()},
                {"plateau_scale", sched.plateau_scale()},
                {"plateau_best", sched.plateau_best()},
                {"plateau_bad", sched.plateau_bad()},
                {"train_compute_s", train_compute_s},
                {"worker_compute_s", worker_compute_s},
                {"swa_n", swa_n},
                {"val_split", val_split["size"]},
                {"val_split_sha256", val_sha}}}};
    nn::add_model_tensors(model, f);
    if (swa_n > 0)
      for (size_t i = 0; i < swa_avg.size(); ++i) f.tensors.emplace_back("swa." + params[i]->name, swa_avg[i]);
    for (auto& [name, t] : opt.state()) f.tensors.emplace_back("optim." + name, *t);
    auto put_state = [&](const std::vector<uint8_t>& bytes, const std::string& name) {
      Tensor t({static_cast<int64_t>((bytes.size() + 3) / 4)});
      std::memset(t.data(), 0, sizeof(float) * static_cast<size_t>(t.size()));
      std::memcpy(t.data(), bytes.data(), bytes.size());
      f.tensors.emplace_back(name, std::move(t));
    };
    if (states.size() == 1) {
      put_state(states[0], "gradcomp.state");
      f.meta["state"]["gradcomp_state_bytes"] = states[0].size();
    } else if (states.size() > 1) {
      json sizes = json::array();
      for (size_t r = 0; r < states.size(); ++r) {
        put_state(states[r], "gradcomp.state.rank" + std::to_string(r));
        sizes.push_back(states[r].size());
      }
      f.meta["state"]["gradcomp_state_bytes"] = sizes;
    }
    io::save_tensor_file(opts.out_dir + "/checkpoint.bin", f);
  };

  comm::Network configured_net;  // the cost model's network (bandwidth_gbps, latency_us)
  configured_net.bandwidth_bps = cfg.f("bandwidth_gbps") * 1e9;
  configured_net.latency_s = cfg.f("latency_us") * 1e-6;
  FRUGAL_CHECK(configured_net.bandwidth_bps > 0 && configured_net.latency_s >= 0,
               "config keys 'bandwidth_gbps' must be > 0 and 'latency_us' >= 0");

  // ---------------------------------------------------------------- loop
  data::Batch batch;
  Tensor x;
  // dst := global worker gw's shard of the loaded batch
  const size_t per_image = static_cast<size_t>(chw[0] * chw[1] * chw[2]);
  auto load_shard = [&](int gw, Tensor& dst) {
    dst.resize({shard_b, chw[0], chw[1], chw[2]});
    std::memcpy(dst.data(), batch.x.data() + static_cast<size_t>(gw) * shard_b * per_image,
                sizeof(float) * shard_b * per_image);
  };
  struct WorkerState {
    explicit WorkerState(float smoothing) : ce(smoothing) {}
    Tensor x, diff;
    std::vector<int32_t> y;
    nn::SoftmaxCrossEntropy ce;
    double loss = 0, compute_s = 0;
    int64_t correct = 0;
    int threads_seen = 0;  // the OpenMP thread count in force on the thread that ran it
  };
  std::vector<std::unique_ptr<WorkerState>> workers;
  for (int lw = 0; lw < local_workers; ++lw)
    workers.push_back(std::make_unique<WorkerState>(static_cast<float>(cfg.f("label_smoothing"))));
  // One worker's forward and backward on its shard; gradients go to gptrs[lw] when there is an exchange.
  auto run_worker = [&](int lw) {
    WorkerState& w = *workers[static_cast<size_t>(lw)];
    auto t0 = clk::now();
    w.threads_seen = util::set_compute_threads(threads);
    const int gw = rank * local_workers + lw;  // global worker index: its shard of the global batch
    load_shard(gw, w.x);
    w.y.assign(batch.y.begin() + gw * shard_b, batch.y.begin() + (gw + 1) * shard_b);
    nn::Model& m = *models[static_cast<size_t>(lw)];
    nn::ForwardContext ctx{
        true, splitmix64(seed ^ splitmix64(static_cast<uint64_t>(step) * 1024 + static_cast<uint64_t>(gw)))};
    const Tensor& logits = m.forward(w.x, ctx);
    w.loss = w.ce.forward(logits, w.y.data());
    const int K = m.classes();
    w.correct = 0;
    for (int i = 0; i < shard_b; ++i) {
      const float* l = logits.data() + i * K;
      w.correct += (std::max_element(l, l + K) - l) == w.y[static_cast<size_t>(i)];
    }
    w.ce.backward(w.diff);
    m.backward(w.diff);
    if (exchange) {
      const auto& mp = model_params[static_cast<size_t>(lw)];
      for (size_t p = 0; p < mp.size(); ++p)
        std::memcpy(gptrs[static_cast<size_t>(lw)][p], mp[p]->grad.data(),
                    sizeof(float) * static_cast<size_t>(mp[p]->grad.size()));
    }
    w.compute_s = std::chrono::duration<double>(clk::now() - t0).count();
  };
  const double progress_s = cfg.f("progress_s");
  int64_t images_done = 0;
  bool stopped_early = false;
  std::vector<double> step_ms;  // per-step compute time of this process (the first 5 steps, with primitive
                                // creation, are excluded from the reported speed as the PyTorch peer does)
  for (int epoch = start_epoch; epoch < epochs && step < total_steps; ++epoch) {
    if (opts.stop_after_epoch >= 0 && epoch >= opts.stop_after_epoch) {
      stopped_early = true;
      break;
    }
    loader.start_epoch(epoch);
    auto ep_start = clk::now(), last_print = clk::now();
    double loss_sum = 0, ep_compute = 0, ep_worker_compute = 0;
    int64_t correct = 0, seen = 0, ep_steps = 0;
    while (step < total_steps && loader.next(batch)) {
      if (opts.before_step) opts.before_step(step);
      auto s0 = clk::now();
      if (local_workers == 1) {
        run_worker(0);
      } else {
        worker_arena.execute([&] {
          tbb::parallel_for(
              tbb::blocked_range<int>(0, local_workers, 1),
              [&](const tbb::blocked_range<int>& r) {
                for (int lw = r.begin(); lw < r.end(); ++lw) run_worker(lw);
              },
              tbb::simple_partitioner());
        });
      }
      const double workers_wall = std::chrono::duration<double>(clk::now() - s0).count();
      double step_loss = 0, slowest = 0;
      for (auto& w : workers) {  // worker order: the same sums as one worker after another
        step_loss += w->loss;
        correct += w->correct;
        slowest = std::max(slowest, w->compute_s);
      }
      if (opts.comm) {  // mean loss over ranks, for identical logs everywhere
        float l = static_cast<float>(step_loss);
        opts.comm->allreduce_sum(&l, 1);
        step_loss = l / W;
      } else {
        step_loss /= W;
      }
      if (!std::isfinite(step_loss)) {
        log.line(fmt("[train] diverged: loss is %f at epoch %d step %lld", step_loss, epoch + 1, (long long)step));
        FRUGAL_FAIL("training diverged (loss ", step_loss, " at epoch ", epoch + 1, ", step ", step,
                    "); the last good checkpoint is ", opts.out_dir, "/checkpoint.bin — lower lr (now ", cfg.f("lr"),
                    ") or add warmup_epochs, then --resume");
      }
      if (exchange) {
        exchange->exchange(gptrs, step, epoch);
        for (size_t p = 0; p < params.size(); ++p)
          std::memcpy(params[p]->grad.data(), gptrs[0][p], sizeof(float) * static_cast<size_t>(params[p]->grad.size()));
      }
      opt.step(sched.lr(step));
      apply_constraint();
      sync_replicas(false);
      ++step;
      ++ep_steps;
      double dt = std::chrono::duration<double>(clk::now() - s0).count();
      ep_compute += dt;
      // what one worker on its own cores would spend: the slowest worker plus the exchange and update
      ep_worker_compute += slowest + (dt - workers_wall);
      step_ms.push_back(dt * 1e3);
      loss_sum += step_loss;
      seen += shard_b * local_workers;
      images_done += B;
      double since = std::chrono::duration<double>(clk::now() - last_print).count();
      if (since >= progress_s) {
        last_print = clk::now();
        double ips = B * ep_steps / std::max(1e-9, ep_compute);
        int64_t left = std::min<int64_t>(total_steps - step, static_cast<int64_t>(epochs - epoch) * spe - ep_steps);
        log.line(fmt("[train] epoch %d/%d step %lld/%lld loss %.4f acc %.4f lr %.4g %.0f img/s ETA %.0fs", epoch + 1,
                     epochs, (long long)ep_steps, (long long)spe, loss_sum / ep_steps, double(correct) / seen,
                     sched.lr(step), ips, left * B / std::max(1.0, ips)));
      }
    }
    train_compute_s += ep_compute;
    worker_compute_s += ep_worker_compute;
    if (ep_steps == 0) break;
    if (swa_epochs > 0 && epoch >= epochs - swa_epochs) {  // average in this epoch's weights
      ++swa_n;
      const float w = 1.f / static_cast<float>(swa_n);
      for (size_t i = 0; i < params.size(); ++i) {
        float* a = swa_avg[i].data();
        const float* v = params[i]->value.data();
        for (int64_t j = 0; j < swa_avg[i].size(); ++j) a[j] += (v[j] - a[j]) * w;
      }
    }
    EvalMetrics em = evaluate(model, ds.test, norm, static_cast<int>(cfg.i("eval_batch")), 0.f);
    EvalMetrics vm =
        has_val ? evaluate(model, val_ds, norm, static_cast<int>(cfg.i("eval_batch")), 0.f) : EvalMetrics{};
    // reduce-on-plateau watches the validation loss, never the test loss (plateau requires val_split > 0)
    bool reduced = has_val && sched.end_epoch(vm.loss);
    double ep_wall = std::chrono::duration<double>(clk::now() - ep_start).count();
    json ej{{"epoch", epoch + 1},
            {"steps", ep_steps},
            {"train_loss", loss_sum / ep_steps},
            {"train_accuracy", double(correct) / seen},
            {"test_loss", em.loss},
            {"test_accuracy", em.top1},
            {"lr_end", sched.lr(step)},
            {"train_images_per_second", B * ep_steps / std::max(1e-9, ep_compute)},
            {"worker_compute_s", ep_worker_compute},
            {"wall_s", ep_wall}};
    if (has_val) {
      ej["val_loss"] = vm.loss;
      ej["val_accuracy"] = vm.top1;
    }
    if (exchange) {
      auto period = take_stats(*exchange, opts.comm).period;
      ej["communication"] = period.to_json();
      ej["communication"]["simulated_comm_s_configured"] = period.simulated_comm_s(configured_net);
    }
    epochs_log.push_back(ej);
    log.line(fmt("[train] epoch %d/%d done: train loss %.4f acc %.4f%s | test loss %.4f acc %.4f | %.0f img/s, %.1fs%s",
                 epoch + 1, epochs, loss_sum / ep_steps, double(correct) / seen,
                 has_val ? fmt(" | val loss %.4f acc %.4f", vm.loss, vm.top1).c_str() : "", em.loss, em.top1,
                 B * ep_steps / std::max(1e-9, ep_compute), ep_wall, reduced ? " | lr reduced" : ""));
    save_checkpoint(epoch + 1);
  }

  // ---------------------------------------------------------------- SWA: averaged weights, fresh BN statistics
  json swa_info;
  if (swa_n > 0 && !stopped_early) {
    auto s0 = clk::now();
    for (size_t i = 0; i < params.size(); ++i) {
      params[i]->value.copy_from(swa_avg[i]);
      ++params[i]->version;
    }
    // The averaged weights never saw the running statistics of any one of them: re-estimate them as the
    // cumulative average over one pass of the (augmented) training set, as torch.optim.swa_utils.update_bn.
    int64_t bn_batches = 0;
    if (!buffers.empty()) {
      loader.start_epoch(epochs);
      while (loader.next(batch)) {
        for (int lw = 0; lw < local_workers; ++lw) {
          load_shard(rank * local_workers + lw, x);
          nn::ForwardContext ctx{true, splitmix64(seed ^ 0x5ea5ea5eull ^ static_cast<uint64_t>(bn_batches))};
          ctx.bn_momentum = 1.f / static_cast<float>(bn_batches + 1);
          model.forward(x, ctx);
          ++bn_batches;
        }
      }
    }
    swa_info = {{"epochs_averaged", swa_n},
                {"swa_lr", cfg.f("swa_lr")},
                {"last_epoch_test_accuracy", epochs_log.back()["test_accuracy"]},
                {"bn_update_batches", bn_batches},
                {"bn_update_s", std::chrono::duration<double>(clk::now() - s0).count()}};
    log.line(fmt("[train] SWA: averaged the weights of %d epochs, re-estimated batch-norm statistics on %lld batches",
                 swa_n, (long long)bn_batches));
  }

  // ---------------------------------------------------------------- results
  EvalMetrics final_m = evaluate(model, ds.test, norm, static_cast<int>(cfg.i("eval_batch")), 0.f);
  data::DataFiles files = data::data_files(ds);  // paths relative to files.root, not this machine's
  json data_j{{"dataset", train_ds.name},
              {"train_size", train_ds.size()},
              {"test_size", ds.test.size()},
              {"root", files.root},
              {"val_split", val_split},
              {"input_jpeg", input_jpeg},
              {"files", json::array()}};
  for (auto& f : files.files) data_j["files"].push_back({{"path", f.path}, {"sha256", f.sha256}, {"bytes", f.bytes}});
  json metrics = final_m.to_json(true);
  metrics["test_accuracy"] = final_m.top1;
  if (has_val) {
    EvalMetrics final_v = evaluate(model, val_ds, norm, static_cast<int>(cfg.i("eval_batch")), 0.f);
    metrics["val_accuracy"] = final_v.top1;
    metrics["val_loss"] = final_v.loss;
  }
  metrics["train_images_per_second"] = train_compute_s > 0 ? static_cast<double>(step) * B / train_compute_s : 0.0;
  if (step_ms.size() > 10) {
    std::vector<double> warm(step_ms.begin() + 5, step_ms.end());
    double sum = 0;
    for (double v : warm) sum += v;
    metrics["train_images_per_second"] = 1e3 * static_cast<double>(warm.size()) * B / sum;
    std::nth_element(warm.begin(), warm.begin() + static_cast<long>(warm.size() / 2), warm.end());
    metrics["train_step_ms_median"] = warm[warm.size() / 2];
    metrics["timed_steps"] = warm.size();
  }
  metrics["train_gflops_est"] =
      metrics["train_images_per_second"].get<double>() * 3.0 * 2.0 * static_cast<double>(model.macs_per_image()) / 1e9;
  metrics["params"] = model.num_params();
  metrics["macs_per_image"] = model.macs_per_image();
  metrics["steps"] = step;
  json results{{"kind", "train"},
               {"config", cfg.values()},
               {"model", {{"spec", spec}, {"summary", model.summary()}}},
               {"metrics", metrics},
               {"epochs", epochs_log},
               {"environment", io::environment_info()},
               {"data", data_j},
               {"timing",
                {{"wall_s", std::chrono::duration<double>(clk::now() - t_start).count()},
                 {"data_load_s", load_s},
                 {"train_compute_s", train_compute_s}}},
               {"completed", !stopped_early}};
  if (!approx_info.is_null()) results["approx"] = approx_info;
  if (!swa_info.is_null()) {
    swa_info["test_accuracy"] = final_m.top1;
    results["swa"] = swa_info;
  }
  if (exchange) {
    auto st = take_stats(*exchange, opts.comm);
    results["communication"] = st.total.to_json();
    results["communication"]["exchange"] = exchange->describe();
    results["communication"]["mode"] = opts.comm ? "mpi" : "in-process";
    // Simulated time of the whole run: per-worker compute (the slowest worker of each step, as if every worker
    // had its own cores) plus modelled communication at each bandwidth.
    json sim = json::object();
    for (double gbps : {1.0, 10.0, cfg.f("bandwidth_gbps")}) {
      comm::Network net = configured_net;
      net.bandwidth_bps = gbps * 1e9;
      const double comm_s = st.total.simulated_comm_s(net);
      sim[fmt("%gGbps", gbps)] = {
          {"worker_compute_s", worker_compute_s}, {"comm_s", comm_s}, {"total_s", worker_compute_s + comm_s}};
    }
    results["communication"]["simulated_time"] = sim;
  }
  results["time_to_accuracy"] = time_to_accuracy(epochs_log, cfg.f("target_accuracy"), cfg.f("bandwidth_gbps"));
  {  // what each worker really computed with
    json seen = json::array();
    for (auto& w : workers) seen.push_back(w->threads_seen);
    if (opts.comm && world_ranks > 1) {
      std::vector<uint8_t> mine(4);
      const int32_t t = workers[0]->threads_seen;
      std::memcpy(mine.data(), &t, 4);
      seen = json::array();
      for (auto& b : opts.comm->allgatherv(mine)) {
        int32_t v;
        std::memcpy(&v, b.data(), 4);
        seen.push_back(v);
      }
    }
    results["parallelism"] = {{"mode", opts.comm ? "mpi" : "in-process"},
                              {"workers", W},
                              {"threads_per_worker", threads},
                              {"threads_key", threads_key},
                              {"worker_threads_seen", seen},
                              {"concurrent_in_process_workers", concurrent_workers},
                              {"available_cores", util::available_cores()}};
  }
  if (writer) {
    nn::save_model(opts.out_dir + "/model.bin", model, {{"config", cfg.values()}, {"test_accuracy", final_m.top1}});
    io::write_file_atomic(opts.out_dir + "/results.json", results.dump(2) + "\n");
    log.line(
        fmt("[train] done: test accuracy %.4f, %.0f img/s; wrote %s/{results.json,model.bin,checkpoint.bin,train.log}",
            final_m.top1, metrics["train_images_per_second"].get<double>(), opts.out_dir.c_str()));
  }
  return results;
}

}  // namespace frugal::train
