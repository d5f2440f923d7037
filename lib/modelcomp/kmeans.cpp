#include "modelcomp/kmeans.h"

#include <algorithm>
#include <cmath>

#include "util/check.h"

namespace frugal::modelcomp {

uint32_t nearest_centroid(const std::vector<float>& c, float v) {
  // first centroid not below v; compare with its lower neighbour
  auto it = std::lower_bound(c.begin(), c.end(), v);
  if (it == c.begin()) return 0;
  if (it == c.end()) return uint32_t(c.size() - 1);
  const size_t hi = size_t(it - c.begin());
  return (v - c[hi - 1] <= c[hi] - v) ? uint32_t(hi - 1) : uint32_t(hi);
}

Codebook kmeans_1d(const float* x, size_t n, int k, int max_iter) {
  FRUGAL_CHECK(k >= 1, "kmeans: k must be >= 1, got ", k);
  FRUGAL_CHECK(n >= 1, "kmeans: no values to cluster");
  float lo = x[0], hi = x[0];
  for (size_t i = 0; i < n; ++i) {
    FRUGAL_CHECK(std::isfinite(x[i]), "kmeans: value ", i, " is not finite (", x[i], ")");
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  Codebook cb;
  cb.centroids.resize(size_t(k));
  for (int j = 0; j < k; ++j)
    cb.centroids[size_t(j)] = k == 1 ? 0.5f * (lo + hi) : lo + (hi - lo) * float(j) / float(k - 1);
  cb.assignment.assign(n, 0);
  std::vector<double> sum(static_cast<size_t>(k));
  std::vector<size_t> cnt(static_cast<size_t>(k));
  for (size_t i = 0; i < n; ++i) cb.assignment[i] = nearest_centroid(cb.centroids, x[i]);
  for (cb.iterations = 1; cb.iterations <= max_iter; ++cb.iterations) {
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(cnt.begin(), cnt.end(), 0);
    for (size_t i = 0; i < n; ++i) {
      sum[cb.assignment[i]] += x[i];
      ++cnt[cb.assignment[i]];
    }
    bool reseeded = false;
    for (size_t j = 0; j < size_t(k); ++j)
      if (cnt[j]) cb.centroids[j] = float(sum[j] / double(cnt[j]));
    for (size_t j = 0; j < size_t(k); ++j) {
      if (cnt[j]) continue;
      // an empty cluster moves to the value farthest from its centroid (splitting the worst cluster), unless
      // every value already sits on a centroid
      size_t far = 0;
      float dist = -1;
      for (size_t i = 0; i < n; ++i)
        if (float d = std::fabs(x[i] - cb.centroids[cb.assignment[i]]); d > dist) {
          dist = d;
          far = i;
        }
      if (dist > 0) {
        cb.centroids[j] = x[far];
        cb.assignment[far] = uint32_t(j);
        cnt[j] = 1;
        reseeded = true;
      }
    }
    std::sort(cb.centroids.begin(), cb.centroids.end());  // means of ordered 1-D clusters stay ordered; kept safe
    bool changed = reseeded;
    for (size_t i = 0; i < n; ++i) {
      const uint32_t a = nearest_centroid(cb.centroids, x[i]);
      changed |= a != cb.assignment[i];
      cb.assignment[i] = a;
    }
    if (!changed) break;
  }
  cb.iterations = std::min(cb.iterations, max_iter);
  return cb;
}

}  // namespace frugal::modelcomp
