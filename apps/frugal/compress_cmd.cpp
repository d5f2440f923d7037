// frugal compress: a trained model into a packed model file that `frugal evaluate` reads. A recipe of stages
// (lib/modelcomp/stages.h) from --config FILE, --stages, or the shorthand flags, run by lib/modelcomp/pipeline.h.
//
// Recipe file (JSON): {"stages": ["prune:magnitude:0.92", "finetune:3", "share:5:8", "finetune:2", "huffman"],
//                      plus any of the keys in kRecipeKeys}; --set key=value overrides a key (stages as A,B,C).
// Shorthand flags (used when neither --config nor --stages is given):
//   default     prune:CRITERION:SPARSITY [, finetune:E] , share:FC_BITS:CONV_BITS [, finetune:E] , huffman
//   --int8      int8
//   --channels  channels:CRITERION:F [, finetune:E]
//   --lowrank   lowrank:ENERGY [, finetune:E]
// --sensitivity prune|bits|rank: per-layer accuracy on the validation split instead (compress_sensitivity.cpp); its
// targets.json feeds prune:CRITERION:@FILE / gradual:@FILE:E / share:@FILE.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "commands.h"
#include "compress_sensitivity.h"
#include "io/files.h"
#include "modelcomp/deploy_net.h"
#include "modelcomp/pipeline.h"
#include "util/check.h"
#include "util/spec_string.h"

