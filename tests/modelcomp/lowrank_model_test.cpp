// factorize_model: the factorized model is an ordinary model whose factor layers compute A B x + bias.
#include "modelcomp/lowrank_model.h"

#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "io/tensor_file.h"
#include "modelcomp/packed.h"
#include "nn/model_io.h"
#include "random_model.h"
#include "util/check.h"

using namespace frugal;
using json = nlohmann::json;

namespace {

/// A linear chain and a conv chain with a batch norm after a strided conv (the BN stays after the factors).
json linear_spec() {
  return {{"input", {1, 6, 6}},
          {"classes", 5},
          {"layers",
           {{{"type", "flatten"}},
            {{"type", "linear"}, {"out", 24}},
            {{"type", "relu"}},
            {{"type", "linear"}, {"out", 16}, {"bias", false}},
            {{"type", "relu"}},
            {{"type", "linear"}, {"out", "classes"}}}}};
}
json conv_spec() {
  return {{"input", {3, 8, 8}},
          {"classes", 4},
          {"layers",
           {{{"type", "conv"}, {"out", 12}, {"k", 3}, {"s", 2}, {"p", 1}, {"bias", false}},
            {{"type", "bn"}},
            {{"type", "relu"}},
            {{"type", "conv"}, {"out", 10}, {"k", 3}, {"s", 1}, {"p", 1}},
            {{"type", "relu"}},
            {{"type", "maxpool"}, {"k", 2}, {"s", 2}},
            {{"type", "flatten"}},
            {{"type", "linear"}, {"out", "classes"}}}}};
}

Tensor random_input(const nn::Model& m, int n, uint64_t seed) {
  const Dims& chw = m.input_chw();
  Tensor x({n, chw[0], chw[1], chw[2]});
  std::mt19937_64 rng(seed);
  testing::fill(x, rng, -1.f, 1.f);
  return x;
}

/// max |a - b| / max |a| of the two models' logits on the same input.
double relative_gap(nn::Model& a, nn::Model& b, const Tensor& x) {
  Tensor ya;
  ya.copy_from(a.forward(x, nn::ForwardContext{}));
  const Tensor& yb = b.forward(x, nn::ForwardContext{});
  REQUIRE(ya.size() == yb.size());
  double gap = 0, scale = 0;
  for (int64_t i = 0; i < ya.size(); ++i) {
    gap = std::max(gap, double(std::fabs(ya.data()[i] - yb.data()[i])));
    scale = std::max(scale, double(std::fabs(ya.data()[i])));
  }
  return gap / scale;
}

nn::Param& param(nn::Model& m, const std::string& name) {
  for (nn::Param* p : m.params())
    if (p->name == name) return *p;
  FRUGAL_FAIL("no parameter ", name);
}

/// Overwrites w (rows, cols) with an exactly rank-r matrix.
void plant_rank(nn::Param& w, int r, uint64_t seed) {
  const int64_t rows = w.value.dim(0), cols = w.value.size() / rows;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.f, 0.2f);
  std::vector<float> u(size_t(rows * r)), v(size_t(r * cols));
  for (auto& e : u) e = g(rng);
  for (auto& e : v) e = g(rng);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      float s = 0;
      for (int k = 0; k < r; ++k) s += u[size_t(i * r + k)] * v[size_t(k * cols + j)];
      w.value.data()[i * cols + j] = s;
    }
  ++w.version;
}

}  // namespace

TEST_CASE("lowrank model: at energy 1 (full rank) every layer is factorized and the outputs are unchanged") {
  for (const json& spec : {linear_spec(), conv_spec()}) {
    nn::Model m(spec, 1);
    testing::randomize(m, 7);
    modelcomp::LowRankOptions o;
    o.energy = 1.0;
    o.only_if_smaller = false;
    modelcomp::FactorizedModel f = modelcomp::factorize_model(m, o);
    int weighted = 0;
    for (const auto& l : f.layers) {
      CHECK(l.factorized);
      CHECK(l.rank == l.rank_max);
      CHECK(l.energy_kept == doctest::Approx(1.0));
      ++weighted;
    }
    CHECK(weighted == 3);
    CHECK(f.model->net().size() == m.net().size() + 3);  // one more layer per factorized layer
    const Tensor x = random_input(m, 5, 3);
    CHECK(relative_gap(m, *f.model, x) < 1e-5);
  }
}

