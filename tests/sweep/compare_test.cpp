#include "sweep/compare.h"

#include <doctest/doctest.h>

#include "util/check.h"

using namespace frugal::sweep;
using json = nlohmann::json;

TEST_CASE("compare: tolerances per metric and direction, missing metrics regress, bad baselines are named") {
  const json baseline = {
      {"metrics",
       {{"metrics.test_accuracy", {{"value", 0.99}, {"direction", "maximize"}, {"tolerance", 0.002}}},
        {"metrics.model_file_bytes", {{"value", 1000}, {"direction", "minimize"}, {"relative_tolerance", 0.05}}},
        {"speed.latency_ms", {{"value", 2.0}, {"direction", "minimize"}, {"tolerance", 0.1}, {"relative_tolerance", 0.25}}}}}};
  json fresh = {{"metrics", {{"test_accuracy", 0.9885}, {"model_file_bytes", 1049}}}, {"speed", {{"latency_ms", 2.5}}}};
  auto checks = compare_with_baseline(fresh, baseline, "b.json");
  REQUIRE(checks.size() == 3);
  for (auto& c : checks) CHECK_MESSAGE(!c.regressed, c.path);  // 0.9885 >= 0.988; 1049 <= 1050; 2.5 <= 2.5
  fresh["metrics"]["test_accuracy"] = 0.9875;
  fresh["metrics"]["model_file_bytes"] = 1051;
  checks = compare_with_baseline(fresh, baseline, "b.json");
  int regressed = 0;
  for (auto& c : checks) regressed += c.regressed;
  CHECK(regressed == 2);
  fresh["speed"].erase("latency_ms");
  checks = compare_with_baseline(fresh, baseline, "b.json");
  bool missing = false;
  for (auto& c : checks) missing |= c.missing && c.regressed && c.path == "speed.latency_ms";
  CHECK(missing);
  CHECK(compare_table(checks).find("REGRESSED") != std::string::npos);
  CHECK_THROWS_WITH_AS(compare_with_baseline(fresh, json{{"metrics", json::object()}}, "b.json"),
                       doctest::Contains("b.json"), frugal::Error);
  CHECK_THROWS_WITH_AS(compare_with_baseline(fresh, json{{"metrics", {{"x", {{"value", 1}, {"direction", "up"}}}}}}, "b.json"),
                       doctest::Contains("direction"), frugal::Error);
}