namespace frugal::app {

using json = nlohmann::json;

namespace {

/// The recipe keys a config file or --set may give, with their defaults (pipeline.h documents each).
json recipe_defaults() {
  const modelcomp::PipelineOptions d;
  return json{{"stages", json::array()},
              {"dataset", ""},
              {"data_dir", ""},
              {"val_split", d.val_split},
              {"min_numel", d.min_numel},
              {"conv_index_bits", d.conv_index_bits},
              {"fc_index_bits", d.fc_index_bits},
              {"saliency_batches", d.saliency_batches},
              {"finetune_lr", d.finetune_lr},
              {"prune_every", d.prune_every},
              {"calib_images", d.calib_images},
              {"lowrank_max_rank_fraction", d.lowrank_max_rank_fraction},
              {"lowrank_layers", d.lowrank_layers},
              {"lowrank_min_numel", d.lowrank_min_numel},
              {"lowrank_conv_split", d.lowrank_conv_split},
              {"finetune_set", json::array()},
              {"distill", d.distill},
              {"eval", d.eval},
              {"speed", d.speed},
              {"conv_impl", d.conv_impl},
              {"eval_batch", d.eval_batch}};
}

struct CompressArgs {
  std::string model, out = "runs/compress", config, stages;
  std::vector<std::string> sets;
  // shorthand flags
  double sparsity = 0.9;
  int conv_bits = 8, fc_bits = 5;
  int conv_index_bits = 8, fc_index_bits = 5;
  size_t min_numel = 1024;
  std::string dataset, data_dir;
  bool no_eval = false, no_speed = false;
  int finetune_epochs = 0;
  double finetune_lr = 0.01;
  bool int8 = false;
  int calib_images = 2048;
  double channels = 0;
  double lowrank = 0;                  ///< > 0: shorthand for lowrank:ENERGY
  std::string lowrank_layers = "all";
  double lowrank_max_rank_fraction = 1.0;
  int64_t lowrank_min_numel = 0;
  std::string lowrank_conv_split = "kxk_1x1";
  std::string criterion = "magnitude";
  int saliency_batches = 20;
  SensitivityArgs sensitivity;  ///< --sensitivity: the analysis instead of compressing
};

/// The stage list the shorthand flags describe.
std::vector<std::string> shorthand_stages(const CompressArgs& a) {
  const std::string ft = a.finetune_epochs > 0 ? "finetune:" + std::to_string(a.finetune_epochs) : "";
  if (a.int8) return {"int8"};
  if (a.channels > 0 || a.lowrank > 0) {
    std::vector<std::string> s{a.channels > 0 ? "channels:" + a.criterion + ":" + std::to_string(a.channels)
                                              : "lowrank:" + std::to_string(a.lowrank)};
    if (!ft.empty()) s.push_back(ft);
    return s;
  }
  std::vector<std::string> s{"prune:" + a.criterion + ":" + std::to_string(a.sparsity)};
  if (!ft.empty()) s.push_back(ft);
  s.push_back("share:" + std::to_string(a.fc_bits) + ":" + std::to_string(a.conv_bits));
  if (!ft.empty()) s.push_back(ft);
  s.push_back("huffman");
  return s;
}

/// "key=value": the value as JSON when it parses as JSON, else as a string; stages as a comma list.
void apply_set(json& recipe, const std::string& kv) {
  const size_t eq = kv.find('=');
  FRUGAL_CHECK(eq != std::string::npos && eq > 0, "--set '", kv, "': expected key=value");
  const std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
  FRUGAL_CHECK(recipe.contains(key), "--set '", kv, "': unknown compress key '", key, "'; known keys: ",
               [&] {
                 std::string k;
                 const json d = recipe_defaults();
                 for (const auto& [name, v] : d.items()) k += (k.empty() ? "" : ", ") + name;
                 return k;
               }());
  if (key == "stages") {
    recipe[key] = modelcomp::split_stage_list(value);
    return;
  }
  if (key == "finetune_set") {  // one more training override per --set finetune_set=key=value
    recipe[key].push_back(value);
    return;
  }
  json v;
  try {
    v = json::parse(value);
  } catch (const json::exception&) {
    v = value;
  }
  recipe[key] = v;
}

/// Checks each key's type against its default's and fills PipelineOptions.
modelcomp::PipelineOptions options_from(const json& r, const std::string& where) {
  const json d = recipe_defaults();
  for (const auto& [key, v] : r.items()) {
    if (key.rfind("_comment", 0) == 0) continue;
    FRUGAL_CHECK(d.contains(key), where, ": unknown compress key '", key, "' (see frugal compress --help)");
    const json& def = d[key];
    const bool ok = def.is_boolean()  ? v.is_boolean()
                    : def.is_string() ? v.is_string()
                    : def.is_array()  ? v.is_array()
                    : def.is_number_integer() ? v.is_number_integer()
                                              : v.is_number();
    FRUGAL_CHECK(ok, where, ": compress key '", key, "' must be ", def.type_name(), " like ", def.dump(), ", got ",
                 v.dump());
  }
  auto get = [&](const char* key) { return r.contains(key) ? r[key] : d[key]; };
  modelcomp::PipelineOptions o;
  std::vector<std::string> specs;
  for (const json& s : get("stages")) {
    FRUGAL_CHECK(s.is_string(), where, ": every stage is a spec string, got ", s.dump());
    specs.push_back(s.get<std::string>());
  }
  FRUGAL_CHECK(!specs.empty(), where, ": no stages; give \"stages\": [...] in --config, --stages A,B,C, or the ",
               "shorthand flags (e.g. --sparsity 0.9)");
  o.stages = modelcomp::parse_stages(specs);
  o.dataset = get("dataset");
  o.data_dir = get("data_dir");
  o.val_split = get("val_split");
  FRUGAL_CHECK(o.val_split >= -1, where, ": val_split must be -1 (the model's own) or a count >= 0");
  o.min_numel = get("min_numel");
  o.conv_index_bits = get("conv_index_bits");
  o.fc_index_bits = get("fc_index_bits");
  for (int b : {o.conv_index_bits, o.fc_index_bits})
    FRUGAL_CHECK(b >= 1 && b <= 16, where, ": index bits must be in [1, 16], got ", b);
  o.saliency_batches = get("saliency_batches");
  o.finetune_lr = get("finetune_lr");
  FRUGAL_CHECK(o.finetune_lr > 0, where, ": finetune_lr must be positive");
  o.prune_every = get("prune_every");
  FRUGAL_CHECK(o.prune_every >= 1, where, ": prune_every must be >= 1");
  o.calib_images = get("calib_images");
  FRUGAL_CHECK(o.calib_images >= 1, where, ": calib_images must be >= 1");
  o.lowrank_max_rank_fraction = get("lowrank_max_rank_fraction");
  o.lowrank_layers = get("lowrank_layers");
  o.lowrank_min_numel = get("lowrank_min_numel");
  o.lowrank_conv_split = get("lowrank_conv_split");
  FRUGAL_CHECK(o.lowrank_conv_split == "kxk_1x1" || o.lowrank_conv_split == "kx1_1xk", where,
               ": lowrank_conv_split must be kxk_1x1 or kx1_1xk, got '", o.lowrank_conv_split, "'");
  for (const json& kv : get("finetune_set")) {
    FRUGAL_CHECK(kv.is_string() && kv.get<std::string>().find('=') != std::string::npos, where,
                 ": finetune_set holds training overrides \"key=value\", got ", kv.dump());
    o.finetune_set.push_back(kv);
  }
  o.distill = get("distill");
  o.eval = get("eval");
  o.speed = get("speed");
  o.conv_impl = get("conv_impl");
  modelcomp::parse_conv_choice(o.conv_impl, where + ": conv_impl");  // refuses anything but first / fastest
  o.eval_batch = get("eval_batch");
  FRUGAL_CHECK(o.eval_batch >= 1, where, ": eval_batch must be >= 1");
  o.recipe = r;
  return o;
}

void run_compress(const CompressArgs& a) {
  if (!a.sensitivity.method.empty()) {
    FRUGAL_CHECK(a.config.empty() && a.stages.empty() && a.sets.empty() && !a.int8 && a.channels == 0 &&
                     a.lowrank == 0,
                 "--sensitivity analyses the model as it is; it does not take a recipe (--config, --stages, --set, "
                 "--int8, --channels, --lowrank): run the analysis first, then a recipe that reads its targets.json");
    return run_sensitivity(a.sensitivity, {a.model, a.out, a.dataset, a.data_dir, a.min_numel, 500});
  }
  json recipe = recipe_defaults();
  std::string where = "compress options";
  if (!a.config.empty()) {
    json file;
    try {
      file = json::parse(io::read_file(a.config));
    } catch (const json::exception& e) {
      FRUGAL_FAIL("compress config '", a.config, "' is not valid JSON: ", e.what());
    }
    FRUGAL_CHECK(file.is_object(), "compress config '", a.config, "' must be a JSON object with \"stages\"");
    for (const auto& [k, v] : file.items()) recipe[k] = v;
    where = "compress config '" + a.config + "'";
  }
  if (!a.stages.empty()) {
    recipe["stages"] = modelcomp::split_stage_list(a.stages);
  } else if (a.config.empty()) {
    recipe["stages"] = shorthand_stages(a);
  }
  // shorthand flags given on the command line fill the keys they name (a config file's keys win)
  if (a.config.empty()) {
    recipe["conv_index_bits"] = a.conv_index_bits;
    recipe["fc_index_bits"] = a.fc_index_bits;
    recipe["min_numel"] = a.min_numel;
    recipe["finetune_lr"] = a.finetune_lr;
    recipe["calib_images"] = a.calib_images;
    recipe["saliency_batches"] = a.saliency_batches;
    recipe["lowrank_layers"] = a.lowrank_layers;
    recipe["lowrank_max_rank_fraction"] = a.lowrank_max_rank_fraction;
    recipe["lowrank_min_numel"] = a.lowrank_min_numel;
    recipe["lowrank_conv_split"] = a.lowrank_conv_split;
  }
  if (!a.dataset.empty()) recipe["dataset"] = a.dataset;
  if (!a.data_dir.empty()) recipe["data_dir"] = a.data_dir;
  if (a.no_eval) recipe["eval"] = false;
  if (a.no_eval || a.no_speed) recipe["speed"] = false;
  for (const std::string& kv : a.sets) apply_set(recipe, kv);
  modelcomp::PipelineOptions o = options_from(recipe, where);
  o.model_path = a.model;
  o.out_dir = a.out;
  const json j = modelcomp::run_compress_pipeline(o);

  // the summary table
  std::printf("%-34s %10s %12s %12s %10s %10s\n", "stage", "params", "nonzero", "packed B", "val %", "test %");
  for (const json& s : j["stages"]) {
    auto pct = [&](const char* k) { return s.contains(k) ? 100 * s[k].get<double>() : -1.0; };
    std::printf("%-34s %10lld %12lld %12zu %10.2f %10.2f\n", s["stage"].get<std::string>().c_str(),
                (long long)s["params"].get<int64_t>(), (long long)s["nonzero_weights"].get<int64_t>(),
                s["packed_bytes"].get<size_t>(), pct("val_accuracy"), pct("test_accuracy"));
  }
  std::printf("%-34s %zu -> %zu bytes (%.1fx, counting every byte of the file)\n", "weights fp32 -> packed file",
              j["weights_fp32_bytes"].get<size_t>(), j["packed_file_bytes"].get<size_t>(),
              j["ratio_vs_fp32"].get<double>());
  std::printf("%-34s %lld -> %lld\n", "MACs / image", (long long)j["macs_before"].get<int64_t>(),
              (long long)j["macs_after"].get<int64_t>());
  if (j.contains("test_accuracy_after")) {
    if (j.contains("val_accuracy_after"))
      std::printf("%-34s %.2f %% -> %.2f %% (%+.2f pp)\n", "validation accuracy (packed file)",
                  100 * j["val_accuracy_before"].get<double>(), 100 * j["val_accuracy_after"].get<double>(),
                  100 * (j["val_accuracy_after"].get<double>() - j["val_accuracy_before"].get<double>()));
    std::printf("%-34s %.2f %% -> %.2f %% (%+.2f pp)\n", "test accuracy (packed file)",
                100 * j["test_accuracy_before"].get<double>(), 100 * j["test_accuracy_after"].get<double>(),
                100 * (j["test_accuracy_after"].get<double>() - j["test_accuracy_before"].get<double>()));
  }
  if (j.contains("speed_after")) {
    const double lb = j["speed_before"]["latency_b1_ms_median"], la = j["speed_after"]["latency_b1_ms_median"];
    const double tb = j["speed_before"]["throughput_img_per_s"], ta = j["speed_after"]["throughput_img_per_s"];
    std::printf("%-34s %.3f -> %.3f ms (%.2fx)\n", "latency batch 1 (median of 3)", lb, la, lb / la);
    std::printf("%-34s %.0f -> %.0f img/s (%.2fx)\n", "throughput batch 256 (median of 3)", tb, ta, ta / tb);
  }
  std::printf("wrote %s and %s/compress.json\n", j["packed_file"].get<std::string>().c_str(), a.out.c_str());
}
}  // namespace

void add_compress(CLI::App& app, Globals&) {
  auto a = std::make_shared<CompressArgs>();
  auto* c = app.add_subcommand(
      "compress",
      "Compress a trained model into a packed file by a recipe of stages: structured channel pruning, low-rank, "
      "magnitude / global / Taylor / gradual pruning, fine-tuning, weight sharing, Huffman coding, int8. Stages "
      "(lib/modelcomp/stages.h): channels:CRITERION:F, lowrank:ENERGY, prune:magnitude|global|taylor:S|@FILE, "
      "gradual:S|@FILE:EPOCHS, finetune:EPOCHS[:LR], share:BITS[:CONV_BITS]|@FILE, huffman, int8. Accuracy after "
      "every stage on the validation split (choose recipes there) and the test set (reported).");
  c->add_option("--model", a->model, "model.bin written by frugal train")->required()->check(CLI::ExistingFile);
  c->add_option("--out", a->out, "output folder: model.packed, compress.json, fine-tuning runs")
      ->capture_default_str();
  c->add_option("--config", a->config,
                "recipe file (JSON): {\"stages\": [...], keys: dataset, data_dir, val_split, min_numel, "
                "conv_index_bits, fc_index_bits, saliency_batches, finetune_lr, prune_every, calib_images, "
                "lowrank_max_rank_fraction, lowrank_layers, lowrank_min_numel, lowrank_conv_split, finetune_set [\"key=value\" training overrides], distill [fine-tune on the source model's softened outputs too], eval, speed, conv_impl [first | pairs | fastest: the fused nets' conv kernels, as evaluate --conv-impl], eval_batch}")
      ->check(CLI::ExistingFile);
  c->add_option("--set", a->sets, "override a recipe key: key=value (stages=A,B,C); repeatable");
  c->add_option("--stages", a->stages, "the recipe's stages as a comma list, e.g. prune:magnitude:0.9,finetune:2,share:5:8");
  c->add_option("--sparsity", a->sparsity, "shorthand: fraction of each compressed tensor's weights pruned")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.999));
  c->add_option("--conv-bits", a->conv_bits, "shorthand: shared-weight bits of conv weights")
      ->capture_default_str()
      ->check(CLI::Range(1, 16));
  c->add_option("--fc-bits", a->fc_bits, "shorthand: shared-weight bits of linear weights")
      ->capture_default_str()
      ->check(CLI::Range(1, 16));
  c->add_option("--conv-index-bits", a->conv_index_bits, "relative-index bits of pruned conv weights")
      ->capture_default_str()
      ->check(CLI::Range(1, 16));
  c->add_option("--fc-index-bits", a->fc_index_bits, "relative-index bits of pruned linear weights")
      ->capture_default_str()
      ->check(CLI::Range(1, 16));
  c->add_option("--min-numel", a->min_numel, "tensors with fewer elements stay dense fp32")->capture_default_str();
  c->add_option("--dataset", a->dataset, "dataset for accuracy and fine-tuning (default: the model's)");
  c->add_option("--data-dir", a->data_dir, "extra data root (also FRUGAL_DATA)");
  c->add_flag("--no-eval", a->no_eval, "skip the accuracy (and speed) measurements");
  c->add_flag("--no-speed", a->no_speed, "skip the latency / throughput measurement");
  c->add_option("--finetune-epochs", a->finetune_epochs,
                "shorthand: epochs of fine-tuning after pruning and again after sharing (0: one-shot)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  c->add_option("--finetune-lr", a->finetune_lr, "peak learning rate of fine-tuning (cosine schedule)")
      ->capture_default_str();
  c->add_flag("--int8", a->int8,
              "shorthand for the recipe 'int8': fold batch norms, calibrate activation scales on training images, "
              "per-channel int8 weights; evaluate runs it on oneDNN's int8 convolution / inner product");
  c->add_option("--calib-images", a->calib_images, "training images for the int8 activation calibration")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  c->add_option("--channels", a->channels,
                "shorthand for 'channels:CRITERION:F': remove this fraction of the output channels of every "
                "prunable conv / hidden linear; the packed model runs smaller")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.99));
  c->add_option("--lowrank", a->lowrank,
                "shorthand for 'lowrank:ENERGY': truncated SVD of each conv / linear into two smaller layers, the "
                "rank per layer the smallest keeping this fraction of sum s^2")
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--lowrank-layers", a->lowrank_layers, "which layers --lowrank factorizes: linear, conv or all")
      ->capture_default_str()
      ->check(CLI::IsMember({"linear", "conv", "all"}));
  c->add_option("--lowrank-conv-split", a->lowrank_conv_split,
                "how --lowrank splits a k x k conv: kxk_1x1 (k x k conv to r channels, then 1 x 1) or kx1_1xk (k x 1 "
                "conv to r channels, then 1 x k; Jaderberg et al. 2014)")
      ->capture_default_str()
      ->check(CLI::IsMember({"kxk_1x1", "kx1_1xk"}));
  c->add_option("--lowrank-max-rank", a->lowrank_max_rank_fraction,
                "cap on each layer's rank as a fraction of its full rank")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--lowrank-min-numel", a->lowrank_min_numel, "layers with fewer weights are not factorized")
      ->capture_default_str();
  c->add_option("--criterion", a->criterion,
                "shorthand: which weights / channels to prune: magnitude, or taylor (first-order Taylor saliency)")
      ->capture_default_str()
      ->check(CLI::IsMember({"magnitude", "taylor"}));
  c->add_option("--saliency-batches", a->saliency_batches, "training batches of 128 for the Taylor saliency")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  add_sensitivity_options(c, a->sensitivity);
  c->callback([a]() { run_compress(*a); });
}

}  // namespace frugal::app
