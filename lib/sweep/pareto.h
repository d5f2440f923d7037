// Multi-objective selection for sweeps: the Pareto front of trials over several objectives, each minimized or
// maximized (accuracy up, bytes / energy / latency down), as Optuna's best_trials.
#pragma once
#include <cstddef>
#include <vector>

namespace frugal::sweep {

enum class Direction { minimize, maximize };

/// True when a is at least as good as b in every objective and better in one (points hold one value per objective).
bool dominates(const std::vector<double>& a, const std::vector<double>& b, const std::vector<Direction>& dirs);

/// Indices of the non-dominated points, ascending. Points equal in every objective are all kept.
std::vector<size_t> pareto_front(const std::vector<std::vector<double>>& points, const std::vector<Direction>& dirs);

}  // namespace frugal::sweep
