// A model: a Sequential built from a JSON spec, or from a named preset with width multiplier and depth.
//
// Spec: {"input": [C, H, W], "classes": K, "layers": [LAYER, ...]} where LAYER is one of
//   {"type": "conv", "out": 32, "k": 3, "s": 1, "p": 1, "groups": 1, "bias": true}
//   {"type": "linear", "out": 128, "bias": true}     ("out": "classes" means K)
//   {"type": "bn"}  {"type": "relu"}  {"type": "flatten"}  {"type": "dropout", "p": 0.5}
//   {"type": "maxpool" | "avgpool", "k": 2, "s": 2, "p": 0}   {"type": "gap"} (global average pool)
//   {"type": "residual", "main": [LAYER...], "shortcut": [LAYER...]}   (relu after the sum)
//   {"type": "shortcut_a", "out": 32, "s": 2}
#pragma once
#include <nlohmann/json.hpp>

#include "nn/containers.h"
#include "nn/loss.h"

namespace frugal::nn {

/// Names accepted by preset_spec().
const std::vector<std::string>& preset_names();

/// Builds the spec of a named preset. width multiplies channel / unit counts; depth < 0 means the
/// preset's default (mlp: hidden layers (2); lenet5 / lenet5-caffe: conv stages (2); cnn: convs per stage (2);
/// resnet: 6n+2 layers (20); vgg: conv layers (8)). "resnet20", "resnet32", "resnet56" are resnet with that depth.
nlohmann::json preset_spec(const std::string& name, double width, int depth, const Dims& input_chw, int classes);

class Model {
 public:
  Model(const nlohmann::json& spec, uint64_t seed);
  const nlohmann::json& spec() const { return spec_; }
  const Dims& input_chw() const { return input_chw_; }
  int classes() const { return classes_; }
  /// x: (N, C, H, W) NHWC; returns logits (N, K) (storage owned by the model).
  const Tensor& forward(const Tensor& x, const ForwardContext& ctx);
  void backward(const Tensor& diff_logits);
  std::vector<Param*> params() { return net_.params(); }
  std::vector<Buffer> buffers() { return net_.buffers(); }
  int64_t num_params();
  int64_t macs_per_image();
  /// One line per leaf layer: name, output shape, params.
  std::string summary();
  Sequential& net() { return net_; }
  /// Inference forwards (ctx.train false) run `net` instead of the layers (an int8 deployment of this model,
  /// modelcomp/deploy_net.h); training forwards are refused while it is set. nullptr restores the layers.
  void set_inference_net(std::shared_ptr<Layer> net) { inference_net_ = std::move(net); }
  Layer* inference_net() const { return inference_net_.get(); }

 private:
  nlohmann::json spec_;
  Dims input_chw_;
  int classes_ = 0;
  Sequential net_;
  std::shared_ptr<Layer> inference_net_;
  Tensor logits_, diff_in_;
};

}  // namespace frugal::nn
