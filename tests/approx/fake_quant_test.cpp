// Fake quantization (9-16 bits with the exact multiplier): quantize-dequantize error, conv/linear forward against
// a double reference of the dequantized operands and against fp32 within the analytic quantization bound, agreement
// with the integer kernels at 8 bits, the clipped straight-through backward, and the refusal of approximate
// multipliers above 8 bits.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "approx/fake_quant.h"
#include "approx/kernels.h"
#include "approx/quantizer.h"
#include "util/check.h"

using namespace frugal::approx;

namespace {

struct ConvShape {
  int n, h, w, ic, oc, k, stride, pad, groups;
  int oh() const { return (h + 2 * pad - k) / stride + 1; }
  int ow() const { return (w + 2 * pad - k) / stride + 1; }
  int icg() const { return ic / groups; }
  size_t src_size() const { return size_t(n) * h * w * ic; }
  size_t dst_size() const { return size_t(n) * oh() * ow() * oc; }
  size_t w_size() const { return size_t(oc) * icg() * k * k; }
};

/// Calls f(dst index, src index or -1 for padding, weight index) for every product of the conv (NHWC, plain weights).
template <class F>
void for_each_product(const ConvShape& s, F&& f) {
  const int ocg = s.oc / s.groups;
  for (int b = 0; b < s.n; ++b)
    for (int oy = 0; oy < s.oh(); ++oy)
      for (int ox = 0; ox < s.ow(); ++ox)
        for (int o = 0; o < s.oc; ++o) {
          const size_t d = ((size_t(b) * s.oh() + oy) * s.ow() + ox) * s.oc + o;
          const int g = o / ocg;
          for (int c = 0; c < s.icg(); ++c)
            for (int y = 0; y < s.k; ++y)
              for (int x = 0; x < s.k; ++x) {
                const int iy = oy * s.stride + y - s.pad, ix = ox * s.stride + x - s.pad;
                const long si = (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w)
                                    ? -1
                                    : long(((size_t(b) * s.h + iy) * s.w + ix) * s.ic + size_t(g) * s.icg() + c);
                f(d, si, ((size_t(o) * s.icg() + c) * s.k + y) * s.k + x);
              }
        }
}

/// dst = conv(src, w) + bias in double.
std::vector<double> reference_conv(const ConvShape& s, const float* src, const float* w, const float* bias) {
  std::vector<double> dst(s.dst_size(), 0.0);
  for_each_product(s, [&](size_t d, long si, size_t wi) {
    if (si >= 0) dst[d] += double(src[si]) * w[wi];
  });
  for (size_t d = 0; d < dst.size(); ++d) dst[d] += bias[d % size_t(s.oc)];
  return dst;
}

std::vector<float> normal(size_t n, float mean, float sd, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

ApproxSpec exact_spec(const std::string& mult, int wb, int ab) {
  ApproxSpec sp;
  sp.multiplier = mult;
  sp.weight_bits = wb, sp.act_bits = ab;
  return sp;
}

/// Largest |a - b| over the outputs, and whether every output lies within its bound.
struct Cmp {
  double max_err = 0;
  bool within = true;
};
Cmp compare(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& bound) {
  Cmp c;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::abs(double(got[i]) - want[i]);
    c.max_err = std::max(c.max_err, e);
    c.within = c.within && e <= bound[i];
  }
  return c;
}

}  // namespace

