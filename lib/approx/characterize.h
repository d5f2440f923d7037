// Error characterization of 8x8 multipliers over all 65,536 operand pairs, with EvoApproxLib's metric
// definitions (Mrazek et al., DATE 2017; checked against the library's C headers, see
// shared/research/approximate-computing.md §3.2). Error d = mul(a,b) - a*b.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "approx/multiplier.h"

namespace frugal::approx {

/// Keys: multiplier, signed, relative_power, pairs, mae, mae_pct (MAE / 2^16 * 100), wce, wce_pct,
/// mre_pct (mean |d|/|a*b| over pairs with a*b != 0, in %), wcre_pct, ep_pct (P(d != 0) in %),
/// bias (mean d), mse (mean d^2), nmed (MAE / max|a*b|: 65,025 unsigned, 16,384 signed).
nlohmann::json characterize(const Multiplier& m);

/// Writes a 256x256 heat map of d (rows a, columns b, in operand order lo..hi) with the TURBO colormap
/// centred on zero, plus a colour bar with its +-max|d| labels. Throws if the PNG cannot be written.
void write_error_heatmap_png(const Multiplier& m, const std::string& path);

}  // namespace frugal::approx
