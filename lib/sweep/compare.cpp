#include "sweep/compare.h"

#include <cmath>
#include <cstdio>

#include "util/check.h"

namespace frugal::sweep {

using json = nlohmann::json;

namespace {
const json* at_path(const json& j, const std::string& path) {
  const json* cur = &j;
  size_t at = 0;
  while (at <= path.size()) {
    const size_t dot = path.find('.', at);
    const std::string key = path.substr(at, dot == std::string::npos ? std::string::npos : dot - at);
    if (!cur->is_object() || !cur->contains(key)) return nullptr;
    cur = &(*cur)[key];
    if (dot == std::string::npos) break;
    at = dot + 1;
  }
  return cur;
}
}  // namespace

std::vector<MetricCheck> compare_with_baseline(const json& results, const json& baseline, const std::string& where) {
  FRUGAL_CHECK(baseline.is_object() && baseline.contains("metrics") && baseline["metrics"].is_object() &&
                   !baseline["metrics"].empty(),
               "baseline '", where, "': expected {\"metrics\": {\"path.to.metric\": {\"value\": ..., ...}}}");
  std::vector<MetricCheck> out;
  for (const auto& [path, spec] : baseline["metrics"].items()) {
    FRUGAL_CHECK(spec.is_object() && spec.contains("value") && spec["value"].is_number(), "baseline '", where,
                 "': metric '", path, "' needs a numeric \"value\"");
    const std::string dir = spec.value("direction", "maximize");
    FRUGAL_CHECK(dir == "maximize" || dir == "minimize", "baseline '", where, "': metric '", path,
                 "' has direction '", dir, "'; expected maximize or minimize");
    MetricCheck c;
    c.path = path;
    c.baseline = spec["value"].get<double>();
    c.maximize = dir == "maximize";
    const double abs_tol = spec.value("tolerance", 0.0), rel_tol = spec.value("relative_tolerance", 0.0);
    FRUGAL_CHECK(abs_tol >= 0 && rel_tol >= 0, "baseline '", where, "': metric '", path, "' has a negative tolerance");
    c.allowed = std::max(abs_tol, rel_tol * std::fabs(c.baseline));
    const json* v = at_path(results, path);
    if (!v || !v->is_number()) {
      c.missing = c.regressed = true;
    } else {
      c.fresh = v->get<double>();
      c.regressed = c.maximize ? c.fresh < c.baseline - c.allowed : c.fresh > c.baseline + c.allowed;
    }
    out.push_back(c);
  }
  return out;
}

std::string compare_table(const std::vector<MetricCheck>& checks) {
  std::string s = "| metric | baseline | fresh | difference | allowed | status |\n|---|---|---|---|---|---|\n";
  char buf[512];
  for (const MetricCheck& c : checks) {
    if (c.missing) {
      std::snprintf(buf, sizeof buf, "| %s | %.6g | missing | | %.3g | REGRESSED (not in the results) |\n",
                    c.path.c_str(), c.baseline, c.allowed);
    } else {
      std::snprintf(buf, sizeof buf, "| %s | %.6g | %.6g | %+.4g | %s%.3g | %s |\n", c.path.c_str(), c.baseline, c.fresh,
                    c.fresh - c.baseline, c.maximize ? "-" : "+", c.allowed, c.regressed ? "REGRESSED" : "ok");
    }
    s += buf;
  }
  return s;
}

}  // namespace frugal::sweep
