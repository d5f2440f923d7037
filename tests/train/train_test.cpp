// End-to-end training on a small generated dataset: loss falls, resume equals an uninterrupted run,
// divergence stops with the last good checkpoint kept, W ranks equal W in-process workers.
#include <doctest/doctest.h>

#include <fstream>

#include <cmath>
#include <filesystem>
#include <thread>

#include "data/split.h"
#include "comm/communicator.h"
#include "io/config.h"
#include "io/files.h"
#include "io/tensor_file.h"
#include "nn/model_io.h"
#include "optim/optimizer.h"
#include "synthetic_mnist.h"
#include "train/trainer.h"
#include "util/check.h"

using namespace frugal;
using json = nlohmann::json;
using testing::tiny_config;

namespace {

/// Quiet run into out_dir; with stop_after_epoch >= 0 it ends there as if interrupted.
train::TrainOptions run_into(const std::string& out_dir, int stop_after_epoch = -1) {
  train::TrainOptions o;
  o.out_dir = out_dir;
  o.stop_after_epoch = stop_after_epoch;
  o.quiet = true;
  return o;
}

/// Continues the run in dir with its stored config.
json resume(const std::string& dir) {
  train::TrainOptions o;
  o.resume_dir = dir;
  o.quiet = true;
  return train::run_training(io::Config(), o);
}
}  // namespace

TEST_CASE("train: loss falls and results.json has the documented fields") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str());
  io::Config c = tiny_config(dir.str());
  train::TrainOptions o;
  o.out_dir = dir / "run";
  o.quiet = true;
  json r = train::run_training(c, o);
  REQUIRE(r["epochs"].size() == 3);
  double first = r["epochs"][0]["train_loss"], last = r["epochs"][2]["train_loss"];
  CHECK(last < 0.5 * first);
  CHECK(r["metrics"]["test_accuracy"].get<double>() > 0.8);
  for (const char* k : {"config", "metrics", "epochs", "environment", "data", "timing"}) CHECK(r.contains(k));
  CHECK(r["metrics"].contains("train_images_per_second"));
  CHECK(r["environment"].contains("onednn_cpu_isa"));
  CHECK(r["data"]["files"].size() == 4);
  CHECK(r["data"]["root"] == dir.str());  // the machine's layout once; each file relative to it
  CHECK(r["data"]["files"][0]["path"].get<std::string>().rfind("mnist/", 0) == 0);
  CHECK(r["environment"]["git_dirty"].is_boolean());
  json on_disk = json::parse(io::read_file(dir / "run/results.json"));
  CHECK(on_disk.at("metrics").at("test_accuracy") == r.at("metrics").at("test_accuracy"));
  CHECK(io::file_exists(dir / "run/model.bin"));
  CHECK(io::file_exists(dir / "run/checkpoint.bin"));
}

TEST_CASE("train: --resume after an interruption ends with the same result") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str());
  io::Config c = tiny_config(dir.str());
  c.set("augment=crop+flip");
  c.set("schedule=onecycle");
  json a = train::run_training(c, run_into(dir / "full"));

  json p = train::run_training(c, run_into(dir / "part", 1));
  CHECK(p["completed"] == false);
  CHECK(p["epochs"].size() == 1);
  json b = resume(dir / "part");
  REQUIRE(b["epochs"].size() == 3);
  for (int e = 0; e < 3; ++e) {
    CHECK(b["epochs"][e]["train_loss"].get<double>() ==
          doctest::Approx(a["epochs"][e]["train_loss"].get<double>()).epsilon(1e-6));
    CHECK(b["epochs"][e].at("test_accuracy") == a["epochs"][e].at("test_accuracy"));
  }
  CHECK(b.at("metrics").at("test_accuracy") == a.at("metrics").at("test_accuracy"));
}

