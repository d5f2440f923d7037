// frugal compress --sensitivity end to end: the validation split the training run held out, the three outputs,
// every layer x level, targets for a budget, and bad command lines.
#include <doctest/doctest.h>

#include <array>
#include <cstdio>
#include <sys/wait.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "../data/fixtures.h"
#include "../train/synthetic_mnist.h"
#include "io/files.h"
#include "run_frugal.h"

using frugal::testing::json_of;
using frugal::testing::run;
using frugal::testing::Run;


TEST_CASE("cli: compress --sensitivity prune|bits writes the table, the plot and per-layer targets") {
  frugal::data::testing::TempDir dir;
  // 64 validation and 45 test images: an accuracy strictly between 0 and 1 on one cannot equal one on the other
  // (k / 64 = j / 45 only for 0 and 1), so the baseline tells which images were evaluated. 10 steps: not perfect yet.
  frugal::testing::write_synthetic_mnist(dir.str(), 320, 45);
  Run t = run("train -q --out " + dir / "run" + " --set data_dir=" + dir.str() +
              " --set max_steps=10 --set batch=32 --set val_split=64");
  INFO(t.out);
  REQUIRE(t.code == 0);
  const nlohmann::json results = json_of(dir / "run/results.json");
  const std::string model = " --model " + dir / "run/model.bin" + " --data-dir " + dir.str();

  // lenet5's weights with >= 100 elements: both convs (150, 2400) and the three linears (48000, 10080, 840)
  Run s = run("compress --sensitivity prune --levels 0.5,0.9,0.99 --budget 1 --min-numel 100" + model + " --out " +
              dir / "sens");
  INFO(s.out);
  REQUIRE(s.code == 0);
  CHECK(s.out.find("[sensitivity] 0.weight:") != std::string::npos);  // progress per layer
  for (const char* f : {"sensitivity.json", "sensitivity.md", "sensitivity.png", "targets.json"})
    CHECK(std::filesystem::file_size(dir / ("sens/" + std::string(f))) > 0);
  CHECK(frugal::io::read_file(dir / "sens/sensitivity.png").substr(1, 3) == "PNG");
  const nlohmann::json j = json_of(dir / "sens/sensitivity.json");
  CHECK(j["kind"] == "sensitivity");
  CHECK(j["method"] == "prune");
  CHECK(j["split"] == "validation");
  CHECK(j["levels"] == nlohmann::json::array({0.5, 0.9, 0.99}));
  // the very images the training run held out, and its validation accuracy as the baseline
  CHECK(j["validation"]["size"] == 64);
  CHECK(j["validation"]["held_out_in_training"] == true);
  CHECK(j["validation"]["indices_sha256"] == results["data"]["val_split"]["indices_sha256"]);
  const double val_accuracy = results["metrics"]["val_accuracy"];
  REQUIRE((val_accuracy > 0 && val_accuracy < 1));
  CHECK(j["baseline_accuracy"].get<double>() ==
        doctest::Approx(val_accuracy).epsilon(1e-9));
  const std::vector<std::string> names{"0.weight", "3.weight", "7.weight", "9.weight", "11.weight"};
  REQUIRE(j["layers"].size() == names.size());
  const std::string md = frugal::io::read_file(dir / "sens/sensitivity.md");
  for (size_t l = 0; l < names.size(); ++l) {
    const nlohmann::json& layer = j["layers"][l];
    CHECK(layer["name"] == names[l]);
    REQUIRE(layer["accuracy"].size() == 3);
    REQUIRE(layer["drop_pp"].size() == 3);
    for (size_t i = 0; i < 3; ++i) {
      const double a = layer["accuracy"][i];
      CHECK((a >= 0 && a <= 1));
      CHECK(layer["drop_pp"][i].get<double>() == doctest::Approx(100 * (j["baseline_accuracy"].get<double>() - a)));
    }
    CHECK(md.find("| " + names[l] + " |") != std::string::npos);
  }
  // targets: for each layer the most aggressive level within 1 pp, or 0 (untouched)
  const nlohmann::json g = json_of(dir / "sens/targets.json");
  CHECK(g["kind"] == "per-layer-targets");
  CHECK(g["method"] == "prune");
  CHECK(g["budget_pp"] == 1.0);
  REQUIRE(g["targets"].size() == names.size());
  for (size_t l = 0; l < names.size(); ++l) {
    const nlohmann::json& drops = j["layers"][l]["drop_pp"];
    double expect = 0;
    for (size_t i = 0; i < 3; ++i)
      if (drops[i].get<double>() <= 1 + 1e-9) expect = j["levels"][i];
    CHECK(g["targets"][names[l]].get<double>() == expect);
  }

  Run b = run("compress --sensitivity bits --levels 4,1" + model + " --out " + dir / "bits");
  INFO(b.out);
  REQUIRE(b.code == 0);
  const nlohmann::json jb = json_of(dir / "bits/sensitivity.json");
  CHECK(jb["levels"] == nlohmann::json::array({4, 1}));
  CHECK(jb["layers"].size() == 3);  // --min-numel 1024 (compress's default): 3.weight, 7.weight, 9.weight
  CHECK(!std::filesystem::exists(dir / "bits/targets.json"));

  struct Bad {
    std::string args, message;
  };
  for (const Bad& bad : std::vector<Bad>{{"--sensitivity quant", "--sensitivity"},
                                         {"--sensitivity prune --levels 0.5,1.5", "[0, 1)"},
                                         {"--sensitivity bits --levels 8,17", "1..16"},
                                         {"--sensitivity rank --levels 0", "(0, 1]"},
                                         {"--sensitivity prune --min-numel 1000000", "no compressible layers"},
                                         {"--levels 0.5", "--sensitivity"},
                                         {"--sensitivity prune --stages prune:magnitude:0.5", "does not take a recipe"},
                                         {"--sensitivity bits --int8", "does not take a recipe"}}) {
    Run e = run("compress " + bad.args + model + " --out " + dir / "bad");
    INFO(bad.args, ": ", e.out);
    CHECK(e.code != 0);
    CHECK(e.out.find(bad.message) != std::string::npos);
  }
  CHECK(!std::filesystem::exists(dir / "bad/sensitivity.json"));
}

