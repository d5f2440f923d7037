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

}  // namespace frugal::nn
