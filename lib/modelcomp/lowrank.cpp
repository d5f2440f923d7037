#include "modelcomp/lowrank.h"

#include <opencv2/core.hpp>

#include <algorithm>
#include <cmath>

#include "util/check.h"

namespace frugal::modelcomp {

int rank_for_energy(const std::vector<double>& s, double energy) {
  FRUGAL_CHECK(energy > 0 && energy <= 1, "low-rank: energy must be in (0, 1], got ", energy);
  FRUGAL_CHECK(!s.empty(), "low-rank: no singular values");
  double total = 0;
  for (double v : s) total += v * v;
  if (total == 0) return 1;
  double kept = 0;
  for (size_t r = 0; r < s.size(); ++r) {
    kept += s[r] * s[r];
    if (kept >= energy * total * (1 - 1e-12)) return int(r + 1);
  }
  return int(s.size());
}

LowRank truncated_svd(const float* m, int rows, int cols, double energy, int max_rank) {
  FRUGAL_CHECK(rows >= 1 && cols >= 1, "low-rank: empty matrix (", rows, " x ", cols, ")");
  cv::Mat w(rows, cols, CV_64F);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      const float v = m[size_t(i) * size_t(cols) + size_t(j)];
      FRUGAL_CHECK(std::isfinite(v), "low-rank: element (", i, ", ", j, ") is not finite");
      w.at<double>(i, j) = v;
    }
  cv::Mat sv, u, vt;
  cv::SVD::compute(w, sv, u, vt, cv::SVD::MODIFY_A);  // thin: u (rows, k), vt (k, cols), k = min(rows, cols)
  LowRank f;
  f.rows = rows;
  f.cols = cols;
  for (int i = 0; i < sv.rows; ++i) f.s.push_back(sv.at<double>(i, 0));
  f.rank = rank_for_energy(f.s, energy);
  if (max_rank > 0) f.rank = std::min(f.rank, max_rank);
  double total = 0, kept = 0;
  for (size_t i = 0; i < f.s.size(); ++i) {
    total += f.s[i] * f.s[i];
    if (int(i) < f.rank) kept += f.s[i] * f.s[i];
  }
  f.energy_kept = total > 0 ? kept / total : 1.0;
  const int r = f.rank;
  f.a.assign(size_t(rows) * size_t(r), 0.0f);
  f.b.assign(size_t(r) * size_t(cols), 0.0f);
  for (int k = 0; k < r; ++k) {
    const double root = std::sqrt(f.s[size_t(k)]);
    for (int i = 0; i < rows; ++i) f.a[size_t(i) * size_t(r) + size_t(k)] = float(u.at<double>(i, k) * root);
    for (int j = 0; j < cols; ++j) f.b[size_t(k) * size_t(cols) + size_t(j)] = float(vt.at<double>(k, j) * root);
  }
  return f;
}

void low_rank_product(const LowRank& f, float* dst) {
  for (int i = 0; i < f.rows; ++i)
    for (int j = 0; j < f.cols; ++j) {
      double acc = 0;
      for (int k = 0; k < f.rank; ++k)
        acc += double(f.a[size_t(i) * size_t(f.rank) + size_t(k)]) * f.b[size_t(k) * size_t(f.cols) + size_t(j)];
      dst[size_t(i) * size_t(f.cols) + size_t(j)] = float(acc);
    }
}

double low_rank_size_ratio(const LowRank& f) {
  return double(f.rank) * double(f.rows + f.cols) / (double(f.rows) * double(f.cols));
}

}  // namespace frugal::modelcomp
