#include "nn/loss.h"

#include <cmath>
#include <map>

#include "util/check.h"

namespace frugal::nn {

float SoftmaxCrossEntropy::forward(const Tensor& logits, const int32_t* labels) {
  FRUGAL_CHECK(logits.ndim() == 2, "loss: expected logits (N, K), got ", dims_str(logits.dims()));
  const int64_t n = logits.dim(0), k = logits.dim(1);
  log_probs_.resize(logits.dims());
  thread_local std::map<Dims, dnnl::logsoftmax_forward> cache;
  auto it = cache.find(logits.dims());
  if (it == cache.end()) {
    auto pd = dnnl::logsoftmax_forward::primitive_desc(
        dnnl::logsoftmax_forward::desc(dnnl::prop_kind::forward_training, logits.md(), 1), cpu_engine());
    it = cache.emplace(logits.dims(), dnnl::logsoftmax_forward(pd)).first;
  }
  it->second.execute(cpu_stream(), {{DNNL_ARG_SRC, logits.mem()}, {DNNL_ARG_DST, log_probs_.mem()}});
  cpu_stream().wait();
  labels_.assign(labels, labels + n);
  double total = 0;
  const float off = smoothing_ / static_cast<float>(k);
  for (int64_t i = 0; i < n; ++i) {
    FRUGAL_CHECK(labels[i] >= 0 && labels[i] < k, "loss: label ", labels[i], " at batch row ", i,
                 " is outside [0, ", k, ")");
    const float* lp = log_probs_.data() + i * k;
    double row = -(1.0 - smoothing_) * lp[labels[i]];
    if (smoothing_ > 0)
      for (int64_t j = 0; j < k; ++j) row -= off * lp[j];
    total += row;
  }
  return static_cast<float>(total / static_cast<double>(n));
}

void SoftmaxCrossEntropy::backward(Tensor& diff) const {
  const int64_t n = log_probs_.dim(0), k = log_probs_.dim(1);
  diff.resize(log_probs_.dims());
  const float off = smoothing_ / static_cast<float>(k), inv_n = 1.f / static_cast<float>(n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      float target = off + (j == labels_[static_cast<size_t>(i)] ? 1.f - smoothing_ : 0.f);
      diff.data()[i * k + j] = (std::exp(log_probs_.data()[i * k + j]) - target) * inv_n;
    }
}

}  // namespace frugal::nn
