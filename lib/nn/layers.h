// The layer zoo. Shapes: activations (N, C, H, W) stored NHWC, features (N, C).
#pragma once
#include <cassert>
#include <map>
#include <random>
#include <unordered_map>

#include "nn/layer.h"

namespace frugal::nn {

/// Replaces the forward product of a conv / linear layer by quantized or approximate arithmetic
/// (implemented in lib/approx). Backward stays the exact oneDNN one: the straight-through estimator.
class ApproxForward {
 public:
  virtual ~ApproxForward() = default;
  virtual std::string describe() const = 0;
  /// Operand bit-widths {weights, activations} of the products (for the energy model).
  virtual std::pair<int, int> bits() const = 0;
  /// src: (N, C, H, W) NHWC or (N, IN); weights plain; bias (OC) or nullptr; dst sized by the layer.
  virtual void forward(const Tensor& src, const Tensor& weights, const float* bias, Tensor& dst) = 0;
  /// Backward of the last forward by the arithmetic's own gradient: fills w_grad (plain layout, overwritten)
  /// and diff_src when non-null (already sized). Returns false for the straight-through estimator, in which
  /// case the layer's exact oneDNN backward runs. The layer computes the bias gradient either way.
  virtual bool backward(const Tensor& diff_dst, float* w_grad, Tensor* diff_src) { return false; }
  /// Power of one product relative to the exact 8x8 multiplier (the energy model); 1 for exact arithmetic.
  virtual double relative_power() const { return 1.0; }
};

/// A layer whose forward product can run through an ApproxForward instead of oneDNN: Conv2d and Linear, reached
/// through Layer::approx_host() (no casts to the layer types). The hook is the same for both: forward() and
/// backward() call approx_forward() / approx_backward() first and run oneDNN only when they return false.
class ApproxHost {
 public:
  /// The product as a convolution over NHWC images: a linear layer is a 1x1 conv over a 1 x N image (conv false).
  struct Geometry {
    int in = 0, out = 0, kernel = 1, stride = 1, pad = 0, groups = 1;
    bool conv = false;
    int kernel_w = -1;   ///< -1: kernel (square); the approximate kernels take KH x KW with one stride and pad
    bool square_stride_pad = true;  ///< false: a stride or pad that differs between H and W (not supported there)
  };
  virtual ~ApproxHost() = default;
  virtual Geometry approx_geometry() const = 0;
  /// The weight parameter the products use: (OC, IC/groups, KH, KW) or (OUT, IN).
  virtual Param& approx_weight() = 0;
  void set_approx(std::shared_ptr<ApproxForward> a) { approx_ = std::move(a); }
  /// The attached arithmetic, or null (oneDNN fp32).
  ApproxForward* approx() const { return approx_.get(); }

 protected:
  /// forward()'s hook: dst (sized) = the attached arithmetic's forward, and true; false when none is attached.
  bool approx_forward(const Tensor& src, const Tensor& weights, const Param* bias, Tensor& dst);
  /// backward()'s hook: true when the attached arithmetic wrote the weight gradient, diff_src (sized to src_dims,
  /// when need_diff_src) and the bias gradient (channels innermost); false for the straight-through estimator or
  /// when none is attached, and the layer's oneDNN backward runs.
  bool approx_backward(const Tensor& diff_dst, const Dims& src_dims, bool need_diff_src, Tensor& diff_src, Param& w,
                       Param* bias, int channels);
  std::shared_ptr<ApproxForward> approx_;
};

/// Bias gradient of a layer whose diff_dst has the channel innermost (NHWC activations, (N, OUT) outputs):
/// grad[c] = sum of diff_dst over every other position.
void bias_grad_channels_last(const Tensor& diff_dst, int channels, Tensor& grad);

/// kernel / stride / pad are the vertical (H) values; kernel_w / stride_w / pad_w the horizontal ones, -1 for "the
/// same as H" (a square conv). Non-square convs (e.g. the k x 1 and 1 x k factors of a low-rank split) run on oneDNN
/// in fp32 and int8; the approximate arithmetic takes square strides and pads only.
struct Conv2dOptions {
  int in = 0, out = 0, kernel = 3, stride = 1, pad = 1, groups = 1;
  bool bias = true;
  int kernel_w = -1, stride_w = -1, pad_w = -1;  // after bias: {in, out, k, s, p, g, bias} initializers stay valid
  int kh() const { return kernel; }
  int kw() const { return kernel_w >= 0 ? kernel_w : kernel; }
  int sh() const { return stride; }
  int sw() const { return stride_w >= 0 ? stride_w : stride; }
  int ph() const { return pad; }
  int pw() const { return pad_w >= 0 ? pad_w : pad; }
  bool square() const { return kw() == kh() && sw() == sh() && pw() == ph(); }
};

/// 2-D convolution (cross-correlation). weights (OC, IC/G, KH, KW), bias (OC).
class Conv2d : public Layer, public ApproxHost {
 public:
  explicit Conv2d(const Conv2dOptions& o, std::mt19937_64& rng);
  ~Conv2d() override;
  std::string name() const override;
  Dims dst_dims(const Dims& src) const override;
  void forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) override;
  void backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) override;
  std::vector<Param*> params() override;
  int64_t macs(const Dims& src) const override;
  void set_prefix(const std::string& p) override;
  const Conv2dOptions& options() const { return o_; }
  ApproxHost* approx_host() override { return this; }
  Geometry approx_geometry() const override {
    return {o_.in, o_.out, o_.kernel, o_.stride, o_.pad, o_.groups, true, o_.kw(), o_.sw() == o_.sh() && o_.pw() == o_.ph()};
  }
  Param& approx_weight() override { return w_; }
  Param& weight() { return w_; }

 private:
  struct Prims;
  Prims& prims(const Dims& src);
  Conv2dOptions o_;
  Param w_, b_;
  std::map<Dims, std::unique_ptr<Prims>> cache_;
  const Tensor* src_ = nullptr;
};

