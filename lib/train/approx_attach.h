// Puts quantized / approximate-multiplier arithmetic (lib/approx) into the forward pass of a model's conv
// and linear layers, per the config keys multiplier, bits, act_bits, layer_bits, approx_mode, approx_layers.
// Widths 2-8 run on the integer kernels; 9-16 (multiplier=exact only) as fake quantization (approx/fake_quant.h).
#pragma once
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/transforms.h"
#include "io/config.h"
#include "nn/model.h"

namespace frugal::train {

/// The approximate-arithmetic keys of a run (config keys in brackets; io/config.cpp documents their values).
struct ApproxOptions {
  std::string multiplier;            ///< [multiplier] spec (approx/multiplier.h); empty: fp32, nothing attached
  int bits = 8, act_bits = 8;        ///< [bits] [act_bits] operand widths
  std::string mode = "lut";          ///< [approx_mode] lut | functional | lowrank:R
  std::string layers = "all";        ///< [approx_layers] which conv/linear layers
  std::string layer_bits;            ///< [layer_bits] per-layer W/A widths (overrides bits/act_bits)
  std::string gradient = "ste";      ///< [approx_grad] ste | lut
  bool per_channel = true;           ///< [per_channel] weight scales per output channel
  std::string act_quant = "symmetric";  ///< [act_quant] symmetric | affine
  std::string calibration = "batch";    ///< [act_calibration] batch | minmax:N | percentile:N[:P]
};

/// The ApproxOptions of a config (checks approx_grad and act_quant, and parses the multiplier spec).
ApproxOptions approx_options(const io::Config& cfg);

/// Returns null when the multiplier is empty (fp32), else {"multiplier", "mode", "layers": [{index, layer,
/// arithmetic, kernel_path}]}; kernel_path (approximate layers only) names the kernels this CPU runs them on,
/// e.g. "lut-avx512-vbmi" or "onednn-int8-split+terms-avx2" (approx::ApproxConv2d::kernel_path).
nlohmann::json attach_approx(nn::Model& model, const ApproxOptions& o);
inline nlohmann::json attach_approx(nn::Model& model, const io::Config& cfg) {
  return attach_approx(model, approx_options(cfg));
}

/// Calibrates the activation range of every approximate layer of model (attached by attach_approx) per
/// o.calibration: "batch" does nothing (each forward uses its batch's min/max); "minmax:N" and
/// "percentile:N[:P]" run N batches of ds (no augmentation, eval mode) and fix each layer's range to the
/// observed min/max or the P-th percentiles (default 99.99), averaged over the batches. Returns the
/// calibration report for results ({"method", "batches", "layers": [{index, lo, hi}]}) or null for "batch".
nlohmann::json calibrate_approx(nn::Model& model, const ApproxOptions& o, const data::Dataset& ds,
                                const data::Normalization& norm, int batch);

}  // namespace frugal::train
