// Successive halving (Jamieson & Talwalkar 2016; the synchronous form of ASHA, Li et al. 2020): every trial runs
// at the smallest budget, the best 1/eta of each rung is promoted to eta times the budget, until the largest.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace frugal::sweep {

struct Rung {
  int64_t budget = 0;          ///< e.g. epochs each trial of this rung runs
  std::vector<size_t> trials;  ///< trial indices that run at this budget
};

/// The budgets of a schedule from min_budget to max_budget growing by eta (the last rung is max_budget).
std::vector<int64_t> rung_budgets(int64_t min_budget, int64_t max_budget, int eta);

/// The trials promoted from a finished rung: the best ceil(n / eta) (at least 1) by score, higher is better
/// (ties to the lower trial index). scores[i] belongs to trials[i].
std::vector<size_t> promote(const std::vector<size_t>& trials, const std::vector<double>& scores, int eta,
                            bool maximize = true);

/// Budget spent by a schedule that starts n trials: sum over rungs of trials x budget (each promoted trial runs its
/// new budget from scratch, as frugal's sweep does; resumed budgets would spend less).
int64_t halving_cost(size_t n, const std::vector<int64_t>& budgets, int eta);

}  // namespace frugal::sweep
