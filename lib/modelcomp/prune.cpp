#include "modelcomp/prune.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "util/check.h"

namespace frugal::modelcomp {

namespace {
size_t pruned_count(size_t n, double sparsity) {
  FRUGAL_CHECK(sparsity >= 0 && sparsity < 1, "pruning: sparsity must be in [0, 1), got ", sparsity);
  return std::min(n, size_t(std::llround(double(n) * sparsity)));
}
}  // namespace

float magnitude_threshold(const float* x, size_t n, double sparsity) {
  return global_magnitude_threshold({{x, n}}, sparsity);
}

float global_magnitude_threshold(const std::vector<std::pair<const float*, size_t>>& layers, double sparsity) {
  std::vector<float> mag;
  for (auto& [p, n] : layers)
    for (size_t i = 0; i < n; ++i) mag.push_back(std::fabs(p[i]));
  FRUGAL_CHECK(!mag.empty(), "pruning: no values");
  const size_t k = pruned_count(mag.size(), sparsity);
  if (k == 0) return 0.0f;
  std::nth_element(mag.begin(), mag.begin() + long(k - 1), mag.end());
  return mag[k - 1];  // the largest pruned magnitude
}

std::vector<uint8_t> magnitude_mask(const float* x, size_t n, double sparsity) {
  const size_t k = pruned_count(n, sparsity);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return std::fabs(x[a]) < std::fabs(x[b]); });
  std::vector<uint8_t> keep(n, 1);
  for (size_t i = 0; i < k; ++i) keep[order[i]] = 0;
  return keep;
}

double gradual_sparsity(double s_initial, double s_final, long t, long t0, long n, long dt) {
  FRUGAL_CHECK(n >= 1 && dt >= 1, "gradual pruning: n and dt must be >= 1");
  if (t <= t0) return s_initial;
  const double frac = std::min(1.0, double(t - t0) / double(n * dt));
  return s_final + (s_initial - s_final) * std::pow(1.0 - frac, 3);
}

}  // namespace frugal::modelcomp