TEST_CASE("train: --resume of compressed multi-worker runs continues exactly (residuals in the checkpoint)") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str());
  for (std::string comp : {"dgc:0.01", "powersgd:2", "qsgd:16", "topk:0.05"}) {
    CAPTURE(comp);
    io::Config c = tiny_config(dir.str());
    c.set("workers=2");
    c.set("compressor=" + comp);
    c.set("dense_below=0");
    c.set("dense_1d=false");
    train::TrainOptions full;
    full.out_dir = dir / ("full_" + comp.substr(0, 4));
    full.quiet = true;
    json a = train::run_training(c, full);
    train::TrainOptions part = full;
    part.out_dir = dir / ("part_" + comp.substr(0, 4));
    part.stop_after_epoch = 1;
    train::run_training(c, part);
    train::TrainOptions res;
    res.resume_dir = part.out_dir;
    res.quiet = true;
    json b = train::run_training(io::Config(), res);
    REQUIRE(b["epochs"].size() == a["epochs"].size());
    for (size_t e = 0; e < a["epochs"].size(); ++e)
      CHECK(b["epochs"][e]["train_loss"].get<double>() ==
            doctest::Approx(a["epochs"][e]["train_loss"].get<double>()).epsilon(1e-6));
    CHECK(b.at("metrics").at("test_accuracy") == a.at("metrics").at("test_accuracy"));
    CHECK(b.at("communication").at("bytes_sent_per_worker") == a.at("communication").at("bytes_sent_per_worker"));
  }
}

TEST_CASE("train: divergence stops with a message and keeps the last good checkpoint") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str());
  io::Config c = tiny_config(dir.str());
  train::TrainOptions o;
  o.out_dir = dir / "run";
  o.quiet = true;
  o.stop_after_epoch = 1;
  train::run_training(c, o);
  std::string before = io::read_file(dir / "run/checkpoint.bin");
  io::Config bad;
  bad.set("lr=1e12");
  train::TrainOptions r;
  r.resume_dir = dir / "run";
  r.quiet = true;
  CHECK_THROWS_WITH_AS(train::run_training(bad, r), doctest::Contains("diverged"), frugal::Error);
  CHECK(io::read_file(dir / "run/checkpoint.bin") == before);
}

TEST_CASE("train: W ranks over a communicator equal W in-process workers (dense and topk)") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str(), 256, 64);
  for (std::string comp : {"none", "topk:0.05"}) {
    io::Config c = tiny_config(dir.str());
    c.set("epochs=2");
    c.set("workers=2");
    c.set("compressor=" + comp);
    c.set("dense_below=16");
    train::TrainOptions o;
    o.out_dir = dir / "inproc";
    o.quiet = true;
    json a = train::run_training(c, o);
    comm::ThreadGroup group(2);
    std::vector<json> rr(2);
    std::vector<std::thread> th;
    for (int r = 0; r < 2; ++r)
      th.emplace_back([&, r] {
        train::TrainOptions t;
        t.out_dir = dir / ("ranks" + std::to_string(r));
        t.quiet = true;
        t.comm = &group.rank(r);
        rr[r] = train::run_training(c, t);
      });
    for (auto& t : th) t.join();
    for (int e = 0; e < 2; ++e) {
      INFO("compressor ", comp, " epoch ", e);
      double x = a["epochs"][e]["train_loss"], y = rr[0]["epochs"][e]["train_loss"];
      CHECK(std::abs(x - y) <= 1e-6 * std::abs(x));
      CHECK(rr[1]["epochs"][e]["train_loss"].get<double>() == y);
    }
    REQUIRE(a["communication"].contains("bytes_sent_per_worker"));
    CHECK(a.at("communication").at("bytes_sent_per_worker") == rr[0].at("communication").at("bytes_sent_per_worker"));
  }
}

TEST_CASE("train: config errors name the key and list the known ones") {
  io::Config c;
  CHECK_THROWS_WITH_AS(c.set("epoch=3"), doctest::Contains("unknown config key 'epoch'"), frugal::Error);
  CHECK_THROWS_WITH_AS(c.set("epochs=three"), doctest::Contains("epochs"), frugal::Error);
  CHECK_THROWS_WITH_AS(c.merge(json{{"lr", "fast"}}, "x.json"), doctest::Contains("x.json: key 'lr' expects a number"),
                       frugal::Error);
  data::testing::TempDir dir;
  data::testing::write_file(dir / "bad.json", {'{', '"', 'l', 'r', '"', ':', '\n', '}'});
  CHECK_THROWS_WITH_AS(c.load_file(dir / "bad.json"), doctest::Contains("line 2"), frugal::Error);
  c.set("model=nosuchnet");
  c.set("data_dir=" + dir.str());
  testing::write_synthetic_mnist(dir.str(), 64, 16);
  train::TrainOptions o;
  o.out_dir = dir / "run";
  o.quiet = true;
  CHECK_THROWS_WITH_AS(train::run_training(c, o), doctest::Contains("unknown model 'nosuchnet'"), frugal::Error);
  CHECK_FALSE(io::file_exists(dir / "run/results.json"));
}

