#include "sweep/space.h"

#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "../data/fixtures.h"
#include "sweep/report.h"
#include "sweep/runner.h"
#include "util/check.h"

using namespace frugal;
using namespace frugal::sweep;
using json = nlohmann::json;

namespace {
SweepSpec spec_of(const std::string& text) { return parse_sweep(json::parse(text), "test.json"); }
}  // namespace

TEST_CASE("sweep space: lists, ranges and log-ranges expand to typed values") {
  const Dimension bits = parse_dimension("bits", json::parse(R"({"range": [2, 8, 2]})"), "t");
  REQUIRE(bits.values.size() == 4);
  CHECK(bits.values[0].is_number_integer());
  CHECK(bits.values[3] == 8);
  const Dimension width = parse_dimension("width", json::parse(R"({"range": [0.1, 0.3, 0.1]})"), "t");
  REQUIRE(width.values.size() == 3);
  CHECK(width.values[2].get<double>() == 0.3);  // rounded, not 0.30000000000000004
  const Dimension lr = parse_dimension("lr", json::parse(R"({"log": [0.01, 0.1], "n": 3})"), "t");
  REQUIRE(lr.values.size() == 3);
  CHECK(lr.values[0].get<double>() == 0.01);
  CHECK(lr.values[1].get<double>() == doctest::Approx(0.0316228).epsilon(1e-6));
  CHECK(lr.values[2].get<double>() == 0.1);
  const Dimension batch = parse_dimension("batch", json::parse(R"({"log": [32, 256], "n": 4})"), "t");
  CHECK(batch.values == std::vector<json>{32, 64, 128, 256});
  CHECK(batch.values[1].is_number_integer());
  const Dimension w = parse_dimension("width", json::parse("[1, 0.5]"), "t");  // float key: 1 stored as 1.0
  CHECK(w.values[0].is_number_float());
  const Dimension comp = parse_dimension("compressor", json::parse(R"(["none", "topk:0.01"])"), "t");
  CHECK(comp.values.size() == 2);
}

TEST_CASE("sweep space: malformed entries and unknown keys are rejected before any trial") {
  CHECK_THROWS_WITH_AS(parse_dimension("bitz", json::parse("[2]"), "f.json"), doctest::Contains("unknown config key 'bitz'"),
                       frugal::Error);
  CHECK_THROWS_WITH_AS(parse_dimension("bits", json::parse(R"(["four"])"), "f.json"), doctest::Contains("bits"),
                       frugal::Error);
  CHECK_THROWS_AS(parse_dimension("bits", json::parse("[]"), "f.json"), frugal::Error);
  CHECK_THROWS_WITH_AS(parse_dimension("lr", json::parse(R"({"range": [0.1, 0.2, 0]})"), "f.json"),
                       doctest::Contains("step > 0"), frugal::Error);
  CHECK_THROWS_WITH_AS(parse_dimension("lr", json::parse(R"({"log": [0.1, 1]})"), "f.json"), doctest::Contains("\"n\""),
                       frugal::Error);
  CHECK_THROWS_WITH_AS(parse_dimension("lr", json::parse(R"({"log": [0, 1], "n": 2})"), "f.json"),
                       doctest::Contains("0 < lo"), frugal::Error);
  CHECK_THROWS_WITH_AS(spec_of(R"({"space": {"bits": [2]}, "strateg": "grid"})"), doctest::Contains("\"strateg\""),
                       frugal::Error);
  CHECK_THROWS_WITH_AS(spec_of(R"({"space": {"bits": [2]}, "objectives": [{"metric": "metrics.test_accuracy"}]})"),
                       doctest::Contains("validation split"), frugal::Error);
  CHECK_THROWS_WITH_AS(spec_of(R"({"space": {"bits": [2]}, "strategy": "random"})"), doctest::Contains("trials"),
                       frugal::Error);
  CHECK_THROWS_WITH_AS(
      spec_of(R"({"space": {"epochs": [1, 2]}, "strategy": "halving", "halving": {"eta": 2, "max_epochs": 4}})"),
      doctest::Contains("remove 'epochs'"), frugal::Error);
  CHECK_THROWS_WITH_AS(spec_of(R"({"space": {"bits": [2]}, "config": {"lrr": 0.1}})"), doctest::Contains("lrr"),
                       frugal::Error);
  CHECK_THROWS_WITH_AS(parse_sweep(json::parse(R"({"space": {"bits": [2]}})"), "t.json", {"bits=4"}),
                       doctest::Contains("is swept"), frugal::Error);
}