TEST_CASE("fake quant: quantize-dequantize at 12 and 16 bits errs by up to half a step of the scale") {
  const std::vector<float> x = normal(20000, 0.2f, 1.5f, 11);
  const auto [mn, mx] = std::minmax_element(x.begin(), x.end());
  for (int bits : {12, 16})
    for (bool sgn : {true, false}) {
      QuantConfig cfg;
      cfg.bits = bits, cfg.is_signed = sgn, cfg.symmetric = sgn;  // symmetric signed, or affine unsigned
      const QuantParams p = make_quant_params(cfg, &*mn, &*mx, 1, 1);
      // the step the width implies: max|x| over 2^(b-1)-1 levels, or the range over 2^b-1
      const double step = sgn ? std::max(-*mn, *mx) / double((1 << (bits - 1)) - 1) : (*mx - *mn) / double((1 << bits) - 1);
      CAPTURE(bits);
      CAPTURE(sgn);
      CHECK(p.scale[0] == doctest::Approx(step).epsilon(1e-6));
      std::vector<float> back(x.size());
      std::vector<uint8_t> mask(x.size());
      fake_quant_forward(x.data(), x.size(), p, back.data(), mask.data());
      double worst = 0;
      for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(double(back[i]) - x[i]));
      CHECK(std::count(mask.begin(), mask.end(), 1) == long(x.size()));  // the range covers the data
      CHECK(worst <= 0.5 * step * (1 + 1e-3) + 1e-6 * std::abs(*mx));   // half a step (plus float rounding)
      CHECK(worst >= 0.45 * step);                                         // and no finer: dense data reaches it
    }
}

TEST_CASE("fake quant conv: conv of the dequantized operands, within the quantization bound of fp32 at 16 and 10 bits") {
  const ConvShape s{2, 7, 6, 4, 6, 3, 2, 1, 2};
  const std::vector<float> src = normal(s.src_size(), 0.1f, 1.0f, 1), w = normal(s.w_size(), 0.0f, 0.4f, 2);
  const std::vector<float> bias = normal(size_t(s.oc), 0.0f, 0.5f, 3);
  const std::vector<double> fp32 = reference_conv(s, src.data(), w.data(), bias.data());
  double fp32_max = 0;
  for (double v : fp32) fp32_max = std::max(fp32_max, std::abs(v));
  for (const char* mult : {"exact", "exact:signed"}) {
    double err16 = 0;
    for (int bits : {16, 10}) {
      CAPTURE(mult);
      CAPTURE(bits);
      FakeQuantConv2d fq(exact_spec(mult, bits, bits), s.ic, s.oc, s.k, s.k, s.stride, s.pad, s.groups);
      fq.set_weights(w.data(), bias.data());
      std::vector<float> dst(s.dst_size());
      fq.forward(src.data(), s.n, s.h, s.w, dst.data());
      // 1) oneDNN's fp32 conv of the dequantized operands (groups, stride and padding wired right)
      const std::vector<float>& xh = fq.src_dequantized();
      const std::vector<float>& wh = fq.weights_dequantized();
      REQUIRE(xh.size() == src.size());
      const std::vector<double> deq = reference_conv(s, xh.data(), wh.data(), bias.data());
      std::vector<double> tight(s.dst_size(), 1e-5 * (1 + fp32_max));
      CHECK(compare(dst, deq, tight).within);
      // 2) against fp32: |sum xh*wh - x*w| <= sum s_a/2 |wh| + |x| s_w[oc]/2, per output
      const QuantParams ap = fq.act_params(src.data(), src.size()), &wp = fq.weight_params();
      std::vector<double> bound(s.dst_size(), 1e-5 * (1 + fp32_max));
      for_each_product(s, [&](size_t d, long si, size_t wi) {
        const double sw = wp.scale[wp.channel_of(wi)];
        bound[d] += 0.5 * ap.scale[0] * std::abs(wh[wi]) + (si >= 0 ? 0.5 * sw * std::abs(src[si]) : 0.0);
      });
      const Cmp c = compare(dst, fp32, bound);
      CHECK(c.within);
      if (bits == 16) {
        err16 = c.max_err;
        CHECK(err16 <= 5e-5 * fp32_max);  // tight: 16-bit steps
      } else {
        CHECK(c.max_err > 20 * err16);  // 10 bits really quantize coarser (64x larger steps)
        CHECK(c.max_err <= 5e-3 * fp32_max);
      }
    }
  }
}

