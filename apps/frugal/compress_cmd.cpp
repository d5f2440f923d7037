// frugal compress: one-shot Deep Compression of a trained model into a packed model file that `frugal evaluate`
// reads (lib/modelcomp/). Fine-tuning between stages, structured pruning, low-rank layers and int8 deployment are
// still to come (the compress issue); this writes the packed file and measures it.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "commands.h"
#include "data/dataset.h"
#include "io/environment.h"
#include "io/files.h"
#include "modelcomp/deep_compression.h"
#include "nn/model_io.h"
#include "train/evaluate.h"
#include "util/check.h"

namespace frugal::app {

using json = nlohmann::json;

namespace {
struct CompressArgs {
  std::string model, out = "runs/compress", dataset, data_dir;
  modelcomp::DeepCompressionOptions o;
  int batch = 500;
  bool no_eval = false;
};

void run_compress(const CompressArgs& a) {
  const io::TensorFile f = modelcomp::read_model_file(a.model);
  FRUGAL_CHECK(f.meta.contains("spec"), "'", a.model, "' has no model spec: give a model.bin written by frugal train");
  std::fprintf(stderr, "[compress] %s: pruning to %.1f %% zeros, sharing (conv %d / fc %d bits), Huffman coding\n",
               a.model.c_str(), 100 * a.o.sparsity, a.o.conv_bits, a.o.fc_bits);
  modelcomp::DeepCompressionResult r = modelcomp::deep_compress(f, a.o);
  r.packed.meta["compress"] = {{"sparsity", a.o.sparsity},         {"conv_bits", a.o.conv_bits},
                               {"fc_bits", a.o.fc_bits},           {"conv_index_bits", a.o.conv_index_bits},
                               {"fc_index_bits", a.o.fc_index_bits}, {"min_numel", a.o.min_numel},
                               {"source", a.model}};
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
         {"fine_tuned", false}};
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
    std::printf("%-28s %.2f %% -> %.2f %% (%+.2f pp, no fine-tuning)\n", "test accuracy", 100 * mb.top1,
                100 * ma.top1, 100 * (ma.top1 - mb.top1));
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
                               "relative sparse indices, Huffman coding (Deep Compression, one shot: no fine-tuning yet)");
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
  c->callback([a]() { run_compress(*a); });
}

}  // namespace frugal::app
