// Energy proxy per layer: MAC count x energy per operation at 45 nm (Horowitz, "Computing's energy
// problem", ISSCC 2014, Fig. 1.1.9). It counts arithmetic only (no SRAM/DRAM traffic), so it is a proxy
// for comparing arithmetic choices, not a prediction of a chip's power.
//   fp32 MAC = 3.7 (mul) + 0.9 (add) pJ; fp16 MAC = 1.1 + 0.4 pJ;
//   intN MAC = 0.2 pJ * (N/8)^2 * relative_power (an array multiplier's energy grows with operand bits
//              squared; relative_power from the multiplier spec) + 0.1 pJ (int32 accumulate add);
//   intWxA MAC (W-bit weights times A-bit activations, per-layer bit-widths) = 0.2 pJ * (W/8)(A/8) *
//              relative_power + 0.1 pJ (the partial-product array is W x A).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace frugal::approx {

struct EnergyTable {  // pJ per operation
  double int8_mul = 0.2, int8_add = 0.03, int32_add = 0.1;
  double fp32_mul = 3.7, fp32_add = 0.9, fp16_mul = 1.1, fp16_add = 0.4;
};

struct LayerCost {
  std::string name;             // "conv1"
  int64_t macs = 0;             // multiply-accumulates per inference (or per batch, as the caller counts)
  std::string arithmetic = "fp32";  // fp32 | fp16 | intN | intWxA (N, W, A in 2..16)
  std::string multiplier = "exact";  // spec, informational
  double relative_power = 1.0;  // multiplier power vs exact (intN only)
};

/// {"layers": [{name, macs, arithmetic, multiplier, mul_pj, add_pj, energy_pj}], "total_pj", "total_uj",
///  "total_macs", "model": "Horowitz ISSCC 2014 45nm arithmetic-only proxy"}. Throws on an unknown arithmetic.
nlohmann::json energy_report(const std::vector<LayerCost>& layers, const EnergyTable& table = {});
/// MACs of a conv layer: N * OH * OW * OC * (IC/groups) * KH * KW.
int64_t conv_macs(int64_t n, int64_t oh, int64_t ow, int64_t oc, int64_t ic, int64_t kh, int64_t kw, int64_t groups);

}  // namespace frugal::approx
