// frugal compress --sensitivity prune|bits|rank: per-layer accuracy on the validation split against each layer's
// sparsity, weight-sharing bits or rank fraction (modelcomp/sensitivity.h), and per-layer targets for a budget.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

namespace frugal::app {

struct SensitivityArgs {
  std::string method;   ///< prune | bits | rank; empty: no sensitivity analysis
  std::string levels;   ///< comma-separated levels (modelcomp::parse_levels); empty: the method's defaults
  double budget_pp = -1;  ///< >= 0: also write targets.json for this accuracy budget (percentage points)
};

/// Binds --sensitivity, --levels and --budget on the compress subcommand.
void add_sensitivity_options(CLI::App* compress, SensitivityArgs& s);

/// What the analysis shares with compress's other modes.
struct SensitivityInputs {
  std::string model, out, dataset, data_dir;
  size_t min_numel = 1024;  ///< the tensors compress would compress (deep_compression.h)
  int batch = 500;          ///< evaluation batch
};

/// Loads the model, holds out its validation split, runs the analysis and writes sensitivity.json,
/// sensitivity.md, sensitivity.png and (with a budget) targets.json under in.out.
void run_sensitivity(const SensitivityArgs& s, const SensitivityInputs& in);

}  // namespace frugal::app
