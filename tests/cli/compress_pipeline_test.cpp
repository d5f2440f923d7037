// frugal compress --config: a recipe of stages end to end (lib/modelcomp/pipeline.h) on a small synthetic MNIST.
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

namespace {
double sparsity_of(const nlohmann::json& layers, const std::string& name) {
  for (const auto& l : layers)
    if (l["name"] == name) return l["sparsity"].get<double>();
  FAIL("no layer " << name);
  return -1;
}
}  // namespace

TEST_CASE("cli: compress --config runs a recipe: gradual pruning to per-layer targets, sharing, measured per stage") {
  frugal::data::testing::TempDir dir;
  frugal::testing::write_synthetic_mnist(dir.str(), 320, 64);
  REQUIRE(run("train -q --out " + dir / "run" + " --set data_dir=" + dir.str() +
              " --set epochs=2 --set batch=32 --set val_split=64")
              .code == 0);
  frugal::io::write_file_atomic(dir / "targets.json",
                                R"({"kind": "per-layer-targets", "method": "prune", "targets": {"3.weight": 0.6, "7.weight": 0.9}})");
  frugal::io::write_file_atomic(dir / "recipe.json", R"({"_comment": "test", "stages": ["gradual:@)" + dir / "targets.json" +
                                                          R"(:2", "share:4:6", "finetune:1", "huffman"],
                                 "speed": false, "prune_every": 3, "finetune_set": ["batch=16", "distill_temperature=2"],
                                 "distill": true})");
  Run c = run("compress --model " + dir / "run/model.bin" + " --data-dir " + dir.str() + " --config " +
              dir / "recipe.json" + " --out " + dir / "cmp");
  INFO(c.out);
  REQUIRE(c.code == 0);
  const nlohmann::json j = json_of(dir / "cmp/compress.json");
  // the model was trained with val_split 64: the same 64 images are the validation split, never trained on
  CHECK(j["val_split"]["size"] == 64);
  CHECK(j["val_split"]["model_has_seen_these_images"] == false);
  // one record per stage after the source, each with its bytes and accuracies
  REQUIRE(j["stages"].size() == 5);
  CHECK(j["stages"][0]["stage"] == "source");
  for (const auto& s : j["stages"]) {
    CHECK(s.contains("val_accuracy"));
    CHECK(s.contains("test_accuracy"));
    CHECK(s["packed_bytes"].get<size_t>() > 0);
  }
  // bytes fall after pruning and again after sharing
  CHECK(j["stages"][1]["packed_bytes"].get<size_t>() < j["stages"][0]["packed_bytes"].get<size_t>());
  CHECK(j["stages"][2]["packed_bytes"].get<size_t>() < j["stages"][1]["packed_bytes"].get<size_t>());
  // each named tensor at its own target, fine-tuning kept the zeros, the others untouched
  CHECK(sparsity_of(j["layers"], "3.weight") == doctest::Approx(0.6).epsilon(0.01));
  CHECK(sparsity_of(j["layers"], "7.weight") == doctest::Approx(0.9).epsilon(0.01));
  CHECK(sparsity_of(j["layers"], "9.weight") == 0.0);
  for (const auto& l : j["layers"]) {
    if (l["name"] == "3.weight" || l["name"] == "7.weight") CHECK(l["encoding"] == "sparse");
    if (l["name"] == "3.weight") CHECK(l["bits"] == 6);
    if (l["name"] == "9.weight") CHECK(l["encoding"] == "shared");  // unpruned but shared
  }
  // the packed file is what evaluate runs: the accuracy of the last stage
  Run e = run("evaluate --model " + dir / "cmp/model.packed" + " --data-dir " + dir.str() + " --no-speed --out " +
              dir / "ev");
  INFO(e.out);
  REQUIRE(e.code == 0);
  CHECK(json_of(dir / "ev/evaluate.json")["metrics"]["test_accuracy"] == j["stages"][4]["test_accuracy"]);
  CHECK(j["test_accuracy_after"] == j["stages"][4]["test_accuracy"]);
  // finetune_set reached the fine-tuning runs
  CHECK(json_of(dir / "cmp/stage3_finetune/results.json")["config"]["batch"] == 16);
  CHECK(json_of(dir / "cmp/stage1_gradual/results.json")["config"]["batch"] == 16);
  // distill: the fine-tuning runs learn from the source model's outputs too
  for (const char* stage : {"stage1_gradual", "stage3_finetune"}) {
    const nlohmann::json cfg = json_of(dir / (std::string("cmp/") + stage + "/results.json"))["config"];
    CHECK(cfg["distill_from"] == dir / "run/model.bin");
    CHECK(cfg["distill_temperature"] == 2.0);
  }
  // fine-tuning moved the shared values: the file stores them as they are now, not the k-means centroids
  CHECK(j["packed_max_abs_diff"].get<double>() == 0.0);

  // global pruning: one threshold, so the layers' sparsities differ but all together reach the target
  Run g = run("compress --model " + dir / "run/model.bin" + " --data-dir " + dir.str() +
              " --stages prune:global:0.8 --no-eval --set min_numel=1000 --out " + dir / "glob");
  INFO(g.out);
  REQUIRE(g.code == 0);
  const nlohmann::json gj = json_of(dir / "glob/compress.json");
  double zeros = 0, total = 0;
  for (const auto& l : gj["layers"])
    if (l["encoding"] == "sparse_f32") {
      const double n = l["fp32_bytes"].get<double>() / 4;
      zeros += n * l["sparsity"].get<double>();
      total += n;
    }
  CHECK(zeros / total == doctest::Approx(0.8).epsilon(0.01));
  CHECK(sparsity_of(gj["layers"], "3.weight") != doctest::Approx(sparsity_of(gj["layers"], "7.weight")));

  // bad recipes fail before any work, naming what is wrong
  frugal::io::write_file_atomic(dir / "bits.json",
                                R"({"kind": "per-layer-targets", "method": "bits", "targets": {"3.weight": 4}})");
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"--stages share:4,prune:magnitude:0.5", "after share"},
           {"--set nonsense=1", "nonsense"},
           {"--stages finetune:1 --set finetune_set=bogus_key=3", "bogus_key"},
           {"--set stages=prune:magnitude:0.5 --set val_split=abc", "val_split"},
           {"--stages prune:magnitude:@" + dir / "missing.json", "missing.json"},
           {"--stages prune:magnitude:@" + dir / "bits.json", "holds bits targets"}}) {
    Run b = run("compress --model " + dir / "run/model.bin" + " --data-dir " + dir.str() + " --no-eval " + args +
                " --out " + dir / "bad");
    INFO(args, b.out);
    CHECK(b.code != 0);
    CHECK(b.out.find(needle) != std::string::npos);
  }
}
