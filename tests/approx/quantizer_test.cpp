#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "approx/kernels.h"
#include "approx/quantizer.h"
#include "util/check.h"

using namespace frugal::approx;

TEST_CASE("quantize/dequantize round trip within scale/2") {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.3f, 2.0f);
  const int C = 4, inner = 50;
  std::vector<float> x(size_t(C) * inner * 3);
  for (auto& v : x) v = nd(rng);
  for (int bits : {2, 4, 8, 12, 16})
    for (bool sym : {true, false})
      for (bool per_ch : {false, true})
        for (bool sgn : {true, false}) {
          if (!sgn && sym) continue;  // symmetric unsigned would clip all negatives
          QuantConfig cfg;
          cfg.bits = bits, cfg.symmetric = sym, cfg.per_channel = per_ch, cfg.is_signed = sgn;
          Calibrator cal(cfg, C, inner);
          cal.observe(x.data(), x.size());
          QuantParams p = cal.params();
          std::vector<int32_t> q(x.size());
          std::vector<float> back(x.size());
          quantize(x.data(), x.size(), p, q.data());
          dequantize(q.data(), x.size(), p, back.data());
          CAPTURE(bits); CAPTURE(sym); CAPTURE(per_ch); CAPTURE(sgn);
          int bad = 0;
          for (size_t i = 0; i < x.size(); ++i) {
            float s = p.scale[p.channel_of(i)];
            bad += std::abs(back[i] - x[i]) > s * 0.5f + 1e-6f * std::abs(x[i]);
            bad += q[i] < p.qmin || q[i] > p.qmax;
          }
          CHECK(bad == 0);
        }
}

TEST_CASE("zero is exact and per-channel scales differ") {
  QuantConfig cfg;
  cfg.bits = 8, cfg.symmetric = false, cfg.is_signed = false, cfg.per_channel = true;
  float lo[2] = {-1.0f, 0.5f}, hi[2] = {3.0f, 10.0f};
  QuantParams p = make_quant_params(cfg, lo, hi, 2, 1);
  float z[2] = {0, 0};
  int32_t q[2];
  float back[2];
  quantize(z, 2, p, q);
  dequantize(q, 2, p, back);
  CHECK(back[0] == 0.0f);
  CHECK(back[1] == 0.0f);
  CHECK(p.zero_point[1] == 0);  // range widened to include 0
  CHECK(p.scale[1] == doctest::Approx(10.0 / 255));
}

TEST_CASE("fake quant: STE mask passes gradients only inside the range") {
  QuantConfig cfg;
  cfg.bits = 4;
  float lo = -1, hi = 1;
  QuantParams p = make_quant_params(cfg, &lo, &hi, 1, 1);  // symmetric signed: q in [-7,7], scale 1/7
  float x[5] = {-3.0f, -0.5f, 0.0f, 0.52f, 1.2f};
  float y[5];
  uint8_t mask[5];
  fake_quant_forward(x, 5, p, y, mask);
  CHECK(y[0] == doctest::Approx(-1.0f));
  CHECK(y[3] == doctest::Approx(4.0f / 7));
  CHECK(y[4] == doctest::Approx(1.0f));
  CHECK(mask[0] == 0);
  CHECK(mask[1] == 1);
  CHECK(mask[2] == 1);
  CHECK(mask[3] == 1);
  CHECK(mask[4] == 0);
  float dy[5] = {1, 2, 3, 4, 5}, dx[5];
  fake_quant_backward(dy, mask, 5, dx);
  CHECK(dx[0] == 0.0f);
  CHECK(dx[1] == 2.0f);
  CHECK(dx[4] == 0.0f);
  // STE check by finite differences inside the range: the forward is a staircase whose average slope is 1.
  float a = 0.1f, b = 0.9f, ya, yb;
  fake_quant_forward(&a, 1, p, &ya, nullptr);
  fake_quant_forward(&b, 1, p, &yb, nullptr);
  CHECK((yb - ya) / (b - a) == doctest::Approx(1.0).epsilon(0.2));
}

TEST_CASE("percentile calibration ignores outliers, bad input rejected") {
  std::vector<float> x(10000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 100) / 100.0f;
  x[17] = 1000.0f;
  QuantConfig cfg;
  cfg.calibration = Calibration::percentile;
  cfg.percentile = 99.9;
  Calibrator cal(cfg, 1, 1);
  cal.observe(x.data(), x.size());
  cal.observe(x.data(), x.size());
  CHECK(cal.batches() == 2);
  CHECK(cal.params().scale[0] < 0.01f);
  QuantConfig mm;
  Calibrator cal2(mm, 1, 1);
  cal2.observe(x.data(), x.size());
  CHECK(cal2.params().scale[0] == doctest::Approx(1000.0 / 127));
  QuantConfig bad;
  bad.bits = 1;
  float lo = 0, hi = 1;
  CHECK_THROWS_AS(make_quant_params(bad, &lo, &hi, 1, 1), frugal::Error);
  Calibrator cal3(mm, 1, 1);
  CHECK_THROWS_AS(cal3.params(), frugal::Error);
  x[3] = std::nanf("");
  CHECK_THROWS_AS(cal3.observe(x.data(), x.size()), frugal::Error);
}

TEST_CASE("range_with_zero: its SIMD lanes and parallel blocks give the scalar twin's bits") {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), -0.0f, 0.0f,
                            std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::max()};
  // sizes around the 16-lane step, and several TBB blocks of 65536 with a tail
  for (size_t n : {size_t(0), size_t(1), size_t(15), size_t(16), size_t(17), size_t(100), size_t(65536 * 3 + 5)})
    for (int kind = 0; kind < 4; ++kind) {  // spread, all positive, all negative, with special values
      CAPTURE(n);
      CAPTURE(kind);
      std::vector<float> x(n);
      for (float& v : x) v = kind == 1 ? std::fabs(nd(rng)) : kind == 2 ? -std::fabs(nd(rng)) : nd(rng);
      if (kind == 3)
        for (size_t i = 0; i < n; i += 7) x[i] = specials[(i / 7) % 7];
      if (n > 40000 && (kind == 0 || kind == 3)) x[n - 3] = 1000.f, x[40000] = -2000.f;  // extremes: tail, a block
      const auto got = range_with_zero(x.data(), n), want = range_with_zero_ref(x.data(), n);
      CHECK(std::memcmp(&got.first, &want.first, sizeof(float)) == 0);
      CHECK(std::memcmp(&got.second, &want.second, sizeof(float)) == 0);
      CHECK(!std::isnan(got.first));
      CHECK(!std::isnan(got.second));
      if (kind == 1) CHECK(got.first == 0.0f);   // the range always holds 0
      if (kind == 2) CHECK(got.second == 0.0f);
    }
  // a NaN after a lane's extreme, in the same lane (16 apart): the extreme stays
  std::vector<float> y(64, 0.5f);
  y[3] = -7.f, y[3 + 16] = std::numeric_limits<float>::quiet_NaN();
  y[5] = 1e6f, y[5 + 16] = std::numeric_limits<float>::quiet_NaN();
  const auto r = range_with_zero(y.data(), y.size());
  CHECK(r.first == -7.f);
  CHECK(r.second == 1e6f);
}
