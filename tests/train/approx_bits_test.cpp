// 9-16 bit layers with multiplier=exact (fake quantization, approx/fake_quant.h) through attach_approx and the
// trainer: a 16-bit model is the fp32 model within a tight tolerance in forward and backward, 12-bit training
// learns, and approximate multipliers above 8 bits are refused with the reason.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "io/config.h"
#include "nn/model.h"
#include "synthetic_mnist.h"
#include "train/approx_attach.h"
#include "train/trainer.h"
#include "util/check.h"

using namespace frugal;
using json = nlohmann::json;

namespace {
nn::Model lenet(uint64_t seed) { return nn::Model(nn::preset_spec("lenet5", 0.5, -1, {1, 28, 28}, 10), seed); }

/// max |a - b| / max |b| over two equally sized buffers.
double rel_err(const float* a, const float* b, int64_t n) {
  double e = 0, m = 0;
  for (int64_t i = 0; i < n; ++i) e = std::max(e, double(std::abs(a[i] - b[i]))), m = std::max(m, double(std::abs(b[i])));
  return e / m;
}

/// ||a - b|| / ||b|| (robust to the odd ReLU or max-pool that a tiny perturbation flips).
double rel_l2(const Tensor& a, const Tensor& b) {
  double e = 0, m = 0;
  for (int64_t i = 0; i < a.size(); ++i) {
    const double d = double(a.data()[i]) - b.data()[i];
    e += d * d, m += double(b.data()[i]) * b.data()[i];
  }
  return std::sqrt(e / m);
}

struct Pass {
  Tensor logits;
  std::vector<Tensor> grads;
};

/// One forward + backward of lenet5 (fixed seed) on x, with the given config's arithmetic (multiplier empty: fp32).
Pass run_pass(const io::Config& cfg, const Tensor& x) {
  nn::Model m = lenet(7);
  train::attach_approx(m, cfg);
  Pass p;
  const Tensor& logits = m.forward(x, {true, 1});
  p.logits.resize(logits.dims());
  std::copy(logits.data(), logits.data() + logits.size(), p.logits.data());
  Tensor diff(logits.dims());
  for (int64_t i = 0; i < diff.size(); ++i) diff.data()[i] = float(std::sin(0.7 * double(i)));
  m.backward(diff);
  for (nn::Param* prm : m.params()) {
    p.grads.emplace_back(prm->grad.dims());
    std::copy(prm->grad.data(), prm->grad.data() + prm->grad.size(), p.grads.back().data());
  }
  return p;
}
}  // namespace

TEST_CASE("approx bits: exact at 16 bits is the fp32 model within a tight tolerance, gradients pass through") {
  Tensor x({8, 1, 28, 28});
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-0.5f, 2.0f);
  for (int64_t i = 0; i < x.size(); ++i) x.data()[i] = u(rng);
  const Pass fp32 = run_pass(io::Config(), x);
  double err16 = 0;
  for (int bits : {16, 10}) {
    CAPTURE(bits);
    io::Config c;
    c.set("multiplier=exact");
    c.set("bits=" + std::to_string(bits));
    c.set("act_bits=" + std::to_string(bits));
    const Pass q = run_pass(c, x);
    const double e = rel_err(q.logits.data(), fp32.logits.data(), q.logits.size());
    REQUIRE(q.grads.size() == fp32.grads.size());
    double ge = 0;
    for (size_t i = 0; i < q.grads.size(); ++i)
      ge = std::max(ge, rel_l2(q.grads[i], fp32.grads[i]));
    if (bits == 16) {
      err16 = e;
      CHECK(e < 2e-4);
      CHECK(ge < 1e-3);  // the STE passes every gradient through (none is zeroed or lost)
    } else {
      CHECK(e > 10 * err16);  // 10 bits quantize coarser
      CHECK(e < 1e-2);
      CHECK(ge < 0.2);
    }
  }
}

