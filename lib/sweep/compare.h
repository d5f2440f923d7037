// Regression checks of fresh results against a checked-in baseline table (CI): each baseline metric names a path
// into the results JSON, its value, a direction and a tolerance; a metric worse than value by more than the
// tolerance is a regression.
//
// Baseline file (JSON):
//   {"name": "mnist-quickstart",
//    "metrics": {"metrics.test_accuracy": {"value": 0.9926, "direction": "maximize", "tolerance": 0.002},
//                "metrics.model_file_bytes": {"value": 248630, "direction": "minimize", "relative_tolerance": 0.01}}}
// tolerance is absolute, relative_tolerance a fraction of |value|; with both, the larger applies.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace frugal::sweep {

struct MetricCheck {
  std::string path;
  double baseline = 0, fresh = 0, allowed = 0;  ///< allowed: the tolerance in the metric's unit
  bool maximize = true;
  bool regressed = false;
  bool missing = false;  ///< the fresh results lack the path: counts as a regression
};

/// Checks `results` against `baseline` (format above); throws frugal::Error on a malformed baseline (naming `where`).
std::vector<MetricCheck> compare_with_baseline(const nlohmann::json& results, const nlohmann::json& baseline,
                                               const std::string& where);

/// A Markdown table of the checks (metric, baseline, fresh, difference, allowed, status).
std::string compare_table(const std::vector<MetricCheck>& checks);

}  // namespace frugal::sweep
