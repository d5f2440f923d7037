// frugal compress --lowrank end to end: the factorized model is packed at its real shapes and evaluate runs it.
#include <doctest/doctest.h>

#include <array>
#include <cstdio>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "../data/fixtures.h"
#include "../train/synthetic_mnist.h"
#include "io/files.h"
#include "run_frugal.h"

using frugal::testing::json_of;
using frugal::testing::run;
using frugal::testing::Run;


TEST_CASE("cli: compress --lowrank writes a smaller packed model that evaluate runs at the factors' shapes") {
  frugal::data::testing::TempDir dir;
  frugal::testing::write_synthetic_mnist(dir.str(), 256, 64);
  Run t = run("train -q --out " + dir / "run" + " --set data_dir=" + dir.str() +
              " --set model=mlp --set epochs=2 --set batch=32 --set val_split=64");
  INFO(t.out);
  REQUIRE(t.code == 0);
  const std::string data = " --data-dir " + dir.str();
  Run c = run("compress --lowrank 0.5 --finetune-epochs 1 --model " + dir / "run/model.bin" + data + " --out " +
              dir / "lr");
  INFO(c.out);
  REQUIRE(c.code == 0);
  nlohmann::json cj = json_of(dir / "lr/compress.json");
  CHECK(cj["params_after"].get<int64_t>() < cj["params_before"].get<int64_t>());
  CHECK(cj["macs_after"].get<int64_t>() < cj["macs_before"].get<int64_t>());
  CHECK(cj["packed_file_bytes"].get<int64_t>() < cj["weights_fp32_bytes"].get<int64_t>());
  // source, lowrank, finetune, huffman: each measured on the model's validation split
  REQUIRE(cj["stages"].size() == 4);
  CHECK(cj["stages"][1]["stage"] == "lowrank:0.500000");
  CHECK(cj["stages"][1].contains("val_accuracy"));
  CHECK(cj["val_split"]["size"] == 64);
  const nlohmann::json& report = cj["layer_details"]["lowrank:0.500000"];
  CHECK(report[0]["factorized"] == true);  // 784 -> 300 at half the energy
  int factorized = 0;
  for (auto& l : report) factorized += l["factorized"].get<bool>();
  CHECK(factorized >= 1);
  // the records are the factor layers' tensors at their shapes: 784 -> r (no bias), r -> 300 (the bias)
  const int r = report[0]["rank"];
  CHECK(cj["layers"][0]["dims"] == nlohmann::json::array({r, 784}));
  CHECK(cj["layers"][1]["dims"] == nlohmann::json::array({300, r}));
  CHECK(cj["layers"][2]["dims"] == nlohmann::json::array({300}));
  CHECK(cj["packed_max_abs_diff"].get<double>() == 0.0);
  Run e = run("evaluate --model " + dir / "lr/model.packed" + data + " --no-speed --out " + dir / "ev");
  INFO(e.out);
  REQUIRE(e.code == 0);
  nlohmann::json ev = json_of(dir / "ev/evaluate.json");
  CHECK(ev["metrics"]["macs_per_image"] == cj["macs_after"]);
  CHECK(ev["metrics"]["test_accuracy"].get<double>() == doctest::Approx(cj["test_accuracy_after"].get<double>()));
}
