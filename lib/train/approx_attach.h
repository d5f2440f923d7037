// Puts quantized / approximate-multiplier arithmetic (lib/approx) into the forward pass of a model's conv
// and linear layers, per the config keys multiplier, bits, act_bits, approx_mode, approx_layers.
#pragma once
#include <nlohmann/json.hpp>

#include "io/config.h"
#include "nn/model.h"

namespace frugal::train {

/// Returns null when cfg's multiplier is empty (fp32), else {"multiplier", "mode", "layers": [{index, layer, arithmetic}]}.
nlohmann::json attach_approx(nn::Model& model, const io::Config& cfg);

}  // namespace frugal::train
