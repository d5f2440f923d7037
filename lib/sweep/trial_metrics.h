// What a sweep adds to a trial's results.json under "sweep.": numbers of the trained model that train does not
// report, for objectives such as accuracy against energy or model size.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "io/config.h"

namespace frugal::sweep {

/// From model_path (a trained model.bin) and the trial's config (multiplier, bits, act_bits, layer_bits):
///   model_file_bytes  the size of model.bin (fp32 weights plus its header)
///   weight_bytes      the parameters at their arithmetic's bit-width: conv/linear weights of approximate layers
///                     at that layer's weight bits, every other parameter fp32 (4 bytes)
///   energy_uj         arithmetic energy per image (lib/approx/energy.h: Horowitz 45 nm, MACs only)
///   macs_per_image
nlohmann::json trial_model_metrics(const std::string& model_path, const io::Config& cfg);

}  // namespace frugal::sweep
