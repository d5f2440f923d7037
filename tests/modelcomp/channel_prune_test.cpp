// Structured channel pruning and the Taylor saliency criterion.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "modelcomp/channel_prune.h"
#include "random_model.h"
#include "util/check.h"

using namespace frugal;
using namespace frugal::modelcomp;
using json = nlohmann::json;
using testing::fill;
using testing::randomize;

namespace {
json residual_net() {
  json bn = {{"type", "bn"}}, relu = {{"type", "relu"}};
  auto conv = [](int out, int s = 1) { return json{{"type", "conv"}, {"out", out}, {"k", 3}, {"s", s}, {"bias", false}}; };
  json layers = json::array(
      {conv(8), bn, relu,
       {{"type", "residual"}, {"main", {conv(8), bn, relu, conv(8), bn}}, {"shortcut", json::array()}},
       {{"type", "residual"},
        {"main", {conv(16, 2), bn, relu, conv(16), bn}},
        {"shortcut", {{{"type", "shortcut_a"}, {"out", 16}, {"s", 2}}}}},
       {{"type", "conv"}, {"out", 6}, {"k", 3}}, relu, {{"type", "maxpool"}, {"k", 2}},
       {{"type", "flatten"}},
       {{"type", "linear"}, {"out", 20}}, relu,
       {{"type", "linear"}, {"out", "classes"}}});
  return {{"input", {3, 12, 12}}, {"classes", 5}, {"layers", layers}};
}

nn::Param* param(nn::Model& m, const std::string& name) {
  for (nn::Param* p : m.params())
    if (p->name == name) return p;
  return nullptr;
}

Tensor logits(nn::Model& m, const Tensor& x) {
  Tensor out;
  out.copy_from(m.forward(x, nn::ForwardContext{}));
  return out;
}
}  // namespace

