#include "modelcomp/sensitivity.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "modelcomp/deep_compression.h"
#include "modelcomp/kmeans.h"
#include "modelcomp/lowrank.h"
#include "modelcomp/prune.h"
#include "util/check.h"

namespace frugal::modelcomp {

SensitivityMethod parse_sensitivity_method(const std::string& name) {
  if (name == "prune") return SensitivityMethod::prune;
  if (name == "bits") return SensitivityMethod::bits;
  if (name == "rank") return SensitivityMethod::rank;
  FRUGAL_FAIL("unknown sensitivity method '", name, "': expected prune (sparsity), bits (weight sharing) or rank ",
              "(truncated SVD)");
}

std::string sensitivity_method_name(SensitivityMethod m) {
  switch (m) {
    case SensitivityMethod::prune: return "prune";
    case SensitivityMethod::bits: return "bits";
    case SensitivityMethod::rank: return "rank";
  }
  return "?";
}

std::string level_meaning(SensitivityMethod m) {
  switch (m) {
    case SensitivityMethod::prune: return "sparsity";
    case SensitivityMethod::bits: return "bits";
    case SensitivityMethod::rank: return "rank fraction";
  }
  return "?";
}

void check_level(SensitivityMethod m, double level) {
  const std::string what = sensitivity_method_name(m);
  FRUGAL_CHECK(std::isfinite(level), "sensitivity ", what, ": level ", level, " is not a number");
  switch (m) {
    case SensitivityMethod::prune:
      FRUGAL_CHECK(level >= 0 && level < 1, "sensitivity prune: level ", level,
                   " is not a sparsity in [0, 1) (the fraction of the layer's weights set to zero)");
      break;
    case SensitivityMethod::bits:
      FRUGAL_CHECK(level >= 1 && level <= 16 && level == std::floor(level), "sensitivity bits: level ", level,
                   " is not a whole bit width in 1..16 (the layer shares 2^bits values)");
      break;
    case SensitivityMethod::rank:
      FRUGAL_CHECK(level > 0 && level <= 1, "sensitivity rank: level ", level,
                   " is not a rank fraction in (0, 1] (the kept fraction of min(rows, cols) singular values)");
      break;
  }
}

std::vector<double> parse_levels(SensitivityMethod m, const std::string& spec) {
  if (spec.empty()) return default_levels(m);
  std::vector<double> out;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const char* s = item.c_str();
    char* end = nullptr;
    const double v = std::strtod(s, &end);
    while (end && *end == ' ') ++end;
    FRUGAL_CHECK(!item.empty() && end != s && *end == '\0', "--levels '", spec, "': '", item,
                 "' is not a number; give comma-separated levels such as 0.5,0.7,0.9");
    check_level(m, v);
    FRUGAL_CHECK(std::find(out.begin(), out.end(), v) == out.end(), "--levels '", spec, "': level ", v,
                 " is given twice");
    out.push_back(v);
  }
  FRUGAL_CHECK(!out.empty() && spec.back() != ',', "--levels '", spec,
               "': give comma-separated levels such as 0.5,0.7,0.9");
  return out;
}

std::vector<double> default_levels(SensitivityMethod m) {
  switch (m) {
    case SensitivityMethod::prune: return {0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98};
    case SensitivityMethod::bits: return {8, 7, 6, 5, 4, 3, 2, 1};
    case SensitivityMethod::rank: return {0.5, 0.25, 0.125, 0.0625, 0.03125};
  }
  return {};
}

double untouched_level(SensitivityMethod m) { return m == SensitivityMethod::bits ? 32 : m == SensitivityMethod::prune ? 0 : 1; }

bool more_aggressive(SensitivityMethod m, double a, double b) { return m == SensitivityMethod::prune ? a > b : a < b; }

