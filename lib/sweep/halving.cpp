#include "sweep/halving.h"

#include <algorithm>
#include <numeric>

#include "util/check.h"

namespace frugal::sweep {

std::vector<int64_t> rung_budgets(int64_t min_budget, int64_t max_budget, int eta) {
  FRUGAL_CHECK(eta >= 2, "successive halving: eta must be >= 2, got ", eta);
  FRUGAL_CHECK(min_budget >= 1 && max_budget >= min_budget, "successive halving: budgets must satisfy 1 <= min (",
               min_budget, ") <= max (", max_budget, ")");
  std::vector<int64_t> b;
  for (int64_t x = min_budget; x < max_budget; x *= eta) b.push_back(x);
  b.push_back(max_budget);
  return b;
}

std::vector<size_t> promote(const std::vector<size_t>& trials, const std::vector<double>& scores, int eta,
                            bool maximize) {
  FRUGAL_CHECK(trials.size() == scores.size(), "promote: ", trials.size(), " trials but ", scores.size(), " scores");
  FRUGAL_CHECK(eta >= 2, "successive halving: eta must be >= 2, got ", eta);
  if (trials.empty()) return {};
  std::vector<size_t> order(trials.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (scores[a] != scores[b]) return maximize ? scores[a] > scores[b] : scores[a] < scores[b];
    return trials[a] < trials[b];
  });
  const size_t keep = std::max<size_t>(1, (trials.size() + size_t(eta) - 1) / size_t(eta));
  std::vector<size_t> out;
  for (size_t i = 0; i < keep; ++i) out.push_back(trials[order[i]]);
  return out;
}

int64_t halving_cost(size_t n, const std::vector<int64_t>& budgets, int eta) {
  int64_t cost = 0;
  size_t alive = n;
  for (int64_t b : budgets) {
    cost += int64_t(alive) * b;
    alive = std::max<size_t>(1, (alive + size_t(eta) - 1) / size_t(eta));
  }
  return cost;
}

}  // namespace frugal::sweep
