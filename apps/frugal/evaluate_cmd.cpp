#include <cstdio>
#include <filesystem>
#include <memory>

#include "approx/characterize.h"
#include "approx/energy.h"
#include "approx/multiplier.h"
#include "commands.h"
#include "util/omp_env.h"
#include "data/dataset.h"
#include "data/jpeg.h"
#include "io/config.h"
#include "io/files.h"
#include "train/approx_attach.h"
#include "train/evaluate.h"
#include "io/environment.h"
#include "modelcomp/deep_compression.h"
#include "modelcomp/deploy_net.h"
#include "sweep/compare.h"
#include "nn/model_io.h"
#include "util/check.h"

namespace frugal::app {

using json = nlohmann::json;

namespace {
struct EvalArgs {
  std::string model, dataset, data_dir, out, multiplier, mode = "lut", layers = "all", layer_bits,
                                                         calibration = "batch", tta = "none", act_quant, compare,
                                                         conv_impl = "first";
  int batch = 500, latency_iters = 200, bits = 8, act_bits = 8, jpeg_quality = 0;
  bool no_speed = false, per_tensor = false, unfused = false;
};

/// Multiplier characterization over all 65,536 operand pairs (EvoApproxLib metrics) + heat-map PNG.
void characterize_multiplier(const EvalArgs& a) {
  auto m = approx::make_multiplier(a.multiplier);
  json r = approx::characterize(*m);
  json out{
      {"kind", "multiplier"}, {"multiplier", a.multiplier}, {"metrics", r}, {"environment", io::environment_info()}};
  std::printf("multiplier %s\n", a.multiplier.c_str());
  for (auto& [k, v] : r.items())
    if (v.is_number()) std::printf("  %-22s %.6g\n", k.c_str(), v.get<double>());
  if (!a.out.empty()) {
    io::make_dirs(a.out);
    std::string png = a.out + "/error_heatmap.png";
    approx::write_error_heatmap_png(*m, png);
    out["heatmap_png"] = png;
    io::write_file_atomic(a.out + "/multiplier.json", out.dump(2) + "\n");
    std::printf("wrote %s/multiplier.json and %s\n", a.out.c_str(), png.c_str());
  } else {
    std::printf("%s\n", out.dump(2).c_str());
  }
}

void evaluate_model(const EvalArgs& a) {
  auto lm = modelcomp::load_model_file(a.model);  // frugal's model file or a packed one (int8: on oneDNN int8)
  nn::Model& model = *lm.model;
  auto* int8 = dynamic_cast<modelcomp::DeployNet*>(model.inference_net());
  FRUGAL_CHECK(!int8 || a.multiplier.empty(), "'", a.model,
               "' is an int8 deployment (runs on oneDNN int8); --multiplier applies to fp32 models");
  std::string dataset = a.dataset;
  if (dataset.empty() && lm.meta.contains("config")) dataset = lm.meta["config"].value("dataset", "");
  FRUGAL_CHECK(!dataset.empty(), "--dataset is required (the model file does not name its dataset)");
  train::ApproxOptions ao;
  ao.multiplier = a.multiplier;
  ao.bits = a.bits;
  ao.act_bits = a.act_bits;
  ao.mode = a.mode;
  ao.layers = a.layers;
  ao.layer_bits = a.layer_bits;
  ao.per_channel = !a.per_tensor;
  ao.calibration = a.calibration;
  // default: what the model was trained with, else the config key's default
  if (!a.act_quant.empty())
    ao.act_quant = a.act_quant;
  else if (lm.meta.contains("config"))
    ao.act_quant = lm.meta["config"].value("act_quant", ao.act_quant);
  json approx_info = train::attach_approx(model, ao);
  auto ds = data::load_dataset(dataset, data::data_roots(a.data_dir));
  auto norm = data::default_normalization(ds.test.name);
  json input_jpeg;
  if (a.jpeg_quality > 0) {  // compressed inputs: the test images through JPEG (data/jpeg.h)
    const data::JpegStats js = data::jpeg_roundtrip(ds.test, a.jpeg_quality);
    input_jpeg = {{"quality", js.quality}, {"bits_per_pixel", js.bits_per_pixel}, {"mean_abs_error", js.mean_abs_error}};
  }
  if (json cal = train::calibrate_approx(model, ao, ds.train, norm, a.batch); !cal.is_null())
    approx_info["calibration"] = cal;
  // an exact fp32 model runs as one fused oneDNN graph (batch norms folded; ReLUs and residual adds as post-ops),
  // as it would be deployed; --unfused, approximate arithmetic or an unsupported layer keep the layer path
  std::string layers_why = a.unfused ? "--unfused" : "";
  if (!int8 && !a.unfused) layers_why = modelcomp::install_fused_f32(model);
  auto* deploy = dynamic_cast<modelcomp::DeployNet*>(model.inference_net());
  const modelcomp::ConvChoice conv_choice = modelcomp::parse_conv_choice(a.conv_impl, "--conv-impl");
  FRUGAL_CHECK(deploy || conv_choice == modelcomp::ConvChoice::first, "--conv-impl ", a.conv_impl,
               ": applies to the fused fp32 or int8 net only, and this model runs layer by layer (", layers_why, ")");
  if (deploy) deploy->set_conv_choice(conv_choice);
  auto t0 = std::chrono::steady_clock::now();
  train::EvalMetrics em = train::evaluate(model, ds.test, norm, a.batch, 0.f, a.tta == "flip");
  double eval_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  json j{{"kind", "evaluate"}, {"model_file", a.model}, {"dataset", dataset}, {"metrics", em.to_json(true)}};
  j["metrics"]["eval_s"] = eval_s;
  if (!input_jpeg.is_null()) j["input_jpeg"] = input_jpeg;
  j["metrics"]["tta"] = a.tta;
  j["metrics"]["params"] = model.num_params();
  j["metrics"]["macs_per_image"] = model.macs_per_image();
  j["metrics"]["model_file_bytes"] = std::filesystem::file_size(a.model);
  j["metrics"]["weights_fp32_bytes"] = model.num_params() * 4;
  // energy per image: each conv/linear layer's MACs at its arithmetic (Horowitz 45 nm)
  std::vector<approx::LayerCost> costs;
  const Dims& chw = model.input_chw();
  model.net().visit({1, chw[0], chw[1], chw[2]}, [&](nn::Layer& l, const Dims& src) {
    const nn::ApproxHost* host = l.approx_host();
    if (!host) return;
    const nn::ApproxForward* ap = host->approx();
    approx::LayerCost lc;
    lc.name = l.name();
    lc.macs = l.macs(src);
    if (int8) {
      lc.arithmetic = "int8";
    } else if (ap) {
      const auto [wb, ab] = ap->bits();  // per layer (layer_bits)
      lc.arithmetic = "int" + std::to_string(wb) + (wb == ab ? "" : "x" + std::to_string(ab));
      lc.multiplier = a.multiplier;
      lc.relative_power = ap->relative_power();
    }
    costs.push_back(lc);
  });
  j["energy"] = approx::energy_report(costs);
  if (!approx_info.is_null()) j["approx"] = approx_info;
  if (!a.no_speed) j["speed"] = train::measure_speed(model, a.latency_iters).to_json();
  if (int8) j["int8"] = {{"implementations", int8->implementations()}};  // what oneDNN dispatched
  j["inference"] = {{"path", modelcomp::inference_path(model)}};
  if (deploy) {
    j["inference"]["implementations"] = deploy->implementations();
    j["inference"].update(deploy->batch1_report());  // the batch-1 latency's net (DeployNet RowBands)
    j["inference"]["conv_impl"] = a.conv_impl;
  } else
    j["inference"]["why_layers"] = layers_why;
  j["environment"] = io::environment_info();

  std::printf("%-26s %s on %s (%lld images)\n", "model", a.model.c_str(), dataset.c_str(), (long long)em.count);
  std::printf("%-26s %.2f %%%s\n", "top-1 accuracy", 100 * em.top1, a.tta == "flip" ? " (flip TTA)" : "");
  std::printf("%-26s %.2f %%\n", "top-5 accuracy", 100 * em.top5);
  if (!input_jpeg.is_null())
    std::printf("%-26s quality %d, %.3f bits/pixel\n", "JPEG inputs", a.jpeg_quality,
                input_jpeg["bits_per_pixel"].get<double>());
  std::printf("%-26s %.4f\n", "loss", em.loss);
  std::printf("%-26s %s%s\n", "inference path", modelcomp::inference_path(model).c_str(),
              layers_why.empty() || int8 ? "" : (" (" + layers_why.substr(0, 100) + ")").c_str());
  std::printf("%-26s %lld\n", "parameters", (long long)model.num_params());
  std::printf("%-26s %lld\n", "MACs / image", (long long)model.macs_per_image());
  std::printf("%-26s %lld\n", "model file bytes", (long long)j["metrics"]["model_file_bytes"].get<int64_t>());
  std::printf("%-26s %.3f uJ\n", "energy / image (arith.)", j["energy"]["total_uj"].get<double>());
  if (j.contains("speed")) {
    const bool bands = j["inference"].value("batch1_row_bands", false);
    std::printf("%-26s %.3f ms (p99 %.3f)%s\n", "latency batch 1 (median)",
                j["speed"]["latency_b1_ms_median"].get<double>(), j["speed"]["latency_b1_ms_p99"].get<double>(),
                bands ? ", convs as row bands on a 2-thread team" : "");
    std::printf("%-26s %.0f img/s\n", "throughput batch 256", j["speed"]["throughput_img_per_s"].get<double>());
  }
  if (int8) {
    std::printf("%-26s", "int8 oneDNN kernels");
    for (const std::string& impl : int8->implementations()) std::printf(" %s", impl.c_str());
    std::printf("\n");
  }
  std::printf("per-class accuracy:");
  for (size_t k = 0; k < em.per_class.size(); ++k) std::printf(" %zu:%.3f", k, em.per_class[k]);
  std::printf("\n");
  bool regressed = false;
  if (!a.compare.empty()) {  // regression check against a checked-in baseline (sweep/compare.h)
    const auto checks = sweep::compare_with_baseline(j, io::read_json_file(a.compare), a.compare);
    std::printf("\ncompared with %s:\n%s", a.compare.c_str(), sweep::compare_table(checks).c_str());
    json cj = json::array();
    for (const auto& c : checks) {
      regressed |= c.regressed;
      cj.push_back({{"metric", c.path}, {"baseline", c.baseline}, {"fresh", c.missing ? json() : json(c.fresh)},
                    {"allowed", c.allowed}, {"regressed", c.regressed}});
    }
    j["compare"] = {{"baseline", a.compare}, {"checks", cj}, {"regressed", regressed}};
  }
  if (!a.out.empty()) {
    io::make_dirs(a.out);
    io::write_file_atomic(a.out + "/evaluate.json", j.dump(2) + "\n");
    std::printf("wrote %s/evaluate.json\n", a.out.c_str());
  }
  if (regressed) {
    std::fprintf(stderr, "frugal evaluate: a metric regressed beyond its tolerance in %s (table above)\n",
                 a.compare.c_str());
    std::exit(4);
  }
}
}  // namespace

void add_evaluate(CLI::App& app, Globals&) {
  auto a = std::make_shared<EvalArgs>();
  auto* c =
      app.add_subcommand("evaluate",
                         "Accuracy, latency, throughput, size, MACs and energy of a model; with --multiplier and no "
                         "--model, characterize the multiplier over all 65,536 operand pairs");
  c->add_option("-m,--model", a->model, "model file written by train (model.bin) or a checkpoint")
      ->check(CLI::ExistingFile);
  c->add_option("-d,--dataset", a->dataset,
                "mnist | fashion-mnist | cifar10 | cifar100 | folder:PATH (default: the model's)");
  c->add_option("--data-dir", a->data_dir, "extra data root searched first (also env FRUGAL_DATA)");
  c->add_option("-o,--out", a->out, "write evaluate.json (or multiplier.json + error_heatmap.png) into this folder");
  c->add_option("--multiplier", a->multiplier, "multiplier spec: exact, trunc:K, bam:H,V, mitchell, drum:K, lut:FILE");
  c->add_option("--bits", a->bits, "weight bits with --multiplier")->check(CLI::Range(2, 16))->capture_default_str();
  c->add_option("--act-bits", a->act_bits, "activation bits with --multiplier")
      ->check(CLI::Range(2, 16))
      ->capture_default_str();
  c->add_option("--approx-mode", a->mode, "lut | functional | lowrank:R")->capture_default_str();
  c->add_option("--approx-layers", a->layers, "all | inner | comma-separated conv/linear indices")
      ->capture_default_str();
  c->add_option("--layer-bits", a->layer_bits,
                "per-layer W/A bit-widths, one per conv/linear layer (e.g. 8/8,4/6,4/6,8/8)");
  c->add_option(
       "--act-calibration", a->calibration,
       "activation ranges: batch (each batch's min/max) | minmax:N | percentile:N[:P] (from N training batches)")
      ->capture_default_str();
  c->add_option("--act-quant", a->act_quant,
                "activation codes of signed multipliers: affine | symmetric (zero point 0) (default: the model's "
                "training config, else symmetric)")
      ->check(CLI::IsMember({"affine", "symmetric"}));
  c->add_option("--batch", a->batch, "evaluation batch size")->check(CLI::Range(1, 100000))->capture_default_str();
  c->add_option("--latency-iters", a->latency_iters, "batch-1 forwards timed for the latency median/p99")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  c->add_flag("--per-tensor", a->per_tensor, "one weight scale per tensor (default: per output channel)");
  c->add_flag("--no-speed", a->no_speed, "skip latency and throughput measurement");
  c->add_flag("--unfused", a->unfused,
              "run an fp32 model layer by layer (batch norms, ReLUs and residual adds as their own steps) instead of "
              "the fused oneDNN graph (modelcomp/deploy_net.h)");
  c->add_option("--conv-impl", a->conv_impl,
                "fused net's convolutions: first (oneDNN's first choice, the same in every run) | pairs (first, "
                "and convs of at most 8 output channels over pairs of output columns, which AVX-512 kernels run "
                "faster) | fastest (time oneDNN's implementations and the pair form once per conv shape and take the "
                "quickest; at batch 1 also the row-band plan, two one-thread convs per conv on a two-thread team, when it "
                "times faster; outputs may differ in the last bits between runs)")
      ->check(CLI::IsMember({"first", "pairs", "fastest"}))
      ->capture_default_str();
  c->add_option("--jpeg-quality", a->jpeg_quality,
                "pass the test images through JPEG at this quality (1-100) first; bits per pixel reported (0: off)")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  c->add_option("--compare", a->compare,
                "baseline JSON ({\"metrics\": {\"metrics.test_accuracy\": {\"value\", \"direction\", \"tolerance\"}}}): "
                "print a table of differences and exit 4 when a metric regressed beyond its tolerance")
      ->check(CLI::ExistingFile);
  c->add_option("--tta", a->tta,
                "test-time augmentation: none, or flip (mean softmax of each image and its horizontal mirror)")
      ->check(CLI::IsMember({"none", "flip"}))
      ->capture_default_str();
  c->callback([a]() {
    if (!a->multiplier.empty()) util::prefer_short_omp_spin();  // TBB passes after oneDNN convs: util/omp_env.h
    if (a->model.empty()) {
      FRUGAL_CHECK(!a->multiplier.empty(),
                   "evaluate needs --model FILE (or --multiplier SPEC to characterize a multiplier)");
      characterize_multiplier(*a);
    } else {
      evaluate_model(*a);
    }
  });
}

}  // namespace frugal::app
