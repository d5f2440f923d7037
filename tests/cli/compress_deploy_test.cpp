// frugal compress's deployment modes end to end: int8 on oneDNN, structured channel pruning, Taylor saliency.
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


TEST_CASE("cli: compress --int8 / --channels / --criterion taylor write packed models that evaluate runs") {
  frugal::data::testing::TempDir dir;
  frugal::testing::write_synthetic_mnist(dir.str(), 256, 64);
  Run t = run("train -q --out " + dir / "run" + " --set data_dir=" + dir.str() + " --set epochs=2 --set batch=32");
  REQUIRE(t.code == 0);
  const std::string data = " --data-dir " + dir.str();
  Run fp = run("evaluate --model " + dir / "run/model.bin" + data + " --no-speed --out " + dir / "ev_fp32");
  REQUIRE(fp.code == 0);
  const nlohmann::json ev_fp32 = json_of(dir / "ev_fp32/evaluate.json");
  const double acc_fp32 = ev_fp32["metrics"]["test_accuracy"];
  // an exact fp32 model runs fused by default, layer by layer with --unfused, with the same accuracy
  CHECK(ev_fp32["inference"]["path"] == "fused-f32");
  CHECK(!ev_fp32["inference"]["implementations"].empty());
  Run lay = run("evaluate --model " + dir / "run/model.bin" + data + " --no-speed --unfused --out " + dir / "ev_layers");
  REQUIRE(lay.code == 0);
  const nlohmann::json ev_layers = json_of(dir / "ev_layers/evaluate.json");
  CHECK(ev_layers["inference"]["path"] == "layers");
  CHECK(ev_layers["inference"]["why_layers"] == "--unfused");
  CHECK(ev_layers["metrics"]["test_accuracy"] == ev_fp32["metrics"]["test_accuracy"]);
  CHECK(std::abs(ev_layers["metrics"]["test_loss"].get<double>() - ev_fp32["metrics"]["test_loss"].get<double>()) < 1e-4);
  // --conv-impl fastest: oneDNN's conv implementations timed and the quickest taken; the same model to rounding
  CHECK(ev_fp32["inference"]["conv_impl"] == "first");
  Run fast = run("evaluate --model " + dir / "run/model.bin" + data + " --no-speed --conv-impl fastest --out " +
                 dir / "ev_fastest");
  REQUIRE(fast.code == 0);
  const nlohmann::json ev_fast = json_of(dir / "ev_fastest/evaluate.json");
  CHECK(ev_fast["inference"]["conv_impl"] == "fastest");
  CHECK(std::abs(ev_fast["metrics"]["test_loss"].get<double>() - ev_fp32["metrics"]["test_loss"].get<double>()) < 1e-4);
  Run lay_fast = run("evaluate --model " + dir / "run/model.bin" + data + " --no-speed --unfused --conv-impl fastest");
  CHECK(lay_fast.code != 0);  // nothing to choose for: the layer path
  CHECK(lay_fast.out.find("--conv-impl") != std::string::npos);

  Run q = run("compress --int8 --no-eval --calib-images 128 --model " + dir / "run/model.bin" + data + " --out " +
              dir / "int8");
  INFO(q.out);
  REQUIRE(q.code == 0);
  Run e = run("evaluate --model " + dir / "int8/model.packed" + data + " --no-speed --out " + dir / "ev_int8");
  INFO(e.out);
  REQUIRE(e.code == 0);
  nlohmann::json ev = json_of(dir / "ev_int8/evaluate.json");
  CHECK(std::abs(ev["metrics"]["test_accuracy"].get<double>() - acc_fp32) <= 2.0 / 64 + 1e-9);  // 2 images of 64
  CHECK(!ev.at("int8").at("implementations").empty());
  CHECK(ev["inference"]["path"] == "int8");
  CHECK(ev["energy"]["layers"][0]["arithmetic"] == "int8");
  CHECK(json_of(dir / "int8/compress.json")["ratio_vs_fp32"].get<double>() > 3);

  Run c = run("compress --channels 0.5 --criterion taylor --saliency-batches 2 --no-eval --model " +
              dir / "run/model.bin" + data + " --out " + dir / "ch");
  INFO(c.out);
  REQUIRE(c.code == 0);
  nlohmann::json cj = json_of(dir / "ch/compress.json");
  CHECK(cj["macs_after"].get<int64_t>() < cj["macs_before"].get<int64_t>() * 0.7);
  CHECK(cj["params_after"].get<int64_t>() < cj["params_before"].get<int64_t>());
  Run ce = run("evaluate --model " + dir / "ch/model.packed" + data + " --no-speed --out " + dir / "ev_ch");
  INFO(ce.out);
  REQUIRE(ce.code == 0);
  CHECK(json_of(dir / "ev_ch/evaluate.json")["metrics"]["macs_per_image"] == cj["macs_after"]);
  CHECK(cj["inference"]["before"]["path"] == "fused-f32");  // compress --no-eval still names the paths
  CHECK(cj["inference"]["after"]["path"] == "fused-f32");

  Run s = run("compress --sparsity 0.6 --criterion taylor --saliency-batches 2 --no-eval --model " +
              dir / "run/model.bin" + data + " --out " + dir / "taylor");
  INFO(s.out);
  REQUIRE(s.code == 0);
  for (auto& l : json_of(dir / "taylor/compress.json")["layers"])
    if (l["encoding"] == "sparse") CHECK(l["sparsity"].get<double>() >= 0.6);
}
