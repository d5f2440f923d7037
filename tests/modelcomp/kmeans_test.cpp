#include "modelcomp/kmeans.h"

#include <doctest/doctest.h>

#include <limits>
#include <random>

#include "util/check.h"

using namespace frugal::modelcomp;

TEST_CASE("kmeans: recovers planted clusters from a linear initialization") {
  std::mt19937 rng(3);
  const std::vector<float> centers = {-1.0f, -0.1f, 0.2f, 2.5f};
  std::normal_distribution<float> noise(0.0f, 0.02f);
  std::vector<float> x;
  std::vector<uint32_t> truth;
  for (int i = 0; i < 4000; ++i) {
    const uint32_t c = uint32_t(i % 4);
    x.push_back(centers[c] + noise(rng));
    truth.push_back(c);
  }
  Codebook cb = kmeans_1d(x.data(), x.size(), 4);
  REQUIRE(cb.centroids.size() == 4);
  for (size_t j = 0; j < 4; ++j) CHECK(cb.centroids[j] == doctest::Approx(centers[j]).epsilon(0.01));
  CHECK(cb.assignment == truth);
  CHECK(cb.iterations < 100);
  // every value's assignment is its nearest centroid
  for (size_t i = 0; i < x.size(); i += 97) CHECK(cb.assignment[i] == nearest_centroid(cb.centroids, x[i]));
}

TEST_CASE("kmeans: more centroids than distinct values, one centroid, bad input") {
  std::vector<float> x = {1, 1, 1, 3, 3};
  Codebook cb = kmeans_1d(x.data(), x.size(), 8);
  for (size_t i = 0; i < x.size(); ++i) CHECK(cb.centroids[cb.assignment[i]] == x[i]);
  Codebook one = kmeans_1d(x.data(), x.size(), 1);
  CHECK(one.centroids[0] == doctest::Approx(1.8));
  CHECK(nearest_centroid({0.0f, 1.0f}, 0.5f) == 0);  // ties go to the lower centroid
  std::vector<float> nan = {1, std::numeric_limits<float>::quiet_NaN()};
  CHECK_THROWS_AS(kmeans_1d(nan.data(), nan.size(), 2), frugal::Error);
  CHECK_THROWS_AS(kmeans_1d(x.data(), 0, 2), frugal::Error);
}