TEST_CASE("lowrank model: the k x 1 / 1 x k split at full rank keeps the outputs, a planted spatial rank is found") {
  nn::Model m(conv_spec(), 1);  // a strided 3 x 3 conv + BN and a 3 x 3 conv with bias
  testing::randomize(m, 11);
  modelcomp::LowRankOptions o;
  o.energy = 1.0;
  o.only_if_smaller = false;
  o.layers = "conv";
  o.conv_split = "kx1_1xk";
  modelcomp::FactorizedModel f = modelcomp::factorize_model(m, o);
  REQUIRE(f.layers.size() == 3);
  for (int i : {0, 1}) {
    const auto& l = f.layers[size_t(i)];
    CHECK(l.factorized);
    CHECK(l.split == "kx1_1xk");
    CHECK(l.rows == l.dims[1] * 3);  // (IC*K, K*OC)
    CHECK(l.cols == 3 * l.dims[0]);
  }
  CHECK(!f.layers[2].factorized);  // the linear: not selected
  // the factor layers are K x 1 (stride and padding along H) then 1 x K (along W)
  const json layers = f.model->spec()["layers"];
  CHECK(layers[0]["kh"] == 3);
  CHECK(layers[0]["kw"] == 1);
  CHECK(layers[0]["sh"] == 2);
  CHECK(layers[0]["sw"] == 1);
  CHECK(layers[1]["kh"] == 1);
  CHECK(layers[1]["kw"] == 3);
  CHECK(layers[1]["sw"] == 2);
  CHECK(layers[1]["pw"] == 1);
  const Tensor x = random_input(m, 4, 5);
  CHECK(relative_gap(m, *f.model, x) < 1e-5);

  // a weight whose (IC*K, K*OC) matrix has rank 2 is split at rank 2, exactly, and a cut at rank 1 changes outputs
  nn::Model m2(conv_spec(), 1);
  testing::randomize(m2, 12);
  nn::Param& w = param(m2, "3.weight");  // (10, 12, 3, 3)
  const int64_t oc = w.value.dim(0), ic = w.value.dim(1);
  std::mt19937_64 rng(13);
  std::normal_distribution<float> g(0.f, 0.3f);
  std::vector<float> vert(size_t(2 * ic * 3)), hor(size_t(2 * 3 * oc));
  for (auto& e : vert) e = g(rng);
  for (auto& e : hor) e = g(rng);
  for (int64_t o2 = 0; o2 < oc; ++o2)
    for (int64_t c = 0; c < ic; ++c)
      for (int64_t y = 0; y < 3; ++y)
        for (int64_t xk = 0; xk < 3; ++xk) {
          float v = 0;
          for (int q = 0; q < 2; ++q) v += vert[size_t((q * ic + c) * 3 + y)] * hor[size_t((q * 3 + xk) * oc + o2)];
          w.value.data()[((o2 * ic + c) * 3 + y) * 3 + xk] = v;
        }
  ++w.version;
  o.energy = 0.999999;
  o.only_if_smaller = true;
  modelcomp::FactorizedModel f2 = modelcomp::factorize_model(m2, o);
  const auto& l2 = f2.layers[1];
  REQUIRE(l2.factorized);
  CHECK(l2.rank == 2);
  CHECK(l2.params_after < l2.params_before);
  CHECK(l2.macs_after < l2.macs_before);
  const Tensor x2 = random_input(m2, 4, 6);
  const double exact = relative_gap(m2, *f2.model, x2);
  CHECK(exact < 1e-4);
  o.max_rank_fraction = 1.0 / double(l2.rank_max);  // rank 1
  modelcomp::FactorizedModel f3 = modelcomp::factorize_model(m2, o);
  CHECK(f3.layers[1].rank == 1);
  CHECK(relative_gap(m2, *f3.model, x2) > 100 * exact);

  o.conv_split = "kx1";
  CHECK_THROWS_WITH_AS(modelcomp::factorize_model(m, o), doctest::Contains("conv_split"), frugal::Error);
  // a non-square conv in a spec names both sizes of each pair
  json bad = conv_spec();
  bad["layers"][0] = {{"type", "conv"}, {"out", 4}, {"kh", 3}};
  CHECK_THROWS_WITH_AS(nn::Model(bad, 1), doctest::Contains("give both 'kh' and 'kw'"), frugal::Error);
  bad["layers"][0] = {{"type", "conv"}, {"out", 4}, {"k", 3}, {"kh", 3}, {"kw", 1}};
  CHECK_THROWS_WITH_AS(nn::Model(bad, 1), doctest::Contains("together"), frugal::Error);
}

