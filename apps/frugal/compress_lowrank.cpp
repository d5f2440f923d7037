// frugal compress --lowrank ENERGY: truncated-SVD factorization of the model's linear / conv layers
// (modelcomp::factorize_model), optional fine-tuning of the factorized model, packed as dense fp32 records at the
// factors' real shapes; accuracy on the test set (and on the validation split the model was trained with) before,
// after factorization and after fine-tuning, params, MACs and speed before / after.
#include <cstdio>

#include "compress_common.h"
#include "io/environment.h"
#include "io/files.h"
#include "modelcomp/int8_net.h"
#include "nn/model_io.h"
#include "train/trainer.h"
#include "util/check.h"

namespace frugal::app {

using json = nlohmann::json;

namespace {

json layer_json(const modelcomp::LowRankLayer& l) {
  json j{{"name", l.name},
         {"kind", l.kind},
         {"dims", l.dims},
         {"matrix", {l.rows, l.cols}},
         {"factorized", l.factorized},
         {"rank", l.rank},
         {"rank_max", l.rank_max},
         {"energy_kept", l.energy_kept},
         {"params_before", l.params_before},
         {"params_after", l.params_after},
         {"macs_before", l.macs_before},
         {"macs_after", l.macs_after}};
  if (!l.factorized) j["reason"] = l.reason;
  if (!l.factor_names.empty()) j["factors"] = l.factor_names;
  return j;
}

/// Test and (when the model was trained with one) validation accuracy.
struct Accuracy {
  double test = 0;
  double val = -1;  ///< -1: no validation split
  json to_json() const {
    json j{{"test", test}};
    if (val >= 0) j["val"] = val;
    return j;
  }
};

Accuracy accuracy_of(nn::Model& m, const train::TrainingData& d, int batch) {
  Accuracy a;
  a.test = train::evaluate(m, d.split.test, d.norm, batch, 0.f).top1;
  if (d.val.size() > 0) a.val = train::evaluate(m, d.val, d.norm, batch, 0.f).top1;
  return a;
}

std::string pct(const Accuracy& a) {
  char buf[96];
  if (a.val >= 0)
    std::snprintf(buf, sizeof buf, "test %.2f %% / val %.2f %%", 100 * a.test, 100 * a.val);
  else
    std::snprintf(buf, sizeof buf, "test %.2f %%", 100 * a.test);
  return buf;
}

}  // namespace

void run_lowrank(const CompressArgs& a) {
  nn::LoadedModel src = modelcomp::load_model_file(a.model);
  FRUGAL_CHECK(!src.model->inference_net(), "'", a.model, "' is an int8 deployment: factorize its fp32 source");
  modelcomp::LowRankOptions o = a.lowrank_options;
  o.energy = a.lowrank;
  modelcomp::FactorizedModel f = modelcomp::factorize_model(*src.model, o);
  nn::Model& lr = *f.model;
  std::fprintf(stderr, "[compress] low-rank at energy %g (%s layers):\n", o.energy, o.layers.c_str());
  for (const auto& l : f.layers)
    if (l.factorized)
      std::fprintf(stderr, "  %-16s %-6s (%d x %d) rank %d of %d, energy %.4f, params %lld -> %lld\n", l.name.c_str(),
                   l.kind.c_str(), l.rows, l.cols, l.rank, l.rank_max, l.energy_kept, (long long)l.params_before,
                   (long long)l.params_after);
    else
      std::fprintf(stderr, "  %-16s %-6s (%d x %d) kept: %s%s\n", l.name.c_str(), l.kind.c_str(), l.rows, l.cols,
                   l.reason.c_str(), l.rank > 0 ? (" (rank " + std::to_string(l.rank) + ")").c_str() : "");

  io::make_dirs(a.out);
  json extra = src.meta;
  extra.erase("spec");
  const std::string spec_json = a.out + "/lowrank_spec.json";
  io::write_file_atomic(spec_json, lr.spec().dump(2) + "\n");
  nn::save_model(a.out + "/lowrank.bin", lr, extra);

  train::TrainingData data;  // the model's own validation split (config val_split), its test set
  const std::string dataset = dataset_of(a, src.meta);
  Accuracy acc_before, acc_factorized;
  if (!a.no_eval) {
    train::DataOptions d;
    d.dataset = dataset;
    d.data_dir = a.data_dir;
    const json cfg = src.meta.value("config", json::object());
    d.val_split = cfg.value("val_split", int64_t(0));
    data = train::load_training_data(d, cfg.value("schedule", std::string("cosine")));
    acc_before = accuracy_of(*src.model, data, a.batch);
    acc_factorized = accuracy_of(*nn::load_model(a.out + "/lowrank.bin").model, data, a.batch);
  }
  json stages = json::array();
  if (a.finetune_epochs > 0) {
    std::fprintf(stderr, "[compress] fine-tune the factorized model %d epochs at lr %g\n", a.finetune_epochs,
                 a.finetune_lr);
    const io::TensorFile tuned = finetune(a, io::load_tensor_file(a.out + "/lowrank.bin"), a.out + "/lowrank.bin", {},
                                          a.out + "/finetune", spec_json);
    nn::load_model_tensors(lr, tuned, a.out + "/finetune/model.bin");
    stages.push_back({{"stage", "lowrank+finetune"}, {"epochs", a.finetune_epochs}, {"lr", a.finetune_lr},
                      {"run", a.out + "/finetune"}});
  }

  // The factor layers are ordinary layers of the new spec: their tensors go in as dense fp32 records at their shapes.
  modelcomp::PackedModel pm;
  pm.meta = extra;
  pm.meta["kind"] = "packed-model";
  pm.meta["spec"] = lr.spec();
  pm.meta["compress"] = {{"lowrank", o.energy},          {"lowrank_layers", o.layers},
                         {"max_rank_fraction", o.max_rank_fraction}, {"min_numel", o.min_numel},
                         {"source", a.model},            {"finetune_epochs", a.finetune_epochs},
                         {"finetune_lr", a.finetune_lr}};
  io::TensorFile tensors;
  nn::add_model_tensors(lr, tensors);
  for (const auto& [name, t] : tensors.tensors) pm.tensors.push_back(dense_record(name, t));
  const modelcomp::PackedBytes bytes = modelcomp::encode_packed(pm);
  const std::string packed_path = a.out + "/model.packed";
  io::write_file_atomic(packed_path, bytes.file);

  json layers = json::array(), records = json::array();
  for (const auto& l : f.layers) layers.push_back(layer_json(l));
  for (size_t i = 0; i < pm.tensors.size(); ++i)
    records.push_back({{"name", pm.tensors[i].name}, {"dims", pm.tensors[i].dims},
                       {"encoding", modelcomp::encoding_name(pm.tensors[i].encoding)},
                       {"packed_bytes", bytes.record_bytes[i]}});
  auto after = modelcomp::load_model_file(packed_path);
  const size_t fp32_bytes = size_t(src.model->num_params()) * 4;
  json j{{"kind", "compress"},
         {"mode", "lowrank"},
         {"model_file", a.model},
         {"packed_file", packed_path},
         {"options", pm.meta["compress"]},
         {"layers", layers},
         {"records", records},
         {"stages", stages},
         {"dataset", dataset},
         {"params_before", src.model->num_params()},
         {"params_after", after.model->num_params()},
         {"macs_before", src.model->macs_per_image()},
         {"macs_after", after.model->macs_per_image()},
         {"weights_fp32_bytes", fp32_bytes},
         {"packed_file_bytes", bytes.file.size()},
         {"ratio_vs_fp32", double(fp32_bytes) / double(bytes.file.size())}};
  std::printf("%-30s %lld -> %lld (%.2fx fewer)\n", "params", (long long)src.model->num_params(),
              (long long)after.model->num_params(),
              double(src.model->num_params()) / double(after.model->num_params()));
  std::printf("%-30s %lld -> %lld (%.2fx fewer)\n", "MACs / image", (long long)src.model->macs_per_image(),
              (long long)after.model->macs_per_image(),
              double(src.model->macs_per_image()) / double(after.model->macs_per_image()));
  std::printf("%-30s %zu -> %zu bytes (%.2fx, counting every byte of the file)\n", "weights fp32 -> packed",
              fp32_bytes, bytes.file.size(), double(fp32_bytes) / double(bytes.file.size()));
  if (!a.no_eval) {
    const Accuracy acc_after = accuracy_of(*after.model, data, a.batch);
    const auto [sb, sa] = interleaved_speed(*src.model, *after.model);
    j["accuracy_before"] = acc_before.to_json();
    j["accuracy_factorized"] = acc_factorized.to_json();  // before fine-tuning
    j["accuracy_after"] = acc_after.to_json();
    j["test_accuracy_before"] = acc_before.test;
    j["test_accuracy_after"] = acc_after.test;
    j["val_split"] = data.val_split;
    j["speed_before"] = sb.to_json();
    j["speed_after"] = sa.to_json();
    std::printf("%-30s %s\n", "accuracy before", pct(acc_before).c_str());
    std::printf("%-30s %s\n", "accuracy factorized", pct(acc_factorized).c_str());
    std::printf("%-30s %s (%+.2f pp test)\n", a.finetune_epochs > 0 ? "accuracy fine-tuned" : "accuracy packed",
                pct(acc_after).c_str(), 100 * (acc_after.test - acc_before.test));
    std::printf("%-30s %.3f -> %.3f ms (%.2fx faster)\n", "latency batch 1 (median of 3)", sb.latency_b1_ms_median,
                sa.latency_b1_ms_median, sb.latency_b1_ms_median / sa.latency_b1_ms_median);
    std::printf("%-30s %.0f -> %.0f img/s (%.2fx)\n", "throughput batch 256 (median)", sb.throughput_img_s,
                sa.throughput_img_s, sa.throughput_img_s / sb.throughput_img_s);
  }
  j["environment"] = io::environment_info();
  io::write_file_atomic(a.out + "/compress.json", j.dump(2) + "\n");
  std::printf("wrote %s and %s/compress.json\n", packed_path.c_str(), a.out.c_str());
}

}  // namespace frugal::app