TEST_CASE("channel pruning: the prunable layers of a residual net, kept channels' outputs unchanged") {
  nn::Model m(residual_net(), 1);
  randomize(m, 2);
  const std::vector<std::string> names = prunable_layers(m);
  // the first conv of each block, the conv before the flatten, the hidden linear; not the stem conv (feeds a block),
  // not a block's last conv (tied to the shortcut), not the logits
  CHECK(names == std::vector<std::string>{"3.main.0.weight", "4.main.0.weight", "5.weight", "9.weight"});
  // Channels to remove: their contributions to the consumers are zeroed first, so the pruned model must compute
  // exactly the same logits iff the kept channels and the consumers' kept inputs are carried over correctly.
  ChannelKeep keep{{"3.main.0.weight", {0, 2, 5, 7}}, {"4.main.0.weight", {1, 2, 3, 8, 9, 15}},
                   {"5.weight", {0, 4}}, {"9.weight", {3, 4, 5, 11, 19}}};
  auto zero_inputs = [&](const std::string& consumer, const std::vector<int>& kept, int64_t channels) {
    Tensor& w = param(m, consumer)->value;
    const int64_t rows = w.dim(0), cols = w.dim(1), inner = w.size() / (rows * cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        if (std::find(kept.begin(), kept.end(), int(c % channels)) == kept.end())
          for (int64_t k = 0; k < inner; ++k) w.data()[(r * cols + c) * inner + k] = 0.f;
    ++param(m, consumer)->version;
  };
  zero_inputs("3.main.3.weight", keep["3.main.0.weight"], 8);
  zero_inputs("4.main.3.weight", keep["4.main.0.weight"], 16);
  zero_inputs("9.weight", keep["5.weight"], 6);  // flatten: feature p * 6 + c is channel c
  zero_inputs("11.weight", keep["9.weight"], 20);
  auto pruned = prune_channels(m, keep);
  CHECK(pruned->macs_per_image() < m.macs_per_image());
  CHECK(param(*pruned, "3.main.0.weight")->value.dims() == Dims{4, 8, 3, 3});
  CHECK(param(*pruned, "3.main.3.weight")->value.dims() == Dims{8, 4, 3, 3});
  CHECK(dims_str(param(*pruned, "9.weight")->value.dims()) == dims_str(Dims{5, 2 * 3 * 3}));
  CHECK(param(*pruned, "11.weight")->value.dims() == Dims{5, 5});
  std::mt19937_64 rng(3);
  Tensor x({4, 3, 12, 12});
  fill(x, rng, -1.f, 1.f);
  const Tensor a = logits(m, x), b = logits(*pruned, x);
  REQUIRE(a.dims() == b.dims());
  for (int64_t i = 0; i < a.size(); ++i) REQUIRE(b.data()[i] == doctest::Approx(a.data()[i]).epsilon(1e-5));
  // without zeroing, removing channels changes the function
  nn::Model fresh(residual_net(), 1);
  randomize(fresh, 2);
  const Tensor c = logits(*prune_channels(fresh, keep), x);
  double diff = 0;
  for (int64_t i = 0; i < a.size(); ++i) diff += std::fabs(c.data()[i] - logits(fresh, x).data()[i]);
  CHECK(diff > 1e-3);
  CHECK_THROWS_WITH_AS(prune_channels(m, {{"1.weight", {0}}}), doctest::Contains("not a prunable layer"),
                       frugal::Error);
  CHECK_THROWS_WITH_AS(prune_channels(m, {{"5.weight", {3, 1}}}), doctest::Contains("ascending"), frugal::Error);
}

TEST_CASE("channel pruning: selection keeps the highest scores per layer") {
  ChannelKeep k = select_channels({{"a", {0.5, 3, 1, 2}}, {"b", {1, 2}}}, 0.5);
  CHECK(k["a"] == std::vector<int>{1, 3});
  CHECK(k["b"] == std::vector<int>{1});
  CHECK(select_channels({{"c", {1, 2}}}, 0.9)["c"] == std::vector<int>{1});  // at least one
}

TEST_CASE("taylor saliency: |w dL/dw| is zero for a dead unit's weights, batch-norm statistics untouched") {
  json spec = {{"input", {1, 4, 4}},
               {"classes", 3},
               {"layers",
                {{{"type", "flatten"}},
                 {{"type", "linear"}, {"out", 6}},
                 {{"type", "relu"}},
                 {{"type", "linear"}, {"out", "classes"}}}}};
  nn::Model m(spec, 1);
  randomize(m, 4);
  param(m, "1.bias")->value.data()[2] = -100.f;  // unit 2 never fires: no gradient reaches its weights
  data::Dataset ds;
  ds.channels = 1;
  ds.height = ds.width = 4;
  ds.num_classes = 3;
  std::mt19937_64 rng(5);
  for (int i = 0; i < 64; ++i) {
    for (int p = 0; p < 16; ++p) ds.images.push_back(uint8_t(rng() % 256));
    ds.labels.push_back(int32_t(rng() % 3));
  }
  data::Normalization norm{{0.5f}, {0.25f}};
  auto sal = taylor_saliency(m, ds, norm, 4, 16);
  REQUIRE(sal.count("1.weight"));
  const std::vector<float>& s = sal["1.weight"];
  for (int k = 0; k < 16; ++k) CHECK(s[size_t(2 * 16 + k)] == 0.f);
  double others = 0;
  for (int k = 0; k < 16; ++k) others += s[size_t(k)];
  CHECK(others > 0);
  // the magnitude of those weights is not small: the criterion is the gradient's, not the weight's
  double w2 = 0;
  for (int k = 0; k < 16; ++k) w2 += std::fabs(param(m, "1.weight")->value.data()[2 * 16 + k]);
  CHECK(w2 > 0.5);
  ChannelScores cs = taylor_channel_scores(m, sal);
  CHECK(cs["1.weight"][2] == 0.0);
  CHECK(select_channels(cs, 1.0 / 6)["1.weight"] == std::vector<int>{0, 1, 3, 4, 5});
}
