// One finite-difference gradient checker, run over every layer type (dlib style).
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "util/check.h"
#include "nn/containers.h"
#include "nn/loss.h"
#include "nn/model.h"

using namespace frugal;
using namespace frugal::nn;

namespace {

void fill_normal(Tensor& t, std::mt19937_64& rng, float scale = 1.f) {
  std::normal_distribution<float> nd(0.f, scale);
  for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = nd(rng);
}

double dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.size(); ++i) s += double(a.data()[i]) * b.data()[i];
  return s;
}

/// Checks d(sum(layer(x) * r))/dx and /dparams against central differences on sampled entries.
void check_layer(Layer& layer, const Dims& src_dims, uint64_t seed = 1, float eps = 1e-2f, float tol = 2e-2f) {
  std::mt19937_64 rng(seed);
  Tensor x(src_dims);
  fill_normal(x, rng);
  ForwardContext ctx{true, 42};
  Tensor y;
  layer.forward(x, y, ctx);
  Tensor r(y.dims());
  fill_normal(r, rng);
  Tensor dx;
  layer.backward(r, dx, true);
  Tensor dx_copy;
  dx_copy.copy_from(dx);
  std::vector<Tensor> grads;
  for (auto* p : layer.params()) {
    grads.emplace_back();
    grads.back().copy_from(p->grad);
  }
  auto loss = [&]() {
    Tensor out;
    layer.forward(x, out, ctx);
    return dot(out, r);
  };
  // Central difference at eps; where a ReLU / max-pool kink lies inside the step, the estimate at eps/4
  // is used instead (the smaller step is kept when either agrees with the analytic value).
  auto numeric = [&](float& v, auto touched, double ana) {
    double best = 0;
    for (float e : {eps, eps / 4, eps / 16}) {
      float orig = v;
      v = orig + e;
      touched();
      double lp = loss();
      v = orig - e;
      touched();
      double lm = loss();
      v = orig;
      touched();
      best = (lp - lm) / (2 * e);
      if (std::abs(best - ana) <= tol * std::max(1.0, std::abs(best))) break;
    }
    return best;
  };
  std::uniform_int_distribution<int64_t> pick(0, x.size() - 1);
  for (int s = 0; s < 24; ++s) {
    int64_t i = pick(rng);
    double ana = dx_copy.data()[i];
    double num = numeric(x.data()[i], [] {}, ana);
    INFO(layer.name(), " d/dx[", i, "] numeric ", num, " analytic ", ana);
    CHECK(std::abs(num - ana) <= tol * std::max(1.0, std::abs(num)));
  }
  auto params = layer.params();
  for (size_t k = 0; k < params.size(); ++k) {
    Param* p = params[k];
    std::uniform_int_distribution<int64_t> pp(0, p->value.size() - 1);
    for (int s = 0; s < 12; ++s) {
      int64_t i = pp(rng);
      double ana = grads[k].data()[i];
      double num = numeric(p->value.data()[i], [p] { ++p->version; }, ana);
      INFO(layer.name(), " d/d", p->name, "[", i, "] numeric ", num, " analytic ", ana);
      CHECK(std::abs(num - ana) <= tol * std::max(1.0, std::abs(num)));
    }
  }
}

}  // namespace

TEST_CASE("gradcheck: conv2d (stride, padding, groups, bias)") {
  std::mt19937_64 rng(3);
  Conv2d a({4, 6, 3, 1, 1, 1, true}, rng);
  check_layer(a, {2, 4, 7, 7});
  Conv2d b({4, 8, 3, 2, 1, 2, false}, rng);
  check_layer(b, {3, 4, 8, 8});
  Conv2d c({3, 5, 5, 1, 0, 1, true}, rng);
  check_layer(c, {2, 3, 9, 9});
}

TEST_CASE("gradcheck: non-square conv2d (k x 1 and 1 x k, per-axis stride and padding)") {
  std::mt19937_64 rng(4);
  Conv2dOptions v{3, 4, 3, 2, 1, 1, true};  // 3 x 1, stride 2 x 1, pad 1 x 0
  v.kernel_w = 1, v.stride_w = 1, v.pad_w = 0;
  Conv2d a(v, rng);
  CHECK(a.dst_dims({2, 3, 7, 6}) == Dims{2, 4, 4, 6});
  check_layer(a, {2, 3, 7, 6});
  Conv2dOptions h{4, 5, 1, 1, 0, 1, false};  // 1 x 3, stride 1 x 2, pad 0 x 1
  h.kernel_w = 3, h.stride_w = 2, h.pad_w = 1;
  Conv2d b(h, rng);
  CHECK(b.dst_dims({2, 4, 4, 6}) == Dims{2, 5, 4, 3});
  check_layer(b, {2, 4, 4, 6});
}

TEST_CASE("gradcheck: linear") {
  std::mt19937_64 rng(4);
  Linear l({13, 7, true}, rng);
  check_layer(l, {5, 13});
}

