#include "modelcomp/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

#include "data/dataset.h"
#include "data/split.h"
#include "data/transforms.h"
#include "io/config.h"
#include "io/environment.h"
#include "io/files.h"
#include "io/tensor_file.h"
#include "modelcomp/channel_prune.h"
#include "modelcomp/deep_compression.h"
#include "modelcomp/deploy_net.h"
#include "modelcomp/kmeans.h"
#include "modelcomp/lowrank_model.h"
#include "modelcomp/packed.h"
#include "modelcomp/prune.h"
#include "modelcomp/sensitivity.h"
#include "modelcomp/sparse.h"
#include "nn/model_io.h"
#include "train/evaluate.h"
#include "train/trainer.h"
#include "util/check.h"

namespace frugal::modelcomp {

using json = nlohmann::json;

namespace {

/// What prune / share did to one compressible weight tensor. Cluster ids follow WeightConstraint: 0 is the
/// zero of pruned weights, 1.. the shared values (centroids[id - 1]).
struct TensorCode {
  std::vector<uint8_t> keep;        ///< empty: not pruned
  std::vector<uint32_t> cluster;    ///< empty: not shared
  std::vector<float> centroids;     ///< shared values, ascending
  int bits = 32;                    ///< bits of a shared value index
  int index_bits = 0;               ///< relative-index field width when pruned
};

/// The data every stage uses, loaded once.
struct Data {
  std::string dataset;
  data::Dataset train;  ///< training images minus the validation split
  data::Dataset val, test;
  data::Normalization norm;
  json split;           ///< compress.json's validation-split record
};

/// The model being compressed and what the stages did to it.
struct State {
  std::unique_ptr<nn::Model> model;           ///< fp32, at its current structure
  json meta;                                  ///< the source file's metadata without its spec
  std::map<std::string, TensorCode> codes;    ///< pruned / shared tensors by name
  std::vector<PackedTensor> int8_records;     ///< after int8: one per conv / linear weight
  bool structured = false;                    ///< channels / lowrank changed the layers
  json layer_log = json::object();            ///< per-stage details (ranks, kept channels)
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// The conv / linear weights prune and share touch (deep_compression.h's rule).
std::vector<nn::Param*> compressible_params(nn::Model& m, size_t min_numel) {
  DeepCompressionOptions o;
  o.min_numel = min_numel;
  std::vector<nn::Param*> out;
  for (nn::Param* p : m.params())
    if (compressible(p->value, o)) out.push_back(p);
  return out;
}

/// Per-tensor levels of a targets file (sensitivity.h's format, written by --sensitivity M --budget PP) for
/// `method`; a tensor at the method's untouched level (sparsity 0, 32 bits) is left out.
std::map<std::string, double> read_targets(const std::string& path, SensitivityMethod method) {
  json j;
  try {
    j = json::parse(io::read_file(path));
  } catch (const json::exception& e) {
    FRUGAL_FAIL("targets file '", path, "' is not JSON: ", e.what());
  }
  const PerLayerTargets t = parse_targets_json(j, path);
  FRUGAL_CHECK(t.method == method, "targets file '", path, "' holds ", sensitivity_method_name(t.method),
               " targets, but this stage needs ", sensitivity_method_name(method), " targets");
  std::map<std::string, double> out;
  for (const auto& [name, level] : t.levels)
    if (level != untouched_level(method)) out[name] = level;
  return out;
}

/// The sparsity each compressible tensor gets from a prune / gradual stage; tensors a targets file does not name
/// are absent. Names in the file that are not compressible tensors of the model are an error.
std::map<std::string, double> sparsity_targets(const Stage& s, nn::Model& m, size_t min_numel) {
  std::map<std::string, double> out;
  const auto params = compressible_params(m, min_numel);
  if (s.targets_file.empty()) {
    for (nn::Param* p : params) out[p->name] = s.amount;
    return out;
  }
  for (const auto& [name, v] : read_targets(s.targets_file, SensitivityMethod::prune)) {
    const bool known = std::any_of(params.begin(), params.end(), [&](nn::Param* p) { return p->name == name; });
    FRUGAL_CHECK(known, "targets file '", s.targets_file, "' names '", name,
                 "', which is not a compressible weight tensor of this model (conv / linear, >= min_numel elements)");
    FRUGAL_CHECK(v >= 0 && v < 1, "targets file '", s.targets_file, "': sparsity of '", name, "' must be in [0, 1), got ",
                 v);
    out[name] = v;
  }
  return out;
}

std::vector<std::pair<std::string, WeightConstraint>> constraints_of(const State& st) {
  std::vector<std::pair<std::string, WeightConstraint>> out;
  for (const auto& [name, c] : st.codes) {
    WeightConstraint w;
    if (!c.cluster.empty()) {
      w.cluster = c.cluster;
      w.clusters = uint32_t(c.centroids.size() + 1);
    } else {
      w.keep = c.keep;
    }
    out.emplace_back(name, std::move(w));
  }
  return out;
}

void apply_constraints(State& st) {
  const auto cons = constraints_of(st);
  for (nn::Param* p : st.model->params())
    for (const auto& [name, c] : cons)
      if (name == p->name) apply_constraint(c, p->value.data(), size_t(p->value.size()));
}

/// The stored entries (nonzeros plus fillers) of a pruned tensor's relative indices.
size_t stored_entries(const std::vector<uint8_t>& keep, int index_bits) {
  std::vector<uint32_t> pos;
  for (size_t i = 0; i < keep.size(); ++i)
    if (keep[i]) pos.push_back(uint32_t(i));
  return relative_indices(pos, index_bits).codes.size();
}

/// The packed records of the current state: int8 records, sparse (pruned + shared), shared, sparse_f32 (pruned),
/// or dense, per tensor.
PackedModel pack_state(State& st) {
  PackedModel pm;
  pm.meta = st.meta;
  pm.meta["kind"] = "packed-model";
  pm.meta["spec"] = st.model->spec();
  io::TensorFile tensors;
  nn::add_model_tensors(*st.model, tensors);
  for (const auto& [name, t] : tensors.tensors) {
    PackedTensor p;
    p.name = name;
    p.dims = t.dims();
    auto rec = std::find_if(st.int8_records.begin(), st.int8_records.end(), [&](auto& r) { return r.name == name; });
    auto code = st.codes.find(name);
    if (rec != st.int8_records.end()) {
      p = *rec;
    } else if (code != st.codes.end() && !code->second.cluster.empty()) {
      const TensorCode& c = code->second;
      p.encoding = c.keep.empty() ? Encoding::shared : Encoding::sparse;
      p.index_bits = c.index_bits;
      // the shared values as they are now (fine-tuning moves each cluster's members together, so every member
      // holds its cluster's value): the first member's weight; a cluster without members keeps its centroid
      p.centroids = {0.0f};
      p.centroids.insert(p.centroids.end(), c.centroids.begin(), c.centroids.end());
      std::vector<uint8_t> seen(p.centroids.size(), 0);
      for (size_t i = 0; i < c.cluster.size(); ++i)
        if (c.cluster[i] != 0 && !seen[c.cluster[i]]) {
          seen[c.cluster[i]] = 1;
          p.centroids[c.cluster[i]] = t.data()[i];
        }
      p.codes = c.cluster;
    } else if (code != st.codes.end()) {
      p.encoding = Encoding::sparse_f32;
      p.index_bits = code->second.index_bits;
      p.dense.assign(t.data(), t.data() + t.size());
    } else {
      p.dense.assign(t.data(), t.data() + t.size());
    }
    pm.tensors.push_back(std::move(p));
  }
  return pm;
}

/// Bytes of the weights stored with fixed-width fields (Deep Compression's accounting before Huffman coding):
/// dense 32 bits a value; pruned: (index bits + value bits) per stored entry; shared: the index bits; int8: 8 bits
/// a weight; codebooks and per-channel scales at 4 bytes a value.
double fixed_width_bytes(State& st) {
  double bits = 0;
  io::TensorFile tensors;
  nn::add_model_tensors(*st.model, tensors);
  for (const auto& [name, t] : tensors.tensors) {
    const double n = double(t.size());
    auto rec = std::find_if(st.int8_records.begin(), st.int8_records.end(), [&](auto& r) { return r.name == name; });
    auto code = st.codes.find(name);
    if (rec != st.int8_records.end()) {
      bits += 8 * n + 32.0 * double(t.dims()[0]);
    } else if (code != st.codes.end()) {
      const TensorCode& c = code->second;
      const int value_bits = c.cluster.empty() ? 32 : c.bits;
      if (c.keep.empty()) {
        bits += n * value_bits;
      } else {
        bits += double(stored_entries(c.keep, c.index_bits)) * (c.index_bits + value_bits);
      }
      bits += 32.0 * double(c.centroids.size());
    } else {
      bits += 32 * n;
    }
  }
  return bits / 8;
}

int64_t nonzero_weights(nn::Model& m) {
  int64_t nz = 0;
  for (nn::Param* p : m.params())
    for (int64_t i = 0; i < p->value.size(); ++i) nz += p->value.data()[i] != 0.0f;
  return nz;
}

class Pipeline {
 public:
  explicit Pipeline(const PipelineOptions& o) : o_(o) {}
  json run();