TEST_CASE("fake quant linear: at 16 bits within a tight tolerance of the fp32 layer") {
  const int n = 5, in = 37, out = 9;
  const std::vector<float> src = normal(size_t(n) * in, 0.3f, 1.0f, 4), w = normal(size_t(out) * in, 0.0f, 0.2f, 5);
  const std::vector<float> bias = normal(size_t(out), 0.0f, 0.1f, 6);
  FakeQuantLinear fq(exact_spec("exact", 16, 16), in, out);
  fq.set_weights(w.data(), bias.data());
  std::vector<float> dst(size_t(n) * out);
  fq.forward(src.data(), n, dst.data());
  double worst = 0, ymax = 0;
  for (int b = 0; b < n; ++b)
    for (int o = 0; o < out; ++o) {
      double y = bias[size_t(o)];
      for (int i = 0; i < in; ++i) y += double(src[size_t(b) * in + i]) * w[size_t(o) * in + i];
      worst = std::max(worst, std::abs(y - dst[size_t(b) * out + o]));
      ymax = std::max(ymax, std::abs(y));
    }
  CHECK(ymax > 0.5);
  CHECK(worst <= 5e-5 * ymax);
}

TEST_CASE("fake quant conv at 8 bits equals the integer kernels of the exact multiplier") {
  const ConvShape s{2, 6, 5, 3, 4, 3, 1, 1, 1};
  const std::vector<float> src = normal(s.src_size(), 0.2f, 1.0f, 7), w = normal(s.w_size(), 0.0f, 0.5f, 8);
  const std::vector<float> bias = normal(size_t(s.oc), 0.0f, 0.5f, 9);
  for (const char* mult : {"exact", "exact:signed"}) {
    CAPTURE(mult);
    const ApproxSpec sp = exact_spec(mult, 8, 8);
    FakeQuantConv2d fq(sp, s.ic, s.oc, s.k, s.k, s.stride, s.pad, s.groups);
    ApproxConv2d iq(sp, s.ic, s.oc, s.k, s.k, s.stride, s.pad, s.groups);
    fq.set_weights(w.data(), bias.data());
    iq.set_weights(w.data(), bias.data());
    std::vector<float> a(s.dst_size()), b(s.dst_size());
    fq.forward(src.data(), s.n, s.h, s.w, a.data());
    iq.forward(src.data(), s.n, s.h, s.w, b.data());
    double worst = 0, ymax = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::abs(a[i] - b[i]))), ymax = std::max(ymax, double(std::abs(b[i])));
    CHECK(worst <= 1e-5 * ymax);
  }
}

