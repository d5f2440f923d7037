// SGD against its formula; DGC's split of momentum (gradient momentum in the compressor, decay momentum in the
// optimizer) against plain momentum SGD.
#include "optim/optimizer.h"

#include <doctest/doctest.h>

#include <cmath>

#include "gradcomp/exchange.h"
#include "gradcomp/wire.h"
#include "util/check.h"

using namespace frugal;
using frugal::gradcomp::Rng;

namespace {
struct Model {
  nn::Param a, b;  // a 2-D weight (compressed by dgc) and a 1-D bias (dense in the exchange, momentum there)
  Model() {
    a.name = "a";
    b.name = "b";
    a.value.resize({6, 5});
    b.value.resize({6});
    Rng r(7);
    for (int64_t i = 0; i < a.value.size(); ++i) a.value.data()[i] = r.normal();
    for (int64_t i = 0; i < b.value.size(); ++i) b.value.data()[i] = r.normal();
    a.grad.resize(a.value.dims());
    b.grad.resize(b.value.dims());
  }
  std::vector<nn::Param*> params() { return {&a, &b}; }
  // a gradient that depends on the weights (so trajectories that drift apart stay apart) plus noise
  void fill_grads(int step) {
    Rng r(uint64_t(100 + step));
    for (nn::Param* p : params())
      for (int64_t i = 0; i < p->value.size(); ++i)
        p->grad.data()[i] = 0.5f * p->value.data()[i] * p->value.data()[i] - 0.3f + 0.2f * r.normal();
  }
};
}  // namespace

TEST_CASE("SGD follows PyTorch's update: d = g + wd w, buf = m buf + d, Nesterov d + m buf") {
  for (bool nesterov : {false, true}) {
    Model model;
    optim::OptimizerOptions o;
    o.momentum = 0.9f;
    o.nesterov = nesterov;
    o.weight_decay = 0.01f;
    optim::Optimizer opt(o, {&model.a});
    float w = model.a.value.data()[3], buf = 0;
    for (int s = 0; s < 4; ++s) {
      model.fill_grads(s);
      float d = model.a.grad.data()[3] + 0.01f * w;
      buf = s == 0 ? d : 0.9f * buf + d;
      w -= 0.1f * (nesterov ? d + 0.9f * buf : buf);
      opt.step(0.1f);
      CHECK(model.a.value.data()[3] == doctest::Approx(w).epsilon(1e-6));
    }
  }
}

TEST_CASE("decay_1d = false: no weight decay on 1-D parameters (biases, batch-norm), unchanged on weights") {
  for (const char* kind : {"sgd", "adamw"}) {
    Model model;
    optim::OptimizerOptions o;
    o.kind = kind;
    o.weight_decay = 0.1f;
    o.decay_1d = false;
    o.momentum = 0;  // one step of plain decay: w (1 - lr wd)
    optim::Optimizer opt(o, model.params());
    const std::vector<float> a0(model.a.value.data(), model.a.value.data() + 30),
        b0(model.b.value.data(), model.b.value.data() + 6);
    model.a.grad.zero();
    model.b.grad.zero();
    opt.step(0.1f);
    for (int i = 0; i < 6; ++i) CHECK(model.b.value.data()[i] == b0[size_t(i)]);
    for (int i = 0; i < 30; ++i) CHECK(model.a.value.data()[i] == doctest::Approx(a0[size_t(i)] * (1 - 0.01f)));
  }
}

TEST_CASE("dgc at density 1 without masking, with decay-only optimizer momentum, equals momentum SGD") {
  // Dense: buf = m buf + g + wd w. DGC: the compressor's momentum carries g, the optimizer's carries wd w;
  // both are linear, so with nothing held back the weights follow the same path (heavy ball and Nesterov).
  for (bool nesterov : {false, true}) {
    INFO("nesterov " << nesterov);
    Model dense, dgc;
    optim::OptimizerOptions o;
    o.momentum = 0.9f;
    o.nesterov = nesterov;
    o.weight_decay = 5e-3f;
    optim::Optimizer od(o, dense.params());
    o.momentum_decay_only = true;
    optim::Optimizer oc(o, dgc.params());
    gradcomp::ExchangeOptions eo;
    eo.compressor = "dgc:1:nomask";
    eo.dense_below = 0;
    eo.dense_1d = true;
    gradcomp::GradientExchange ex(eo, {{6, 5}, {6}}, 2, nullptr);
    REQUIRE(ex.handles_momentum());
    ex.set_momentum(0.9f, nesterov);
    for (int s = 0; s < 6; ++s) {
      dense.fill_grads(s);
      dgc.fill_grads(s);
      std::vector<float> a2(dgc.a.grad.data(), dgc.a.grad.data() + 30), b2(dgc.b.grad.data(), dgc.b.grad.data() + 6);
      std::vector<std::vector<float*>> ptr = {{dgc.a.grad.data(), dgc.b.grad.data()}, {a2.data(), b2.data()}};
      ex.exchange(ptr, s, 0);
      od.step(0.05f);
      oc.step(0.05f);
    }
    for (int i = 0; i < 30; ++i) CHECK(dgc.a.value.data()[i] == doctest::Approx(dense.a.value.data()[i]).epsilon(1e-5));
    for (int i = 0; i < 6; ++i) CHECK(dgc.b.value.data()[i] == doctest::Approx(dense.b.value.data()[i]).epsilon(1e-5));
    // and the old split (optimizer momentum 0: decay without momentum) does not
    Model plain;
    o.momentum_decay_only = false;
    o.momentum = 0.0f;
    optim::Optimizer op(o, plain.params());
    gradcomp::GradientExchange ex2(eo, {{6, 5}, {6}}, 2, nullptr);
    ex2.set_momentum(0.9f, nesterov);
    for (int s = 0; s < 6; ++s) {
      plain.fill_grads(s);
      std::vector<float> a2(plain.a.grad.data(), plain.a.grad.data() + 30), b2(plain.b.grad.data(), plain.b.grad.data() + 6);
      std::vector<std::vector<float*>> ptr = {{plain.a.grad.data(), plain.b.grad.data()}, {a2.data(), b2.data()}};
      ex2.exchange(ptr, s, 0);
      op.step(0.05f);
    }
    double diff = 0;
    for (int i = 0; i < 30; ++i) diff = std::max(diff, double(std::fabs(plain.a.value.data()[i] - dense.a.value.data()[i])));
    CHECK(diff > 1e-4);
  }
}

TEST_CASE("schedule with SWA: the base schedule is rescaled to end at swa_lr, then swa_lr is constant") {
  optim::ScheduleOptions o;
  o.kind = "cosine";
  o.lr = 0.1f;
  o.swa_steps = 20;
  o.swa_lr = 0.02f;
  optim::Schedule s(o, 10, 100);
  CHECK(s.lr(0) == doctest::Approx(0.1));
  CHECK(s.lr(40) == doctest::Approx(0.02 + 0.08 * 0.5));  // halfway through the 80 base steps
  CHECK(s.lr(79) > 0.02f);
  CHECK(s.lr(79) < 0.0201f);
  for (int64_t t = 80; t < 100; ++t) CHECK(s.lr(t) == 0.02f);
  o.swa_steps = 100;
  CHECK_THROWS_WITH_AS(optim::Schedule(o, 10, 100), doctest::Contains("swa_epochs"), Error);
  o.swa_steps = 20;
  o.swa_lr = 0.2f;
  CHECK_THROWS_WITH_AS(optim::Schedule(o, 10, 100), doctest::Contains("swa_lr"), Error);
}
