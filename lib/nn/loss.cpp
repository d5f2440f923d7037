#include "nn/loss.h"

#include <cmath>
#include <map>

#include "util/check.h"

namespace frugal::nn {

void log_softmax(const Tensor& logits, Tensor& log_probs) {
  FRUGAL_CHECK(logits.ndim() == 2, "log_softmax: expected logits (N, K), got ", dims_str(logits.dims()));
  log_probs.resize(logits.dims());
  thread_local std::map<Dims, dnnl::logsoftmax_forward> cache;
  auto it = cache.find(logits.dims());
  if (it == cache.end()) {
    auto pd = dnnl::logsoftmax_forward::primitive_desc(
        dnnl::logsoftmax_forward::desc(dnnl::prop_kind::forward_training, logits.md(), 1), cpu_engine());
    it = cache.emplace(logits.dims(), dnnl::logsoftmax_forward(pd)).first;
  }
  it->second.execute(cpu_stream(), {{DNNL_ARG_SRC, logits.mem()}, {DNNL_ARG_DST, log_probs.mem()}});
  cpu_stream().wait();
}

float SoftmaxCrossEntropy::forward(const Tensor& logits, const int32_t* labels) {
  FRUGAL_CHECK(logits.ndim() == 2, "loss: expected logits (N, K), got ", dims_str(logits.dims()));
  const int64_t n = logits.dim(0), k = logits.dim(1);
  log_softmax(logits, log_probs_);
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

DistillationLoss::DistillationLoss(float temperature, float weight, float smoothing)
    : T_(temperature), w_(weight), hard_(smoothing) {
  FRUGAL_CHECK(temperature > 0, "distillation: temperature must be > 0, got ", temperature);
  FRUGAL_CHECK(weight >= 0 && weight <= 1, "distillation: weight must be in [0, 1], got ", weight);
}

float DistillationLoss::forward(const Tensor& student, const Tensor& teacher, const int32_t* labels) {
  FRUGAL_CHECK(student.ndim() == 2 && student.dims() == teacher.dims(), "distillation: the student's logits ",
               dims_str(student.dims()), " and the teacher's ", dims_str(teacher.dims()),
               " must both be (N, K) of the same shape (same batch, same classes)");
  const float hard = hard_.forward(student, labels);
  const int64_t n = student.dim(0), k = student.dim(1);
  const float inv_t = 1.f / T_;
  scaled_.resize(student.dims());
  for (int64_t i = 0; i < n * k; ++i) scaled_.data()[i] = student.data()[i] * inv_t;
  log_softmax(scaled_, log_ps_);
  for (int64_t i = 0; i < n * k; ++i) scaled_.data()[i] = teacher.data()[i] * inv_t;
  log_softmax(scaled_, log_pt_);
  double kl = 0;  // sum over the batch of KL(p_t || p_s)
  for (int64_t i = 0; i < n * k; ++i) {
    const double lt = log_pt_.data()[i];
    kl += std::exp(lt) * (lt - double(log_ps_.data()[i]));
  }
  return static_cast<float>((1.0 - w_) * hard + double(w_) * T_ * T_ * kl / double(n));
}

void DistillationLoss::backward(Tensor& diff) const {
  hard_.backward(diff);  // (softmax(s) - target) / N
  const int64_t n = log_ps_.dim(0), k = log_ps_.dim(1);
  const float soft = w_ * T_ / static_cast<float>(n);
  for (int64_t i = 0; i < n * k; ++i)
    diff.data()[i] = (1.f - w_) * diff.data()[i] +
                     soft * (std::exp(log_ps_.data()[i]) - std::exp(log_pt_.data()[i]));
}

}  // namespace frugal::nn
