#include "approx/energy.h"

#include "util/check.h"

namespace frugal::approx {

int64_t conv_macs(int64_t n, int64_t oh, int64_t ow, int64_t oc, int64_t ic, int64_t kh, int64_t kw, int64_t groups) {
  FRUGAL_CHECK(groups > 0 && ic % groups == 0, "conv_macs: ic=", ic, " not a multiple of groups=", groups);
  return n * oh * ow * oc * (ic / groups) * kh * kw;
}

nlohmann::json energy_report(const std::vector<LayerCost>& layers, const EnergyTable& t) {
  nlohmann::json out;
  out["model"] = "Horowitz ISSCC 2014 45nm, arithmetic-only proxy";
  out["layers"] = nlohmann::json::array();
  double total = 0;
  int64_t total_macs = 0;
  for (const LayerCost& l : layers) {
    FRUGAL_CHECK(l.macs >= 0, "energy: layer '", l.name, "' has negative MAC count ", l.macs);
    double mul = 0, add = 0;
    if (l.arithmetic == "fp32") {
      mul = t.fp32_mul, add = t.fp32_add;
    } else if (l.arithmetic == "fp16") {
      mul = t.fp16_mul, add = t.fp16_add;
    } else if (l.arithmetic.size() > 3 && l.arithmetic.rfind("int", 0) == 0) {
      int wb = 0, ab = 0;
      const std::string spec = l.arithmetic.substr(3);
      const size_t x = spec.find('x');
      try {
        size_t used = 0;
        wb = std::stoi(spec.substr(0, x), &used);
        if (used != (x == std::string::npos ? spec.size() : x)) wb = 0;
        ab = wb;
        if (x != std::string::npos) {
          ab = std::stoi(spec.substr(x + 1), &used);
          if (used != spec.size() - x - 1) ab = 0;
        }
      } catch (...) {
        wb = ab = 0;
      }
      FRUGAL_CHECK(wb >= 2 && wb <= 16 && ab >= 2 && ab <= 16, "energy: layer '", l.name, "' arithmetic '",
                   l.arithmetic, "' needs intN or intWxA with N, W, A in [2,16]");
      FRUGAL_CHECK(l.relative_power > 0, "energy: layer '", l.name, "' relative_power must be > 0");
      mul = t.int8_mul * (wb / 8.0) * (ab / 8.0) * l.relative_power;
      add = t.int32_add;
    } else {
      FRUGAL_FAIL("energy: layer '", l.name, "' arithmetic '", l.arithmetic, "' unknown; expected fp32, fp16, intN or intWxA");
    }
    double e = double(l.macs) * (mul + add);
    total += e;
    total_macs += l.macs;
    out["layers"].push_back({{"name", l.name}, {"macs", l.macs}, {"arithmetic", l.arithmetic},
                             {"multiplier", l.multiplier}, {"relative_power", l.relative_power},
                             {"mul_pj", mul}, {"add_pj", add}, {"energy_pj", e}});
  }
  out["total_pj"] = total;
  out["total_uj"] = total * 1e-6;
  out["total_macs"] = total_macs;
  return out;
}

}  // namespace frugal::approx
