// Per-layer sensitivity analysis: levels, one layer compressed at a time and restored, targets for a budget.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <set>

#include "modelcomp/lowrank.h"
#include "modelcomp/sensitivity.h"
#include "random_model.h"
#include "util/check.h"

using namespace frugal;
using namespace frugal::modelcomp;
using json = nlohmann::json;

namespace {
/// conv (4, 1, 3, 3) = 36 weights ("same" padding), linear (20, 256) = 5120, linear (3, 20) = 60, and their biases.
json tiny_net() {
  json layers = json::array({{{"type", "conv"}, {"out", 4}, {"k", 3}},
                             {{"type", "relu"}},
                             {{"type", "flatten"}},
                             {{"type", "linear"}, {"out", 20}},
                             {{"type", "relu"}},
                             {{"type", "linear"}, {"out", "classes"}}});
  return {{"input", {1, 8, 8}}, {"classes", 3}, {"layers", layers}};
}

std::vector<std::vector<float>> snapshot(nn::Model& m) {
  std::vector<std::vector<float>> s;
  for (nn::Param* p : m.params()) s.emplace_back(p->value.data(), p->value.data() + p->value.size());
  return s;
}

/// A hand-made table: accuracies per layer at each level, baseline 0.99.
SensitivityTable table(SensitivityMethod m, std::vector<double> levels, std::vector<std::vector<double>> acc) {
  SensitivityTable t;
  t.method = m;
  t.levels = std::move(levels);
  t.baseline = 0.99;
  for (size_t l = 0; l < acc.size(); ++l) t.layers.push_back({std::string(1, char('a' + l)), {10, 10}, acc[l]});
  return t;
}

std::vector<std::pair<std::string, double>> levels_of(const std::vector<LayerTarget>& g) {
  std::vector<std::pair<std::string, double>> out;
  for (const LayerTarget& t : g) out.emplace_back(t.name, t.level);
  return out;
}
}  // namespace

TEST_CASE("sensitivity: levels are parsed and checked per method") {
  CHECK(parse_levels(SensitivityMethod::prune, "0.5,0.9, 0.98") == std::vector<double>{0.5, 0.9, 0.98});
  CHECK(parse_levels(SensitivityMethod::prune, "0") == std::vector<double>{0});
  CHECK(parse_levels(SensitivityMethod::bits, "8,4,1,16") == std::vector<double>{8, 4, 1, 16});
  CHECK(parse_levels(SensitivityMethod::rank, "1,0.25") == std::vector<double>{1, 0.25});
  CHECK(parse_levels(SensitivityMethod::bits, "") == default_levels(SensitivityMethod::bits));
  CHECK(default_levels(SensitivityMethod::prune).back() == doctest::Approx(0.98));
  for (const char* bad : {"1", "1.0", "-0.1", "abc", "0.5,,0.7", "0.5,0.5", "0.5,", "0.5x", "nan"})
    CHECK_THROWS_AS(parse_levels(SensitivityMethod::prune, bad), Error);
  for (const char* bad : {"0", "17", "2.5", "-1"}) CHECK_THROWS_AS(parse_levels(SensitivityMethod::bits, bad), Error);
  for (const char* bad : {"0", "1.5", "-0.5"}) CHECK_THROWS_AS(parse_levels(SensitivityMethod::rank, bad), Error);
  CHECK_THROWS_WITH_AS(parse_levels(SensitivityMethod::prune, "1.2"), doctest::Contains("[0, 1)"), Error);
  CHECK_THROWS_WITH_AS(parse_levels(SensitivityMethod::bits, "17"), doctest::Contains("1..16"), Error);
  CHECK(parse_sensitivity_method("rank") == SensitivityMethod::rank);
  CHECK(parse_sensitivity_method("bits") == SensitivityMethod::bits);
  CHECK_THROWS_WITH_AS(parse_sensitivity_method("quant"), doctest::Contains("unknown sensitivity method 'quant'"),
                       Error);
}