TEST_CASE("fake quant conv: clipped straight-through backward") {
  const ConvShape s{2, 5, 6, 4, 6, 3, 1, 1, 2};
  const std::vector<float> src = normal(s.src_size(), 0.0f, 1.0f, 12), w = normal(s.w_size(), 0.0f, 0.5f, 13);
  const std::vector<float> dd = normal(s.dst_size(), 0.0f, 1.0f, 14);
  for (const char* mult : {"exact", "exact:signed"})
    for (bool calibrated : {true, false}) {
      CAPTURE(mult);
      CAPTURE(calibrated);
      FakeQuantConv2d fq(exact_spec(mult, 12, 12), s.ic, s.oc, s.k, s.k, s.stride, s.pad, s.groups);
      fq.set_weights(w.data(), nullptr);
      if (calibrated) fq.set_act_range(-0.8f, 1.0f);  // narrower than the data: some inputs clip
      std::vector<float> dst(s.dst_size()), diff_src(s.src_size(), 123.f), w_grad(s.w_size(), 123.f);
      fq.forward(src.data(), s.n, s.h, s.w, dst.data());
      fq.backward(dd.data(), s.n, s.h, s.w, diff_src.data(), w_grad.data());
      const std::vector<float>& xh = fq.src_dequantized();
      const std::vector<float>& wh = fq.weights_dequantized();
      // reference: gradients of conv(xh, wh); with a calibrated range, diff_src is zero where the input clipped
      const QuantParams ap = fq.act_params(src.data(), src.size());
      std::vector<double> ds(s.src_size(), 0.0), wg(s.w_size(), 0.0);
      for_each_product(s, [&](size_t d, long si, size_t wi) {
        if (si < 0) return;
        ds[size_t(si)] += double(dd[d]) * wh[wi];
        wg[wi] += double(dd[d]) * xh[size_t(si)];
      });
      int clipped = 0, passed = 0;
      for (size_t i = 0; i < src.size(); ++i) {
        const float q = std::nearbyint(src[i] / ap.scale[0]) + float(ap.zero_point[0]);
        if (calibrated && (q < float(ap.qmin) || q > float(ap.qmax))) {
          ++clipped;
          ds[i] = 0.0;
        } else {
          passed += ds[i] != 0.0;
        }
      }
      if (calibrated) CHECK(clipped > 10);
      CHECK(passed > 100);
      std::vector<double> tol_s(ds.size()), tol_w(wg.size());
      for (size_t i = 0; i < ds.size(); ++i) tol_s[i] = 1e-4 * (1 + std::abs(ds[i]));
      for (size_t i = 0; i < wg.size(); ++i) tol_w[i] = 1e-4 * (1 + std::abs(wg[i]));
      CHECK(compare(diff_src, ds, tol_s).within);
      CHECK(compare(w_grad, wg, tol_w).within);
      // without diff_src: the weight gradient alone, the same
      std::vector<float> w_grad2(s.w_size());
      fq.backward(dd.data(), s.n, s.h, s.w, nullptr, w_grad2.data());
      CHECK(w_grad2 == w_grad);
    }
}

TEST_CASE("fake quant: approximate multipliers are refused above 8 bits, exact takes 9-16") {
  for (const char* mult : {"drum:4", "mitchell:signed", "trunc:2", "bam:0,6"}) {
    CAPTURE(mult);
    const ApproxSpec sp = exact_spec(mult, 12, 8);
    const std::string err = bits_error(sp, *make_multiplier(mult));
    CHECK(err.find("8-bit operands") != std::string::npos);
    CHECK(err.find("9-16 bits need multiplier=exact") != std::string::npos);
    CHECK_THROWS_WITH_AS(ApproxConv2d(sp, 3, 4, 3, 3, 1, 1, 1), doctest::Contains("9-16 bits need multiplier=exact"),
                         frugal::Error);
    CHECK_THROWS_WITH_AS(FakeQuantConv2d(sp, 3, 4, 3, 3, 1, 1, 1), doctest::Contains("approximate"), frugal::Error);
    CHECK(bits_error(exact_spec(mult, 8, 6), *make_multiplier(mult)).empty());
    CHECK_THROWS_AS(ApproxConv2d(exact_spec(mult, 8, 9), 3, 4, 3, 3, 1, 1, 1), frugal::Error);
  }
  auto ex = make_multiplier("exact:signed");
  CHECK(bits_error(exact_spec("exact:signed", 16, 9), *ex).empty());
  CHECK(runs_as_fake_quant(exact_spec("exact:signed", 16, 9), *ex));
  CHECK(runs_as_fake_quant(exact_spec("exact", 8, 9), *make_multiplier("exact")));
  CHECK_FALSE(runs_as_fake_quant(exact_spec("exact", 8, 8), *ex));
  CHECK(bits_error(exact_spec("exact", 17, 8), *ex).find("[2,16]") != std::string::npos);
  CHECK_THROWS_WITH_AS(ApproxConv2d(exact_spec("exact", 12, 12), 3, 4, 3, 3, 1, 1, 1),
                       doctest::Contains("FakeQuantConv2d"), frugal::Error);
  CHECK_NOTHROW(FakeQuantConv2d(exact_spec("exact", 16, 16), 3, 4, 3, 3, 1, 1, 1));
}