TEST_CASE("train: approximate-multiplier forward (STE) learns, per-layer choice reported, init fine-tunes") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str());
  io::Config c = tiny_config(dir.str());
  c.set("epochs=2");
  train::TrainOptions o;
  o.out_dir = dir / "fp32";
  o.quiet = true;
  json base = train::run_training(c, o);
  io::Config a = c;
  a.set("multiplier=drum:4:signed");
  a.set("approx_mode=functional");
  a.set("approx_layers=inner");
  a.set("init=" + dir / "fp32/model.bin");
  a.set("lr=0.01");
  o.out_dir = dir / "approx";
  json r = train::run_training(a, o);
  REQUIRE(r.contains("approx"));
  auto& layers = r["approx"]["layers"];
  REQUIRE(layers.size() == 5);  // lenet5: 2 conv + 3 linear
  CHECK(layers[0]["arithmetic"] == "fp32");
  CHECK(layers[4]["arithmetic"] == "fp32");
  CHECK(layers[1]["arithmetic"].get<std::string>().find("drum:4") != std::string::npos);
  CHECK(!layers[0].contains("kernel_path"));  // fp32
  CHECK(!layers[1]["kernel_path"].get<std::string>().empty());  // the approximate kernels' path on this CPU
  // starts from the trained weights, so the first approximate epoch is already far better than chance
  CHECK(r["epochs"][0]["train_accuracy"].get<double>() > 0.8);
  CHECK(r["metrics"]["test_accuracy"].get<double>() > 0.8);
  // the multiplier's table gradient instead of the straight-through estimator
  io::Config t = a;
  t.set("approx_grad=lut");
  o.out_dir = dir / "approx_lut";
  json rt = train::run_training(t, o);
  CHECK(rt["approx"]["gradient"] == "lut");
  CHECK(rt["epochs"][1]["train_loss"].get<double>() < rt["epochs"][0]["train_loss"].get<double>() * 1.05);
  CHECK(rt["metrics"]["test_accuracy"].get<double>() > 0.8);
  // per-layer bit-widths and activation ranges calibrated on training batches
  io::Config q = a;
  q.set("approx_layers=all");
  q.set("layer_bits=8/8,4/6,4/6,6/6,8/8");
  q.set("act_calibration=percentile:2:99.9");
  q.set("epochs=1");
  o.out_dir = dir / "approx_bits";
  json rq = train::run_training(q, o);
  CHECK(rq["approx"]["layers"][1]["arithmetic"].get<std::string>().find("/w4a6") != std::string::npos);
  CHECK(rq["approx"]["layers"][3]["arithmetic"].get<std::string>().find("/w6a6") != std::string::npos);
  REQUIRE(rq["approx"]["calibration"]["layers"].size() == 5);
  CHECK(rq["approx"]["calibration"]["batches"] == 2);
  for (auto& l : rq["approx"]["calibration"]["layers"]) CHECK(l["hi"].get<double>() > l["lo"].get<double>());
  CHECK(rq["metrics"]["test_accuracy"].get<double>() > 0.5);
  io::Config badbits = q;
  badbits.set("layer_bits=8/8,4/6");
  o.out_dir = dir / "badbits";
  CHECK_THROWS_WITH_AS(train::run_training(badbits, o), doctest::Contains("has 2 entries; the model has 5"),
                       frugal::Error);
  badbits.set("layer_bits=");
  badbits.set("act_calibration=median:3");
  CHECK_THROWS_WITH_AS(train::run_training(badbits, o), doctest::Contains("act_calibration"), frugal::Error);
  io::Config bad = c;
  bad.set("multiplier=drum:99");
  o.out_dir = dir / "bad";
  CHECK_THROWS_AS(train::run_training(bad, o), frugal::Error);
}