TEST_CASE("sensitivity: targets are the most aggressive level within the budget, untouched when none is") {
  // drops (pp) of l0: 0, 0.1, 4; l1: 1, 2, 9 (none within); l2: 0, 0.5, 0.05 (the curve is noisy: 0.9 still counts)
  const SensitivityTable t = table(SensitivityMethod::prune, {0.5, 0.7, 0.9},
                                   {{0.99, 0.989, 0.95}, {0.98, 0.97, 0.90}, {0.99, 0.985, 0.9895}});
  const std::vector<LayerTarget> g = select_targets(t, 0.2);
  REQUIRE(g.size() == 3);
  CHECK(g[0].name == "a");
  CHECK(g[0].level == 0.7);
  CHECK(g[0].within_budget);
  CHECK(g[0].drop_pp == doctest::Approx(0.1));
  CHECK(g[1].level == 0);  // untouched, not the least aggressive level 0.5 (it loses 1 pp)
  CHECK(!g[1].within_budget);
  CHECK(g[2].level == 0.9);
  // a budget of exactly a measured drop admits that level; a larger budget admits more
  CHECK(select_targets(t, 0.1)[0].level == 0.7);
  CHECK(select_targets(t, 0.0)[0].level == 0.5);
  CHECK(select_targets(t, 5)[0].level == 0.9);
  CHECK(select_targets(t, 2)[1].level == 0.7);
  CHECK_THROWS_AS(select_targets(t, -0.1), Error);
  // the Markdown cells: accuracy % and its change in pp (no "-0.00" for an unchanged accuracy)
  const std::string md = sensitivity_markdown(t);
  CHECK(md.find("| a | 10x10 | 99.00 (+0.00) | 98.90 (-0.10) | 95.00 (-4.00) |") != std::string::npos);
  CHECK(md.find("untouched model's 99.00 %") != std::string::npos);

  // bits and rank: fewer is more aggressive, untouched is 32 bits / rank fraction 1
  const SensitivityTable b = table(SensitivityMethod::bits, {8, 4, 2}, {{0.99, 0.989, 0.9}, {0.95, 0.9, 0.5}});
  const std::vector<LayerTarget> gb = select_targets(b, 0.2);
  CHECK(gb[0].level == 4);
  CHECK(gb[1].level == 32);
  CHECK(!gb[1].within_budget);
  const SensitivityTable r = table(SensitivityMethod::rank, {0.5, 0.25, 0.125}, {{0.991, 0.99, 0.97}, {0.5, 0.5, 0.5}});
  const std::vector<LayerTarget> gr = select_targets(r, 0.2);
  CHECK(gr[0].level == 0.25);
  CHECK(gr[1].level == 1);
  // the levels' order in the table does not matter
  const SensitivityTable shuffled = table(SensitivityMethod::bits, {2, 8, 4}, {{0.9, 0.99, 0.989}});
  CHECK(select_targets(shuffled, 0.2)[0].level == 4);
}

TEST_CASE("sensitivity: targets.json round trip, and bad targets files refused") {
  const SensitivityTable t = table(SensitivityMethod::prune, {0.5, 0.7, 0.9},
                                   {{0.99, 0.989, 0.95}, {0.98, 0.97, 0.90}, {0.99, 0.985, 0.9895}});
  const std::vector<LayerTarget> g = select_targets(t, 0.2);
  const json j = json::parse(targets_json(SensitivityMethod::prune, 0.2, t.baseline, g).dump());
  CHECK(j["kind"] == "per-layer-targets");
  CHECK(j["untouched"] == json::array({"b"}));
  const PerLayerTargets back = parse_targets_json(j, "targets.json");
  CHECK(back.method == SensitivityMethod::prune);
  CHECK(back.budget_pp == 0.2);
  CHECK(back.levels == levels_of(g));
  CHECK(back.levels == std::vector<std::pair<std::string, double>>{{"a", 0.7}, {"b", 0}, {"c", 0.9}});

  const SensitivityTable b = table(SensitivityMethod::bits, {8, 4, 2}, {{0.99, 0.989, 0.9}, {0.95, 0.9, 0.5}});
  const json jb = targets_json(SensitivityMethod::bits, 0.2, b.baseline, select_targets(b, 0.2));
  CHECK(jb["targets"]["a"].is_number_integer());
  CHECK(jb["targets"]["b"] == 32);  // untouched: fp32
  CHECK(parse_targets_json(jb, "t").levels == std::vector<std::pair<std::string, double>>{{"a", 4}, {"b", 32}});

  auto with = [&](const std::string& key, const json& v) {
    json bad = j;
    bad[key] = v;
    return bad;
  };
  CHECK_THROWS_WITH_AS(parse_targets_json(with("kind", "compress"), "x.json"), doctest::Contains("'x.json'"), Error);
  CHECK_THROWS_AS(parse_targets_json(with("method", "quant"), "x.json"), Error);
  CHECK_THROWS_AS(parse_targets_json(with("targets", json::object()), "x.json"), Error);
  CHECK_THROWS_WITH_AS(parse_targets_json(with("targets", {{"a", 1.5}}), "x.json"), doctest::Contains("targets.a"),
                       Error);
  CHECK_THROWS_AS(parse_targets_json(with("targets", {{"a", "0.5"}}), "x.json"), Error);
  json half_bit = jb;
  half_bit["targets"]["a"] = 2.5;
  CHECK_THROWS_AS(parse_targets_json(half_bit, "x"), Error);
}

