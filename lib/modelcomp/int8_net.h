// int8 deployment of a trained model on oneDNN's int8 convolution and inner product (VNNI's vpdpbusd where the
// CPU has it; the kernels oneDNN dispatched are reported by Int8Net::implementations()).
//
//   1. fold_batchnorm: every batch norm directly after a conv is folded into that conv (per-output-channel weight
//      scale gamma / sqrt(var + eps) and a bias), giving a model without those batch norms.
//   2. quantize_int8: activation ranges calibrated by fp32 forwards of the folded model on calibration images
//      (the maximum at every activation the int8 net materializes); weights symmetric per output channel.
//   3. Int8Net runs the folded model with u8 activations after ReLUs, s8 elsewhere (the input image), s8
//      weights, the bias and the ReLU fused into each conv / inner product, max / average pooling on the codes,
//      and a residual block's add + ReLU fused into its last conv as a sum post-op; logits come out f32.
// Supported layers: conv (+bn) (+relu), linear (+relu), max / avg pool, gap, flatten, dropout (identity),
// residual blocks whose main path ends in a conv and whose shortcut is the identity or option A.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "modelcomp/packed.h"
#include "nn/model.h"
#include "nn/model_io.h"

namespace frugal::modelcomp {

/// A copy of `m` (spec and tensors) with every batch norm that directly follows a conv folded into it (the conv
/// gains a bias); the folded model computes the same function in inference mode.
std::unique_ptr<nn::Model> fold_batchnorm(nn::Model& m);

/// Calibrates the activation scales of the folded model `folded` on `calib` (normalized NHWC batches, at least
/// one) and quantizes every conv / linear weight to s8 per output channel: one int8 record per weight tensor, in
/// the model's layer order.
std::vector<PackedTensor> quantize_int8(nn::Model& folded, const std::vector<Tensor>& calib);

struct Int8Layer;

/// The int8 inference net of a folded model: forward only (takes normalized f32 images, gives f32 logits).
/// Primitives are created once per input shape. Install it with Model::set_inference_net.
class Int8Net : public nn::Layer {
 public:
  /// int8: the records of every conv / linear weight of `folded` (by name); path names the file in errors.
  Int8Net(nn::Model& folded, const std::vector<std::pair<std::string, Int8Weights>>& int8, const std::string& path);
  ~Int8Net() override;
  std::string name() const override { return "int8-net"; }
  Dims dst_dims(const Dims& src) const override;
  void forward(const Tensor& src, Tensor& dst, const nn::ForwardContext& ctx) override;
  void backward(const Tensor&, Tensor&, bool) override;
  /// oneDNN's implementations of the primitives of the last input shape run, each once with its count
  /// (e.g. "jit_int8:avx512_core_vnni x3").
  std::vector<std::string> implementations() const;
  struct Plan;  ///< the primitives and buffers of one input shape

 private:
  Plan& plan(const Dims& src);
  std::vector<std::unique_ptr<Int8Layer>> ops_;
  float input_scale_ = 0.f;
  int classes_ = 0;
  std::map<Dims, std::unique_ptr<Plan>> plans_;
  Plan* last_ = nullptr;
};

/// Reads any model file (frugal's model.bin, a checkpoint's model, a packed model); a packed model with int8
/// records comes back with its Int8Net installed (Model::inference_net).
nn::LoadedModel load_model_file(const std::string& path);

}  // namespace frugal::modelcomp
