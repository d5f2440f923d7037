// The frugal binary on good and bad command lines: exit codes, messages naming the culprit, no partial results.
#include <doctest/doctest.h>

#include <fstream>

#include <array>
#include <cstdio>
#include <sys/wait.h>

#include "../data/fixtures.h"
#include "../train/synthetic_mnist.h"
#include "io/files.h"
#include "run_frugal.h"
#include "util/build_info.h"

#include <filesystem>
#include <nlohmann/json.hpp>

using frugal::testing::json_of;
using frugal::testing::run;
using frugal::testing::Run;


TEST_CASE("cli: help lists subcommands and every config key") {
  Run r = run("--help");
  CHECK(r.code == 0);
  for (const char* s : {"train", "evaluate", "compress", "sweep"}) CHECK(r.out.find(s) != std::string::npos);
  Run t = run("train --help");
  CHECK(t.code == 0);
  for (const char* k : {"--config", "--set", "--resume", "epochs", "compressor", "multiplier", "[default"}) CHECK(t.out.find(k) != std::string::npos);
  Run e = run("evaluate --help");
  CHECK(e.out.find("--latency-iters") != std::string::npos);
}

TEST_CASE("cli: --version names the commit the binary was built from and the dirty flag") {
  Run r = run("--version");
  CHECK(r.code == 0);
  const frugal::util::BuildInfo& b = frugal::util::build_info();
  std::string expect = std::string("commit ") + b.git_commit + " dirty " + (b.git_dirty ? "true" : "false");
  INFO(r.out);
  CHECK(r.out.find(expect) != std::string::npos);
  CHECK(r.out.find(b.native ? "\nbuild native" : "\nbuild portable") != std::string::npos);
}