TEST_CASE("sweep space: the grid has every combination, the first key varying slowest") {
  const SweepSpec s = spec_of(R"({"space": {"bits": [2, 4], "compressor": ["none", "fp16", "topk:0.1"]}})");
  const auto pts = grid_points(s.space);
  REQUIRE(pts.size() == 6);
  CHECK(pts[0] == json{{"bits", 2}, {"compressor", "none"}});
  CHECK(pts[2] == json{{"bits", 2}, {"compressor", "topk:0.1"}});
  CHECK(pts[3] == json{{"bits", 4}, {"compressor", "none"}});
  const auto trials = first_rung(s, pts);
  CHECK(trials[5].id == "t0005");
  CHECK(trial_config(s, trials[5], 1).s("compressor") == "topk:0.1");
  CHECK(trial_config(s, trials[5], 1).i("threads") == 1);
}

TEST_CASE("sweep space: random points are seeded, distinct and inside the space") {
  const SweepSpec s = spec_of(R"({"space": {"lr": {"log": [0.001, 0.1], "n": 3}, "bits": [2, 4, 8]},
                                  "strategy": "random", "trials": 10, "seed": 7})");
  const auto a = expand_points(s), b = expand_points(s);
  REQUIRE(a.size() == 10);
  CHECK(a == b);
  std::set<std::string> seen;
  for (const json& p : a) {
    seen.insert(p.dump());
    CHECK(p["lr"].get<double>() >= 0.001);
    CHECK(p["lr"].get<double>() <= 0.1);
    CHECK((p["bits"] == 2 || p["bits"] == 4 || p["bits"] == 8));
  }
  CHECK(seen.size() == 10);
  CHECK(random_points(s.space, 10, 8) != a);
  // a finite space smaller than the trials asked: every point once
  const SweepSpec f = spec_of(R"({"space": {"bits": [2, 4, 8]}, "strategy": "random", "trials": 5})");
  CHECK(expand_points(f).size() == 3);
}

TEST_CASE("sweep space: asha takes the halving keys and starts the grid in a seeded shuffled order") {
  const char* text = R"({"space": {"bits": [2, 4, 8], "width": [0.5, 1, 2]}, "strategy": "asha", "seed": SEED,
                         "halving": {"eta": 3, "min_epochs": 1, "max_epochs": 9}})";
  auto with_seed = [&](int seed) {
    std::string t = text;
    t.replace(t.find("SEED"), 4, std::to_string(seed));
    return spec_of(t);
  };
  const SweepSpec s = with_seed(1);
  CHECK(s.strategy == "asha");
  CHECK(s.halving.eta == 3);
  CHECK(s.halving.max_epochs == 9);
  const auto pts = expand_points(s), grid = grid_points(s.space);
  CHECK(pts == expand_points(s));  // reproducible
  CHECK(pts != grid);              // shuffled ...
  CHECK(std::multiset<json>(pts.begin(), pts.end()) == std::multiset<json>(grid.begin(), grid.end()));  // ... the grid
  CHECK(expand_points(with_seed(2)) != pts);
  CHECK(fingerprint_of(s)["seed"] == 1);  // the order is part of what the trial ids mean
  const auto rung = first_rung(s, pts);
  CHECK(rung[0].id == "t0000-e1");
  CHECK(rung[0].params == pts[0]);
  CHECK_THROWS_WITH_AS(spec_of(R"({"space": {"bits": [2]}, "strategy": "asha"})"),
                       doctest::Contains("strategy \"asha\" needs \"halving\""), frugal::Error);
  CHECK_THROWS_WITH_AS(spec_of(R"({"space": {"max_steps": [10, 20]}, "strategy": "asha",
                                   "halving": {"eta": 2, "max_epochs": 4}})"),
                       doctest::Contains("asha sets the epochs budget"), frugal::Error);
  CHECK_THROWS_WITH_AS(spec_of(R"({"space": {"bits": [2]}, "strategy": "hyperband"})"),
                       doctest::Contains("grid, random, halving, asha"), frugal::Error);
}

TEST_CASE("sweep space: the base config gets a validation split to score on") {
  const SweepSpec s = spec_of(R"({"space": {"bits": [2]}})");
  CHECK(s.base["val_split"] == 5000);
  CHECK(s.notes.size() == 1);
  const SweepSpec k = spec_of(R"({"space": {"bits": [2]}, "config": {"val_split": 1000}})");
  CHECK(k.base["val_split"] == 1000);
  CHECK(k.notes.empty());
  CHECK_THROWS_WITH_AS(spec_of(R"({"space": {"bits": [2]}, "config": {"dataset": "folder:/x"}})"),
                       doctest::Contains("set val_split"), frugal::Error);
}

