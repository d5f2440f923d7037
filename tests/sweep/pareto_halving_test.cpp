#include <doctest/doctest.h>

#include <cmath>

#include "sweep/halving.h"
#include "sweep/pareto.h"
#include "util/check.h"

using namespace frugal::sweep;

TEST_CASE("pareto: the front of known points (accuracy up, bytes down)") {
  const std::vector<Direction> d = {Direction::maximize, Direction::minimize};
  const std::vector<std::vector<double>> p = {
      {0.99, 100}, {0.98, 50}, {0.97, 60},  // 2 is dominated by 1
      {0.995, 400}, {0.90, 10}, {0.98, 50},  // 5 equals 1: both kept
      {0.99, 120}};                           // dominated by 0
  CHECK(pareto_front(p, d) == std::vector<size_t>{0, 1, 3, 4, 5});
  CHECK(dominates(p[1], p[2], d));
  CHECK_FALSE(dominates(p[1], p[5], d));
  CHECK(pareto_front({}, d).empty());
  CHECK_THROWS_AS(pareto_front({{0.9, NAN}}, d), frugal::Error);
  CHECK_THROWS_AS(dominates({1}, {1, 2}, d), frugal::Error);
}

TEST_CASE("successive halving: rungs, promotion, and it finds the best of a synthetic grid for less budget") {
  CHECK(rung_budgets(1, 27, 3) == std::vector<int64_t>{1, 3, 9, 27});
  CHECK(rung_budgets(2, 10, 2) == std::vector<int64_t>{2, 4, 8, 10});
  CHECK(promote({4, 7, 9, 11}, {0.5, 0.9, 0.9, 0.1}, 2) == std::vector<size_t>{7, 9});
  CHECK(promote({4, 7, 9}, {0.5, 0.9, 0.8}, 3) == std::vector<size_t>{7});
  CHECK(promote({4, 7}, {3.0, 1.0}, 2, false) == std::vector<size_t>{7});
  // synthetic objective: trial t has final quality q_t, its score at budget b approaches q_t as b grows (noise
  // shrinking with budget); successive halving must keep the best trial while spending far less than the grid
  const size_t n = 27;
  std::vector<double> quality(n);
  for (size_t t = 0; t < n; ++t) quality[t] = 0.9 + 0.003 * double((t * 7) % n);
  auto score = [&](size_t t, int64_t b) { return quality[t] - 0.01 / double(b) * std::sin(double(t) * 1.7); };
  const auto budgets = rung_budgets(1, 27, 3);
  std::vector<size_t> alive(n);
  for (size_t t = 0; t < n; ++t) alive[t] = t;
  for (size_t r = 0; r + 1 < budgets.size(); ++r) {
    std::vector<double> s;
    for (size_t t : alive) s.push_back(score(t, budgets[r]));
    alive = promote(alive, s, 3);
  }
  REQUIRE(alive.size() == 1);
  size_t best = 0;
  for (size_t t = 1; t < n; ++t)
    if (quality[t] > quality[best]) best = t;
  CHECK(quality[alive[0]] >= quality[best] - 0.002);
  CHECK(halving_cost(n, budgets, 3) == 27 * 1 + 9 * 3 + 3 * 9 + 1 * 27);
  CHECK(double(halving_cost(n, budgets, 3)) <= 0.4 * double(n * 27));  // <= 40 % of the grid's compute
}