TEST_CASE("lowrank model: a planted rank-r weight is found at rank r, reproduced, with fewer params and MACs") {
  SUBCASE("linear") {
    nn::Model m(linear_spec(), 2);
    testing::randomize(m, 8);
    plant_rank(param(m, "1.weight"), 3, 21);  // (24, 36) rank 3
    plant_rank(param(m, "3.weight"), 2, 22);  // (16, 24) rank 2
    modelcomp::LowRankOptions o;
    o.energy = 0.9999;
    o.layers = "linear";
    modelcomp::FactorizedModel f = modelcomp::factorize_model(m, o);
    REQUIRE(f.layers.size() == 3);
    CHECK(f.layers[0].factorized);
    CHECK(f.layers[0].rank == 3);
    CHECK(f.layers[0].params_before == 24 * 36 + 24);
    CHECK(f.layers[0].params_after == 3 * 36 + 24 * 3 + 24);
    CHECK(f.layers[0].macs_after == 3 * 36 + 24 * 3);
    CHECK(f.layers[1].rank == 2);
    CHECK(f.layers[1].params_after == 2 * (16 + 24));  // no bias: none on either factor
    CHECK(f.layers[1].factor_names == std::vector<std::string>{"4.weight", "5.weight"});  // layer 1 became 1, 2
    // the split is sqrt(s) on each side: column k of A and row k of B have the same norm, sqrt(s_k)
    const nn::Param &b = param(*f.model, "4.weight"), &a = param(*f.model, "5.weight");  // (2, 24), (16, 2)
    for (int k = 0; k < 2; ++k) {
      double na = 0, nb = 0;
      for (int i = 0; i < 16; ++i) na += double(a.value.data()[i * 2 + k]) * a.value.data()[i * 2 + k];
      for (int j = 0; j < 24; ++j) nb += double(b.value.data()[k * 24 + j]) * b.value.data()[k * 24 + j];
      CHECK(na == doctest::Approx(nb).epsilon(1e-4));
    }
    // the random (full-rank) logits layer (5, 16) would not get smaller: kept as it is
    CHECK(!f.layers[2].factorized);
    CHECK(f.layers[2].reason == "no saving at this rank");
    CHECK(f.model->num_params() < m.num_params());
    CHECK(f.model->macs_per_image() < m.macs_per_image());
    CHECK(f.model->num_params() == m.num_params() - (24 * 36 + 16 * 24) + (3 * 60 + 2 * 40));
    CHECK(relative_gap(m, *f.model, random_input(m, 6, 4)) < 1e-5);
    // the spec is a plain model spec: linear 36 -> 3 (no bias), linear 3 -> 24 (the bias)
    CHECK(f.model->spec()["layers"][1]["out"] == 3);
    CHECK(f.model->spec()["layers"][1]["bias"] == false);
    CHECK(f.model->spec()["layers"][2]["out"] == 24);
    CHECK(f.model->spec()["layers"][2]["bias"] == true);
  }
  SUBCASE("conv with batch norm, strided") {
    nn::Model m(conv_spec(), 3);
    testing::randomize(m, 9);
    plant_rank(param(m, "0.weight"), 2, 23);  // (12, 3*3*3) rank 2, followed by batch norm
    plant_rank(param(m, "3.weight"), 4, 24);  // (10, 12*3*3) rank 4, with bias
    modelcomp::LowRankOptions o;
    o.energy = 0.9999;
    o.layers = "conv";
    modelcomp::FactorizedModel f = modelcomp::factorize_model(m, o);
    REQUIRE(f.layers.size() == 3);
    CHECK(f.layers[0].rank == 2);
    CHECK(f.layers[1].rank == 4);
    CHECK(f.layers[2].reason == "not selected");
    // conv 0 at stride 2 on 8x8: output 4x4; conv 3 at 4x4
    CHECK(f.layers[0].macs_before == 12 * 27 * 16);
    CHECK(f.layers[0].macs_after == (2 * 27 + 12 * 2) * 16);
    CHECK(f.layers[1].macs_after == (4 * 108 + 10 * 4) * 16);
    CHECK(f.layers[1].params_after == 4 * 108 + 10 * 4 + 10);
    const json& L = f.model->spec()["layers"];
    CHECK(L[0]["k"] == 3);
    CHECK(L[0]["s"] == 2);
    CHECK(L[0]["out"] == 2);
    CHECK(L[1]["k"] == 1);
    CHECK(L[1]["out"] == 12);
    CHECK(L[2]["type"] == "bn");  // the batch norm follows the second factor
    CHECK(f.model->macs_per_image() < m.macs_per_image());
    CHECK(f.model->num_params() < m.num_params());
    CHECK(relative_gap(m, *f.model, random_input(m, 4, 5)) < 1e-5);
  }
}

