// Every preset builds, runs forward and backward on MNIST- and CIFAR-shaped input, and has the documented size.
#include <doctest/doctest.h>

#include <cmath>

#include "nn/model.h"
#include "util/check.h"

using namespace frugal;
using namespace frugal::nn;

TEST_CASE("presets: build, forward, backward; parameter counts of the reference models") {
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