TEST_CASE("train: SWA averages the last swa_epochs end-of-epoch weights, re-estimates BN, resumes exactly") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str());
  io::Config c = tiny_config(dir.str());
  c.set("model=cnn");
  c.set("width=0.25");
  c.set("swa_epochs=2");
  c.set("swa_lr=0.01");
  json a = train::run_training(c, run_into(dir / "full"));
  REQUIRE(a.contains("swa"));
  CHECK(a["swa"]["epochs_averaged"] == 2);
  CHECK(a["swa"]["bn_update_batches"].get<int64_t>() > 0);
  CHECK(a["epochs"][2]["lr_end"].get<double>() == doctest::Approx(0.01));
  CHECK(a["metrics"]["test_accuracy"].get<double>() > 0.8);
  CHECK(a.at("swa").at("test_accuracy") == a.at("metrics").at("test_accuracy"));

  train::run_training(c, run_into(dir / "part", 2));
  // model.bin = mean of the weights after epochs 2 (part's checkpoint) and 3 (full's checkpoint)
  io::TensorFile w2 = io::load_tensor_file(dir / "part/checkpoint.bin");
  io::TensorFile w3 = io::load_tensor_file(dir / "full/checkpoint.bin");
  io::TensorFile avg = io::load_tensor_file(dir / "full/model.bin");
  CHECK(w2.meta["state"]["swa_n"] == 1);
  int weights = 0, stats_changed = 0;
  for (auto& [name, t] : avg.tensors) {
    const Tensor* t2 = w2.find(name);
    const Tensor* t3 = w3.find(name);
    REQUIRE((t2 && t3));
    if (name.find("running_") != std::string::npos) {  // re-estimated, not averaged
      for (int64_t i = 0; i < t.size(); ++i) stats_changed += t.data()[i] != t3->data()[i];
      continue;
    }
    ++weights;
    for (int64_t i = 0; i < t.size(); ++i)
      REQUIRE_MESSAGE(t.data()[i] == doctest::Approx(0.5 * (t2->data()[i] + t3->data()[i])).epsilon(1e-5), name, "[", i, "]");
  }
  CHECK(weights > 4);
  CHECK(stats_changed > 0);

  json b = resume(dir / "part");
  CHECK(b.at("metrics").at("test_accuracy") == a.at("metrics").at("test_accuracy"));
  CHECK(b.at("metrics").at("test_loss") == a.at("metrics").at("test_loss"));  // .at(): a missing key throws
  CHECK(b.at("swa").at("epochs_averaged") == 2);

  c.set("swa_epochs=3");
  CHECK_THROWS_WITH_AS(train::run_training(c, run_into(dir / "full")), doctest::Contains("swa_epochs"), Error);
}

