#include "compress_common.h"

#include <cstdio>

#include "io/config.h"
#include "train/trainer.h"
#include "util/check.h"

namespace frugal::app {

modelcomp::PackedTensor dense_record(const std::string& name, const Tensor& t) {
  modelcomp::PackedTensor p;
  p.name = name;
  p.dims = t.dims();
  p.dense.assign(t.data(), t.data() + t.size());
  return p;
}

std::string dataset_of(const CompressArgs& a, const nlohmann::json& meta) {
  std::string dataset = a.dataset;
  if (dataset.empty() && meta.contains("config")) dataset = meta["config"].value("dataset", "");
  FRUGAL_CHECK(!dataset.empty(), "--dataset is required (the model file does not name its dataset)");
  return dataset;
}

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

io::TensorFile finetune(const CompressArgs& a, const io::TensorFile& model, const std::string& init,
                        const std::vector<std::pair<std::string, modelcomp::WeightConstraint>>& constraints,
                        const std::string& out_dir, const std::string& spec_json) {
  io::Config cfg;
  if (model.meta.contains("config")) cfg.merge(model.meta["config"], init);
  for (const char* kv : {"workers=1", "compressor=none", "max_steps=-1", "swa_epochs=0", "schedule=cosine",
                         "warmup_epochs=0", "target_accuracy=-1"})
    cfg.set(kv);
  cfg.set("init=" + init);
  if (!spec_json.empty()) cfg.set("model=" + spec_json);  // a structurally pruned model: its own spec
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

}  // namespace frugal::app
