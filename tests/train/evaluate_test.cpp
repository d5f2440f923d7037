// Evaluation: top-1 / top-5 / per-class accuracy / confusion matrix / loss against hand-computed fixtures,
// the percentile behind the latency median / p10 / p99, the horizontal flip and flip test-time augmentation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>

#include "nn/model.h"
#include "train/evaluate.h"
#include "util/check.h"

using namespace frugal;

namespace {
/// A model whose logits are its input pixels: a (1, 1, K) image, flatten, a K x K identity linear layer.
/// With mean 0 and std 1/255 the normalized pixel is the byte value, so each image row IS a row of logits.
std::unique_ptr<nn::Model> identity_model(int K) {
  nlohmann::json spec{{"input", {1, 1, K}},
                      {"classes", K},
                      {"layers", {{{"type", "flatten"}}, {{"type", "linear"}, {"out", "classes"}, {"bias", false}}}}};
  auto m = std::make_unique<nn::Model>(spec, 1);
  auto ps = m->params();
  REQUIRE(ps.size() == 1);
  Tensor& w = ps[0]->value;  // (K, K)
  REQUIRE(w.size() == int64_t(K) * K);
  for (int64_t i = 0; i < w.size(); ++i) w.data()[i] = i / K == i % K ? 1.f : 0.f;
  ++ps[0]->version;
  return m;
}

data::Dataset logits_dataset(const std::vector<std::vector<uint8_t>>& rows, const std::vector<int32_t>& labels) {
  data::Dataset ds;
  ds.name = "logits", ds.channels = 1, ds.height = 1, ds.width = int(rows[0].size());
  ds.num_classes = ds.width;
  for (auto& r : rows) ds.images.insert(ds.images.end(), r.begin(), r.end());
  ds.labels = labels;
  return ds;
}

const data::Normalization kIdentityNorm{{0.f}, {1.f / 255.f}};
}  // namespace

TEST_CASE("evaluate: top-1, top-5, per-class accuracy, confusion matrix and loss of known logits") {
  // K = 8 classes; class 7 is never the true class (its per-class accuracy is 0 by definition) but is predicted
  // once. rank = number of logits strictly above the true class's; top-5 correct iff rank < 5.
  const std::vector<std::vector<uint8_t>> rows{
      {10, 0, 0, 0, 0, 0, 0, 0},   // y 0: pred 0, rank 0      top-1 yes  top-5 yes
      {0, 10, 9, 8, 7, 6, 5, 0},   // y 0: pred 1, rank 6      no         no
      {1, 2, 3, 4, 5, 6, 7, 0},    // y 2: pred 6, rank 4      no         yes (5th)
      {1, 2, 3, 4, 5, 6, 7, 0},    // y 1: pred 6, rank 5      no         no  (6th)
      {0, 0, 50, 0, 0, 0, 0, 0},   // y 2: pred 2              yes        yes
      {0, 0, 0, 9, 0, 0, 0, 0},    // y 3: pred 3              yes        yes
      {0, 0, 0, 0, 0, 0, 9, 0},    // y 3: pred 6, rank 1      no         yes
      {9, 8, 7, 6, 5, 4, 3, 10},   // y 6: pred 7, rank 7      no         no
      {3, 1, 4, 1, 5, 9, 2, 0},    // y 5: pred 5              yes        yes
      {3, 1, 4, 1, 5, 9, 2, 0}};   // y 4: pred 5, rank 1      no         yes
  const std::vector<int32_t> labels{0, 0, 2, 1, 2, 3, 3, 6, 5, 4};
  const std::vector<std::pair<int, int>> true_pred{{0, 0}, {0, 1}, {2, 6}, {1, 6}, {2, 2},
                                                   {3, 3}, {3, 6}, {6, 7}, {5, 5}, {4, 5}};
  data::Dataset ds = logits_dataset(rows, labels);
  auto model_p = identity_model(8);
  nn::Model& model = *model_p;
  double loss = 0;  // mean of logsumexp(l) - l_y
  for (size_t i = 0; i < rows.size(); ++i) {
    double s = 0;
    for (uint8_t v : rows[i]) s += std::exp(double(v));
    loss += std::log(s) - rows[i][size_t(labels[i])];
  }
  loss /= double(rows.size());
  for (int batch : {4, 10, 1}) {  // 4: a partial last batch
    CAPTURE(batch);
    train::EvalMetrics m = train::evaluate(model, ds, kIdentityNorm, batch);
    CHECK(m.count == 10);
    CHECK(m.top1 == doctest::Approx(0.4));
    CHECK(m.top5 == doctest::Approx(0.7));
    CHECK(m.loss == doctest::Approx(loss).epsilon(1e-5));
    const std::vector<double> per_class{0.5, 0.0, 0.5, 0.5, 0.0, 1.0, 0.0, 0.0};
    REQUIRE(m.per_class.size() == 8);
    for (int k = 0; k < 8; ++k) CHECK(m.per_class[size_t(k)] == doctest::Approx(per_class[size_t(k)]));
    std::vector<std::vector<int64_t>> conf(8, std::vector<int64_t>(8, 0));
    for (auto [t, p] : true_pred) ++conf[size_t(t)][size_t(p)];
    CHECK(m.confusion == conf);
    // what evaluate.json / results.json carry
    nlohmann::json j = m.to_json(true);
    CHECK(j.at("test_accuracy").get<double>() == m.top1);
    CHECK(j.at("test_top5").get<double>() == m.top5);
    CHECK(j.at("test_loss").get<double>() == m.loss);
    CHECK(j.at("test_count").get<int64_t>() == 10);
    CHECK(j.at("per_class_accuracy").get<std::vector<double>>() == m.per_class);
    CHECK(j.at("confusion_matrix").get<std::vector<std::vector<int64_t>>>() == conf);
    CHECK_FALSE(m.to_json(false).contains("confusion_matrix"));
  }
}

