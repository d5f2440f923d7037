#include "sweep/trial_metrics.h"

#include <filesystem>
#include <memory>

#include "approx/energy.h"
#include "approx/multiplier.h"
#include "nn/layers.h"
#include "nn/model_io.h"
#include "train/approx_attach.h"

namespace frugal::sweep {

using json = nlohmann::json;

json trial_model_metrics(const std::string& model_path, const io::Config& cfg) {
  nn::LoadedModel lm = nn::load_model(model_path);
  nn::Model& model = *lm.model;
  train::attach_approx(model, cfg);
  const std::string mult_spec = cfg.s("multiplier");
  std::unique_ptr<approx::Multiplier> mult;
  if (!mult_spec.empty()) mult = approx::make_multiplier(mult_spec);
  std::vector<approx::LayerCost> costs;
  double weight_bytes = 0;
  const Dims& chw = model.input_chw();
  model.net().visit({1, chw[0], chw[1], chw[2]}, [&](nn::Layer& l, const Dims& src) {
    const nn::ApproxForward* ap = nullptr;
    const bool gemm = dynamic_cast<nn::Conv2d*>(&l) || dynamic_cast<nn::Linear*>(&l);
    if (auto* c = dynamic_cast<nn::Conv2d*>(&l)) ap = c->approx();
    if (auto* li = dynamic_cast<nn::Linear*>(&l)) ap = li->approx();
    int wb = 32;
    if (ap) wb = ap->bits().first;
    for (nn::Param* p : l.params())  // weights (>1-D) at the layer's bits; biases and the rest fp32
      weight_bytes += static_cast<double>(p->value.size()) * (p->value.ndim() > 1 ? wb : 32) / 8.0;
    if (!gemm) return;
    approx::LayerCost lc;
    lc.name = l.name();
    lc.macs = l.macs(src);
    if (ap) {
      const auto [w, a] = ap->bits();
      lc.arithmetic = "int" + std::to_string(w) + (w == a ? "" : "x" + std::to_string(a));
      lc.multiplier = mult_spec;
      lc.relative_power = mult->relative_power;
    }
    costs.push_back(lc);
  });
  const json energy = approx::energy_report(costs);
  return {{"model_file_bytes", static_cast<int64_t>(std::filesystem::file_size(model_path))},
          {"weight_bytes", weight_bytes},
          {"energy_uj", energy["total_uj"]},
          {"macs_per_image", energy["total_macs"]}};
}

}  // namespace frugal::sweep