TEST_CASE("sweep fingerprint: a changed space or base is named, objectives and threads may change") {
  const SweepSpec a = spec_of(R"({"space": {"bits": [2, 4]}, "config": {"lr": 0.05}})");
  const SweepSpec b = spec_of(R"({"space": {"bits": [2, 4, 8]}, "config": {"lr": 0.1}})");
  const std::string d = describe_changes(fingerprint_of(a), fingerprint_of(b));
  CHECK(d.find("space.bits: [2,4] -> [2,4,8]") != std::string::npos);
  CHECK(d.find("base.lr: 0.05 -> 0.1") != std::string::npos);
  const SweepSpec c = spec_of(R"({"space": {"bits": [2, 4]}, "config": {"lr": 0.05, "threads": 2},
                                  "objectives": [{"metric": "metrics.val_loss", "direction": "minimize"}]})");
  CHECK(describe_changes(fingerprint_of(a), fingerprint_of(c)).empty());

  data::testing::TempDir dir;
  const std::string path = dir / "trials.jsonl";
  check_or_start_journal(a, path);
  check_or_start_journal(a, path);  // the same sweep resumes
  check_or_start_journal(c, path);
  CHECK_THROWS_WITH_AS(check_or_start_journal(b, path), doctest::Contains("space.bits: [2,4] -> [2,4,8]"),
                       frugal::Error);
}

TEST_CASE("sweep thread budget: trials x workers x threads fit the cores") {
  const SweepSpec s = spec_of(R"({"space": {"bits": [2, 4]}})");
  CHECK(thread_budget(s, 0, 2) == std::pair<int, int>{2, 1});
  CHECK(thread_budget(s, 1, 2) == std::pair<int, int>{1, 2});
  CHECK(thread_budget(s, 0, 8) == std::pair<int, int>{8, 1});
  const SweepSpec w = spec_of(R"({"space": {"workers": [1, 2]}, "config": {"threads": 2}})");
  CHECK(thread_budget(w, 0, 8) == std::pair<int, int>{2, 2});
  CHECK_THROWS_WITH_AS(thread_budget(w, 2, 4), doctest::Contains("more than the 4 cores"), frugal::Error);
}

TEST_CASE("sweep report: the best and the Pareto front are chosen among the last rung, on validation") {
  const SweepSpec s = spec_of(R"({"space": {"bits": [2, 4, 8]}, "strategy": "halving",
                                  "halving": {"eta": 2, "min_epochs": 1, "max_epochs": 2},
                                  "objectives": [{"metric": "metrics.val_accuracy"},
                                                 {"metric": "sweep.energy_uj", "direction": "minimize"}]})");
  SweepOutcome o;
  o.budgets = {1, 2};
  auto rec = [](const std::string& id, int rung, int64_t bits, double val, double test, double uj) {
    TrialRecord r;
    r.trial.id = id;
    r.trial.rung = rung;
    r.trial.epochs = rung + 1;
    r.trial.params = {{"bits", bits}};
    r.status = "done";
    r.values = {{"metrics", {{"val_accuracy", val}, {"test_accuracy", test}}}, {"sweep", {{"energy_uj", uj}}}};
    return r;
  };
  o.trials = {rec("t0000-e1", 0, 2, 0.99, 0.5, 1.0), rec("t0001-e1", 0, 4, 0.90, 0.9, 2.0),
              rec("t0002-e1", 0, 8, 0.95, 0.9, 3.0), rec("t0001-e2", 1, 4, 0.93, 0.99, 2.0),
              rec("t0002-e2", 1, 8, 0.97, 0.8, 3.0)};
  const json sum = sweep_summary(s, o);
  CHECK(sum["best"]["id"] == "t0002-e2");  // highest val accuracy of the last rung; not t0000 (rung 0) nor test
  CHECK(sum["best"]["metrics"]["val_accuracy"] == 0.97);
  CHECK(sum["pareto_front"] == json{"t0001-e2", "t0002-e2"});
  CHECK(sum["compute"]["trial_epochs"] == 3 + 4);
  const std::string md = trials_markdown(s, sum), csv = trials_csv(s, sum);
  CHECK(md.find("| ★◆ | t0002-e2 |") != std::string::npos);
  CHECK(csv.find("id,status,epochs,bits,metrics.val_accuracy,sweep.energy_uj,metrics.test_accuracy") == 0);
}
