// frugal compress --sensitivity: the CLI glue of modelcomp/sensitivity.h. Accuracy is measured on the validation
// split the model's training run held out (its config's val_split, drawn by data::split_holdout with
// data::kValSplitSeed exactly as the trainer draws it), never on the test set.
#include "compress_sensitivity.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/split.h"
#include "io/environment.h"
#include "io/files.h"
#include "modelcomp/deploy_net.h"
#include "modelcomp/sensitivity.h"
#include "sweep/plot.h"
#include "train/evaluate.h"
#include "train/trainer.h"
#include "util/check.h"

namespace frugal::app {

using json = nlohmann::json;

namespace {

/// The validation split: the images the model's training run held out (config val_split), or, for a model trained
/// without one, data::default_unheld_val_images (as compress's recipes hold out) drawn the same way (images that
/// model has seen in training).
struct ValidationSplit {
  data::Dataset val;
  json info;  ///< sensitivity.json's "validation"
  bool seen_in_training = false;
};

ValidationSplit validation_split(const data::Dataset& train, const json& meta) {
  const json cfg = meta.contains("config") ? meta["config"] : json::object();
  const int64_t asked = cfg.value("val_split", int64_t(-1));
  const bool plateau = cfg.value("schedule", std::string()) == "plateau";
  int64_t n = train::resolve_val_split(asked, plateau, train.name);
  FRUGAL_CHECK(n >= 0, "the model's config has val_split = ", asked, ": expected a number of images >= 0 or -1");
  ValidationSplit v;
  std::string source = "the model's config val_split = " + std::to_string(asked) +
                       (asked == -1 ? " (auto, resolved as the trainer does)" : "");
  if (n == 0) {
    n = static_cast<int64_t>(data::default_unheld_val_images(train.size()));
    v.seen_in_training = true;
    source = (meta.contains("config") ? "the model was trained without a validation split (val_split = " +
                                            std::to_string(asked) + ")"
                                      : std::string("the model file records no training config")) +
             ": the default " + std::to_string(n) + " images (10 %, at most 5000), which that model HAS SEEN in training";
  }
  FRUGAL_CHECK(n < static_cast<int64_t>(train.size()), "sensitivity: a validation split of ", n,
               " images needs a larger training set than dataset '", train.name, "' (", train.size(),
               " images); train the model with a smaller val_split");
  data::HoldoutSplit s = data::hold_out_validation(train, static_cast<size_t>(n));
  v.val = std::move(s.val);
  v.info = {{"size", n},
            {"seed", data::kValSplitSeed},
            {"stratified", true},
            {"from_train_size", train.size()},
            {"indices_sha256", s.val_indices_sha256},
            {"source", source},
            {"held_out_in_training", !v.seen_in_training}};
  return v;
}

/// A level as JSON: bit widths as integers, the other levels as numbers.
json level_json(modelcomp::SensitivityMethod m, double level) {
  if (m == modelcomp::SensitivityMethod::bits) return json(static_cast<int>(level));
  return json(level);
}

json table_json(const modelcomp::SensitivityTable& t) {
  json layers = json::array();
  for (size_t l = 0; l < t.layers.size(); ++l) {
    json drops = json::array();
    for (size_t i = 0; i < t.levels.size(); ++i) drops.push_back(t.drop_pp(l, i));
    int64_t numel = 1;
    for (int64_t d : t.layers[l].dims) numel *= d;
    layers.push_back({{"name", t.layers[l].name}, {"dims", t.layers[l].dims}, {"numel", numel},
                      {"accuracy", t.layers[l].accuracy}, {"drop_pp", drops}});
  }
  json levels = json::array();
  for (double v : t.levels) levels.push_back(level_json(t.method, v));
  return {{"method", modelcomp::sensitivity_method_name(t.method)},
          {"level_meaning", modelcomp::level_meaning(t.method)},
          {"levels", levels},
          {"baseline_accuracy", t.baseline},
          {"layers", layers}};
}

/// One curve per layer (validation accuracy % against the level), the untouched model's accuracy and, with a
/// budget, the accuracy the budget allows.
void save_plot(const modelcomp::SensitivityTable& t, double budget_pp, const std::string& title,
               const std::string& path) {
  sweep::Chart ch;
  ch.title = title;
  ch.x_label = modelcomp::level_meaning(t.method);
  ch.y_label = "validation accuracy %";
  ch.width = 1000;
  for (const auto& layer : t.layers) {
    sweep::Series s;
    s.label = layer.name;
    s.x = t.levels;
    for (double a : layer.accuracy) s.y.push_back(100 * a);
    s.lines = true;
    ch.series.push_back(std::move(s));
  }
  const auto [lo, hi] = std::minmax_element(t.levels.begin(), t.levels.end());
  auto flat = [&](const std::string& label, double y, bool dashed) {
    sweep::Series s;
    s.label = label;
    s.x = {*lo, *hi};
    s.y = {y, y};
    s.lines = true;
    s.markers = false;
    s.dashed = dashed;
    s.color = 7;  // grey
    ch.series.push_back(std::move(s));
  };
  flat("untouched", 100 * t.baseline, false);
  if (budget_pp >= 0) {
    char label[48];
    std::snprintf(label, sizeof label, "budget -%g pp", budget_pp);
    flat(label, 100 * t.baseline - budget_pp, true);
  }
  sweep::save_chart_png(ch, path);
}

}  // namespace

void add_sensitivity_options(CLI::App* c, SensitivityArgs& s) {
  CLI::Option* method = c->add_option("--sensitivity", s.method,
                "sensitivity analysis instead: per layer, the validation accuracy with only that layer pruned "
                "(prune: levels are sparsities), weight-shared (bits: 2^bits k-means centroids) or reduced to a rank "
                "fraction by truncated SVD (rank); writes sensitivity.json, sensitivity.md, sensitivity.png")
      ->check(CLI::IsMember({"prune", "bits", "rank"}));
  c->add_option("--levels", s.levels,
                "--sensitivity levels, comma-separated (default prune 0.5,...,0.98; bits 8,...,1; rank "
                "0.5,...,0.03125)")
      ->needs(method);
  c->add_option("--budget", s.budget_pp,
                "--sensitivity: also write targets.json, for each layer the most aggressive level whose validation "
                "accuracy drop is at most this many percentage points (a layer with none stays untouched)")
      ->check(CLI::Range(0.0, 100.0))
      ->needs(method);
}

void run_sensitivity(const SensitivityArgs& s, const SensitivityInputs& in) {
  const modelcomp::SensitivityMethod method = modelcomp::parse_sensitivity_method(s.method);
  const std::vector<double> levels = modelcomp::parse_levels(method, s.levels);
  nn::LoadedModel src = modelcomp::load_model_file(in.model);
  FRUGAL_CHECK(!src.model->inference_net(), "'", in.model,
               "' is an int8 deployment: run the sensitivity analysis on its fp32 source");
  const std::vector<std::string> layers = modelcomp::sensitivity_layers(*src.model, in.min_numel);
  FRUGAL_CHECK(!layers.empty(), "'", in.model, "' has no compressible layers (conv or linear weights with at least ",
               in.min_numel, " elements); lower --min-numel");
  std::string dataset = in.dataset;
  if (dataset.empty() && src.meta.contains("config")) dataset = src.meta["config"].value("dataset", "");
  FRUGAL_CHECK(!dataset.empty(), "--dataset is required (the model file does not name its dataset)");
  auto ds = data::load_dataset(dataset, data::data_roots(in.data_dir));
  const ValidationSplit v = validation_split(ds.train, src.meta);
  const data::Normalization norm = data::default_normalization(ds.train.name);  // the trainer's
  std::fprintf(stderr, "[sensitivity] %s: %zu layers x %zu levels (%s), on %lld validation images (%s)\n",
               s.method.c_str(), layers.size(), levels.size(), modelcomp::level_meaning(method).c_str(),
               static_cast<long long>(v.val.size()), v.info["source"].get<std::string>().c_str());
  if (v.seen_in_training)
    std::fprintf(stderr, "[sensitivity] WARNING: the model was trained on all %zu training images, so it has seen "
                 "these validation images: accuracies are optimistic (train with val_split=5000)\n", ds.train.size());
  const modelcomp::SensitivityTable t = modelcomp::analyze_sensitivity(
      *src.model, layers, method, levels,
      [&] { return train::evaluate(*src.model, v.val, norm, in.batch, 0.f).top1; },
      [](const std::string& line) { std::fprintf(stderr, "[sensitivity] %s\n", line.c_str()); });

  io::make_dirs(in.out);
  json j = table_json(t);
  j["kind"] = "sensitivity";
  j["model_file"] = in.model;
  j["dataset"] = dataset;
  j["split"] = "validation";
  j["validation"] = v.info;
  j["min_numel"] = in.min_numel;
  j["environment"] = io::environment_info();
  io::write_file_atomic(in.out + "/sensitivity.json", j.dump(2) + "\n");

  std::string md = "# Sensitivity: " + s.method + " (" + modelcomp::level_meaning(method) + "), " + in.model +
                   "\n\nValidation split: " + std::to_string(v.val.size()) + " images, " +
                   v.info["source"].get<std::string>() + ".\n\n" + modelcomp::sensitivity_markdown(t);
  io::write_file_atomic(in.out + "/sensitivity.md", md);
  save_plot(t, s.budget_pp, "sensitivity: " + s.method + ", one layer at a time (" + dataset + " validation)",
            in.out + "/sensitivity.png");
  std::printf("%s", modelcomp::sensitivity_markdown(t).c_str());

  if (s.budget_pp >= 0) {
    const std::vector<modelcomp::LayerTarget> targets = modelcomp::select_targets(t, s.budget_pp);
    json tj = modelcomp::targets_json(method, s.budget_pp, t.baseline, targets);
    tj["sensitivity"] = in.out + "/sensitivity.json";
    io::write_file_atomic(in.out + "/targets.json", tj.dump(2) + "\n");
    std::printf("\nper-layer targets for a %.3g pp budget:\n", s.budget_pp);
    for (const auto& g : targets) {
      if (g.within_budget)
        std::printf("  %-24s %-8g drop %.2f pp\n", g.name.c_str(), g.level, g.drop_pp);
      else
        std::printf("  %-24s %-8g untouched: no level within the budget\n", g.name.c_str(), g.level);
    }
  }
  std::printf("wrote %s/sensitivity.json, sensitivity.md, sensitivity.png%s\n", in.out.c_str(),
              s.budget_pp >= 0 ? ", targets.json" : "");
}

}  // namespace frugal::app