TEST_CASE("lowrank model: a cut below the planted rank changes the outputs, max rank and min size are obeyed") {
  nn::Model m(linear_spec(), 4);
  testing::randomize(m, 10);
  plant_rank(param(m, "1.weight"), 6, 25);
  modelcomp::LowRankOptions o;
  o.energy = 0.9999;
  o.max_rank_fraction = 0.125;  // floor(0.125 * 24) = 3 < 6
  o.layers = "linear";
  modelcomp::FactorizedModel f = modelcomp::factorize_model(m, o);
  CHECK(f.layers[0].rank == 3);
  CHECK(f.layers[0].energy_kept < 0.9999);
  CHECK(relative_gap(m, *f.model, random_input(m, 6, 4)) > 1e-3);
  o.max_rank_fraction = 1.0;
  o.min_numel = 24 * 36 + 1;
  modelcomp::FactorizedModel g = modelcomp::factorize_model(m, o);
  CHECK(!g.layers[0].factorized);
  CHECK(g.layers[0].reason == "smaller than min_numel");
  for (auto bad : {0.0, 1.5}) {
    modelcomp::LowRankOptions b;
    b.energy = bad;
    CHECK_THROWS_AS(modelcomp::factorize_model(m, b), Error);
  }
  modelcomp::LowRankOptions b;
  b.layers = "convs";
  CHECK_THROWS_AS(modelcomp::factorize_model(m, b), Error);
}

TEST_CASE("lowrank model: the factor layers' records pack, decode bit-exact, and load into the factorized spec") {
  nn::Model m(conv_spec(), 5);
  testing::randomize(m, 11);
  plant_rank(param(m, "3.weight"), 3, 26);
  modelcomp::LowRankOptions o;
  o.energy = 0.9999;
  modelcomp::FactorizedModel f = modelcomp::factorize_model(m, o);
  REQUIRE(f.layers[1].factorized);
  modelcomp::PackedModel pm;
  pm.meta = {{"kind", "packed-model"}, {"spec", f.model->spec()}};
  io::TensorFile tf;
  nn::add_model_tensors(*f.model, tf);
  for (const auto& [name, t] : tf.tensors) {
    modelcomp::PackedTensor p;
    p.name = name;
    p.dims = t.dims();
    p.dense.assign(t.data(), t.data() + t.size());
    pm.tensors.push_back(p);
  }
  const modelcomp::UnpackedModel u = modelcomp::decode_packed(modelcomp::encode_packed(pm).file, "mem");
  io::TensorFile back;
  back.meta = u.meta;
  for (const auto& [name, t] : u.tensors) back.tensors.emplace_back(name, t);
  REQUIRE(back.tensors.size() == tf.tensors.size());
  for (size_t i = 0; i < tf.tensors.size(); ++i) {
    CHECK(back.tensors[i].first == tf.tensors[i].first);
    CHECK(back.tensors[i].second.dims() == tf.tensors[i].second.dims());
    CHECK(std::equal(tf.tensors[i].second.data(), tf.tensors[i].second.data() + tf.tensors[i].second.size(),
                     back.tensors[i].second.data()));
  }
  nn::LoadedModel loaded = nn::load_model(back, "mem");
  CHECK(loaded.model->num_params() == f.model->num_params());
  const Tensor x = random_input(m, 3, 6);
  CHECK(relative_gap(*f.model, *loaded.model, x) == 0.0);
}
