#include <doctest/doctest.h>

#include <algorithm>
#include <random>

#include "modelcomp/prune.h"
#include "modelcomp/sparse.h"
#include "util/check.h"

using namespace frugal::modelcomp;

TEST_CASE("relative indices: round trip, fillers where a gap exceeds the field (Deep Compression's example)") {
  // Han et al. Fig. 2: 3-bit fields (distance up to 8); a gap of 15 needs one filler at +8
  RelativeIndices r = relative_indices({1, 4, 19}, 3);
  CHECK(r.codes == std::vector<uint32_t>{1, 2, 7, 6});
  CHECK(r.filler == std::vector<uint8_t>{0, 0, 1, 0});
  CHECK(r.fillers == 1);
  CHECK(positions_from_codes(r.codes, 20) == std::vector<uint32_t>{1, 4, 12, 19});
  std::mt19937 rng(5);
  std::vector<uint32_t> pos;
  for (uint32_t p = 0; p < 100000; ++p)
    if (rng() % 50 == 0) pos.push_back(p);
  for (int bits : {1, 4, 8}) {
    RelativeIndices q = relative_indices(pos, bits);
    std::vector<uint32_t> back = positions_from_codes(q.codes, 100000), real;
    for (size_t i = 0; i < back.size(); ++i)
      if (!q.filler[i]) real.push_back(back[i]);
    CHECK(real == pos);
    for (uint32_t c : q.codes) CHECK(c < (1u << bits));
  }
  CHECK_THROWS_AS(relative_indices({3, 3}, 4), frugal::Error);
  CHECK_THROWS_WITH_AS(positions_from_codes({5, 9}, 12), doctest::Contains("past the tensor"), frugal::Error);
}

TEST_CASE("magnitude pruning: exact counts, global threshold pools layers, gradual schedule") {
  std::vector<float> x = {0.5f, -0.1f, 0.3f, -0.9f, 0.05f, 0.2f, -0.4f, 0.7f, 0.0f, 0.6f};
  auto keep = magnitude_mask(x.data(), x.size(), 0.4);
  CHECK(std::count(keep.begin(), keep.end(), 1) == 6);
  CHECK(keep == std::vector<uint8_t>{1, 0, 1, 1, 0, 0, 1, 1, 0, 1});  // 0.0, 0.05, -0.1, 0.2 pruned
  CHECK(magnitude_threshold(x.data(), x.size(), 0.4) == 0.2f);
  CHECK(magnitude_threshold(x.data(), x.size(), 0.0) == 0.0f);
  std::vector<float> big = {5, 6, 7, 8};
  // pooled: the 4 smallest of 14 magnitudes come from x only
  CHECK(global_magnitude_threshold({{x.data(), x.size()}, {big.data(), big.size()}}, 4.0 / 14) == 0.2f);
  CHECK_THROWS_AS(magnitude_mask(x.data(), x.size(), 1.0), frugal::Error);
  CHECK(gradual_sparsity(0.0, 0.9, 0, 0, 10, 100) == 0.0);
  CHECK(gradual_sparsity(0.0, 0.9, 1000, 0, 10, 100) == doctest::Approx(0.9));
  CHECK(gradual_sparsity(0.0, 0.9, 500, 0, 10, 100) == doctest::Approx(0.9 * (1 - 0.125)));
  CHECK(gradual_sparsity(0.0, 0.9, 5000, 0, 10, 100) == doctest::Approx(0.9));
}