TEST_CASE("train: val_split holds out training images and evaluates them every epoch") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str());  // 512 train, 128 test
  io::Config c = tiny_config(dir.str());
  c.set("val_split=96");
  json r = train::run_training(c, run_into(dir / "val"));
  CHECK(r["data"]["train_size"] == 512 - 96);
  const json& vs = r["data"]["val_split"];
  CHECK(vs["size"] == 96);
  CHECK(vs["from_train_size"] == 512);
  CHECK(vs["seed"] == data::kValSplitSeed);
  CHECK(vs["indices_sha256"].get<std::string>().size() == 64);
  REQUIRE(r["epochs"].size() == 3);
  for (const json& e : r["epochs"]) {
    CHECK(e["steps"] == (512 - 96) / 32);  // the loader sees the 416 kept images only
    CHECK(e.contains("val_loss"));
    CHECK(e["val_accuracy"].get<double>() >= 0.0);
  }
  CHECK(r["epochs"][2]["val_loss"].get<double>() < r["epochs"][0]["val_loss"].get<double>());
  CHECK(r["metrics"]["val_accuracy"] == r["epochs"][2]["val_accuracy"]);  // the same weights, evaluated again
  CHECK(r["metrics"]["val_loss"] == r["epochs"][2]["val_loss"]);
  CHECK(r["metrics"]["val_accuracy"].get<double>() > 0.8);
  CHECK(io::read_file(dir / "val/train.log").find("| val loss ") != std::string::npos);

  // the split depends on the dataset only, not on the run's seed
  c.set("seed=7");
  c.set("epochs=1");
  json r7 = train::run_training(c, run_into(dir / "val7"));
  CHECK(r7["data"]["val_split"]["indices_sha256"] == vs["indices_sha256"]);

  // default (-1, auto) without a tuning schedule: nothing held out, no val fields
  io::Config n = tiny_config(dir.str());
  n.set("epochs=1");
  json d = train::run_training(n, run_into(dir / "noval"));
  CHECK(d["data"]["train_size"] == 512);
  CHECK(d["data"]["val_split"]["size"] == 0);
  CHECK(d["epochs"][0]["steps"] == 512 / 32);
  CHECK_FALSE(d["epochs"][0].contains("val_loss"));
  CHECK_FALSE(d["metrics"].contains("val_accuracy"));
}

TEST_CASE("train: val_split errors name the key and the sizes, auto holds out 5000 under schedule=plateau") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str(), 5100, 64);
  io::Config c = tiny_config(dir.str());
  c.set("schedule=plateau");
  c.set("epochs=1");
  c.set("max_steps=2");
  json a = train::run_training(c, run_into(dir / "auto"));
  CHECK(a["data"]["val_split"]["size"] == 5000);
  CHECK(a["data"]["train_size"] == 100);
  CHECK(a["epochs"][0].contains("val_loss"));

  c.set("val_split=0");
  CHECK_THROWS_WITH_AS(train::run_training(c, run_into(dir / "e0")),
                       doctest::Contains("schedule=plateau watches the validation loss"), frugal::Error);
  c.set("val_split=5100");
  CHECK_THROWS_WITH_AS(train::run_training(c, run_into(dir / "e1")),
                       doctest::Contains("'val_split' = 5100 must be smaller than the training set of dataset "
                                         "'mnist' (5100 images)"),
                       frugal::Error);
  c.set("val_split=-2");
  CHECK_THROWS_WITH_AS(train::run_training(c, run_into(dir / "e2")), doctest::Contains("'val_split' must be -1"),
                       frugal::Error);
  data::testing::TempDir small;
  testing::write_synthetic_mnist(small.str(), 256, 16);
  io::Config s = tiny_config(small.str());
  s.set("schedule=plateau");  // auto: 5000, more than the 256 training images
  CHECK_THROWS_WITH_AS(train::run_training(s, run_into(small / "e3")),
                       doctest::Contains("'val_split' = 5000 (val_split = -1, auto) must be smaller"), frugal::Error);
}

TEST_CASE("train: reduce-on-plateau follows the validation loss, not the test loss") {
  // Test labels shifted by one class: the better the model learns, the higher the test loss climbs, while the
  // validation loss (held-out training images) falls. A schedule fed the test loss would cut lr every epoch.
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str());
  std::vector<uint8_t> lab = data::testing::read_bytes(dir / "mnist/t10k-labels-idx1-ubyte");
  for (size_t i = 8; i < lab.size(); ++i) lab[i] = uint8_t((lab[i] + 1) % 10);
  data::testing::write_file(dir / "mnist/t10k-labels-idx1-ubyte", lab);
  io::Config c = tiny_config(dir.str());
  c.set("schedule=plateau");
  c.set("plateau_patience=0");
  c.set("val_split=128");
  c.set("epochs=4");
  json r = train::run_training(c, run_into(dir / "run"));
  const json& ep = r["epochs"];
  REQUIRE(ep.size() == 4);
  CHECK(ep[3]["test_loss"].get<double>() > ep[0]["test_loss"].get<double>());  // the case is what it claims

  // replay the schedule on each recorded loss series: the run's lr must match the validation replay
  auto replay = [&](const char* key) {
    optim::ScheduleOptions so;
    so.kind = "plateau";
    so.lr = 0.05f;
    so.plateau_patience = 0;
    const int64_t spe = ep[0]["steps"].get<int64_t>();
    optim::Schedule sched(so, spe, 4 * spe);
    std::vector<float> lrs;
    for (int e = 0; e < 4; ++e) {
      sched.end_epoch(ep[e][key].get<double>());
      lrs.push_back(sched.lr((e + 1) * spe));
    }
    return lrs;
  };
  std::vector<float> by_val = replay("val_loss"), by_test = replay("test_loss"), ran;
  for (const json& e : ep) ran.push_back(e["lr_end"].get<float>());
  CHECK(ran == by_val);
  CHECK(ran != by_test);
  CHECK(by_test.back() < by_val.back());  // the test loss would have cut lr more often
}

