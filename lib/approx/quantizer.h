// Uniform quantization (bit-width 2-16; symmetric or affine; per-tensor or per-channel), calibration
// by min/max or percentile over a few batches, and fake quantization with the clipped straight-through
// estimator for quantization-aware training (Jacob et al., CVPR 2018, §2-3; Bengio et al. 2013 for the STE;
// PyTorch FakeQuantize conventions: x_q = clamp(round(x/scale) + zp, qmin, qmax), x = (x_q - zp) * scale).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace frugal::approx {

enum class Calibration { minmax, percentile };

struct QuantConfig {
  int bits = 8;               // 2..16
  bool symmetric = true;      // symmetric: zero point 0; signed range is restricted to +-(2^(bits-1)-1)
  bool is_signed = true;      // integer range [-2^(b-1), 2^(b-1)-1] (affine) or [0, 2^b-1]
  bool per_channel = false;
  Calibration calibration = Calibration::minmax;
  double percentile = 99.99;  // for Calibration::percentile: clip to [p(100-P), p(P)] of each batch (mean over batches)
};

/// Element i belongs to channel (i / inner) % channels: weights (OC, IC, KH, KW) have channels = OC,
/// inner = IC*KH*KW; NHWC activations have channels = C, inner = 1. Per-tensor: one channel.
struct QuantParams {
  int bits = 8;
  int32_t qmin = -127, qmax = 127;
  std::vector<float> scale;         // (channels)
  std::vector<int32_t> zero_point;  // (channels)
  int64_t channels = 1, inner = 1;
  size_t channel_of(size_t i) const { return channels == 1 ? 0 : size_t((int64_t(i) / inner) % channels); }
};

/// Parameters from per-channel ranges lo[c] <= hi[c] (channels values each; 1 for per-tensor).
/// The range is widened to include 0 so that 0 is exactly representable (padding, ReLU zeros).
QuantParams make_quant_params(const QuantConfig& cfg, const float* lo, const float* hi, int64_t channels,
                              int64_t inner);

/// Accumulates ranges over batches; params() after at least one observe().
class Calibrator {
 public:
  /// channels/inner describe the layout as in QuantParams (ignored unless cfg.per_channel).
  Calibrator(const QuantConfig& cfg, int64_t channels, int64_t inner);
  void observe(const float* x, size_t n);  // n: a multiple of channels*inner when per-channel
  QuantParams params() const;
  int batches() const { return batches_; }

 private:
  QuantConfig cfg_;
  int64_t channels_, inner_;
  std::vector<double> lo_, hi_;
  int batches_ = 0;
};

void quantize(const float* src, size_t n, const QuantParams& p, int32_t* dst);    // src (n) -> dst (n)
void dequantize(const int32_t* src, size_t n, const QuantParams& p, float* dst);  // src (n) -> dst (n)

/// dst = dequantize(quantize(src)); mask[i] = 1 where the value was not clipped (qmin <= round(x/s)+zp
/// <= qmax), else 0. mask may be nullptr. src and dst may alias.
void fake_quant_forward(const float* src, size_t n, const QuantParams& p, float* dst, uint8_t* mask);
/// Clipped straight-through estimator: diff_src = diff_dst * mask.
void fake_quant_backward(const float* diff_dst, const uint8_t* mask, size_t n, float* diff_src);

}  // namespace frugal::approx
