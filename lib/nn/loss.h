#pragma once
#include "tensor/tensor.h"

namespace frugal::nn {

/// Softmax cross-entropy with label smoothing (Szegedy et al., CVPR 2016): target = (1-eps) one-hot + eps/K.
/// Log-probabilities come from oneDNN's logsoftmax primitive.
class SoftmaxCrossEntropy {
 public:
  explicit SoftmaxCrossEntropy(float smoothing = 0.f) : smoothing_(smoothing) {}
  /// logits (N, K); labels (N) in [0, K). Returns the mean loss over the batch.
  float forward(const Tensor& logits, const int32_t* labels);
  /// diff_logits (N, K) = (softmax - target) / N for the last forward.
  void backward(Tensor& diff_logits) const;
  const Tensor& log_probs() const { return log_probs_; }

 private:
  float smoothing_;
  Tensor log_probs_;
  std::vector<int32_t> labels_;
};

/// log_probs (N, K) = log softmax of logits (N, K) along K, by oneDNN's logsoftmax primitive.
void log_softmax(const Tensor& logits, Tensor& log_probs);

/// Knowledge distillation (Hinton, Vinyals & Dean, 2015): the student's logits s learn the labels and the
/// teacher's softened outputs t together,
///   loss = (1 - w) CE(s, labels) + w T^2 KL(softmax(t / T) || softmax(s / T)),
/// averaged over the batch (T: temperature > 0; w: weight in [0, 1]; CE with the label smoothing given). The T^2
/// keeps the soft part's gradient, w T (softmax(s / T) - softmax(t / T)) / N, on the scale of the hard part's.
class DistillationLoss {
 public:
  DistillationLoss(float temperature, float weight, float smoothing = 0.f);
  /// student, teacher (N, K); labels (N) in [0, K). Returns the mean loss.
  float forward(const Tensor& student, const Tensor& teacher, const int32_t* labels);
  /// diff_student (N, K) for the last forward.
  void backward(Tensor& diff_student) const;

 private:
  float T_, w_;
  SoftmaxCrossEntropy hard_;
  Tensor scaled_, log_ps_, log_pt_;  // logits / T, and the log-softmax of the student's and the teacher's
};

}  // namespace frugal::nn
