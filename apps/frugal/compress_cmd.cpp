// frugal compress: a trained model into a packed model file that `frugal evaluate` reads (lib/modelcomp/):
//   default     Deep Compression: magnitude or Taylor-saliency pruning, weight sharing, Huffman coding, with optional
//               fine-tuning after pruning and after sharing;
//   --int8      batch norm folded, per-channel int8 weights, calibrated activation scales (oneDNN int8 at evaluate);
//   --channels  structured channel pruning (smaller layers), magnitude or Taylor saliency, optional fine-tuning.
//   --lowrank   truncated-SVD factorization of linear / conv layers (compress_lowrank.cpp), optional fine-tuning.
// The sensitivity analysis is not wired in yet.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "commands.h"
#include "compress_common.h"
#include "data/dataset.h"
#include "io/environment.h"
#include "io/files.h"
#include "modelcomp/channel_prune.h"
#include "modelcomp/deep_compression.h"
#include "modelcomp/prune.h"
#include "modelcomp/int8_net.h"
#include "nn/model_io.h"
#include "io/config.h"
#include "io/tensor_file.h"
#include "train/evaluate.h"
#include "train/trainer.h"
#include "util/check.h"

namespace frugal::app {

using json = nlohmann::json;

namespace {

/// The first n training images (never the test set) as normalized batches of at most 256.
std::vector<Tensor> calibration_batches(const data::Dataset& train, const data::Normalization& norm, int n) {
  std::vector<Tensor> out;
  std::vector<int32_t> y;
  const size_t total = std::min<size_t>(size_t(n), train.size());
  for (size_t b = 0; b < total; b += 256) {
    Tensor x;
    train::make_batch(train, norm, b, std::min<size_t>(256, total - b), x, y);
    out.push_back(std::move(x));
  }
  return out;
}

/// int8 deployment: fold batch norms, calibrate activation scales on training images, quantize weights per output
/// channel, write the int8 packed model; accuracy and speed of the fp32 source and the int8 model in the same run.
void run_int8(const CompressArgs& a) {
  nn::LoadedModel src = modelcomp::load_model_file(a.model);
  FRUGAL_CHECK(!src.model->inference_net(), "'", a.model, "' is already an int8 deployment");
  const std::string dataset = dataset_of(a, src.meta);
  auto ds = data::load_dataset(dataset, data::data_roots(a.data_dir));
  auto norm = data::default_normalization(ds.test.name);
  std::fprintf(stderr, "[compress] int8: fold batch norms, calibrate on %d training images, quantize per channel\n",
               a.calib_images);
  auto folded = modelcomp::fold_batchnorm(*src.model);
  const std::vector<Tensor> calib = calibration_batches(ds.train, norm, a.calib_images);
  const std::vector<modelcomp::PackedTensor> records = modelcomp::quantize_int8(*folded, calib);
  modelcomp::PackedModel pm;
  pm.meta = src.meta;
  pm.meta["kind"] = "packed-model";
  pm.meta["spec"] = folded->spec();
  pm.meta["compress"] = {{"int8", true}, {"calibration", "max"}, {"calib_images", a.calib_images},
                         {"source", a.model}};
  io::TensorFile tensors;
  nn::add_model_tensors(*folded, tensors);
  json layers = json::array();
  for (const auto& [name, t] : tensors.tensors) {
    auto rec = std::find_if(records.begin(), records.end(), [&](const auto& r) { return r.name == name; });
    if (rec != records.end()) {
      pm.tensors.push_back(*rec);
    } else {
      pm.tensors.push_back(dense_record(name, t));
    }
  }
  const modelcomp::PackedBytes bytes = modelcomp::encode_packed(pm);
  for (size_t i = 0; i < pm.tensors.size(); ++i)
    layers.push_back({{"name", pm.tensors[i].name}, {"dims", pm.tensors[i].dims},
                      {"encoding", modelcomp::encoding_name(pm.tensors[i].encoding)},
                      {"packed_bytes", bytes.record_bytes[i]}});
  io::make_dirs(a.out);
  const std::string packed_path = a.out + "/model.packed";
  io::write_file_atomic(packed_path, bytes.file);
  const size_t fp32_bytes = size_t(src.model->num_params()) * 4;
  json j{{"kind", "compress"}, {"mode", "int8"}, {"model_file", a.model}, {"packed_file", packed_path},
         {"options", pm.meta["compress"]}, {"layers", layers}, {"weights_fp32_bytes", fp32_bytes},
         {"packed_file_bytes", bytes.file.size()}, {"ratio_vs_fp32", double(fp32_bytes) / double(bytes.file.size())},
         {"dataset", dataset}};
  std::printf("%-28s %zu -> %zu bytes (%.2fx)\n", "weights fp32 -> int8 packed", fp32_bytes, bytes.file.size(),
              double(fp32_bytes) / double(bytes.file.size()));
  if (!a.no_eval) {
    auto after = modelcomp::load_model_file(packed_path);
    train::EvalMetrics mb = train::evaluate(*src.model, ds.test, norm, a.batch, 0.f);
    train::EvalMetrics ma = train::evaluate(*after.model, ds.test, norm, a.batch, 0.f);
    const auto [sb, sa] = interleaved_speed(*src.model, *after.model);
    j["test_accuracy_before"] = mb.top1;
    j["test_accuracy_after"] = ma.top1;
    j["speed_fp32"] = sb.to_json();
    j["speed_int8"] = sa.to_json();
    j["int8_implementations"] = dynamic_cast<modelcomp::Int8Net*>(after.model->inference_net())->implementations();
    std::printf("%-28s %.2f %% -> %.2f %% (%+.2f pp)\n", "test accuracy fp32 -> int8", 100 * mb.top1, 100 * ma.top1,
                100 * (ma.top1 - mb.top1));
    std::printf("%-28s %.3f -> %.3f ms (%.2fx)\n", "latency batch 1 (median of 3)", sb.latency_b1_ms_median,
                sa.latency_b1_ms_median, sb.latency_b1_ms_median / sa.latency_b1_ms_median);
    std::printf("%-28s %.0f -> %.0f img/s (%.2fx)\n", "throughput batch 256", sb.throughput_img_s,
                sa.throughput_img_s, sa.throughput_img_s / sb.throughput_img_s);
  }
  j["environment"] = io::environment_info();
  io::write_file_atomic(a.out + "/compress.json", j.dump(2) + "\n");
  std::printf("wrote %s and %s/compress.json\n", packed_path.c_str(), a.out.c_str());
}

/// Structured pruning: remove a fraction of the channels of every prunable layer (by magnitude or Taylor
/// saliency), fine-tune the smaller model, pack it (dense fp32 at its real shapes).
void run_channels(const CompressArgs& a) {
  nn::LoadedModel src = modelcomp::load_model_file(a.model);
  FRUGAL_CHECK(!src.model->inference_net(), "'", a.model, "' is an int8 deployment: prune its fp32 source");
  const std::string dataset = dataset_of(a, src.meta);
  auto ds = data::load_dataset(dataset, data::data_roots(a.data_dir));
  auto norm = data::default_normalization(ds.test.name);
  modelcomp::ChannelScores scores;
  if (a.criterion == "taylor") {
    std::fprintf(stderr, "[compress] Taylor saliency |w dL/dw| over %d training batches of 128\n", a.saliency_batches);
    scores = modelcomp::taylor_channel_scores(
        *src.model, modelcomp::taylor_saliency(*src.model, ds.train, norm, a.saliency_batches, 128));
  } else {
    scores = modelcomp::magnitude_channel_scores(*src.model);
  }
  const modelcomp::ChannelKeep keep = modelcomp::select_channels(scores, a.channels);
  auto pruned = modelcomp::prune_channels(*src.model, keep);
  std::fprintf(stderr, "[compress] removed %.0f %% of the channels of %zu layers (%s): MACs %lld -> %lld\n",
               100 * a.channels, keep.size(), a.criterion.c_str(), (long long)src.model->macs_per_image(),
               (long long)pruned->macs_per_image());
  io::make_dirs(a.out);
  json extra = src.meta;
  extra.erase("spec");
  const std::string spec_json = a.out + "/pruned_spec.json";
  io::write_file_atomic(spec_json, pruned->spec().dump(2) + "\n");
  nn::save_model(a.out + "/pruned.bin", *pruned, extra);
  json stages = json::array();
  train::EvalMetrics m_pruned;  // the pruned model before fine-tuning
  if (!a.no_eval) m_pruned = train::evaluate(*nn::load_model(a.out + "/pruned.bin").model, ds.test, norm, a.batch, 0.f);
  if (a.finetune_epochs > 0) {
    std::fprintf(stderr, "[compress] fine-tune the pruned model %d epochs at lr %g\n", a.finetune_epochs, a.finetune_lr);
    const io::TensorFile tuned = finetune(a, io::load_tensor_file(a.out + "/pruned.bin"), a.out + "/pruned.bin", {},
                                          a.out + "/finetune", spec_json);
    nn::load_model_tensors(*pruned, tuned, a.out + "/finetune/model.bin");
    stages.push_back({{"stage", "channels+finetune"}, {"epochs", a.finetune_epochs}, {"lr", a.finetune_lr},
                      {"run", a.out + "/finetune"}});
  }
  modelcomp::PackedModel pm;
  pm.meta = extra;
  pm.meta["kind"] = "packed-model";
  pm.meta["spec"] = pruned->spec();
  pm.meta["compress"] = {{"channels", a.channels}, {"criterion", a.criterion}, {"source", a.model},
                         {"saliency_batches", a.saliency_batches}, {"finetune_epochs", a.finetune_epochs},
                         {"finetune_lr", a.finetune_lr}};
  io::TensorFile tensors;
  nn::add_model_tensors(*pruned, tensors);
  for (const auto& [name, t] : tensors.tensors) {
    pm.tensors.push_back(dense_record(name, t));
  }
  const modelcomp::PackedBytes bytes = modelcomp::encode_packed(pm);
  const std::string packed_path = a.out + "/model.packed";
  io::write_file_atomic(packed_path, bytes.file);
  json layers = json::array();
  for (const auto& [name, k] : keep)
    layers.push_back({{"name", name}, {"channels_before", scores.at(name).size()}, {"channels_kept", k.size()},
                      {"kept", k}});
  auto after = modelcomp::load_model_file(packed_path);
  json j{{"kind", "compress"}, {"mode", "channels"}, {"model_file", a.model}, {"packed_file", packed_path},
         {"options", pm.meta["compress"]}, {"layers", layers}, {"stages", stages}, {"dataset", dataset},
         {"macs_before", src.model->macs_per_image()}, {"macs_after", after.model->macs_per_image()},
         {"params_before", src.model->num_params()}, {"params_after", after.model->num_params()},
         {"packed_file_bytes", bytes.file.size()}};
  std::printf("%-30s %lld -> %lld (%.1f %%)\n", "MACs / image", (long long)src.model->macs_per_image(),
              (long long)after.model->macs_per_image(),
              100.0 * double(after.model->macs_per_image()) / double(src.model->macs_per_image()));
  if (a.no_eval) {
    io::write_file_atomic(a.out + "/compress.json", j.dump(2) + "\n");
    std::printf("wrote %s and %s/compress.json\n", packed_path.c_str(), a.out.c_str());
    return;
  }
  train::EvalMetrics mb = train::evaluate(*src.model, ds.test, norm, a.batch, 0.f);
  train::EvalMetrics ma = train::evaluate(*after.model, ds.test, norm, a.batch, 0.f);
  const auto [sb, sa] = interleaved_speed(*src.model, *after.model);
  j["test_accuracy_before"] = mb.top1;
  j["test_accuracy_pruned_before_finetune"] = m_pruned.top1;
  j["test_accuracy_after"] = ma.top1;
  j["speed_before"] = sb.to_json();
  j["speed_after"] = sa.to_json();
  std::printf("%-30s %.2f %% -> %.2f %% pruned -> %.2f %% fine-tuned (%+.2f pp)\n", "test accuracy", 100 * mb.top1,
              100 * m_pruned.top1, 100 * ma.top1, 100 * (ma.top1 - mb.top1));
  std::printf("%-30s %.3f -> %.3f ms (%.2fx faster)\n", "latency batch 1 (median of 3)", sb.latency_b1_ms_median,
              sa.latency_b1_ms_median, sb.latency_b1_ms_median / sa.latency_b1_ms_median);
  std::printf("%-30s %.0f -> %.0f img/s (%.2fx)\n", "throughput batch 256 (median)", sb.throughput_img_s,
              sa.throughput_img_s, sa.throughput_img_s / sb.throughput_img_s);
  j["environment"] = io::environment_info();
  io::write_file_atomic(a.out + "/compress.json", j.dump(2) + "\n");
  std::printf("wrote %s and %s/compress.json\n", packed_path.c_str(), a.out.c_str());
}

void run_compress(const CompressArgs& a) {
  if (a.int8) return run_int8(a);
  if (a.channels > 0) return run_channels(a);
  if (a.lowrank > 0) return run_lowrank(a);
  const io::TensorFile f = modelcomp::read_model_file(a.model);
  FRUGAL_CHECK(f.meta.contains("spec"), "'", a.model, "' has no model spec: give a model.bin written by frugal train");
  std::fprintf(stderr, "[compress] %s: pruning to %.1f %% zeros, sharing (conv %d / fc %d bits), Huffman coding\n",
               a.model.c_str(), 100 * a.o.sparsity, a.o.conv_bits, a.o.fc_bits);
  // Deep Compression's stages: prune, fine-tune under the mask; share, fine-tune the shared values; encode.
  io::TensorFile weights;  // a deep copy: Tensor copies share storage, and f is measured as the original below
  weights.meta = f.meta;
  for (const auto& [name, t] : f.tensors) {
    Tensor v(t.dims());
    v.copy_from(t);
    weights.tensors.emplace_back(name, std::move(v));
  }
  json stages = json::array();
  auto masks = modelcomp::pruning_constraints(weights, a.o);
  if (a.criterion == "taylor") {  // the same tensors and sparsity, ranked by first-order Taylor saliency
    std::fprintf(stderr, "[compress] Taylor saliency |w dL/dw| over %d training batches of 128\n", a.saliency_batches);
    auto m = nn::load_model(weights, a.model);
    const std::string dataset = dataset_of(a, f.meta);
    auto ds = data::load_dataset(dataset, data::data_roots(a.data_dir));
    const auto sal =
        modelcomp::taylor_saliency(*m.model, ds.train, data::default_normalization(ds.train.name), a.saliency_batches, 128);
    for (auto& [name, c] : masks) {
      const std::vector<float>& s = sal.at(name);
      c.keep = modelcomp::magnitude_mask(s.data(), s.size(), a.o.sparsity);
    }
  }
  for (auto& [name, t] : weights.tensors)  // pruned before fine-tuning, or for the one-shot encoding below
    for (const auto& [mname, c] : masks)
      if (mname == name) modelcomp::apply_constraint(c, t.data(), size_t(t.size()));
  if (a.finetune_epochs > 0) {
    std::fprintf(stderr, "[compress] prune to %.1f %% zeros (%s), fine-tune %d epochs at lr %g under the mask\n",
                 100 * a.o.sparsity, a.criterion.c_str(), a.finetune_epochs, a.finetune_lr);
    io::make_dirs(a.out);
    io::save_tensor_file(a.out + "/pruned.bin", weights);
    weights = finetune(a, weights, a.out + "/pruned.bin", masks, a.out + "/finetune_prune");
    stages.push_back({{"stage", "prune+finetune"}, {"epochs", a.finetune_epochs}, {"lr", a.finetune_lr},
                      {"run", a.out + "/finetune_prune"}});
    std::fprintf(stderr, "[compress] share (conv %d / fc %d bits), fine-tune %d epochs with shared values\n",
                 a.o.conv_bits, a.o.fc_bits, a.finetune_epochs);
    const modelcomp::DeepCompressionResult shared = modelcomp::deep_compress(weights, a.o);
    io::TensorFile projected;
    projected.meta = weights.meta;
    projected.meta["kind"] = "model";
    const auto clusters = modelcomp::sharing_constraints(shared);
    for (auto& [name, t] : weights.tensors) {  // the shared model: every weight at its centroid
      Tensor v(t.dims());
      v.copy_from(t);
      for (const auto& [cname, c] : clusters)
        if (cname == name) modelcomp::apply_constraint(c, v.data(), size_t(v.size()));
      projected.tensors.emplace_back(name, std::move(v));
    }
    io::save_tensor_file(a.out + "/shared.bin", projected);
    weights = finetune(a, projected, a.out + "/shared.bin", clusters, a.out + "/finetune_share");
    stages.push_back({{"stage", "share+finetune"}, {"epochs", a.finetune_epochs}, {"lr", a.finetune_lr},
                      {"run", a.out + "/finetune_share"}});
  }
  modelcomp::DeepCompressionResult r = modelcomp::deep_compress(weights, a.o);
  r.packed.meta["compress"] = {{"sparsity", a.o.sparsity},         {"conv_bits", a.o.conv_bits},
                               {"fc_bits", a.o.fc_bits},           {"conv_index_bits", a.o.conv_index_bits},
                               {"fc_index_bits", a.o.fc_index_bits}, {"min_numel", a.o.min_numel},
                               {"source", a.model}, {"criterion", a.criterion}, {"finetune_epochs", a.finetune_epochs},
                               {"finetune_lr", a.finetune_lr}};
  r.bytes = modelcomp::encode_packed(r.packed);  // with the compress block in its metadata
  io::make_dirs(a.out);
  const std::string packed_path = a.out + "/model.packed";
  io::write_file_atomic(packed_path, r.bytes.file);

  json layers = json::array();
  for (size_t i = 0; i < r.layers.size(); ++i) {
    const auto& l = r.layers[i];
    layers.push_back({{"name", l.name},
                      {"dims", l.dims},
                      {"encoding", l.encoding},
                      {"sparsity", l.sparsity},
                      {"bits", l.bits},
                      {"fp32_bytes", l.fp32_bytes},
                      {"packed_bytes", r.bytes.record_bytes[i]}});
  }
  const size_t file_bytes = r.bytes.file.size();
  json j{{"kind", "compress"},
         {"model_file", a.model},
         {"packed_file", packed_path},
         {"options", r.packed.meta["compress"]},
         {"layers", layers},
         {"weights_fp32_bytes", r.fp32_bytes},
         {"packed_file_bytes", file_bytes},
         {"ratio_vs_fp32", double(r.fp32_bytes) / double(file_bytes)},
         {"fine_tuned", a.finetune_epochs > 0},
         {"stages", stages}};
  std::printf("%-28s %zu -> %zu bytes (%.1fx, counting every byte of the file)\n", "weights fp32 -> packed",
              r.fp32_bytes, file_bytes, double(r.fp32_bytes) / double(file_bytes));
  if (!a.no_eval) {  // accuracy of the original and of the decoded packed model, same data, same code
    std::string dataset = a.dataset;
    if (dataset.empty() && f.meta.contains("config")) dataset = f.meta["config"].value("dataset", "");
    FRUGAL_CHECK(!dataset.empty(), "--dataset is required (the model file does not name its dataset), or --no-eval");
    auto ds = data::load_dataset(dataset, data::data_roots(a.data_dir));
    auto norm = data::default_normalization(ds.test.name);
    auto before = nn::load_model(f, a.model);
    auto after = modelcomp::load_model_file(packed_path);
    train::EvalMetrics mb = train::evaluate(*before.model, ds.test, norm, a.batch, 0.f);
    train::EvalMetrics ma = train::evaluate(*after.model, ds.test, norm, a.batch, 0.f);
    j["test_accuracy_before"] = mb.top1;
    j["test_accuracy_after"] = ma.top1;
    j["dataset"] = dataset;
    std::printf("%-28s %.2f %% -> %.2f %% (%+.2f pp, %s)\n", "test accuracy", 100 * mb.top1, 100 * ma.top1,
                100 * (ma.top1 - mb.top1),
                a.finetune_epochs > 0 ? "fine-tuned after pruning and after sharing" : "no fine-tuning");
  }
  j["environment"] = io::environment_info();
  io::write_file_atomic(a.out + "/compress.json", j.dump(2) + "\n");
  std::printf("wrote %s and %s/compress.json\n", packed_path.c_str(), a.out.c_str());
}
}  // namespace

void add_compress(CLI::App& app, Globals&) {
  auto a = std::make_shared<CompressArgs>();
  auto* c = app.add_subcommand("compress",
                               "Compress a trained model into a packed file: magnitude pruning, weight sharing (k-means), "
                               "relative sparse indices, Huffman coding (Deep Compression), with --finetune-epochs after pruning and sharing");
  c->add_option("--model", a->model, "model.bin written by frugal train")->required()->check(CLI::ExistingFile);
  c->add_option("--out", a->out, "output folder: model.packed, compress.json")->capture_default_str();
  c->add_option("--sparsity", a->o.sparsity, "fraction of each compressed tensor's weights pruned by magnitude")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.999));
  c->add_option("--conv-bits", a->o.conv_bits, "shared-weight bits of conv weights")->capture_default_str()->check(CLI::Range(1, 16));
  c->add_option("--fc-bits", a->o.fc_bits, "shared-weight bits of linear weights")->capture_default_str()->check(CLI::Range(1, 16));
  c->add_option("--conv-index-bits", a->o.conv_index_bits, "relative-index bits of conv weights")
      ->capture_default_str()
      ->check(CLI::Range(1, 16));
  c->add_option("--fc-index-bits", a->o.fc_index_bits, "relative-index bits of linear weights")
      ->capture_default_str()
      ->check(CLI::Range(1, 16));
  c->add_option("--min-numel", a->o.min_numel, "tensors with fewer elements stay dense fp32")->capture_default_str();
  c->add_option("--dataset", a->dataset, "dataset for the accuracy before/after (default: the model's)");
  c->add_option("--data-dir", a->data_dir, "extra data root (also FRUGAL_DATA)");
  c->add_flag("--no-eval", a->no_eval, "skip the accuracy measurement");
  c->add_option("--finetune-epochs", a->finetune_epochs,
                "epochs of fine-tuning after pruning and again after sharing (0: one-shot), with the model's "
                "training config")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  c->add_option("--finetune-lr", a->finetune_lr, "peak learning rate of the fine-tuning (cosine schedule)")
      ->capture_default_str();
  c->add_flag("--int8", a->int8,
              "int8 deployment instead: fold batch norms, calibrate activation scales on training images, per-channel "
              "int8 weights; evaluate runs it on oneDNN's int8 convolution / inner product");
  c->add_option("--calib-images", a->calib_images, "training images for the int8 activation calibration")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  c->add_option("--channels", a->channels,
                "structured pruning instead: remove this fraction of the output channels of every prunable conv / "
                "hidden linear (with its batch norm and the next layer's inputs); the packed model runs smaller")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.99));
  c->add_option("--lowrank", a->lowrank,
                "low-rank factorization instead: replace each selected linear / conv by two smaller layers from its "
                "truncated SVD, the rank per layer keeping this fraction of the squared singular values (energy); "
                "layers where the factors would not be smaller stay; the packed model runs at the factors' shapes")
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--lowrank-layers", a->lowrank_options.layers, "which layers --lowrank factorizes: linear, conv, all")
      ->capture_default_str()
      ->check(CLI::IsMember({"linear", "conv", "all"}));
  c->add_option("--lowrank-max-rank", a->lowrank_options.max_rank_fraction,
                "--lowrank: cap each rank at this fraction of min(rows, cols)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--lowrank-min-numel", a->lowrank_options.min_numel, "--lowrank: layers with fewer weights stay")
      ->capture_default_str();
  c->add_option("--criterion", a->criterion,
                "which weights / channels to prune: magnitude, or taylor (first-order Taylor saliency |w dL/dw| "
                "summed over --saliency-batches training batches, Molchanov et al. 2017)")
      ->capture_default_str()
      ->check(CLI::IsMember({"magnitude", "taylor"}));
  c->add_option("--saliency-batches", a->saliency_batches, "training batches of 128 for --criterion taylor")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  c->callback([a]() { run_compress(*a); });
}

}  // namespace frugal::app