TEST_CASE("sensitivity: compress_tensor prunes, shares and truncates the rank of one tensor") {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> w(12 * 30);
  for (float& v : w) v = g(rng);
  const std::vector<int64_t> dims{12, 30};

  std::vector<float> p = w;
  compress_tensor(SensitivityMethod::prune, 0.75, dims, p.data());
  size_t zeros = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    zeros += p[i] == 0;
    CHECK((p[i] == 0 || p[i] == w[i]));
  }
  CHECK(zeros == 270);

  double previous_mse = 1.0;  // the weights' variance: one centroid at the mean would give about that
  for (int bits : {1, 3, 5}) {
    std::vector<float> s = w;
    compress_tensor(SensitivityMethod::bits, bits, dims, s.data());
    const std::set<float> distinct(s.begin(), s.end());
    CHECK(distinct.size() <= size_t(1) << bits);
    CHECK(distinct.size() >= (size_t(1) << bits) / 2);
    double mse = 0;
    for (size_t i = 0; i < s.size(); ++i) mse += double(s[i] - w[i]) * double(s[i] - w[i]) / double(s.size());
    CHECK(mse < 0.5 * previous_mse);  // each bit at least halves the squared error
    previous_mse = mse;
  }
  std::vector<float> few(10);
  for (float& v : few) v = g(rng);
  std::vector<float> kept = few;
  compress_tensor(SensitivityMethod::bits, 4, {2, 5}, kept.data());  // 10 weights <= 16 centroids: exact
  CHECK(kept == few);

  for (double frac : {0.25, 0.5, 1.0}) {
    std::vector<float> r = w;
    compress_tensor(SensitivityMethod::rank, frac, dims, r.data());
    const LowRank f = truncated_svd(r.data(), 12, 30, 1.0);
    int rank = 0;
    for (double s : f.s) rank += s > 1e-4 * f.s[0];
    CHECK(rank == int(std::lround(12 * frac)));
  }
  // a conv weight (OC, IC, KH, KW) is the matrix (OC, IC KH KW)
  std::vector<float> c(6 * 2 * 3 * 3);
  for (float& v : c) v = g(rng);
  compress_tensor(SensitivityMethod::rank, 0.5, {6, 2, 3, 3}, c.data());
  const LowRank fc = truncated_svd(c.data(), 6, 18, 1.0);
  int rank = 0;
  for (double s : fc.s) rank += s > 1e-4 * fc.s[0];
  CHECK(rank == 3);
  CHECK_THROWS_AS(compress_tensor(SensitivityMethod::rank, 0.5, {18}, c.data()), Error);
  CHECK_THROWS_AS(compress_tensor(SensitivityMethod::prune, 1.0, dims, w.data()), Error);
}

