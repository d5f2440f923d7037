// Fake quantization ("quantize-dequantize") conv2d and linear for the exact multiplier, at any width in [2,16]:
// the path for 9-16 bits, which the 8x8 integer kernels (kernels.h) do not reach.
//
// Forward: weights quantized per output channel (or per tensor) to weight_bits and activations per tensor to
// act_bits, coded exactly as ApproxConv2d codes them for the same multiplier (weight_quant_params /
// act_quant_params: exact -> affine unsigned, exact:signed -> symmetric signed weights, act_symmetric for
// activations), dequantized back to fp32 and convolved by oneDNN's fp32 convolution. With exact products this is
// the integer layer's result up to fp32 rounding: sum s_a (A - z_a) s_w (B - z_w) = conv(x_hat, w_hat).
// Backward: the clipped straight-through estimator (quantizer.h; Jacob et al. 2018): the gradients of the fp32
// convolution of the dequantized operands, passed through the rounding, and for inputs zeroed where they were
// clipped to the code range of a calibrated activation range (set_act_range):
//   diff_src = conv_backward_data(w_hat, diff_dst) * mask_a,   w_grad = conv_backward_weights(x_hat, diff_dst)
// Weights, and activations quantized over their own batch's range, pass unmasked: their range is their own min/max,
// so only the rounding of an affine zero point can put an extreme value past the code range, by at most half a
// step; that is rounding, and masking it would freeze each channel's extreme weights.
// The bias gradient is the caller's (it does not depend on the quantization).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "approx/kernels.h"

namespace frugal::approx {

class FakeQuantConv2d {
 public:
  /// requires make_multiplier(spec.multiplier)->is_exact(), weight_bits and act_bits in [2,16]; spec.mode is
  /// ignored. Throws frugal::Error otherwise or for a bad shape.
  FakeQuantConv2d(const ApproxSpec& spec, int ic, int oc, int kh, int kw, int stride, int pad, int groups);
  /// m: the multiplier (shared by a model's layers; it replaces spec.multiplier).
  FakeQuantConv2d(const ApproxSpec& spec, const Multiplier& m, int ic, int oc, int kh, int kw, int stride, int pad,
                  int groups);
  ~FakeQuantConv2d();
  FakeQuantConv2d(const FakeQuantConv2d&) = delete;
  FakeQuantConv2d& operator=(const FakeQuantConv2d&) = delete;

  /// w: (OC, IC/groups, KH, KW); bias: (OC) or nullptr. Quantizes and dequantizes the weights.
  void set_weights(const float* w, const float* bias);
  /// Calibrated activation range; without it each forward() uses its batch's min/max (with 0).
  void set_act_range(float lo, float hi);
  /// src (N,H,W,IC) NHWC -> dst (N,OH,OW,OC) NHWC: conv(fake_quant(src), fake_quant(w)) + bias.
  void forward(const float* src, int n, int h, int w, float* dst);
  /// Clipped STE backward of the last forward (same n, h, w). diff_dst (N,OH,OW,OC); diff_src (N,H,W,IC) or
  /// nullptr; w_grad (OC, IC/groups, KH, KW). Both overwritten.
  void backward(const float* diff_dst, int n, int h, int w, float* diff_src, float* w_grad);

  const QuantParams& weight_params() const;
  const std::vector<float>& weights_dequantized() const;  // (OC, IC/groups, KH, KW)
  const std::vector<float>& src_dequantized() const;      // the last forward's (N,H,W,IC)
  QuantParams act_params(const float* src, size_t count) const;  // set range, or this batch's min/max
  int out_h(int h) const;
  int out_w(int w) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

/// dst (N, OUT) = fake_quant(src (N, IN)) x fake_quant(weights (OUT, IN))^T + bias: a 1x1 FakeQuantConv2d on a
/// 1 x N image, as ApproxLinear.
class FakeQuantLinear {
 public:
  FakeQuantLinear(const ApproxSpec& spec, int in, int out);
  void set_weights(const float* w /*(OUT, IN)*/, const float* bias /*(OUT) or nullptr*/) { conv_.set_weights(w, bias); }
  void set_act_range(float lo, float hi) { conv_.set_act_range(lo, hi); }
  void forward(const float* src /*(N, IN)*/, int n, float* dst /*(N, OUT)*/) { conv_.forward(src, 1, 1, n, dst); }
  /// diff_dst (N, OUT); diff_src (N, IN) or nullptr; w_grad (OUT, IN).
  void backward(const float* diff_dst, int n, float* diff_src, float* w_grad) {
    conv_.backward(diff_dst, 1, 1, n, diff_src, w_grad);
  }
  FakeQuantConv2d& conv() { return conv_; }

 private:
  FakeQuantConv2d conv_;
};

}  // namespace frugal::approx