TEST_CASE("gradcheck: batchnorm 4-D and 2-D") {
  BatchNorm bn(5);
  std::mt19937_64 rng(9);
  for (auto* p : bn.params()) fill_normal(p->value, rng, 0.5f);
  check_layer(bn, {4, 5, 3, 3}, 2, 1e-2f, 3e-2f);
  BatchNorm bn2(6);
  check_layer(bn2, {8, 6}, 3, 1e-2f, 3e-2f);
}

TEST_CASE("gradcheck: batchnorm with its ReLU fused (fuse_norm_relu)") {
  Sequential seq;
  auto bn = std::make_unique<BatchNorm>(5);
  auto relu = std::make_unique<ReLU>();
  std::mt19937_64 rng(21);
  for (auto* p : bn->params()) fill_normal(p->value, rng, 0.5f);
  bn->set_fused_relu(true);
  relu->set_fused(true);
  seq.add(std::move(bn));
  seq.add(std::move(relu));
  check_layer(seq, {4, 5, 3, 3}, 4, 1e-3f, 3e-2f);
}

TEST_CASE("gradcheck: relu, pools, dropout, flatten, shortcut") {
  ReLU relu;
  check_layer(relu, {2, 3, 4, 4}, 5, 1e-3f);
  Pool maxp(PoolKind::max, 2, 2);
  check_layer(maxp, {2, 3, 6, 6}, 6, 1e-3f);
  Pool avgp(PoolKind::avg, 3, 2, 1);
  check_layer(avgp, {2, 3, 7, 7});
  Pool gap(PoolKind::avg, 0, 1);
  check_layer(gap, {2, 4, 5, 5});
  Dropout drop(0.3f);
  check_layer(drop, {4, 10});
  Flatten fl;
  check_layer(fl, {2, 3, 2, 2});
  ShortcutA sc(4, 8, 2);
  check_layer(sc, {2, 4, 6, 6});
}

TEST_CASE("gradcheck: residual block with conv, bn and option-A shortcut") {
  nlohmann::json spec = preset_spec("resnet", 0.25, 8, {3, 8, 8}, 4);
  Model m(spec, 7);
  // the first residual block of stage 2 has a stride-2 conv and a shortcut_a
  Layer* block = nullptr;
  Dims src;
  Dims cur{2, 3, 8, 8};
  for (size_t i = 0; i < m.net().size(); ++i) {
    if (dynamic_cast<Residual*>(&m.net().at(i)) && cur[1] != m.net().at(i).dst_dims(cur)[1]) {
      block = &m.net().at(i);
      src = cur;
      break;
    }
    cur = m.net().at(i).dst_dims(cur);
  }
  REQUIRE(block != nullptr);
  check_layer(*block, src, 11, 1e-2f, 3e-2f);
}

TEST_CASE("softmax cross-entropy with label smoothing: value and gradient") {
  std::mt19937_64 rng(5);
  Tensor logits({4, 5});
  fill_normal(logits, rng);
  int32_t labels[4] = {0, 3, 4, 1};
  for (float sm : {0.f, 0.1f}) {
    SoftmaxCrossEntropy ce(sm);
    float loss = ce.forward(logits, labels);
    // reference: explicit log-sum-exp
    double ref = 0;
    for (int i = 0; i < 4; ++i) {
      double mx = -1e30, se = 0;
      for (int j = 0; j < 5; ++j) mx = std::max(mx, double(logits.data()[i * 5 + j]));
      for (int j = 0; j < 5; ++j) se += std::exp(logits.data()[i * 5 + j] - mx);
      for (int j = 0; j < 5; ++j) {
        double lp = logits.data()[i * 5 + j] - mx - std::log(se);
        double t = sm / 5 + (j == labels[i] ? 1 - sm : 0);
        ref -= t * lp;
      }
    }
    CHECK(loss == doctest::Approx(ref / 4).epsilon(1e-5));
    Tensor d;
    ce.backward(d);
    for (int s = 0; s < 20; ++s) {
      int idx = s % 20;
      float o = logits.data()[idx];
      logits.data()[idx] = o + 1e-3f;
      double lp = SoftmaxCrossEntropy(sm).forward(logits, labels);
      logits.data()[idx] = o - 1e-3f;
      double lm = SoftmaxCrossEntropy(sm).forward(logits, labels);
      logits.data()[idx] = o;
      CHECK(d.data()[idx] == doctest::Approx((lp - lm) / 2e-3).epsilon(2e-2).scale(1));
    }
  }
}

