// Per-layer sensitivity analysis (Distiller's "sensitivity analysis"; Han et al., NIPS 2015, sec. 4 / fig. 6):
// compress ONE layer at a time to a level (a sparsity, a weight-sharing bit width or a rank fraction), leave every
// other layer untouched, measure the accuracy, restore the layer, and go on. The table it produces says how much
// each layer can take; select_targets turns it into per-layer targets for an accuracy budget.
//
// Methods and their levels (the spec strings of `frugal compress --sensitivity M --levels L1,L2,...`):
//   prune  level = sparsity in [0, 1): the fraction of the layer's weights set to zero by magnitude (prune.h's
//          magnitude_mask, exactly round(n level) zeros). Larger = more aggressive. Untouched = 0.
//   bits   level = an integer bit width in 1..16: the layer's weights shared by 2^bits centroids (kmeans.h's 1-D
//          k-means with linear initialization, Deep Compression's weight sharing, no zero centroid reserved);
//          a layer with no more than 2^bits weights is left exact. Fewer = more aggressive. Untouched = 32 (fp32).
//   rank   level = rank FRACTION in (0, 1] (not an energy): the layer's weight matrix, a linear (OUT, IN) or a conv
//          (OC, IC*KH*KW), replaced in place by its truncated SVD product of rank max(1, round(level min(rows,
//          cols))) (lowrank.h). Smaller = more aggressive. Untouched = 1.
// The layer's shape does not change: the analysis measures the accuracy the compression costs, not its speed.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/model.h"

namespace frugal::modelcomp {

enum class SensitivityMethod { prune, bits, rank };

/// "prune" | "bits" | "rank"; anything else throws naming the choices.
SensitivityMethod parse_sensitivity_method(const std::string& name);
std::string sensitivity_method_name(SensitivityMethod m);
/// What a level means for the method, for outputs: "sparsity", "bits", "rank fraction".
std::string level_meaning(SensitivityMethod m);

/// Throws (naming the level, the method and the valid range) unless `level` is valid for m (see the file comment).
void check_level(SensitivityMethod m, double level);

/// "0.5,0.7,0.9": comma-separated numbers, each checked by check_level, no duplicates, at least one. Kept in the
/// given order (outputs list them so). An empty spec gives default_levels(m).
std::vector<double> parse_levels(SensitivityMethod m, const std::string& spec);
/// prune 0.5 .. 0.98; bits 8 .. 1; rank 1/2 .. 1/32 fractions (from the least to the most aggressive).
std::vector<double> default_levels(SensitivityMethod m);

/// The level that leaves a layer as it is: prune 0, bits 32, rank 1.
double untouched_level(SensitivityMethod m);
/// True when level a compresses more than level b (prune: larger sparsity; bits and rank: smaller).
bool more_aggressive(SensitivityMethod m, double a, double b);

/// Compresses one weight tensor in place to `level`. dims: the tensor's dims (rank 2 or 4 for method rank);
/// w: (prod dims) values, row-major in that order.
void compress_tensor(SensitivityMethod m, double level, const std::vector<int64_t>& dims, float* w);

/// The parameters the analysis covers: weights of rank 2 (linear) or 4 (conv) with at least min_numel elements,
/// the tensors deep_compress compresses (deep_compression.h). In the model's order.
std::vector<std::string> sensitivity_layers(nn::Model& model, size_t min_numel);

struct LayerSensitivity {
  std::string name;              ///< parameter name ("2.weight")
  std::vector<int64_t> dims;
  std::vector<double> accuracy;  ///< (levels) accuracy in [0, 1] with only this layer at each level
};

struct SensitivityTable {
  SensitivityMethod method = SensitivityMethod::prune;
  std::vector<double> levels;
  double baseline = 0;  ///< accuracy of the untouched model
  std::vector<LayerSensitivity> layers;
  /// Accuracy drop of layer l at level i in percentage points: 100 (baseline - accuracy); negative = a gain.
  double drop_pp(size_t l, size_t i) const { return 100.0 * (baseline - layers[l].accuracy[i]); }
};

/// The accuracy of the model as its parameters now are (e.g. train::evaluate on the validation split).
using AccuracyFn = std::function<double()>;

/// The analysis: baseline = evaluate() of the untouched model, then for each layer in `layers` and each level,
/// compress that layer alone (compress_tensor), evaluate(), and put the layer's original values back (bit-exact,
/// Param::version bumped so cached weight layouts are rebuilt). progress (may be empty) gets one line per layer.
/// requires: layers non-empty, each names a parameter of model; levels valid for m.
/// ensures: the model's parameters are as on entry.
SensitivityTable analyze_sensitivity(nn::Model& model, const std::vector<std::string>& layers, SensitivityMethod m,
                                     const std::vector<double>& levels, const AccuracyFn& evaluate,
                                     const std::function<void(const std::string&)>& progress = {});

struct LayerTarget {
  std::string name;
  double level = 0;            ///< the chosen level, or untouched_level(method) when none is within the budget
  double drop_pp = 0;          ///< the measured drop at that level (0 when untouched)
  bool within_budget = false;  ///< false: no measured level was within the budget, the layer stays untouched
};

/// Per-layer targets for an accuracy budget: for each layer the most aggressive level whose drop_pp <= budget_pp
/// (whether or not less aggressive levels were within it: the measurement is per level). A layer where no level is
/// within the budget gets untouched_level(m) (it stays uncompressed, NOT its least aggressive level, which would
/// already break the budget). Each layer is judged alone: several layers at their targets together can lose more
/// than the budget. requires: budget_pp >= 0.
std::vector<LayerTarget> select_targets(const SensitivityTable& t, double budget_pp);

/// targets.json, what a later stage reads as per-layer sparsity / bits / rank fraction:
///   {"kind": "per-layer-targets", "method": "prune", "level_meaning": "sparsity", "budget_pp": 0.2,
///    "baseline_accuracy": 0.9874, "targets": {"3.weight": 0.5, ...}, "drop_pp": {...}, "untouched": [names], "note"}
/// (bit widths as integers; an untouched layer has untouched_level(method)).
nlohmann::json targets_json(SensitivityMethod m, double budget_pp, double baseline, const std::vector<LayerTarget>& t);

struct PerLayerTargets {
  SensitivityMethod method = SensitivityMethod::prune;
  double budget_pp = 0;
  std::vector<std::pair<std::string, double>> levels;  ///< (layer, level), in the file's (name) order
};
/// Reads targets_json's document back; throws naming `where` (a file name) and the key when the kind, the method
/// or a level (check_level, or the untouched level) is wrong.
PerLayerTargets parse_targets_json(const nlohmann::json& j, const std::string& where);

/// The table as Markdown: one row per layer, one column per level, cells "accuracy % (change in pp)", and the baseline.
std::string sensitivity_markdown(const SensitivityTable& t);

}  // namespace frugal::modelcomp
