#include "train/train_options.h"

#include "gradcomp/compressor.h"
#include "util/check.h"

namespace frugal::train {

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

namespace {

DataOptions parse_data(const io::Config& cfg) {
  DataOptions d;
  d.dataset = cfg.s("dataset");
  d.data_dir = cfg.s("data_dir");
  d.val_split = cfg.i("val_split");
  FRUGAL_CHECK(d.val_split >= -1, "config key 'val_split' must be -1 (auto) or a count of images >= 0, got ",
               d.val_split);
  d.input_jpeg_quality = static_cast<int>(cfg.i("input_jpeg_quality"));
  d.input_jpeg_train = cfg.b("input_jpeg_train");
  d.augment = parse_augment(cfg.s("augment"), static_cast<int>(cfg.i("crop_pad")), static_cast<int>(cfg.i("cutout")));
  d.batch = static_cast<int>(cfg.i("batch"));
  d.eval_batch = static_cast<int>(cfg.i("eval_batch"));
  FRUGAL_CHECK(d.eval_batch >= 1, "config key 'eval_batch' must be >= 1, got ", d.eval_batch);
  return d;
}

ModelOptions parse_model(const io::Config& cfg) {
  ModelOptions m;
  m.model = cfg.s("model");
  m.width = cfg.f("width");
  m.depth = static_cast<int>(cfg.i("depth"));
  m.init = cfg.s("init");
  return m;
}

LoopOptions parse_loop(const io::Config& cfg) {
  LoopOptions l;
  l.epochs = static_cast<int>(cfg.i("epochs"));
  FRUGAL_CHECK(l.epochs >= 1, "config key 'epochs' must be >= 1, got ", l.epochs);
  l.max_steps = cfg.i("max_steps");
  l.workers = static_cast<int>(cfg.i("workers"));
  FRUGAL_CHECK(l.workers >= 1, "config key 'workers' must be >= 1, got ", l.workers);
  l.threads = static_cast<int>(cfg.i("threads"));
  FRUGAL_CHECK(l.threads >= 0, "config key 'threads' must be >= 0 (0: automatic), got ", l.threads);
  l.seed = static_cast<uint64_t>(cfg.i("seed"));
  l.label_smoothing = static_cast<float>(cfg.f("label_smoothing"));
  l.distill_from = cfg.s("distill_from");
  l.distill_temperature = static_cast<float>(cfg.f("distill_temperature"));
  FRUGAL_CHECK(l.distill_temperature > 0, "config key 'distill_temperature' must be > 0, got ", l.distill_temperature);
  l.distill_weight = static_cast<float>(cfg.f("distill_weight"));
  FRUGAL_CHECK(l.distill_weight >= 0 && l.distill_weight <= 1, "config key 'distill_weight' must be in [0, 1], got ",
               l.distill_weight);
  l.swa_epochs = static_cast<int>(cfg.i("swa_epochs"));
  FRUGAL_CHECK(l.swa_epochs >= 0 && l.swa_epochs < l.epochs, "config key 'swa_epochs' = ", l.swa_epochs,
               " must be in [0, epochs = ", l.epochs, "): the schedule needs at least one epoch before averaging");
  FRUGAL_CHECK(l.swa_epochs == 0 || l.max_steps <= 0, "config key 'swa_epochs' cannot be combined with max_steps ",
               "(SWA averages whole epochs); set max_steps=-1");
  l.progress_s = cfg.f("progress_s");
  l.target_accuracy = cfg.f("target_accuracy");
  return l;
}

optim::OptimizerOptions parse_optimizer(const io::Config& cfg) {
  optim::OptimizerOptions o;
  o.kind = cfg.s("optimizer");
  o.momentum = static_cast<float>(cfg.f("momentum"));
  o.nesterov = cfg.b("nesterov");
  o.weight_decay = static_cast<float>(cfg.f("weight_decay"));
  o.decay_1d = cfg.b("decay_1d");
  o.lars = cfg.b("lars");
  o.lars_eta = static_cast<float>(cfg.f("lars_eta"));
  return o;
}

optim::ScheduleOptions parse_schedule(const io::Config& cfg) {
  optim::ScheduleOptions s;
  s.kind = cfg.s("schedule");
  s.lr = static_cast<float>(cfg.f("lr"));
  s.warmup_epochs = static_cast<float>(cfg.f("warmup_epochs"));
  s.step_epochs = static_cast<float>(cfg.f("step_epochs"));
  s.gamma = static_cast<float>(cfg.f("gamma"));
  s.plateau_patience = static_cast<int>(cfg.i("plateau_patience"));
  s.plateau_factor = static_cast<float>(cfg.f("plateau_factor"));
  s.swa_lr = static_cast<float>(cfg.f("swa_lr"));
  optim::Schedule probe(s, 1, 2);  // an unknown kind fails here, before any data
  return s;
}

gradcomp::ExchangeOptions parse_exchange(const io::Config& cfg, const optim::OptimizerOptions& oo) {
  gradcomp::ExchangeOptions e;
  e.compressor = cfg.s("compressor");
  e.dense_below = static_cast<size_t>(cfg.i("dense_below"));
  e.dense_1d = cfg.b("dense_1d");
  e.seed = static_cast<uint64_t>(cfg.i("seed"));
  e.warmup_epochs = static_cast<int>(cfg.i("compress_warmup_epochs"));
  e.momentum = oo.momentum;
  e.sample_every = cfg.i("error_sample_every");
  e.comm_pattern = cfg.s("comm_pattern");
  gradcomp::CompressorContext probe;  // a bad compressor spec fails here, before any data
  probe.shape = {64, 64};
  gradcomp::make_compressor(e.compressor, probe);
  if (e.comm_pattern != "auto") comm::parse_pattern(e.comm_pattern);
  return e;
}

}  // namespace

TrainSpec parse_train_spec(const io::Config& cfg) {
  TrainSpec t;
  t.config = cfg;
  t.data = parse_data(cfg);
  t.model = parse_model(cfg);
  t.loop = parse_loop(cfg);
  t.optimizer = parse_optimizer(cfg);
  t.schedule = parse_schedule(cfg);
  t.exchange = parse_exchange(cfg, t.optimizer);
  t.uses_exchange = t.loop.workers > 1 || t.exchange.compressor != "none";
  FRUGAL_CHECK(t.data.batch >= t.loop.workers && t.data.batch % t.loop.workers == 0, "config 'batch' = ",
               t.data.batch, " must be a positive multiple of workers = ", t.loop.workers);
  t.bandwidth_gbps = cfg.f("bandwidth_gbps");
  t.network.bandwidth_bps = t.bandwidth_gbps * 1e9;
  t.network.latency_s = cfg.f("latency_us") * 1e-6;
  FRUGAL_CHECK(t.network.bandwidth_bps > 0 && t.network.latency_s >= 0,
               "config keys 'bandwidth_gbps' must be > 0 and 'latency_us' >= 0");
  t.approx = approx_options(cfg);
  return t;
}

}  // namespace frugal::train
