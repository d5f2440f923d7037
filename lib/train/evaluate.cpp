#include "train/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "util/check.h"

namespace frugal::train {

using json = nlohmann::json;

void make_batch(const data::Dataset& ds, const data::Normalization& norm, size_t begin, size_t n, Tensor& x,
                std::vector<int32_t>& y) {
  const int C = ds.channels;
  x.resize({static_cast<int64_t>(n), C, ds.height, ds.width});
  const size_t per = static_cast<size_t>(C) * ds.height * ds.width;
  std::vector<float> scale(C), shift(C);
  for (int c = 0; c < C; ++c) {
    float m = norm.mean.size() == 1 ? norm.mean[0] : norm.mean.at(c), s = norm.std.size() == 1 ? norm.std[0] : norm.std.at(c);
    scale[c] = 1.f / (255.f * s);
    shift[c] = -m / s;
  }
  y.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* src = ds.images.data() + (begin + i) * per;
    float* dst = x.data() + i * per;
    for (size_t j = 0; j < per; ++j) {
      int c = static_cast<int>(j % C);
      dst[j] = src[j] * scale[c] + shift[c];
    }
    y[i] = ds.labels[begin + i];
  }
}

void flip_horizontal(const Tensor& x, Tensor& out) {
  FRUGAL_CHECK(x.ndim() == 4, "flip_horizontal: needs a 4-D image batch, got ", dims_str(x.dims()));
  out.resize(x.dims());
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  for (int64_t r = 0; r < N * H; ++r) {
    const float* src = x.data() + r * W * C;
    float* dst = out.data() + r * W * C;
    for (int64_t w = 0; w < W; ++w) std::copy(src + w * C, src + (w + 1) * C, dst + (W - 1 - w) * C);
  }
}

EvalMetrics evaluate(nn::Model& model, const data::Dataset& ds, const data::Normalization& norm, int batch,
                     float label_smoothing, bool tta_flip) {
  FRUGAL_CHECK(ds.channels == model.input_chw()[0] && ds.height == model.input_chw()[1] && ds.width == model.input_chw()[2],
               "dataset '", ds.name, "' images are (", ds.channels, ", ", ds.height, ", ", ds.width,
               ") but the model expects ", dims_str(model.input_chw()));
  const int K = model.classes();
  EvalMetrics m;
  m.confusion.assign(K, std::vector<int64_t>(K, 0));
  Tensor x, xf, mean_logp;
  std::vector<int32_t> y;
  nn::SoftmaxCrossEntropy ce(label_smoothing);
  double loss_sum = 0;
  int64_t top1 = 0, top5 = 0;
  for (size_t b = 0; b < ds.size(); b += batch) {
    size_t n = std::min(ds.size() - b, static_cast<size_t>(batch));
    make_batch(ds, norm, b, n, x, y);
    const Tensor* out = &model.forward(x, {false, 0});
    if (tta_flip) {  // log of the mean softmax of the image and its mirror: ce.forward() and argmax work on it as is
      mean_logp.resize(out->dims());
      auto log_softmax = [K](const float* l, float* o) {
        const float mx = *std::max_element(l, l + K);
        double s = 0;
        for (int k = 0; k < K; ++k) s += std::exp(double(l[k] - mx));
        const float lse = mx + float(std::log(s));
        for (int k = 0; k < K; ++k) o[k] = l[k] - lse;
      };
      for (size_t i = 0; i < n; ++i) log_softmax(out->data() + i * K, mean_logp.data() + i * K);
      flip_horizontal(x, xf);
      const Tensor& lf = model.forward(xf, {false, 0});
      std::vector<float> lp(static_cast<size_t>(K));
      for (size_t i = 0; i < n; ++i) {
        log_softmax(lf.data() + i * K, lp.data());
        float* o = mean_logp.data() + i * K;
        for (int k = 0; k < K; ++k) o[k] = float(std::log(0.5 * (std::exp(double(o[k])) + std::exp(double(lp[k])))));
      }
      out = &mean_logp;
    }
    const Tensor& logits = *out;
    loss_sum += ce.forward(logits, y.data()) * static_cast<double>(n);
    for (size_t i = 0; i < n; ++i) {
      const float* l = logits.data() + i * K;
      int pred = static_cast<int>(std::max_element(l, l + K) - l);
      int rank = 0;
      for (int k = 0; k < K; ++k) rank += l[k] > l[y[i]];
      top1 += pred == y[i];
      top5 += rank < 5;
      m.confusion[y[i]][pred]++;
    }
  }
  m.count = static_cast<int64_t>(ds.size());
  m.loss = loss_sum / std::max<double>(1, m.count);
  m.top1 = static_cast<double>(top1) / std::max<double>(1, m.count);
  m.top5 = static_cast<double>(top5) / std::max<double>(1, m.count);
  m.per_class.resize(K);
  for (int k = 0; k < K; ++k) {
    int64_t tot = 0;
    for (int j = 0; j < K; ++j) tot += m.confusion[k][j];
    m.per_class[k] = tot ? static_cast<double>(m.confusion[k][k]) / tot : 0.0;
  }
  return m;
}

json EvalMetrics::to_json(bool detail) const {
  json j{{"test_loss", loss}, {"test_accuracy", top1}, {"test_top5", top5}, {"test_count", count}};
  if (detail) {
    j["per_class_accuracy"] = per_class;
    j["confusion_matrix"] = confusion;
  }
  return j;
}

double percentile(std::vector<double> v, double p) {
  FRUGAL_CHECK(!v.empty(), "percentile of an empty list of values");
  FRUGAL_CHECK(p >= 0 && p <= 1, "percentile: p must be in [0, 1], got ", p);
  std::sort(v.begin(), v.end());
  const double pos = p * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos)), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

SpeedMetrics measure_speed(nn::Model& model, int iters, int batch, int batches) {
  using clk = std::chrono::steady_clock;
  SpeedMetrics s;
  s.batch = batch;
  const Dims& chw = model.input_chw();
  std::mt19937_64 rng(1);
  std::normal_distribution<float> nd;
  Tensor x1({1, chw[0], chw[1], chw[2]});
  for (int64_t i = 0; i < x1.size(); ++i) x1.data()[i] = nd(rng);
  for (int i = 0; i < 20; ++i) model.forward(x1, {false, 0});
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    auto a = clk::now();
    model.forward(x1, {false, 0});
    t.push_back(std::chrono::duration<double, std::milli>(clk::now() - a).count());
  }
  s.latency_b1_ms_median = percentile(t, 0.5);
  s.latency_b1_ms_p10 = percentile(t, 0.1);
  s.latency_b1_ms_p99 = percentile(t, 0.99);
  Tensor xb({batch, chw[0], chw[1], chw[2]});
  for (int64_t i = 0; i < xb.size(); ++i) xb.data()[i] = nd(rng);
  for (int i = 0; i < 3; ++i) model.forward(xb, {false, 0});
  auto a = clk::now();
  for (int i = 0; i < batches; ++i) model.forward(xb, {false, 0});
  double sec = std::chrono::duration<double>(clk::now() - a).count();
  s.throughput_img_s = batch * batches / sec;
  return s;
}

json SpeedMetrics::to_json() const {
  return {{"latency_b1_ms_median", latency_b1_ms_median}, {"latency_b1_ms_p10", latency_b1_ms_p10},
          {"latency_b1_ms_p99", latency_b1_ms_p99}, {"throughput_img_per_s", throughput_img_s},
          {"throughput_batch", batch}};
}

}  // namespace frugal::train
