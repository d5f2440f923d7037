// Layer interface: a differentiable map dst = f(src; params) built on oneDNN primitives that are created
// once per input shape and reused every step.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace frugal::nn {

/// A trainable tensor registered by name ("conv1.weight"). `version` increases whenever `value` changes
/// (optimizer step, load), so layers can cache reordered copies of the weights.
struct Param {
  std::string name;
  Tensor value;
  Tensor grad;   // same dims as value
  bool decay = true;
  uint64_t version = 0;
};

/// A non-trainable tensor saved with the model (batch-norm running statistics).
struct Buffer {
  std::string name;
  Tensor* value;
};

struct ForwardContext {
  bool train = false;
  uint64_t seed = 0;  // per-step seed for stochastic layers (dropout)
  /// >= 0: BatchNorm running statistics use this momentum instead of their own (1/k on the k-th batch gives
  /// the cumulative average of SWA's statistics re-estimation).
  float bn_momentum = -1.f;
};

class ApproxHost;  // nn/layers.h

class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string name() const = 0;                    // "conv2d(3->16,k3,s1,p1)"
  virtual Dims dst_dims(const Dims& src) const = 0;        // pure
  /// requires: src dims accepted by dst_dims; src stays alive and unchanged until backward().
  virtual void forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) = 0;
  /// requires: forward(train=true) on the same src just before. Writes parameter gradients (overwrites,
  /// not accumulates) and, when need_diff_src, the gradient w.r.t. src.
  virtual void backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) = 0;
  virtual std::vector<Param*> params() { return {}; }
  virtual std::vector<Buffer> buffers() { return {}; }
  /// Multiply-accumulates of one forward pass for the given src dims (batch included).
  virtual int64_t macs(const Dims& src) const { return 0; }
  /// Gives registered names to params/buffers (called by the model builder with a prefix like "3.").
  virtual void set_prefix(const std::string& prefix) { prefix_ = prefix; }
  /// The hook that runs this layer's products on approximate arithmetic (ApproxHost, nn/layers.h): conv and
  /// linear layers return themselves, every other layer null.
  virtual ApproxHost* approx_host() { return nullptr; }

 protected:
  std::string prefix_;
};

using LayerPtr = std::unique_ptr<Layer>;

}  // namespace frugal::nn