TEST_CASE("distillation loss: value against explicit softmaxes, gradient by central differences") {
  std::mt19937_64 rng(6);
  Tensor student({4, 5}), teacher({4, 5});
  fill_normal(student, rng);
  fill_normal(teacher, rng);
  for (int64_t i = 0; i < teacher.size(); ++i) teacher.data()[i] *= 3;  // a confident teacher
  int32_t labels[4] = {2, 0, 4, 1};
  auto softmax = [](const float* z, double t, double* p) {
    double mx = -1e30, se = 0;
    for (int j = 0; j < 5; ++j) mx = std::max(mx, z[j] / t);
    for (int j = 0; j < 5; ++j) se += std::exp(z[j] / t - mx);
    for (int j = 0; j < 5; ++j) p[j] = std::exp(z[j] / t - mx) / se;
  };
  for (float T : {1.f, 4.f})
    for (float w : {0.f, 0.5f, 1.f}) {
      CAPTURE(T);
      CAPTURE(w);
      DistillationLoss kd(T, w, 0.1f);
      const float loss = kd.forward(student, teacher, labels);
      double ref = 0;
      for (int i = 0; i < 4; ++i) {
        double ps[5], pt[5], p1[5];
        softmax(student.data() + i * 5, T, ps);
        softmax(teacher.data() + i * 5, T, pt);
        softmax(student.data() + i * 5, 1, p1);
        for (int j = 0; j < 5; ++j) {
          const double target = 0.1 / 5 + (j == labels[i] ? 0.9 : 0);
          ref += -(1 - w) * target * std::log(p1[j]) + w * T * T * pt[j] * (std::log(pt[j]) - std::log(ps[j]));
        }
      }
      CHECK(loss == doctest::Approx(ref / 4).epsilon(1e-5));
      if (w == 0.f) CHECK(loss == doctest::Approx(SoftmaxCrossEntropy(0.1f).forward(student, labels)).epsilon(1e-6));
      Tensor d;
      kd.backward(d);
      for (int idx = 0; idx < 20; ++idx) {
        const float o = student.data()[idx];
        student.data()[idx] = o + 1e-3f;
        const double lp = DistillationLoss(T, w, 0.1f).forward(student, teacher, labels);
        student.data()[idx] = o - 1e-3f;
        const double lm = DistillationLoss(T, w, 0.1f).forward(student, teacher, labels);
        student.data()[idx] = o;
        CHECK(d.data()[idx] == doctest::Approx((lp - lm) / 2e-3).epsilon(2e-2).scale(1));
      }
    }
  // a student equal to its teacher has no soft loss
  DistillationLoss same(4.f, 1.f);
  CHECK(same.forward(teacher, teacher, labels) == doctest::Approx(0).scale(1e-6));
  CHECK_THROWS_WITH_AS(DistillationLoss(0.f, 0.5f), doctest::Contains("temperature"), frugal::Error);
}

TEST_CASE("oneDNN conv forward matches a naive loop (NHWC src, OIHW weights, groups, non-square)") {
  std::mt19937_64 rng(8);
  // kw, sw, pw: the horizontal kernel, stride and padding (-1: square)
  struct Case { int n, ic, oc, h, k, s, p, g, kw = -1, sw = -1, pw = -1; };
  for (Case c : {Case{2, 3, 8, 9, 3, 1, 1, 1}, Case{1, 8, 6, 10, 3, 2, 1, 2}, Case{2, 4, 4, 7, 5, 1, 2, 4},
                 Case{2, 3, 5, 9, 3, 2, 1, 1, 1, 1, 0}, Case{1, 4, 6, 8, 1, 1, 0, 1, 5, 2, 2}}) {
    Conv2dOptions opt{c.ic, c.oc, c.k, c.s, c.p, c.g, true};
    opt.kernel_w = c.kw, opt.stride_w = c.sw, opt.pad_w = c.pw;
    const int kw = opt.kw(), sw = opt.sw(), pw = opt.pw();
    Conv2d conv(opt, rng);
    auto* w = conv.params()[0];
    auto* b = conv.params()[1];
    fill_normal(b->value, rng);
    ++b->version;
    Tensor x({c.n, c.ic, c.h, c.h});
    fill_normal(x, rng);
    Tensor y;
    conv.forward(x, y, {false, 0});
    int oh = (c.h + 2 * c.p - c.k) / c.s + 1, ow = (c.h + 2 * pw - kw) / sw + 1;
    REQUIRE(y.dims() == Dims{c.n, c.oc, oh, ow});
    int icg = c.ic / c.g, ocg = c.oc / c.g;
    double max_err = 0;
    for (int n = 0; n < c.n; ++n)
      for (int o = 0; o < c.oc; ++o)
        for (int yy = 0; yy < oh; ++yy)
          for (int xx = 0; xx < ow; ++xx) {
            double acc = b->value.data()[o];
            int g = o / ocg;
            for (int i = 0; i < icg; ++i)
              for (int ky = 0; ky < c.k; ++ky)
                for (int kx = 0; kx < kw; ++kx) {
                  int iy = yy * c.s - c.p + ky, ix = xx * sw - pw + kx;
                  if (iy < 0 || ix < 0 || iy >= c.h || ix >= c.h) continue;
                  float xv = x.data()[((n * c.h + iy) * c.h + ix) * c.ic + g * icg + i];  // NHWC
                  float wv = w->value.data()[((o * icg + i) * c.k + ky) * kw + kx];      // OIHW
                  acc += double(xv) * wv;
                }
            float got = y.data()[((n * oh + yy) * ow + xx) * c.oc + o];
            max_err = std::max(max_err, std::abs(acc - got));
          }
    CHECK(max_err < 1e-4);
  }
}
