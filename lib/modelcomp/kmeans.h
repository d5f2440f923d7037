// Weight sharing (Deep Compression, Han et al. 2016, sec. 3): a layer's weights clustered into k = 2^bits shared
// values by 1-D k-means; each weight is then stored as a bits-wide index into the codebook.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace frugal::modelcomp {

struct Codebook {
  std::vector<float> centroids;      ///< (k) ascending
  std::vector<uint32_t> assignment;  ///< (n) index of each value's centroid
  int iterations = 0;                ///< Lloyd iterations run
};

/// 1-D k-means of x (n values) into k centroids, initialized linearly over [min, max] (the initialization Deep
/// Compression found best: it keeps the rare large weights), then Lloyd iterations until no assignment changes
/// or max_iter. Each value goes to its nearest centroid (ties to the lower one); a cluster left empty moves to the
/// value farthest from its centroid (so planted clusters that the linear grid misses are still found).
Codebook kmeans_1d(const float* x, size_t n, int k, int max_iter = 100);

/// Index of the centroid nearest to v in ascending `centroids` (ties to the lower one).
uint32_t nearest_centroid(const std::vector<float>& centroids, float v);

}  // namespace frugal::modelcomp