TEST_CASE("evaluate: with fewer than 5 classes every sample is top-5 correct, and a label outside 0..K-1 is an error") {
  data::Dataset ds = logits_dataset({{1, 2, 3}, {3, 2, 1}, {9, 0, 0}}, {0, 0, 0});
  auto model_p = identity_model(3);
  nn::Model& model = *model_p;
  train::EvalMetrics m = train::evaluate(model, ds, kIdentityNorm, 2);
  CHECK(m.top1 == doctest::Approx(2.0 / 3));
  CHECK(m.top5 == 1.0);
  CHECK(m.confusion[0] == std::vector<int64_t>{2, 0, 1});
  ds.labels[1] = 3;
  CHECK_THROWS_AS(train::evaluate(model, ds, kIdentityNorm, 2), Error);
}

TEST_CASE("percentile: linear interpolation between closest ranks (numpy.percentile's default)") {
  // sorted 1 2 3 4 5: position p * 4
  const std::vector<double> five{5, 1, 4, 2, 3};
  CHECK(train::percentile(five, 0.5) == 3.0);
  CHECK(train::percentile(five, 0.1) == doctest::Approx(1.4));   // 1 + 0.4 (2 - 1)
  CHECK(train::percentile(five, 0.99) == doctest::Approx(4.96)); // 4 + 0.96 (5 - 4)
  CHECK(train::percentile(five, 0.0) == 1.0);
  CHECK(train::percentile(five, 1.0) == 5.0);
  // even count: the median is the mean of the two middle values
  CHECK(train::percentile({4, 1, 3, 2}, 0.5) == 2.5);
  CHECK(train::percentile({7}, 0.99) == 7.0);
  // 200 latencies 1..200 ms in random order (measure_speed's default count): position p * 199
  std::vector<double> t(200);
  for (int i = 0; i < 200; ++i) t[size_t(i)] = i + 1;
  std::shuffle(t.begin(), t.end(), std::mt19937(3));
  CHECK(train::percentile(t, 0.5) == doctest::Approx(100.5));
  CHECK(train::percentile(t, 0.1) == doctest::Approx(20.9));    // 20 + 0.9
  CHECK(train::percentile(t, 0.99) == doctest::Approx(198.01)); // 198 + 0.01
  CHECK_THROWS_AS(train::percentile({}, 0.5), Error);
  CHECK_THROWS_AS(train::percentile(five, 1.5), Error);
}