TEST_CASE("train: --resume with val_split continues exactly and refuses another split") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str(), 256, 64);
  io::Config c = tiny_config(dir.str());
  c.set("val_split=64");
  c.set("schedule=plateau");
  c.set("plateau_patience=0");
  json a = train::run_training(c, run_into(dir / "full"));
  json p = train::run_training(c, run_into(dir / "part", 1));
  REQUIRE(p["epochs"].size() == 1);
  json b = resume(dir / "part");
  REQUIRE(b["epochs"].size() == 3);
  for (int e = 0; e < 3; ++e) {
    CHECK(b["epochs"][e]["train_loss"].get<double>() ==
          doctest::Approx(a["epochs"][e]["train_loss"].get<double>()).epsilon(1e-6));
    CHECK(b["epochs"][e]["val_loss"].get<double>() ==
          doctest::Approx(a["epochs"][e]["val_loss"].get<double>()).epsilon(1e-6));
    CHECK(b["epochs"][e]["lr_end"] == a["epochs"][e]["lr_end"]);
  }
  CHECK(b["data"]["val_split"] == a["data"]["val_split"]);
  CHECK(b["metrics"]["val_accuracy"] == a["metrics"]["val_accuracy"]);
  CHECK(b["metrics"]["test_accuracy"] == a["metrics"]["test_accuracy"]);

  json q = train::run_training(c, run_into(dir / "part2", 1));
  io::Config other;
  other.set("val_split=32");
  train::TrainOptions o;
  o.resume_dir = dir / "part2";
  o.quiet = true;
  CHECK_THROWS_WITH_AS(train::run_training(other, o), doctest::Contains("another validation split"), frugal::Error);
}

TEST_CASE("train: time_to_accuracy stops at the first epoch that reaches target_accuracy, per-worker compute") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str());
  io::Config c = tiny_config(dir.str());
  c.set("workers=2");
  c.set("compressor=topk:0.05");
  c.set("epochs=3");
  // no target: not reported
  json none = train::run_training(c, run_into(dir / "none"));
  CHECK(none.at("time_to_accuracy").is_null());
  CHECK(none.at("parallelism").at("worker_threads_seen").size() == 2);
  CHECK(none.at("parallelism").at("threads_per_worker").get<int>() >= 1);
  // a target the first epoch already meets: epoch 1, its own compute and communication only
  const double first = none.at("epochs").at(0).at("test_accuracy").get<double>();
  c.set("target_accuracy=" + std::to_string(first * 0.999));
  json r = train::run_training(c, run_into(dir / "low"));
  const json& t = r.at("time_to_accuracy");
  CHECK(t.at("reached") == true);
  CHECK(t.at("epoch") == 1);
  const json& e1 = r.at("epochs").at(0);
  CHECK(t.at("worker_compute_s").get<double>() == doctest::Approx(e1.at("worker_compute_s").get<double>()));
  CHECK(t.at("total_s").at("1Gbps").get<double>() ==
        doctest::Approx(e1.at("worker_compute_s").get<double>() +
                        e1.at("communication").at("simulated_comm_s_1gbit").get<double>()));
  // every epoch records the compute one worker spent on its own cores
  CHECK(e1.at("worker_compute_s").get<double>() > 0);
  // an unreachable target: reported as not reached, no time
  c.set("target_accuracy=1.5");
  json u = train::run_training(c, run_into(dir / "high"));
  CHECK(u.at("time_to_accuracy").at("reached") == false);
  CHECK(u.at("time_to_accuracy").at("epoch").is_null());
  CHECK(!u.at("time_to_accuracy").contains("total_s"));
}