 private:
  void log(const std::string& line) const {
    if (o_.progress) {
      o_.progress(line);
    } else {
      std::fprintf(stderr, "[compress] %s\n", line.c_str());
    }
  }
  void load();
  json measure(const std::string& stage, double seconds);
  void run_stage(const Stage& s, size_t index);
  void prune(const Stage& s);
  void gradual(const Stage& s, size_t index);
  void finetune(int epochs, double lr, const std::string& dir,
                std::function<void(const std::vector<nn::Param*>&)> extra = nullptr);
  void share(const Stage& s);
  void channels(const Stage& s);
  void lowrank(const Stage& s);
  void int8();
  json finish();

  PipelineOptions o_;
  State st_;
  Data d_;
  json source_meta_;
  std::unique_ptr<nn::Model> source_;
  json stages_ = json::array();
};

void Pipeline::load() {
  nn::LoadedModel src = load_model_file(o_.model_path);
  FRUGAL_CHECK(!src.model->inference_net(), "compress: '", o_.model_path,
               "' is an int8 deployment; compress its fp32 source model.bin");
  source_meta_ = src.meta;
  st_.meta = src.meta;
  st_.meta.erase("spec");
  st_.model = std::make_unique<nn::Model>(src.model->spec(), 0);
  io::TensorFile t;
  nn::add_model_tensors(*src.model, t);
  io::TensorFile copy;  // a deep copy: Tensor copies share storage, and the source is measured at the end
  for (const auto& [name, v] : t.tensors) {
    Tensor c(v.dims());
    c.copy_from(v);
    copy.tensors.emplace_back(name, std::move(c));
  }
  nn::load_model_tensors(*st_.model, copy, o_.model_path);
  source_ = std::move(src.model);

  const json cfg = source_meta_.value("config", json::object());
  d_.dataset = !o_.dataset.empty() ? o_.dataset : cfg.value("dataset", std::string());
  FRUGAL_CHECK(!d_.dataset.empty(), "compress: the model file '", o_.model_path,
               "' does not name its dataset: give --dataset (or the config key dataset)");
  data::DataSplit ds = data::load_dataset(d_.dataset, data::data_roots(o_.data_dir));
  d_.norm = data::default_normalization(ds.test.name);
  d_.test = std::move(ds.test);
  // what the trainer held out: its val_split, with -1 (auto) resolved as the trainer does
  const int64_t trained_with = std::max<int64_t>(
      0, train::resolve_val_split(cfg.value("val_split", int64_t(0)), cfg.value("schedule", std::string()) == "plateau",
                                  ds.train.name));
  int64_t n = o_.val_split;
  bool seen = false;
  if (n < 0) {
    n = trained_with > 0 ? trained_with : int64_t(data::default_unheld_val_images(ds.train.size()));
    seen = trained_with <= 0;
  } else {
    seen = n > 0 && n != trained_with;
  }
  FRUGAL_CHECK(n < int64_t(ds.train.size()), "compress: val_split ", n, " is not smaller than the training set (",
               ds.train.size(), " images)");
  if (n > 0) {
    data::HoldoutSplit h = data::hold_out_validation(ds.train, size_t(n));
    d_.train = std::move(h.train);
    d_.val = std::move(h.val);
    d_.split = {{"size", n}, {"seed", data::kValSplitSeed}, {"stratified", true},
                {"indices_sha256", h.val_indices_sha256}, {"model_trained_with_val_split", trained_with},
                {"model_has_seen_these_images", seen}};
    if (seen)
      log("note: the model was trained with val_split " + std::to_string(trained_with) + ", so it has seen these " +
          std::to_string(n) + " validation images; train with val_split=" + std::to_string(n) +
          " to choose recipes on images it never saw");
  } else {
    d_.train = std::move(ds.train);
    d_.split = {{"size", 0}};
  }
}

json Pipeline::measure(const std::string& stage, double seconds) {
  const PackedModel pm = pack_state(st_);
  const PackedBytes bytes = encode_packed(pm);
  json m{{"stage", stage},
         {"seconds", seconds},
         {"params", st_.model->num_params()},
         {"macs_per_image", st_.model->macs_per_image()},
         {"nonzero_weights", nonzero_weights(*st_.model)},
         {"weights_bytes_fixed_width", fixed_width_bytes(st_)},
         {"packed_bytes", bytes.file.size()}};
  if (o_.eval) {
    nn::Model& net = *st_.model;
    if (d_.val.size() > 0) m["val_accuracy"] = train::evaluate(net, d_.val, d_.norm, o_.eval_batch, 0.f).top1;
    m["test_accuracy"] = train::evaluate(net, d_.test, d_.norm, o_.eval_batch, 0.f).top1;
  }
  auto pct = [&](const char* key) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f %%", 100 * m[key].get<double>());
    return std::string(b);
  };
  std::string line = stage + ": params " + std::to_string(m["params"].get<int64_t>()) + ", nonzero " +
                     std::to_string(m["nonzero_weights"].get<int64_t>()) + ", MACs " +
                     std::to_string(m["macs_per_image"].get<int64_t>()) + ", packed " +
                     std::to_string(bytes.file.size()) + " B";
  if (m.contains("val_accuracy")) line += ", val " + pct("val_accuracy");
  if (m.contains("test_accuracy")) line += ", test " + pct("test_accuracy");
  log(line);
  return m;
}

void Pipeline::prune(const Stage& s) {
  const auto targets = sparsity_targets(s, *st_.model, o_.min_numel);
  std::map<std::string, std::vector<float>> saliency;
  if (s.criterion == "taylor") {
    log("Taylor saliency |w dL/dw| over " + std::to_string(o_.saliency_batches) + " training batches of 128");
    saliency = taylor_saliency(*st_.model, d_.train, d_.norm, o_.saliency_batches, 128);
  }
  float global_threshold = 0.f;
  if (s.criterion == "global") {
    std::vector<std::pair<const float*, size_t>> layers;
    for (nn::Param* p : compressible_params(*st_.model, o_.min_numel))
      layers.emplace_back(p->value.data(), size_t(p->value.size()));
    global_threshold = global_magnitude_threshold(layers, s.amount);
  }
  for (nn::Param* p : compressible_params(*st_.model, o_.min_numel)) {
    auto t = targets.find(p->name);
    if (t == targets.end()) continue;
    const size_t n = size_t(p->value.size());
    const float* w = p->value.data();
    std::vector<uint8_t> keep;
    if (s.criterion == "global") {
      keep.resize(n);
      for (size_t i = 0; i < n; ++i) keep[i] = std::fabs(w[i]) >= global_threshold;
    } else if (s.criterion == "taylor") {
      keep = magnitude_mask(saliency.at(p->name).data(), n, t->second);
    } else {
      keep = magnitude_mask(w, n, t->second);
    }
    TensorCode& c = st_.codes[p->name];
    if (!c.keep.empty())  // pruning twice: the union of the pruned weights
      for (size_t i = 0; i < n; ++i) keep[i] = keep[i] && c.keep[i];
    c.keep = std::move(keep);
    c.index_bits = p->value.dims().size() == 4 ? o_.conv_index_bits : o_.fc_index_bits;
  }
  apply_constraints(st_);
}

void Pipeline::finetune(int epochs, double lr, const std::string& dir,
                        std::function<void(const std::vector<nn::Param*>&)> extra) {
  io::make_dirs(dir);
  const std::string init = dir + "/init.bin", spec = dir + "/spec.json";
  json extra_meta = st_.meta;
  nn::save_model(init, *st_.model, extra_meta);
  io::write_file_atomic(spec, st_.model->spec().dump(2) + "\n");
  io::Config cfg;
  if (st_.meta.contains("config")) cfg.merge(st_.meta["config"], init);
  for (const char* kv : {"workers=1", "compressor=none", "max_steps=-1", "swa_epochs=0", "schedule=cosine",
                         "warmup_epochs=0", "target_accuracy=-1"})
    cfg.set(kv);
  cfg.set("init=" + init);
  cfg.set("model=" + spec);
  cfg.set("epochs=" + std::to_string(epochs));
  cfg.set("lr=" + std::to_string(lr));
  cfg.set("dataset=" + d_.dataset);
  cfg.set("val_split=" + std::to_string(d_.split.value("size", int64_t(0))));
  if (!o_.data_dir.empty()) cfg.set("data_dir=" + o_.data_dir);
  if (o_.distill) cfg.set("distill_from=" + o_.model_path);
  for (const std::string& kv : o_.finetune_set) cfg.set(kv);
  train::TrainOptions to;
  to.out_dir = dir;
  to.progress = [this](const std::string& l) { log("  " + l); };
  const auto cons = constraints_of(st_);
  to.after_update = [&](const std::vector<nn::Param*>& params) {
    if (extra) extra(params);
    for (auto* p : params)
      for (const auto& [name, c] : cons)
        if (name == p->name) apply_constraint(c, p->value.data(), size_t(p->value.size()));
  };
  train::run_training(cfg, to);
  nn::load_model_tensors(*st_.model, io::load_tensor_file(dir + "/model.bin"), dir + "/model.bin");
}

void Pipeline::gradual(const Stage& s, size_t index) {
  const auto targets = sparsity_targets(s, *st_.model, o_.min_numel);
  const json cfg = st_.meta.value("config", json::object());
  const int64_t batch = cfg.value("batch", int64_t(128));
  const int64_t steps = int64_t(s.epochs) * int64_t((d_.train.size() + size_t(batch) - 1) / size_t(batch));
  const int64_t dt = std::max<int64_t>(1, o_.prune_every);
  const int64_t updates = std::max<int64_t>(1, (3 * steps / 4) / dt);
  log("gradual magnitude pruning over " + std::to_string(steps) + " steps: masks every " + std::to_string(dt) +
      " steps, final sparsity after " + std::to_string(updates * dt));
  int64_t step = -1;  // after_update runs once before the first step
  std::map<std::string, std::vector<uint8_t>> masks;
  auto hook = [&](const std::vector<nn::Param*>& params) {
    if (step % dt == 0 || step < 0) {
      for (nn::Param* p : params) {
        auto t = targets.find(p->name);
        if (t == targets.end()) continue;
        const double sp = gradual_sparsity(0.0, t->second, std::max<int64_t>(step, 0), 0, updates, dt);
        masks[p->name] = magnitude_mask(p->value.data(), size_t(p->value.size()), sp);
      }
    }
    ++step;
    for (nn::Param* p : params) {
      auto m = masks.find(p->name);
      if (m != masks.end())
        for (size_t i = 0; i < m->second.size(); ++i)
          if (!m->second[i]) p->value.data()[i] = 0.0f;
    }
  };
  const double lr = s.lr > 0 ? s.lr : o_.finetune_lr;
  finetune(s.epochs, lr, o_.out_dir + "/stage" + std::to_string(index) + "_gradual", hook);
  // the final masks: exactly the target sparsity of the trained weights (held at zero from then on)
  for (nn::Param* p : st_.model->params()) {
    auto t = targets.find(p->name);
    if (t == targets.end()) continue;
    TensorCode& c = st_.codes[p->name];
    std::vector<uint8_t> keep = magnitude_mask(p->value.data(), size_t(p->value.size()), t->second);
    if (!c.keep.empty())
      for (size_t i = 0; i < keep.size(); ++i) keep[i] = keep[i] && c.keep[i];
    c.keep = std::move(keep);
    c.index_bits = p->value.dims().size() == 4 ? o_.conv_index_bits : o_.fc_index_bits;
  }
  apply_constraints(st_);
}

void Pipeline::share(const Stage& s) {
  std::map<std::string, double> file_bits;
  if (!s.targets_file.empty()) file_bits = read_targets(s.targets_file, SensitivityMethod::bits);
  for (nn::Param* p : compressible_params(*st_.model, o_.min_numel)) {
    int bits = 0;
    if (!s.targets_file.empty()) {
      auto b = file_bits.find(p->name);
      if (b == file_bits.end()) continue;
      FRUGAL_CHECK(b->second == std::floor(b->second) && b->second >= 1 && b->second <= 16, "targets file '",
                   s.targets_file, "': bits of '", p->name, "' must be a whole number in [1, 16], got ", b->second);
      bits = int(b->second);
    } else {
      bits = p->value.dims().size() == 4 && s.conv_bits > 0 ? s.conv_bits : s.bits;
    }
    TensorCode& c = st_.codes[p->name];
    const size_t n = size_t(p->value.size());
    const float* w = p->value.data();
    std::vector<float> kept;
    for (size_t i = 0; i < n; ++i)
      if (c.keep.empty() || c.keep[i]) kept.push_back(w[i]);
    c.bits = bits;
    c.cluster.assign(n, 0);
    c.centroids.clear();
    if (kept.empty()) continue;
    const int k = std::max(1, std::min<int>((1 << bits) - 1, int(kept.size())));
    const Codebook cb = kmeans_1d(kept.data(), kept.size(), k);
    c.centroids = cb.centroids;
    size_t j = 0;
    for (size_t i = 0; i < n; ++i)
      if (c.keep.empty() || c.keep[i]) c.cluster[i] = cb.assignment[j++] + 1;
  }
  apply_constraints(st_);
  // a pruned tensor's kept weight whose centroid is exactly 0.0 reads as pruned: harmless, its value is 0 either way
}

void Pipeline::channels(const Stage& s) {
  ChannelScores scores;
  if (s.criterion == "taylor") {
    log("Taylor saliency |w dL/dw| over " + std::to_string(o_.saliency_batches) + " training batches of 128");
    scores = taylor_channel_scores(*st_.model, taylor_saliency(*st_.model, d_.train, d_.norm, o_.saliency_batches, 128));
  } else {
    scores = magnitude_channel_scores(*st_.model);
  }
  const ChannelKeep keep = select_channels(scores, s.amount);
  st_.model = prune_channels(*st_.model, keep);
  st_.structured = true;
  json layers = json::array();
  for (const auto& [name, k] : keep)
    layers.push_back({{"name", name}, {"channels_before", scores.at(name).size()}, {"channels_kept", k.size()},
                      {"kept", k}});
  st_.layer_log[s.spec] = layers;
}

void Pipeline::lowrank(const Stage& s) {
  LowRankOptions lo;
  lo.energy = s.amount;
  lo.max_rank_fraction = o_.lowrank_max_rank_fraction;
  lo.layers = o_.lowrank_layers;
  lo.min_numel = o_.lowrank_min_numel;
  lo.conv_split = o_.lowrank_conv_split;
  check_lowrank_options(lo);
  FactorizedModel f = factorize_model(*st_.model, lo);
  st_.model = std::move(f.model);
  st_.structured = true;
  json layers = json::array();
  for (const LowRankLayer& l : f.layers) {
    json j{{"name", l.name},         {"kind", l.kind},
           {"dims", l.dims},         {"matrix", {l.rows, l.cols}},
           {"factorized", l.factorized}, {"rank", l.rank},
           {"rank_max", l.rank_max}, {"energy_kept", l.energy_kept},
           {"params_before", l.params_before}, {"params_after", l.params_after},
           {"macs_before", l.macs_before},     {"macs_after", l.macs_after}};
    if (!l.split.empty()) j["split"] = l.split;
    if (!l.factorized) j["reason"] = l.reason;
    if (!l.factor_names.empty()) j["factors"] = l.factor_names;
    layers.push_back(std::move(j));
  }
  st_.layer_log[s.spec] = layers;
}

void Pipeline::int8() {
  log("int8: fold batch norms, calibrate on " + std::to_string(o_.calib_images) + " training images, quantize");
  st_.model = fold_batchnorm(*st_.model);
  std::vector<Tensor> calib;
  std::vector<int32_t> y;
  const size_t total = std::min<size_t>(size_t(o_.calib_images), d_.train.size());
  for (size_t b = 0; b < total; b += 256) {
    Tensor x;
    train::make_batch(d_.train, d_.norm, b, std::min<size_t>(256, total - b), x, y);
    calib.push_back(std::move(x));
  }
  st_.int8_records = quantize_int8(*st_.model, calib);
  std::vector<std::pair<std::string, Int8Weights>> w;
  for (const PackedTensor& r : st_.int8_records) w.emplace_back(r.name, r.int8);
  auto net = std::make_shared<DeployNet>(*st_.model, w, o_.out_dir + "/model.packed");
  st_.model->set_inference_net(net);
}

void Pipeline::run_stage(const Stage& s, size_t index) {
  const std::string dir = o_.out_dir + "/stage" + std::to_string(index) + "_" + stage_kind_name(s.kind);
  switch (s.kind) {
    case StageKind::channels: return channels(s);
    case StageKind::lowrank: return lowrank(s);
    case StageKind::prune: return prune(s);
    case StageKind::gradual: return gradual(s, index);
    case StageKind::finetune: return finetune(s.epochs, s.lr > 0 ? s.lr : o_.finetune_lr, dir);
    case StageKind::share: return share(s);
    case StageKind::huffman: return;  // pack_state always entropy-codes pruned and shared tensors
    case StageKind::int8: return int8();
  }
}

/// Interleaved speed of two models: medians of three rounds each (other processes share the machine).
std::pair<train::SpeedMetrics, train::SpeedMetrics> interleaved_speed(nn::Model& a, nn::Model& b) {
  std::vector<double> la, lb, ta, tb;
  for (int r = 0; r < 3; ++r) {
    const train::SpeedMetrics x = train::measure_speed(a), y = train::measure_speed(b);
    la.push_back(x.latency_b1_ms_median);
    ta.push_back(x.throughput_img_s);
    lb.push_back(y.latency_b1_ms_median);
    tb.push_back(y.throughput_img_s);
  }
  train::SpeedMetrics sa, sb;
  sa.latency_b1_ms_median = train::percentile(la, 0.5);
  sa.throughput_img_s = train::percentile(ta, 0.5);
  sb.latency_b1_ms_median = train::percentile(lb, 0.5);
  sb.throughput_img_s = train::percentile(tb, 0.5);
  return {sa, sb};
}

json Pipeline::finish() {
  PackedModel pm = pack_state(st_);
  pm.meta["compress"] = {{"recipe", o_.recipe}, {"source", o_.model_path}};
  const PackedBytes bytes = encode_packed(pm);
  io::make_dirs(o_.out_dir);
  const std::string packed_path = o_.out_dir + "/model.packed";
  io::write_file_atomic(packed_path, bytes.file);

  const size_t fp32_bytes = size_t(source_->num_params()) * 4;
  json layers = json::array();
  for (size_t i = 0; i < pm.tensors.size(); ++i) {
    const PackedTensor& t = pm.tensors[i];
    json l{{"name", t.name}, {"dims", t.dims}, {"encoding", encoding_name(t.encoding)},
           {"packed_bytes", bytes.record_bytes[i]}};
    size_t n = 1;
    for (int64_t d : t.dims) n *= size_t(d);
    l["fp32_bytes"] = 4 * n;
    auto c = st_.codes.find(t.name);
    if (c != st_.codes.end()) {
      size_t zeros = 0;
      if (!c->second.keep.empty())
        for (uint8_t k : c->second.keep) zeros += !k;
      l["sparsity"] = double(zeros) / double(n);
      l["bits"] = c->second.cluster.empty() ? 32 : c->second.bits;
      if (!c->second.keep.empty()) l["index_bits"] = c->second.index_bits;
    } else {
      l["sparsity"] = 0.0;
      l["bits"] = t.encoding == Encoding::int8 ? 8 : 32;
    }
    layers.push_back(l);
  }
  nn::LoadedModel after = load_model_file(packed_path);
  json j{{"kind", "compress"},
         {"model_file", o_.model_path},
         {"packed_file", packed_path},
         {"recipe", o_.recipe},
         {"stages", stages_},
         {"layers", layers},
         {"layer_details", st_.layer_log},
         {"dataset", d_.dataset},
         {"val_split", d_.split},
         {"weights_fp32_bytes", fp32_bytes},
         {"packed_file_bytes", bytes.file.size()},
         {"ratio_vs_fp32", double(fp32_bytes) / double(bytes.file.size())},
         {"params_before", source_->num_params()},
         {"params_after", after.model->num_params()},
         {"macs_before", source_->macs_per_image()},
         {"macs_after", after.model->macs_per_image()}};
  if (st_.int8_records.empty()) {  // the decoded file holds exactly the weights the last stage measured
    double diff = 0;
    io::TensorFile now, decoded;
    nn::add_model_tensors(*st_.model, now);
    nn::add_model_tensors(*after.model, decoded);
    for (size_t i = 0; i < now.tensors.size(); ++i) {
      const Tensor& a = now.tensors[i].second;
      const Tensor& b = decoded.tensors[i].second;
      FRUGAL_CHECK(a.size() == b.size(), "compress: the packed file's tensor '", now.tensors[i].first,
                   "' has another size than the compressed model's (internal error)");
      for (int64_t k = 0; k < a.size(); ++k) diff = std::max(diff, double(std::fabs(a.data()[k] - b.data()[k])));
    }
    j["packed_max_abs_diff"] = diff;
  }
  // both as `frugal evaluate` runs them: an fp32 model as one fused oneDNN graph where it can (deploy_net.h)
  json inference;
  for (auto [key, model] : {std::pair<const char*, nn::Model*>{"before", source_.get()}, {"after", after.model.get()}}) {
    const std::string why = inference_path(*model) == "int8" ? "" : install_fused_f32(*model);
    if (auto* n = dynamic_cast<DeployNet*>(model->inference_net()))
      n->set_conv_choice(parse_conv_choice(o_.conv_impl, "compress: conv_impl"));
    inference[key] = {{"path", inference_path(*model)}, {"conv_impl", o_.conv_impl}};
    if (!why.empty()) inference[key]["why_layers"] = why;
  }
  j["inference"] = inference;
  if (o_.eval) {  // the packed file as evaluate reads it, against the untouched source, same data, same code
    const train::EvalMetrics tb = train::evaluate(*source_, d_.test, d_.norm, o_.eval_batch, 0.f);
    const train::EvalMetrics ta = train::evaluate(*after.model, d_.test, d_.norm, o_.eval_batch, 0.f);
    j["test_accuracy_before"] = tb.top1;
    j["test_accuracy_after"] = ta.top1;
    if (d_.val.size() > 0) {
      j["val_accuracy_before"] = train::evaluate(*source_, d_.val, d_.norm, o_.eval_batch, 0.f).top1;
      j["val_accuracy_after"] = train::evaluate(*after.model, d_.val, d_.norm, o_.eval_batch, 0.f).top1;
    }
  }
  if (o_.speed) {
    log("speed: source and packed model, 3 interleaved rounds");
    const auto [sb, sa] = interleaved_speed(*source_, *after.model);
    j["speed_before"] = sb.to_json();
    j["speed_after"] = sa.to_json();
  }
  for (auto [key, model] : {std::pair<const char*, nn::Model*>{"before", source_.get()}, {"after", after.model.get()}}) {
    auto* n = dynamic_cast<DeployNet*>(model->inference_net());
    if (!n) continue;
    if (!o_.eval && !o_.speed) train::evaluate(*model, d_.test, d_.norm, o_.eval_batch, 0.f);
    j["inference"][key]["implementations"] = n->implementations();  // what oneDNN dispatched
    j["inference"][key].update(n->batch1_report());  // the batch-1 latency's net (DeployNet RowBands)
    if (key == std::string("after") && n->precision() == DeployNet::Precision::int8)
      j["int8_implementations"] = n->implementations();
  }
  j["environment"] = io::environment_info();
  io::write_file_atomic(o_.out_dir + "/compress.json", j.dump(2) + "\n");
  return j;
}

json Pipeline::run() {
  const auto t0 = std::chrono::steady_clock::now();
  load();
  io::make_dirs(o_.out_dir);
  stages_.push_back(measure("source", seconds_since(t0)));
  for (size_t i = 0; i < o_.stages.size(); ++i) {
    const Stage& s = o_.stages[i];
    log("stage " + std::to_string(i + 1) + "/" + std::to_string(o_.stages.size()) + ": " + s.spec);
    const auto ts = std::chrono::steady_clock::now();
    run_stage(s, i + 1);
    json m = measure(s.spec, seconds_since(ts));
    if (st_.layer_log.contains(s.spec)) m["layers"] = st_.layer_log[s.spec];
    stages_.push_back(std::move(m));
  }
  return finish();
}

}  // namespace

json run_compress_pipeline(const PipelineOptions& o) {
  FRUGAL_CHECK(!o.stages.empty(), "compress: the recipe has no stages");
  Pipeline p(o);
  return p.run();
}

}  // namespace frugal::modelcomp