TEST_CASE("cli: compress --sensitivity on a model trained without a validation split says it has seen those images") {
  frugal::data::testing::TempDir dir;
  frugal::testing::write_synthetic_mnist(dir.str(), 5100, 32);
  Run t = run("train -q --out " + dir / "run" + " --set data_dir=" + dir.str() + " --set max_steps=4 --set batch=32");
  INFO(t.out);
  REQUIRE(t.code == 0);
  Run s = run("compress --sensitivity rank --levels 0.5 --min-numel 20000 --model " + dir / "run/model.bin" +
              " --data-dir " + dir.str() + " --out " + dir / "sens");
  INFO(s.out);
  REQUIRE(s.code == 0);
  CHECK(s.out.find("has seen these validation images") != std::string::npos);
  const nlohmann::json j = json_of(dir / "sens/sensitivity.json");
  CHECK(j["validation"]["size"] == 510);  // 10 % of 5100, as compress's recipes hold out
  CHECK(j["validation"]["held_out_in_training"] == false);
  CHECK(j["layers"].size() == 1);  // only the 48000-weight linear
  CHECK(j["level_meaning"] == "rank fraction");
  // a recipe on the same model holds out the very same images
  Run c = run("compress --stages prune:magnitude:0.5 --model " + dir / "run/model.bin" + " --data-dir " + dir.str() +
              " --out " + dir / "comp");
  INFO(c.out);
  REQUIRE(c.code == 0);
  const nlohmann::json cj = json_of(dir / "comp/compress.json");
  CHECK(cj["val_split"]["size"] == j["validation"]["size"]);
  CHECK(cj["val_split"]["indices_sha256"] == j["validation"]["indices_sha256"]);
}
