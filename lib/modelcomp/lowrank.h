// Low-rank factorization of a layer's weights (compress's low-rank stage): W (rows, cols) ~ A B with A (rows, r) and
// B (r, cols) from the truncated SVD, r chosen per layer by the energy it keeps. A conv weight (OC, IC, KH, KW) is
// the matrix (OC, IC*KH*KW): B is then a KHxKW conv from IC to r channels and A a 1x1 conv from r to OC channels;
// a linear weight (OUT, IN) becomes two linear layers IN -> r -> OUT.
#pragma once
#include <vector>

namespace frugal::modelcomp {

struct LowRank {
  int rank = 0;
  int rows = 0, cols = 0;
  std::vector<float> a;      ///< (rows, rank) = U_r diag(sqrt s)
  std::vector<float> b;      ///< (rank, cols) = diag(sqrt s) V_r^T
  std::vector<double> s;     ///< every singular value, descending
  double energy_kept = 1.0;  ///< sum of the kept s^2 / sum of all s^2
};

/// Smallest rank whose singular values (descending) keep at least `energy` of sum s^2 (energy in (0, 1]).
int rank_for_energy(const std::vector<double>& singular, double energy);

/// Truncated SVD of m (rows, cols), row-major, at the rank that keeps `energy`, capped at max_rank (> 0) if given.
LowRank truncated_svd(const float* m, int rows, int cols, double energy, int max_rank = 0);

/// dst (rows, cols) <- A B.
void low_rank_product(const LowRank& f, float* dst);

/// Weights stored by the factors against the dense matrix: rank (rows + cols) / (rows cols).
double low_rank_size_ratio(const LowRank& f);

}  // namespace frugal::modelcomp