void compress_tensor(SensitivityMethod m, double level, const std::vector<int64_t>& dims, float* w) {
  check_level(m, level);
  size_t n = 1;
  for (int64_t d : dims) n *= size_t(d);
  if (n == 0) return;
  switch (m) {
    case SensitivityMethod::prune: {
      const std::vector<uint8_t> keep = magnitude_mask(w, n, level);
      for (size_t i = 0; i < n; ++i)
        if (!keep[i]) w[i] = 0.f;
      break;
    }
    case SensitivityMethod::bits: {
      const size_t k = size_t(1) << int(level);
      if (n <= k) return;  // every weight can keep its own value
      const Codebook cb = kmeans_1d(w, n, int(k));
      for (size_t i = 0; i < n; ++i) w[i] = cb.centroids[cb.assignment[i]];
      break;
    }
    case SensitivityMethod::rank: {
      FRUGAL_CHECK(dims.size() == 2 || dims.size() == 4, "sensitivity rank: a weight of rank ", dims.size(),
                   " is not a matrix (linear (OUT, IN) or conv (OC, IC, KH, KW))");
      const int rows = int(dims[0]), cols = int(n / size_t(dims[0]));
      const int r = std::max(1, int(std::lround(level * std::min(rows, cols))));
      const LowRank f = truncated_svd(w, rows, cols, 1.0, r);
      low_rank_product(f, w);
      break;
    }
  }
}

std::vector<std::string> sensitivity_layers(nn::Model& model, size_t min_numel) {
  DeepCompressionOptions o;
  o.min_numel = min_numel;
  std::vector<std::string> out;
  for (const nn::Param* p : model.params())
    if (compressible(p->value, o)) out.push_back(p->name);
  return out;
}

SensitivityTable analyze_sensitivity(nn::Model& model, const std::vector<std::string>& layers, SensitivityMethod m,
                                     const std::vector<double>& levels, const AccuracyFn& evaluate,
                                     const std::function<void(const std::string&)>& progress) {
  FRUGAL_CHECK(!layers.empty(), "sensitivity: no layers to analyze");
  FRUGAL_CHECK(!levels.empty(), "sensitivity: no levels to measure");
  for (double l : levels) check_level(m, l);
  std::vector<nn::Param*> params;
  for (const std::string& name : layers) {
    nn::Param* found = nullptr;
    for (nn::Param* p : model.params())
      if (p->name == name) found = p;
    FRUGAL_CHECK(found, "sensitivity: the model has no parameter '", name, "'");
    params.push_back(found);
  }
  SensitivityTable t;
  t.method = m;
  t.levels = levels;
  t.baseline = evaluate();
  if (progress) {
    char line[64];
    std::snprintf(line, sizeof line, "untouched model: accuracy %.2f %%", 100 * t.baseline);
    progress(line);
  }
  for (nn::Param* p : params) {
    LayerSensitivity row;
    row.name = p->name;
    row.dims = p->value.dims();
    const size_t n = size_t(p->value.size());
    const std::vector<float> original(p->value.data(), p->value.data() + n);
    for (double level : levels) {
      compress_tensor(m, level, row.dims, p->value.data());
      ++p->version;
      row.accuracy.push_back(evaluate());
      std::copy(original.begin(), original.end(), p->value.data());
      ++p->version;
    }
    if (progress) {
      std::string line = row.name + ":";
      char cell[64];
      for (size_t i = 0; i < levels.size(); ++i) {
        std::snprintf(cell, sizeof cell, "%s %g: %.2f %%", i ? "," : "", levels[i], 100 * row.accuracy[i]);
        line += cell;
      }
      progress(line);
    }
    t.layers.push_back(std::move(row));
  }
  return t;
}

std::vector<LayerTarget> select_targets(const SensitivityTable& t, double budget_pp) {
  FRUGAL_CHECK(budget_pp >= 0 && std::isfinite(budget_pp), "sensitivity: the accuracy budget must be >= 0 pp, got ",
               budget_pp);
  std::vector<LayerTarget> out;
  for (size_t l = 0; l < t.layers.size(); ++l) {
    LayerTarget g;
    g.name = t.layers[l].name;
    g.level = untouched_level(t.method);
    for (size_t i = 0; i < t.levels.size(); ++i) {
      const double d = t.drop_pp(l, i);
      if (d > budget_pp + 1e-9) continue;
      if (!g.within_budget || more_aggressive(t.method, t.levels[i], g.level)) {
        g.level = t.levels[i];
        g.drop_pp = d;
        g.within_budget = true;
      }
    }
    out.push_back(g);
  }
  return out;
}