TEST_CASE("train: progress lines go to the caller's sink (and train.log), nothing to stderr") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str(), 128, 32);
  io::Config c = tiny_config(dir.str());
  c.set("epochs=2");
  std::vector<std::string> lines;
  train::TrainOptions o;
  o.out_dir = dir / "run";
  o.progress = [&](const std::string& l) { lines.push_back(l); };
  train::run_training(c, o);
  REQUIRE(lines.size() >= 3);  // header, one line per epoch, done
  int epoch_lines = 0;
  for (auto& l : lines) epoch_lines += l.find("epoch") != std::string::npos && l.find("done") != std::string::npos;
  CHECK(epoch_lines == 2);
  CHECK(lines.back().find("[train] done") == 0);
  std::ifstream log(dir / "run/train.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  for (auto& l : lines) CHECK(text.find(l) != std::string::npos);
}

TEST_CASE("train: distillation from a teacher model (distill_from): weight 0 is plain training, weight 1 follows "
          "the teacher, a mismatched teacher is refused") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str());
  io::Config c = tiny_config(dir.str());
  c.set("epochs=2");
  json teacher = train::run_training(c, run_into(dir / "teacher"));
  const std::string tfile = dir / "teacher/model.bin";

  // a student half the teacher's width
  io::Config s = c;
  s.set("width=0.25");
  s.set("epochs=1");
  json plain = train::run_training(s, run_into(dir / "plain"));
  io::Config s0 = s;
  s0.set("distill_from=" + tfile);
  s0.set("distill_weight=0");
  json w0 = train::run_training(s0, run_into(dir / "w0"));
  CHECK(w0["epochs"][0]["train_loss"] == plain["epochs"][0]["train_loss"]);
  CHECK(w0["metrics"]["test_accuracy"] == plain["metrics"]["test_accuracy"]);

  // soft targets only (weight 1): the loss is T^2 KL(teacher || student), which falls as the student learns to
  // answer as the teacher does, and the student still learns the task from them
  io::Config s1 = s;
  s1.set("distill_from=" + tfile);
  s1.set("distill_weight=1");
  s1.set("distill_temperature=2");
  s1.set("epochs=2");
  json w1 = train::run_training(s1, run_into(dir / "w1"));
  CHECK(w1["epochs"][1]["train_loss"].get<double>() < w1["epochs"][0]["train_loss"].get<double>());
  CHECK(w1["epochs"][1]["train_loss"] != plain["epochs"][0]["train_loss"]);
  CHECK(w1["metrics"]["test_accuracy"].get<double>() > 0.8);
  CHECK(w1["config"]["distill_from"] == tfile);

  // another architecture on the same data is fine; a teacher of other classes is refused, naming the key
  io::Config mlp = s;
  mlp.set("distill_from=" + tfile);
  mlp.set("model=mlp");
  CHECK_NOTHROW(train::run_training(mlp, run_into(dir / "mlp_student")));
  nn::Model five(nn::preset_spec("mlp", 0.25, -1, {1, 28, 28}, 5), 1);
  nn::save_model(dir / "five.bin", five, json::object());
  io::Config bad = s;
  bad.set("distill_from=" + (dir / "five.bin"));
  CHECK_THROWS_WITH_AS(train::run_training(bad, run_into(dir / "bad")), doctest::Contains("distill_from"),
                       frugal::Error);
  io::Config missing = s;
  missing.set("distill_from=" + (dir / "nope.bin"));
  CHECK_THROWS_AS(train::run_training(missing, run_into(dir / "missing")), frugal::Error);
  io::Config wrong_w = s1;
  wrong_w.set("distill_weight=1.5");
  CHECK_THROWS_WITH_AS(train::run_training(wrong_w, run_into(dir / "wrong_w")),
                       doctest::Contains("distill_weight"), frugal::Error);
}
