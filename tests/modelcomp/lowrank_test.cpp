#include "modelcomp/lowrank.h"

#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "util/check.h"

using namespace frugal::modelcomp;

TEST_CASE("low-rank: an exactly rank-3 matrix is found rank 3 and reconstructed") {
  std::mt19937 rng(11);
  std::normal_distribution<float> g(0.f, 1.f);
  const int rows = 24, cols = 40, r = 3;
  std::vector<float> u(rows * r), v(r * cols), m(rows * cols, 0.f);
  for (auto& x : u) x = g(rng);
  for (auto& x : v) x = g(rng);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j)
      for (int k = 0; k < r; ++k) m[size_t(i * cols + j)] += u[size_t(i * r + k)] * v[size_t(k * cols + j)];
  LowRank f = truncated_svd(m.data(), rows, cols, 1.0);
  CHECK(f.rank == 3);
  CHECK(f.s[3] < 1e-4 * f.s[0]);
  std::vector<float> back(m.size());
  low_rank_product(f, back.data());
  double err = 0, norm = 0;
  for (size_t i = 0; i < m.size(); ++i) {
    err += double(back[i] - m[i]) * (back[i] - m[i]);
    norm += double(m[i]) * m[i];
  }
  CHECK(std::sqrt(err / norm) < 1e-5);
  CHECK(low_rank_size_ratio(f) == doctest::Approx(3.0 * (24 + 40) / (24.0 * 40)));
  // a lower energy keeps fewer components, and at least that energy
  LowRank g1 = truncated_svd(m.data(), rows, cols, 0.6);
  CHECK(g1.rank <= 3);
  CHECK(g1.energy_kept >= 0.6);
  CHECK(truncated_svd(m.data(), rows, cols, 1.0, 2).rank == 2);  // max_rank caps it
}

TEST_CASE("low-rank: rank_for_energy and bad input") {
  CHECK(rank_for_energy({3, 2, 1}, 9.0 / 14) == 1);
  CHECK(rank_for_energy({3, 2, 1}, 0.92) == 2);  // 13 / 14 = 0.929 kept
  CHECK(rank_for_energy({3, 2, 1}, 0.93) == 3);
  CHECK(rank_for_energy({3, 2, 1}, 1.0) == 3);
  CHECK(rank_for_energy({0, 0}, 0.5) == 1);
  CHECK_THROWS_AS(rank_for_energy({1}, 0.0), frugal::Error);
  std::vector<float> bad = {1, NAN, 2, 3};
  CHECK_THROWS_AS(truncated_svd(bad.data(), 2, 2, 0.9), frugal::Error);
}
