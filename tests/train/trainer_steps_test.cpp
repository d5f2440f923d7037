// The trainer as steps (train/trainer.h, train/train_options.h): typed options parsed at the edge with errors
// before any data, and Trainer's steps used alone give the same run as run_training.
#include <doctest/doctest.h>

#include "data/split.h"
#include "io/config.h"
#include "io/files.h"
#include "io/tensor_file.h"
#include "synthetic_mnist.h"
#include "train/train_options.h"
#include "train/trainer.h"
#include "util/check.h"

using namespace frugal;
using json = nlohmann::json;

namespace {
io::Config small_config(const std::string& root) {
  io::Config c = testing::tiny_config(root);
  c.set("epochs=2");
  c.set("workers=2");
  c.set("compressor=topk:0.05");
  c.set("val_split=64");
  return c;
}
}  // namespace

TEST_CASE("parse_train_spec: typed values from the config keys") {
  io::Config c;
  c.set("epochs=7");
  c.set("batch=64");
  c.set("workers=4");
  c.set("compressor=dgc:0.01");
  c.set("augment=crop+flip");
  c.set("crop_pad=4");
  c.set("cutout=8");
  c.set("schedule=step");
  c.set("lr=0.2");
  c.set("bandwidth_gbps=25");
  c.set("latency_us=10");
  const train::TrainSpec s = train::parse_train_spec(c);
  CHECK(s.loop.epochs == 7);
  CHECK(s.loop.workers == 4);
  CHECK(s.data.batch == 64);
  CHECK(s.data.augment.crop_pad == 4);
  CHECK(s.data.augment.flip);
  CHECK(s.data.augment.cutout == 8);
  CHECK(s.schedule.kind == "step");
  CHECK(s.schedule.lr == doctest::Approx(0.2));
  CHECK(s.exchange.compressor == "dgc:0.01");
  CHECK(s.uses_exchange);
  CHECK(s.network.bandwidth_bps == doctest::Approx(25e9));
  CHECK(s.network.latency_s == doctest::Approx(10e-6));
  io::Config plain;
  CHECK_FALSE(train::parse_train_spec(plain).uses_exchange);  // one worker, no compressor
}

TEST_CASE("parse_train_spec: a bad value fails before any data is read, naming the key") {
  // data_dir points nowhere: every error below must come from the spec, not from loading data
  const std::pair<const char*, const char*> cases[] = {
      {"compressor=topk:2", "topk"},          {"multiplier=nosuch", "nosuch"},
      {"schedule=sometimes", "sometimes"},    {"augment=rotate", "augment"},
      {"workers=0", "workers"},               {"threads=-1", "threads"},
      {"epochs=0", "epochs"},                 {"batch=30", "multiple of workers"},
      {"swa_epochs=500", "swa_epochs"},       {"comm_pattern=mesh", "mesh"},
      {"val_split=-2", "val_split"},          {"bandwidth_gbps=0", "bandwidth_gbps"},
      {"approx_grad=fd", "approx_grad"},      {"act_quant=log", "act_quant"},
  };
  for (auto [assignment, says] : cases) {
    const std::string shown = assignment;
    CAPTURE(shown);
    io::Config c;
    c.set("data_dir=/nonexistent/frugal-data");
    c.set("workers=4");
    c.set("batch=32");
    c.set(assignment);
    CHECK_THROWS_WITH_AS(train::parse_train_spec(c), doctest::Contains(says), frugal::Error);
  }
}

TEST_CASE("Trainer: the steps used alone give run_training's run, and restore continues it exactly") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str());
  const io::Config c = small_config(dir.str());
  train::TrainOptions o;
  o.quiet = true;
  o.out_dir = dir / "composed";
  const json whole = train::run_training(c, o);

  // the same run, one step at a time, with progress lines to the caller's sink
  std::vector<std::string> lines;
  o.out_dir = dir / "steps";
  o.quiet = false;
  o.progress = [&](const std::string& s) { lines.push_back(s); };
  {
    train::Trainer t(train::parse_train_spec(c), o);
    CHECK(t.data().val.size() == 64);
    CHECK_FALSE(t.done());
    const json e1 = t.run_epoch();
    CHECK(e1["epoch"] == 1);
    CHECK(t.epochs_done() == 1);
    t.save_checkpoint();
    const json e2 = t.run_epoch();
    CHECK(t.done());
    CHECK(e2["train_loss"].get<double>() == whole["epochs"][1]["train_loss"].get<double>());
    CHECK(e1["train_loss"].get<double>() == whole["epochs"][0]["train_loss"].get<double>());
    const json r = t.results();
    CHECK(r["metrics"]["test_accuracy"] == whole["metrics"]["test_accuracy"]);
    CHECK(r["metrics"]["val_loss"] == whole["metrics"]["val_loss"]);
    CHECK(r["communication"]["bytes_sent_per_worker"] == whole["communication"]["bytes_sent_per_worker"]);
    CHECK(t.evaluate_val().top1 == whole["metrics"]["val_accuracy"].get<double>());
  }
  CHECK(lines.size() >= 2);  // the two epoch lines, through the sink

  // a fresh trainer restored from the checkpoint after epoch 1 ends where the uninterrupted run ended
  o.progress = nullptr;
  o.quiet = true;
  io::TensorFile ck = io::load_tensor_file(dir / "steps/checkpoint.bin");
  train::Trainer t2(train::parse_train_spec(c), o);
  t2.restore(ck, dir / "steps/checkpoint.bin");
  CHECK(t2.epochs_done() == 1);
  const json e2 = t2.run_epoch();
  CHECK(e2["train_loss"].get<double>() == whole["epochs"][1]["train_loss"].get<double>());
  CHECK(t2.results()["metrics"]["test_accuracy"] == whole["metrics"]["test_accuracy"]);
}

TEST_CASE("Trainer: a diverging update stops with the divergence message, also when a quantizer fails first") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str());
  for (const char* mult : {"", "drum:4"}) {
    const std::string shown = mult;
    CAPTURE(shown);
    io::Config c = small_config(dir.str());
    c.set("workers=1");
    c.set("compressor=none");
    c.set(std::string("multiplier=") + mult);
    c.set("lr=1e30");
    c.set("momentum=0");
    train::TrainOptions o;
    o.quiet = true;
    o.out_dir = dir / "diverge";
    CHECK_THROWS_WITH_AS(train::run_training(c, o), doctest::Contains("diverged"), frugal::Error);
  }
}