nlohmann::json targets_json(SensitivityMethod m, double budget_pp, double baseline, const std::vector<LayerTarget>& t) {
  using json = nlohmann::json;
  json levels = json::object(), drops = json::object(), untouched = json::array();
  for (const LayerTarget& g : t) {
    levels[g.name] = m == SensitivityMethod::bits ? json(int(g.level)) : json(g.level);
    drops[g.name] = g.drop_pp;
    if (!g.within_budget) untouched.push_back(g.name);
  }
  return {{"kind", "per-layer-targets"},
          {"method", sensitivity_method_name(m)},
          {"level_meaning", level_meaning(m)},
          {"budget_pp", budget_pp},
          {"baseline_accuracy", baseline},
          {"targets", levels},
          {"drop_pp", drops},
          {"untouched", untouched},
          {"note", "each layer judged alone: all layers at their targets together can lose more than the budget"}};
}

PerLayerTargets parse_targets_json(const nlohmann::json& j, const std::string& where) {
  FRUGAL_CHECK(j.is_object() && j.value("kind", "") == "per-layer-targets", "'", where,
               "' is not a per-layer targets file (key 'kind' must be \"per-layer-targets\"); write one with "
               "frugal compress --sensitivity M --budget PP");
  FRUGAL_CHECK(j.contains("method") && j["method"].is_string(), "'", where, "': key 'method' (prune|bits|rank) missing");
  PerLayerTargets out;
  out.method = parse_sensitivity_method(j["method"].get<std::string>());
  out.budget_pp = j.value("budget_pp", 0.0);
  FRUGAL_CHECK(j.contains("targets") && j["targets"].is_object() && !j["targets"].empty(), "'", where,
               "': key 'targets' must be a non-empty object {\"layer.weight\": level, ...}");
  for (const auto& [name, v] : j["targets"].items()) {
    FRUGAL_CHECK(v.is_number(), "'", where, "': targets.", name, " is not a number");
    const double level = v.get<double>();
    if (level != untouched_level(out.method)) {
      try {
        check_level(out.method, level);
      } catch (const Error& e) {
        FRUGAL_FAIL("'", where, "': targets.", name, ": ", e.what());
      }
    }
    out.levels.emplace_back(name, level);
  }
  return out;
}

std::string sensitivity_markdown(const SensitivityTable& t) {
  std::string s = "| layer | dims |";
  std::string rule = "|---|---|";
  char b[96];
  for (double l : t.levels) {
    std::snprintf(b, sizeof b, " %s %g |", level_meaning(t.method).c_str(), l);
    s += b;
    rule += "---:|";
  }
  s += "\n" + rule + "\n";
  for (size_t l = 0; l < t.layers.size(); ++l) {
    std::string dims;
    for (size_t d = 0; d < t.layers[l].dims.size(); ++d) {
      if (d) dims += 'x';
      dims += std::to_string(t.layers[l].dims[d]);
    }
    s += "| " + t.layers[l].name + " | " + dims + " |";
    for (size_t i = 0; i < t.levels.size(); ++i) {
      const double change = 100 * (t.layers[l].accuracy[i] - t.baseline);  // not -drop_pp: no "-0.00"
      std::snprintf(b, sizeof b, " %.2f (%+.2f) |", 100 * t.layers[l].accuracy[i], change);
      s += b;
    }
    s += "\n";
  }
  std::snprintf(b, sizeof b, "\nAccuracy %% (change in pp against the untouched model's %.2f %%), one layer at a time.\n",
                100 * t.baseline);
  return s + b;
}

}  // namespace frugal::modelcomp