TEST_CASE("cli: bad inputs give a clear error, a non-zero exit code and no results file") {
  frugal::data::testing::TempDir dir;
  frugal::testing::write_synthetic_mnist(dir.str(), 64, 16);
  std::string base = "train --out " + dir / "run" + " --set data_dir=" + dir.str() + " --set batch=16 ";
  struct Case { std::string args, expect; };
  std::vector<Case> cases{
      {"--config " + dir / "missing.json", "missing.json"},
      {"--set epoch=2", "unknown config key 'epoch'"},
      {"--set epochs=two", "epochs"},
      {"--set model=resnet --set depth=7", "resnet depth must be 6n+2"},
      {"--set model=alexnet", "unknown model 'alexnet'"},
      {"--set optimizer=lion", "unknown optimizer 'lion'"},
      {"--set dataset=cifar100", "fetch_cifar100.sh"},
      {"--set compressor=topk:7", "topk"},
      {"--set workers=3", "multiple of workers"},
      {"--set batch=2 --set workers=4", "multiple of workers"},
  };
  frugal::data::testing::write_file(dir / "bad.json", {'{', '"', 'e', 'p', 'o', 'c', 'h', 's', '"', ':', ' ', '1', ',', '\n', '}'});
  cases.push_back({"--config " + dir / "bad.json", "line 2"});
  for (auto& c : cases) {
    Run r = run(base + c.args);
    INFO(c.args, " -> ", r.out);
    CHECK(r.code != 0);
    CHECK(r.out.find(c.expect) != std::string::npos);
    CHECK_FALSE(frugal::io::file_exists(dir / "run/results.json"));
  }
  // a corrupt model file for evaluate
  frugal::data::testing::write_file(dir / "model.bin", {'n', 'o', 't', 'a', 'm', 'o', 'd', 'e', 'l', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  Run r = run("evaluate --model " + dir / "model.bin" + " --dataset mnist --data-dir " + dir.str());
  CHECK(r.code != 0);
  CHECK(r.out.find("wrong magic") != std::string::npos);
  Run s = run("sweep");  // --config is required
  CHECK(s.code != 0);
  CHECK(s.out.find("--config") != std::string::npos);
  {  // a sweep over an unknown key: an error before any trial, nothing written
    std::ofstream f(dir / "sweep.json");
    f << R"({"space": {"bitz": [2, 4]}})";
  }
  Run b = run("sweep --config " + dir / "sweep.json" + " --out " + dir / "sw");
  CHECK(b.code == 1);
  CHECK(b.out.find("unknown config key 'bitz'") != std::string::npos);
  CHECK_FALSE(frugal::io::file_exists(dir / "sw"));
}

TEST_CASE("cli: bad spec strings fail before any dataset is opened") {
  // cifar100 is never present here: an error about the spec, not the missing dataset, shows the spec came first
  frugal::data::testing::TempDir dir;
  const std::string base = "train --out " + dir / "run" + " --set data_dir=" + dir.str() + " --set dataset=cifar100 ";
  struct Case { std::string args, expect; };
  for (const Case& c : std::vector<Case>{{"--set compressor=dgc:abc", "dgc:abc"},
                                        {"--set multiplier=drum:99", "drum"},
                                        {"--set comm_pattern=mesh", "mesh"},
                                        {"--set augment=rotate", "augment"},
                                        {"--set schedule=sawtooth", "sawtooth"}}) {
    Run r = run(base + c.args, "FRUGAL_DATA= ");
    INFO(c.args, " -> ", r.out);
    CHECK(r.code != 0);
    CHECK(r.out.find(c.expect) != std::string::npos);
    CHECK(r.out.find("fetch_cifar100") == std::string::npos);
  }
}

TEST_CASE("cli: compress writes a packed model that evaluate runs, with its accuracy and byte counts") {
  frugal::data::testing::TempDir dir;
  frugal::testing::write_synthetic_mnist(dir.str(), 256, 64);
  Run t = run("train -q --out " + dir / "run" + " --set data_dir=" + dir.str() + " --set epochs=2 --set batch=32");
  REQUIRE(t.code == 0);
  Run c = run("compress --model " + dir / "run/model.bin" + " --data-dir " + dir.str() + " --sparsity 0.5 --out " +
              dir / "cmp");
  INFO(c.out);
  REQUIRE(c.code == 0);
  nlohmann::json j = nlohmann::json::parse(frugal::io::read_file(dir / "cmp/compress.json"));
  const auto packed_bytes = std::filesystem::file_size(dir / "cmp/model.packed");
  CHECK(j.at("packed_file_bytes").get<size_t>() == packed_bytes);
  CHECK(j.at("ratio_vs_fp32").get<double>() > 3);  // half the weights gone, 8 / 5-bit shared values
  size_t sum = 0;
  for (auto& l : j.at("layers")) {
    sum += l.at("packed_bytes").get<size_t>();
    if (l.at("encoding") == "sparse") CHECK(l.at("sparsity").get<double>() >= 0.5);
  }
  CHECK(sum < packed_bytes);  // the records, plus magic, metadata and checksum
  // evaluate decodes the packed file and gets the accuracy compress measured
  Run e = run("evaluate --model " + dir / "cmp/model.packed" + " --data-dir " + dir.str() + " --no-speed --out " +
              dir / "ev");
  INFO(e.out);
  REQUIRE(e.code == 0);
  nlohmann::json ev = nlohmann::json::parse(frugal::io::read_file(dir / "ev/evaluate.json"));
  CHECK(ev.at("metrics").at("test_accuracy").get<double>() == j.at("test_accuracy_after").get<double>());
  CHECK(ev.at("metrics").at("model_file_bytes").get<size_t>() == packed_bytes);
  // with fine-tuning after pruning and after sharing: the same sparsity, each shared tensor at most 2^bits - 1
  // distinct nonzero values, and the original's accuracy measured on the untouched original
  Run f = run("compress --model " + dir / "run/model.bin" + " --data-dir " + dir.str() +
              " --sparsity 0.8 --fc-bits 3 --conv-bits 4 --finetune-epochs 1 --out " + dir / "ft");
  INFO(f.out);
  REQUIRE(f.code == 0);
  nlohmann::json fj = nlohmann::json::parse(frugal::io::read_file(dir / "ft/compress.json"));
  // the source, prune, finetune, share, finetune, huffman
  REQUIRE(fj.at("stages").size() == 6);
  CHECK(fj.at("stages")[2].at("stage") == "finetune:1");
  CHECK(fj.at("test_accuracy_before").get<double>() == j.at("test_accuracy_before").get<double>());
  for (auto& l : fj.at("layers"))
    if (l.at("encoding") == "sparse") CHECK(l.at("sparsity").get<double>() >= 0.8);
  // a corrupted packed file is refused naming the file
  std::string bytes = frugal::io::read_file(dir / "cmp/model.packed");
  bytes[bytes.size() / 2] ^= 0x40;
  frugal::io::write_file_atomic(dir / "bad.packed", bytes);
  Run b = run("evaluate --model " + dir / "bad.packed" + " --data-dir " + dir.str() + " --no-speed");
  CHECK(b.code != 0);
  CHECK(b.out.find("bad.packed") != std::string::npos);
  CHECK(b.out.find("checksum") != std::string::npos);
}

TEST_CASE("cli: train then evaluate the written model") {
  frugal::data::testing::TempDir dir;
  frugal::testing::write_synthetic_mnist(dir.str(), 256, 64);
  // libgomp's spin: its default for fp32, a short one for approximate arithmetic (util/omp_env.h)
  const std::string no_omp_env = "env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY ";
  Run t = run("train -q --out " + dir / "run" + " --set data_dir=" + dir.str() +
              " --set epochs=2 --set batch=32 --set width=0.5", no_omp_env);
  INFO(t.out);
  REQUIRE(t.code == 0);
  CHECK(t.out.find("test accuracy") != std::string::npos);
  nlohmann::json tr = nlohmann::json::parse(frugal::io::read_file(dir / "run/results.json"));
  CHECK(tr["environment"]["gomp_spincount"] == "");
  Run e = run("evaluate --model " + dir / "run/model.bin" + " --data-dir " + dir.str() + " --latency-iters 5 --out " + dir / "ev");
  INFO(e.out);
  REQUIRE(e.code == 0);
  CHECK(frugal::io::file_exists(dir / "ev/evaluate.json"));
  CHECK(e.out.find("top-1 accuracy") != std::string::npos);
  CHECK(e.out.find("energy") != std::string::npos);
  // per-layer bit-widths reach the energy model: 4x6-bit products cost (4*6)/64 of an 8x8 product
  Run q = run("evaluate --model " + dir / "run/model.bin" + " --data-dir " + dir.str() +
              " --no-speed --multiplier drum:4:signed --approx-mode functional --act-quant affine" +
              " --layer-bits 8/8,4/6,4/6,8/8,8/8 --out " + dir / "evq", no_omp_env);
  INFO(q.out);
  REQUIRE(q.code == 0);
  nlohmann::json j = nlohmann::json::parse(frugal::io::read_file(dir / "evq/evaluate.json"));
  CHECK(j["environment"]["gomp_spincount"] == "20000");
  CHECK(j["approx"]["act_quant"] == "affine");
  auto& el = j["energy"]["layers"];
  REQUIRE(el.size() == 5);
  CHECK(el[0]["arithmetic"] == "int8");
  CHECK(el[1]["arithmetic"] == "int4x6");
  CHECK(el[1]["mul_pj"].get<double>() == doctest::Approx(el[0]["mul_pj"].get<double>() * 24.0 / 64.0));
  Run bad = run("evaluate --model " + dir / "run/model.bin" + " --data-dir " + dir.str() +
                " --no-speed --multiplier drum:4:signed --act-quant zeropoint");
  CHECK(bad.code != 0);
  CHECK(bad.out.find("act-quant") != std::string::npos);
}