TEST_CASE("measure_speed: p10 <= median <= p99, all positive, throughput at the given batch") {
  auto model_p = identity_model(4);
  nn::Model& model = *model_p;
  train::SpeedMetrics s = train::measure_speed(model, 15, 8, 2);
  CHECK(s.latency_b1_ms_p10 > 0);
  CHECK(s.latency_b1_ms_p10 <= s.latency_b1_ms_median);
  CHECK(s.latency_b1_ms_median <= s.latency_b1_ms_p99);
  CHECK(s.throughput_img_s > 0);
  nlohmann::json j = s.to_json();
  CHECK(j.at("latency_b1_ms_p99").get<double>() == s.latency_b1_ms_p99);
  CHECK(j.at("throughput_batch").get<int>() == 8);
}

TEST_CASE("flip_horizontal mirrors each row of an NHWC batch, twice is the identity") {
  Tensor x({2, 3, 2, 4});  // N, C, H, W stored NHWC
  for (int64_t i = 0; i < x.size(); ++i) x.data()[i] = float(i);
  Tensor f, ff;
  train::flip_horizontal(x, f);
  for (int n = 0; n < 2; ++n)
    for (int h = 0; h < 2; ++h)
      for (int w = 0; w < 4; ++w)
        for (int c = 0; c < 3; ++c) {
          auto at = [&](const Tensor& t, int ww) { return t.data()[((n * 2 + h) * 4 + ww) * 3 + c]; };
          CHECK(at(f, w) == at(x, 3 - w));
        }
  train::flip_horizontal(f, ff);
  for (int64_t i = 0; i < x.size(); ++i) CHECK(ff.data()[i] == x.data()[i]);
}

TEST_CASE("flip TTA: unchanged on mirror-symmetric images, a different prediction source otherwise") {
  data::Dataset ds;
  ds.name = "cifar10", ds.channels = 3, ds.height = 8, ds.width = 8, ds.num_classes = 10;
  std::mt19937 rng(4);
  const int N = 40;
  ds.images.resize(size_t(N) * 8 * 8 * 3);
  for (int i = 0; i < N; ++i) {
    ds.labels.push_back(i % 10);
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 4; ++x)
        for (int c = 0; c < 3; ++c) {
          const uint8_t v = uint8_t(rng() % 256);
          ds.images[((size_t(i) * 8 + y) * 8 + x) * 3 + c] = v;
          ds.images[((size_t(i) * 8 + y) * 8 + 7 - x) * 3 + c] = v;  // mirror-symmetric
        }
  }
  nn::Model model(nn::preset_spec("cnn", 0.5, -1, {3, 8, 8}, 10), 1);
  const auto norm = data::default_normalization("cifar10");
  train::EvalMetrics plain = train::evaluate(model, ds, norm, 16, 0.f, false);
  train::EvalMetrics tta = train::evaluate(model, ds, norm, 16, 0.f, true);
  CHECK(tta.top1 == plain.top1);
  CHECK(tta.loss == doctest::Approx(plain.loss).epsilon(1e-5));
  // break the symmetry: TTA's loss is no longer the plain one
  for (size_t i = 0; i < ds.images.size(); i += 7) ds.images[i] = uint8_t(255 - ds.images[i]);
  train::EvalMetrics plain2 = train::evaluate(model, ds, norm, 16, 0.f, false);
  train::EvalMetrics tta2 = train::evaluate(model, ds, norm, 16, 0.f, true);
  CHECK(tta2.loss != doctest::Approx(plain2.loss).epsilon(1e-6));
}
