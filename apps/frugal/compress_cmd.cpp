// frugal compress: Deep Compression of a trained model into a packed model file that `frugal evaluate` reads
// (lib/modelcomp/): magnitude pruning, weight sharing, Huffman coding, with optional fine-tuning after pruning and
// after sharing. Structured pruning, Taylor saliency, low-rank layers and int8 deployment are still to come.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "commands.h"
#include "data/dataset.h"
#include "io/environment.h"
#include "io/files.h"
#include "modelcomp/deep_compression.h"
#include "nn/model_io.h"
#include "io/config.h"
#include "io/tensor_file.h"
#include "train/evaluate.h"
#include "train/trainer.h"
#include "util/check.h"

namespace frugal::app {

using json = nlohmann::json;

namespace {
struct CompressArgs {
  std::string model, out = "runs/compress", dataset, data_dir;
  modelcomp::DeepCompressionOptions o;
  int batch = 500;
  bool no_eval = false;
  int finetune_epochs = 0;
  double finetune_lr = 0.01;
};

/// Fine-tunes the model in `init` for a.finetune_epochs under the constraints (pruning masks or shared weights),
/// with the model's own training config (lr, schedule and run length replaced); returns the fine-tuned tensors.
io::TensorFile finetune(const CompressArgs& a, const io::TensorFile& model, const std::string& init,
                        const std::vector<std::pair<std::string, modelcomp::WeightConstraint>>& constraints,
                        const std::string& out_dir) {
  io::Config cfg;
  if (model.meta.contains("config")) cfg.merge(model.meta["config"], init);
  for (const char* kv : {"workers=1", "compressor=none", "max_steps=-1", "swa_epochs=0", "schedule=cosine",
                         "warmup_epochs=0", "target_accuracy=-1"})
    cfg.set(kv);
  cfg.set("init=" + init);
  cfg.set("epochs=" + std::to_string(a.finetune_epochs));
  cfg.set("lr=" + std::to_string(a.finetune_lr));
  if (!a.data_dir.empty()) cfg.set("data_dir=" + a.data_dir);
  if (!a.dataset.empty()) cfg.set("dataset=" + a.dataset);
  train::TrainOptions o;
  o.out_dir = out_dir;
  o.progress = [](const std::string& l) { std::fprintf(stderr, "  %s\n", l.c_str()); };
  o.after_update = [&](const std::vector<nn::Param*>& params) {
    for (auto* p : params)
      for (const auto& [name, c] : constraints)
        if (name == p->name) modelcomp::apply_constraint(c, p->value.data(), size_t(p->value.size()));
  };
  train::run_training(cfg, o);
  return io::load_tensor_file(out_dir + "/model.bin");
}

void run_compress(const CompressArgs& a) {
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
  if (a.finetune_epochs > 0) {
    std::fprintf(stderr, "[compress] prune to %.1f %% zeros, fine-tune %d epochs at lr %g under the mask\n",
                 100 * a.o.sparsity, a.finetune_epochs, a.finetune_lr);
    const auto masks = modelcomp::pruning_constraints(weights, a.o);
    for (auto& [name, t] : weights.tensors)
      for (const auto& [mname, c] : masks)
        if (mname == name) modelcomp::apply_constraint(c, t.data(), size_t(t.size()));
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
                               {"source", a.model}, {"finetune_epochs", a.finetune_epochs},
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
    auto after = nn::load_model(modelcomp::read_model_file(packed_path), packed_path);
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
  c->callback([a]() { run_compress(*a); });
}

}  // namespace frugal::app
