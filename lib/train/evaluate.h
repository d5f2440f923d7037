// Test-set metrics and speed measurements of a model.
#pragma once
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/transforms.h"
#include "nn/model.h"

namespace frugal::train {

struct EvalMetrics {
  double loss = 0, top1 = 0, top5 = 0;
  int64_t count = 0;
  std::vector<double> per_class;             // (K) accuracy per true class
  std::vector<std::vector<int64_t>> confusion;  // (K, K) rows = true class, cols = predicted
  nlohmann::json to_json(bool detail) const;
};

/// Evaluates on the whole dataset in batches (inference mode: BN running stats, no dropout).
/// tta_flip: test-time augmentation, the prediction is the mean of the softmax of the image and of its horizontal
/// mirror (as airbench and most CIFAR recipes report it); loss and accuracies then use that mean.
EvalMetrics evaluate(nn::Model& model, const data::Dataset& ds, const data::Normalization& norm, int batch,
                     float label_smoothing = 0.f, bool tta_flip = false);

/// x (N, C, H, W) stored NHWC -> its horizontal mirror (each row's pixels in reverse order).
void flip_horizontal(const Tensor& x, Tensor& out);

struct SpeedMetrics {
  double latency_b1_ms_median = 0, latency_b1_ms_p99 = 0, latency_b1_ms_p10 = 0;
  double throughput_img_s = 0;  // inference at `batch`
  int batch = 256;
  nlohmann::json to_json() const;
};

/// The p-quantile (p in [0, 1]) of v by linear interpolation between the closest ranks (numpy.percentile's and
/// torch.quantile's default, Hyndman & Fan type 7): position p (n - 1) in the sorted values, so p = 0.5 is the
/// median (the mean of the two middle values for even n), 0 the minimum, 1 the maximum. v must not be empty.
double percentile(std::vector<double> v, double p);

/// Batch-1 latency (median, p10, p99 of `iters` forwards after warm-up) and throughput at `batch`.
SpeedMetrics measure_speed(nn::Model& model, int iters = 200, int batch = 256, int batches = 20);

/// Copies images [begin, begin+n) of ds into x as normalized NHWC floats (n, C, H, W); labels into y.
void make_batch(const data::Dataset& ds, const data::Normalization& norm, size_t begin, size_t n, Tensor& x,
                std::vector<int32_t>& y);

}  // namespace frugal::train