TEST_CASE("sensitivity: one layer at a time, the others untouched, the weights restored after each measurement") {
  nn::Model m(tiny_net(), 1);
  testing::randomize(m, 5);
  CHECK(sensitivity_layers(m, 30) == std::vector<std::string>{"0.weight", "3.weight", "5.weight"});
  CHECK(sensitivity_layers(m, 100) == std::vector<std::string>{"3.weight"});
  CHECK(sensitivity_layers(m, 100000).empty());
  const std::vector<std::string> layers = sensitivity_layers(m, 30);
  const std::vector<double> levels{0.5, 0.9};
  const auto original = snapshot(m);
  const std::vector<nn::Param*> params = m.params();
  std::vector<uint64_t> versions;
  for (nn::Param* p : params) versions.push_back(p->version);

  // A real forward pass: the conv caches its reordered weights by Param::version, so a compressed layer that
  // the forward does not see (version not bumped) shows up as an unchanged output.
  Tensor x(Dims{4, 1, 8, 8});
  std::mt19937_64 rng(9);
  testing::fill(x, rng, -1.f, 1.f);
  auto output_sum = [&] {
    const Tensor& y = m.forward(x, nn::ForwardContext{});
    double s = 0;
    for (int64_t i = 0; i < y.size(); ++i) s += std::fabs(y.data()[i]);
    return s;
  };
  const double base_output = output_sum();

  // The synthetic accuracy: which parameters differ from the original, the zeros in them, and the output.
  struct Call {
    std::vector<size_t> changed;  // indices into params
    size_t zeros = 0;
    double output = 0;
  };
  std::vector<Call> calls;
  auto evaluate = [&] {
    Call c;
    for (size_t k = 0; k < params.size(); ++k) {
      const float* v = params[k]->value.data();
      bool differs = false;
      for (size_t i = 0; i < original[k].size(); ++i) {
        differs |= v[i] != original[k][i];
        c.zeros += v[i] == 0;
      }
      if (differs) c.changed.push_back(k);
    }
    c.output = output_sum();
    calls.push_back(c);
    return 1.0 - 0.001 * double(calls.size());  // distinct values to find in the table
  };
  std::vector<std::string> lines;
  const SensitivityTable t = analyze_sensitivity(m, layers, SensitivityMethod::prune, levels, evaluate,
                                                 [&](const std::string& l) { lines.push_back(l); });
  REQUIRE(calls.size() == 1 + layers.size() * levels.size());
  CHECK(calls[0].changed.empty());
  CHECK(calls[0].output == base_output);
  const size_t base_zeros = calls[0].zeros;
  size_t call = 1;
  for (size_t l = 0; l < layers.size(); ++l) {
    size_t k = 0;
    while (params[k]->name != layers[l]) ++k;
    const size_t n = original[k].size();
    for (size_t i = 0; i < levels.size(); ++i, ++call) {
      INFO("layer ", layers[l], " level ", levels[i]);
      CHECK(calls[call].changed == std::vector<size_t>{k});  // that layer alone
      CHECK(calls[call].zeros == base_zeros + size_t(std::lround(double(n) * levels[i])));
      CHECK(calls[call].output != base_output);  // the forward pass saw the pruned weights
      CHECK(t.layers[l].accuracy[i] == doctest::Approx(1.0 - 0.001 * double(call + 1)));
    }
  }
  CHECK(t.baseline == doctest::Approx(0.999));
  CHECK(t.layers.size() == 3);
  CHECK(t.layers[1].dims == std::vector<int64_t>{20, 256});
  CHECK(lines.size() == 1 + layers.size());
  // restored bit-exactly, and the forward pass computes the original output again
  CHECK(snapshot(m) == original);
  CHECK(output_sum() == base_output);
  for (size_t k = 0; k < params.size(); ++k) {
    const bool analyzed = std::find(layers.begin(), layers.end(), params[k]->name) != layers.end();
    CHECK(params[k]->version == versions[k] + (analyzed ? 2 * levels.size() : 0));
  }

  // bits and rank through the same loop: every measurement sees one changed layer, and the model comes back
  calls.clear();
  analyze_sensitivity(m, {"3.weight"}, SensitivityMethod::bits, {4, 2}, evaluate);
  REQUIRE(calls.size() == 3);
  CHECK(calls[1].changed.size() == 1);
  CHECK(calls[2].changed.size() == 1);
  calls.clear();
  analyze_sensitivity(m, {"3.weight", "0.weight"}, SensitivityMethod::rank, {0.5}, evaluate);
  REQUIRE(calls.size() == 3);
  CHECK(calls[1].changed.size() == 1);
  CHECK(calls[2].changed.size() == 1);
  CHECK(snapshot(m) == original);

  CHECK_THROWS_WITH_AS(analyze_sensitivity(m, {"nope.weight"}, SensitivityMethod::prune, levels, evaluate),
                       doctest::Contains("no parameter 'nope.weight'"), Error);
  CHECK_THROWS_AS(analyze_sensitivity(m, {}, SensitivityMethod::prune, levels, evaluate), Error);
  CHECK_THROWS_AS(analyze_sensitivity(m, layers, SensitivityMethod::bits, {0.5}, evaluate), Error);

  const std::string md = sensitivity_markdown(t);
  for (const std::string& name : layers) CHECK(md.find("| " + name + " |") != std::string::npos);
  CHECK(md.find("sparsity 0.9 |") != std::string::npos);
  CHECK(md.find("| 20x256 |") != std::string::npos);
}
