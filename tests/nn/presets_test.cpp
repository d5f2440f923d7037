// Every preset builds, runs forward and backward on MNIST- and CIFAR-shaped input, and has the documented size.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "nn/containers.h"
#include "nn/model.h"
#include "util/check.h"

using namespace frugal;
using namespace frugal::nn;

TEST_CASE("presets: build, forward, backward, parameter counts of the reference models") {
  struct Case { std::string name; Dims chw; int64_t params; };
  std::vector<Case> cases{{"mlp", {1, 28, 28}, 266610},    {"lenet5", {1, 28, 28}, 61706},
                          {"lenet5-caffe", {1, 28, 28}, 431080}, {"cnn", {1, 28, 28}, 468010},
                          {"resnet20", {3, 32, 32}, 269722}, {"resnet32", {3, 32, 32}, -1},
                          {"vgg", {3, 32, 32}, -1},          {"cnn", {3, 32, 32}, -1}};
  for (auto& c : cases) {
    INFO(c.name, " ", dims_str(c.chw));
    Model m(preset_spec(c.name, 1.0, -1, c.chw, 10), 1);
    if (c.params > 0) CHECK(m.num_params() == c.params);
    Tensor x({4, c.chw[0], c.chw[1], c.chw[2]});
    for (int64_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>((i * 37) % 11) / 11.f - 0.5f;
    const Tensor& y = m.forward(x, {true, 1});
    CHECK(y.dims() == Dims{4, 10});
    Tensor d(y.dims());
    for (int64_t i = 0; i < d.size(); ++i) d.data()[i] = 0.01f;
    m.backward(d);
    double gsum = 0;
    for (auto* p : m.params())
      for (int64_t i = 0; i < p->grad.size(); ++i) gsum += std::abs(p->grad.data()[i]);
    CHECK(gsum > 0);
    CHECK(std::isfinite(gsum));
  }
  // width and depth change the size
  Model narrow(preset_spec("resnet", 0.5, 8, {3, 32, 32}, 10), 1);
  Model wide(preset_spec("resnet", 2.0, 8, {3, 32, 32}, 10), 1);
  CHECK(wide.num_params() > 3 * narrow.num_params());
  CHECK_THROWS_AS(preset_spec("resnet", 1.0, 21, {3, 32, 32}, 10), frugal::Error);
  CHECK_THROWS_AS(preset_spec("nosuch", 1.0, -1, {3, 32, 32}, 10), frugal::Error);
}

TEST_CASE("model spec: dropout, avgpool and bad specs") {
  nlohmann::json spec = {{"input", {1, 8, 8}}, {"classes", 3},
                         {"layers", {{{"type", "conv"}, {"out", 4}, {"k", 3}}, {{"type", "avgpool"}, {"k", 2}},
                                     {{"type", "flatten"}}, {{"type", "dropout"}, {"p", 0.2}}, {{"type", "linear"}, {"out", "classes"}}}}};
  Model m(spec, 0);
  CHECK(m.num_params() == 4 * 9 + 4 + 64 * 3 + 3);
  spec["layers"][0]["type"] = "deconv";
  CHECK_THROWS_WITH_AS(Model(spec, 0), doctest::Contains("unknown layer type 'deconv'"), frugal::Error);
}

TEST_CASE("fused batch-norm+ReLU matches the separate layers: forward and gradients to rounding") {
  for (std::string name : {"cnn", "resnet"}) {
    INFO(name);
    Dims chw = name == "cnn" ? Dims{1, 12, 12} : Dims{3, 8, 8};
    auto spec = preset_spec(name, 0.25, name == "cnn" ? 1 : 8, chw, 4);
    Model fused(spec, 3), plain(spec, 3);
    int n_fused = 0;
    plain.net().visit({2, chw[0], chw[1], chw[2]}, [&](Layer& l, const Dims&) {
      if (auto* bn = dynamic_cast<BatchNorm*>(&l)) {
        n_fused += bn->fused_relu();
        bn->set_fused_relu(false);
      }
      if (auto* r = dynamic_cast<ReLU*>(&l)) r->set_fused(false);
    });
    CHECK(n_fused >= 2);  // the builder fused every bn -> relu pair
    Tensor x({2, chw[0], chw[1], chw[2]});
    for (int64_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>((i * 37) % 11) / 11.f - 0.5f;
    for (bool train : {true, false}) {
      INFO("train ", train);
      const Tensor& a = fused.forward(x, {train, 1});
      const Tensor& b = plain.forward(x, {train, 1});
      REQUIRE(a.size() == b.size());
      // Not bit-exact: oneDNN may run the fused and the plain batch-norm with different implementations, whose
      // reductions round differently (4-channel layers: nspc_bnorm:any fused, bnorm_tbb_jit:sse41 plain), and
      // whether their last bits agree depends on the input (it did for the weights of a -march=native build,
      // not for those of the portable one). A missing or misplaced ReLU differs by O(1).
      double fworst = 0, fscale = 0;
      for (int64_t i = 0; i < a.size(); ++i) {
        fworst = std::max(fworst, double(std::abs(a.data()[i] - b.data()[i])));
        fscale = std::max(fscale, double(std::abs(b.data()[i])));
      }
      CHECK(fscale > 0);
      CHECK(fworst <= 1e-5 * fscale);
      if (!train) continue;
      Tensor d(a.dims());
      for (int64_t i = 0; i < d.size(); ++i) d.data()[i] = 0.1f * static_cast<float>(i % 5) - 0.2f;
      fused.backward(d);
      plain.backward(d);
      auto pa = fused.params(), pb = plain.params();
      REQUIRE(pa.size() == pb.size());
      for (size_t k = 0; k < pa.size(); ++k) {
        INFO(pa[k]->name);
        double worst = 0, scale = 0;
        for (int64_t i = 0; i < pa[k]->grad.size(); ++i) {
          worst = std::max(worst, double(std::abs(pa[k]->grad.data()[i] - pb[k]->grad.data()[i])));
          scale = std::max(scale, double(std::abs(pb[k]->grad.data()[i])));
        }
        CHECK(scale > 0);
        CHECK(worst <= 1e-5 * scale);  // the forward's rounding differences, carried through the backward
      }
    }
  }
}