struct LinearOptions {
  int in = 0, out = 0;
  bool bias = true;
};

/// Fully connected layer. src (N, IN), weights (OUT, IN), bias (OUT), dst (N, OUT).
class Linear : public Layer, public ApproxHost {
 public:
  Linear(const LinearOptions& o, std::mt19937_64& rng);
  ~Linear() override;
  std::string name() const override;
  Dims dst_dims(const Dims& src) const override;
  void forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) override;
  void backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) override;
  std::vector<Param*> params() override;
  int64_t macs(const Dims& src) const override;
  void set_prefix(const std::string& p) override;
  const LinearOptions& options() const { return o_; }
  ApproxHost* approx_host() override { return this; }
  Geometry approx_geometry() const override { return {o_.in, o_.out, 1, 1, 0, 1, false}; }
  Param& approx_weight() override { return w_; }
  Param& weight() { return w_; }

 private:
  struct Prims;
  Prims& prims(const Dims& src);
  LinearOptions o_;
  Param w_, b_;
  std::map<Dims, std::unique_ptr<Prims>> cache_;
  const Tensor* src_ = nullptr;
};

/// Batch normalization over N (and H, W). scale/shift (C); running mean/var (C), momentum as PyTorch's.
class BatchNorm : public Layer {
 public:
  BatchNorm(int channels, float momentum = 0.1f, float eps = 1e-5f);
  ~BatchNorm() override;
  std::string name() const override;
  Dims dst_dims(const Dims& src) const override { return src; }
  void forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) override;
  void backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) override;
  std::vector<Param*> params() override;
  std::vector<Buffer> buffers() override;
  void set_prefix(const std::string& p) override;
  /// Applies a ReLU to its output in the same pass, forward and backward (oneDNN's fuse_norm_relu: the backward
  /// masks diff_dst with a bit workspace saved by the forward). The model builder turns this on for every
  /// batch-norm directly followed by a ReLU and makes that ReLU a pass-through (ReLU::set_fused).
  void set_fused_relu(bool on);
  bool fused_relu() const { return fused_relu_; }
  float eps() const { return eps_; }

 private:
  struct Prims;
  Prims& prims(const Dims& src, bool train);
  bool fused_relu_ = false;
  int c_;
  float momentum_, eps_;
  Param scale_, shift_;
  Tensor running_mean_, running_var_;
  Tensor mean_, var_;  // (C) batch statistics of the last training forward
  std::map<std::pair<Dims, bool>, std::unique_ptr<Prims>> cache_;
  const Tensor* src_ = nullptr;
};

class ReLU : public Layer {
 public:
  ReLU();
  ~ReLU() override;
  std::string name() const override { return fused_ ? "relu(fused)" : "relu"; }
  Dims dst_dims(const Dims& src) const override { return src; }
  void forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) override;
  void backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) override;
  /// The preceding layer already applies this ReLU (BatchNorm::set_fused_relu): forward and backward pass
  /// their tensors through, sharing storage. The layer stays in the model so parameter names do not move.
  void set_fused(bool on) { fused_ = on; }
  bool fused() const { return fused_; }
  /// Backward from the forward's output instead of its input (dst > 0 exactly where src > 0), for a ReLU
  /// applied as a post-op of another primitive (Residual's add).
  void backward_from_dst(const Tensor& dst, const Tensor& diff_dst, Tensor& diff_src);

 private:
  struct Prims;
  Prims& prims(const Dims& src);
  std::map<Dims, std::unique_ptr<Prims>> cache_;
  const Tensor* src_ = nullptr;
  bool fused_ = false;
};

enum class PoolKind { max, avg };

/// Max or average pooling; kernel 0 means global (kernel = H x W).
class Pool : public Layer {
 public:
  Pool(PoolKind kind, int kernel, int stride, int pad = 0);
  ~Pool() override;
  std::string name() const override;
  Dims dst_dims(const Dims& src) const override;
  void forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) override;
  void backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) override;

 private:
  struct Prims;
  Prims& prims(const Dims& src, bool train);
  PoolKind kind_;
  int kernel_, stride_, pad_;
  std::map<std::pair<Dims, bool>, std::unique_ptr<Prims>> cache_;
  Dims src_dims_;
};

/// Inverted dropout: zeroes each element with probability p, scales the rest by 1/(1-p). Mask from the
/// per-step seed, so a resumed run draws the same masks.
class Dropout : public Layer {
 public:
  explicit Dropout(float p) : p_(p) {}
  std::string name() const override;
  Dims dst_dims(const Dims& src) const override { return src; }
  void forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) override;
  void backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) override;

 private:
  float p_;
  std::vector<uint8_t> mask_;
};

/// (N, C, H, W) -> (N, C*H*W). The feature order is the storage order (H, W, C).
class Flatten : public Layer {
 public:
  std::string name() const override { return "flatten"; }
  Dims dst_dims(const Dims& src) const override;
  void forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) override;
  void backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) override;

 private:
  Dims src_dims_;
};

}  // namespace frugal::nn
