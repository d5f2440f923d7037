// Magnitude pruning thresholds and Zhu & Gupta's gradual pruning schedule (compress's prune stage).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace frugal::modelcomp {

/// The magnitude below which a fraction `sparsity` (in [0, 1)) of the n values lies: pruning every |x| < threshold
/// (and, on ties, no more than needed) leaves round(n (1 - sparsity)) values.
float magnitude_threshold(const float* x, size_t n, double sparsity);

/// keep (n) <- 1 where x is kept at this sparsity (exactly n - round(n sparsity) kept; ties broken by position).
std::vector<uint8_t> magnitude_mask(const float* x, size_t n, double sparsity);

/// One threshold over several layers (global pruning): the layers' values pooled.
float global_magnitude_threshold(const std::vector<std::pair<const float*, size_t>>& layers, double sparsity);

/// Zhu & Gupta (2017) gradual pruning: sparsity at step t of a schedule that starts at t0 with s_initial and reaches
/// s_final after n pruning steps of dt: s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3, clamped to the ends.
double gradual_sparsity(double s_initial, double s_final, long t, long t0, long n, long dt);

}  // namespace frugal::modelcomp