TEST_CASE("approx bits: multiplier=exact with bits=12 act_bits=12 trains (fake quantization)") {
  data::testing::TempDir dir;
  testing::write_synthetic_mnist(dir.str());
  io::Config c;
  c.set("data_dir=" + dir.str());
  c.set("dataset=mnist");
  c.set("model=lenet5");
  c.set("width=0.5");
  c.set("batch=32");
  c.set("epochs=2");
  c.set("lr=0.05");
  c.set("progress_s=1000");
  c.set("eval_batch=64");
  c.set("multiplier=exact");
  c.set("bits=12");
  c.set("act_bits=12");
  train::TrainOptions o;
  o.out_dir = dir / "b12";
  o.quiet = true;
  json r = train::run_training(c, o);
  REQUIRE(r.contains("approx"));
  for (auto& l : r["approx"]["layers"]) CHECK(l["arithmetic"] == "exact/w12a12/fakequant");
  REQUIRE(r["epochs"].size() == 2);
  const double first = r["epochs"][0]["train_loss"], last = r["epochs"][1]["train_loss"];
  CHECK(first < 2.0);  // below chance (ln 10 = 2.30) within the first epoch
  CHECK(last < 0.7 * first);
  CHECK(r["metrics"]["test_accuracy"].get<double>() > 0.8);
  // integer (8-bit) and fake-quant layers mixed per layer, with calibrated activation ranges
  io::Config m = c;
  m.set("multiplier=exact:signed");
  m.set("layer_bits=8/8,12/10,16/16,10/12,6/8");
  m.set("act_calibration=minmax:2");
  m.set("epochs=1");
  o.out_dir = dir / "mixed";
  json rm = train::run_training(m, o);
  auto& layers = rm["approx"]["layers"];
  CHECK(layers[0]["arithmetic"] == "exact:signed/w8a8");
  CHECK(layers[1]["arithmetic"] == "exact:signed/w12a10/fakequant");
  CHECK(layers[4]["arithmetic"] == "exact:signed/w6a8");
  CHECK(rm["approx"]["calibration"]["layers"].size() == 5);
  CHECK(rm["metrics"]["test_accuracy"].get<double>() > 0.5);
}

TEST_CASE("approx bits: approximate multipliers above 8 bits are refused with the reason") {
  nn::Model m = lenet(1);
  io::Config c;
  c.set("multiplier=drum:4");
  c.set("bits=12");
  CHECK_THROWS_WITH_AS(train::attach_approx(m, c), doctest::Contains("'drum:4' has 8-bit operands"), frugal::Error);
  CHECK_THROWS_WITH_AS(train::attach_approx(m, c), doctest::Contains("9-16 bits need multiplier=exact"), frugal::Error);
  c.set("bits=8");
  c.set("act_bits=9");
  CHECK_THROWS_WITH_AS(train::attach_approx(m, c), doctest::Contains("'act_bits' = 9"), frugal::Error);
  c.set("act_bits=8");
  c.set("multiplier=mitchell");
  c.set("layer_bits=8/8,12/8,8/8,8/8,8/8");
  CHECK_THROWS_WITH_AS(train::attach_approx(m, c), doctest::Contains("'layer_bits': entry 1 = '12/8'"), frugal::Error);
  c.set("layer_bits=8/8,8/17,8/8,8/8,8/8");
  CHECK_THROWS_WITH_AS(train::attach_approx(m, c), doctest::Contains("2..16"), frugal::Error);
  // approx_layers=inner leaves the first and last layers fp32: their widths do not matter
  c.set("layer_bits=12/12,8/8,8/8,8/8,12/12");
  c.set("approx_layers=inner");
  CHECK_NOTHROW(train::attach_approx(m, c));
  nn::Model e = lenet(1);
  c.set("multiplier=exact");
  c.set("layer_bits=");
  c.set("approx_layers=all");
  c.set("bits=16");
  c.set("act_bits=16");
  CHECK_NOTHROW(train::attach_approx(e, c));
}
