// Integer conv2d / linear in which every product goes through an approximate multiplier.
//
// Quantization: the multiplier's domain decides the operands. Unsigned multiplier: activations and
// weights affine unsigned ([0, 2^bits-1], zero points z_a, z_w[oc]). Signed multiplier: weights symmetric
// signed (z_w = 0); activations symmetric signed (z_a = 0, the default) or affine signed (act_symmetric
// false). With K products per output,
//   dst = s_a s_w[oc] ( sum_k M(a_k, w_k) - z_w sum_k a_k - z_a sum_k w_k + K z_a z_w ) + bias[oc]
// where only the a*w products go through the multiplier M and the zero-point terms are exact (the TFApprox
// scheme, Vaverka et al., DATE 2020). Padding reads the activation code of real 0 (z_a), which also goes
// through M. Operands are at most 8 bits (the 256x256 domain); weight_bits/act_bits in [2,8]. The exact
// multiplier also takes 9-16 bits, as fake quantization in fp32 (FakeQuantConv2d, fake_quant.h); bits_error()
// says which widths a multiplier takes and runs_as_fake_quant() which path a spec needs.
//
// Modes (ApproxSpec::mode):
//   lut        bit-exact for any multiplier: 256x256 table, one row per weight value held in registers,
//              32 products per 4 vpermt2w (AVX-512BW) over im2col tiles; TBB over pixel tiles.
//   functional bit-exact, no table: the multiplier's Decomposition (multiplier.h). Its separable terms
//              (exact/trunc/drum: 1, bam:H,V: 1+(V-H) rows, or one per bit of a where that takes fewer int8
//              channels, as on the pre-VNNI layout; mitchell: the exact product) run as one int8 oneDNN
//              convolution over T x the input channels (onednn_terms.h); mitchell's min() correction runs on
//              the term engine: a direct NHWC conv with 16-bit multiplies (vpmullw / vpdpwssd or vpmaddwd).
//   lowrank:R  approximate emulation of any multiplier: exact product + R rank-1 corrections of the error
//              table E = T - a*b from its truncated SVD (E ~ sum_r u_r(a) v_r(b)): the exact product on one
//              int8 oneDNN conv, u and v rounded to int8 with a common scale on a second one. Not bit-exact
//              (see lowrank_table_mae and the bench's emulation error).
// CPU paths (runtime dispatch: util::kernel_isa(), capped by FRUGAL_ISA, and the CPU's feature bits; the SIMD code
// is compiled with target attributes, so a baseline x86-64 build has every path; kernel_path() names the one taken):
//   lut        avx512-vbmi (vpermt2b byte planes) > avx512 (vpermt2w) > avx2-gather (vpgatherdq over tables of 4
//              output channels' products, 16 per gather; vpgatherdd over the uint16 table where ocg % 4 != 0), or on
//              AMD avx2-loads (the same with scalar loads instead of the microcoded vpgatherdq) > scalar
//   oneDNN     onednn-int8-vnni (kernel ISA avx512 and oneDNN with VNNI; where oneDNN runs AVX2-VNNI, u8 sources
//              on frugal's own AVX-VNNI conv: int8-vnni-avx2) > onednn-int8-split (pre-VNNI int8:
//              the source as u8 parts <= 128, still exact; see onednn_terms.h; where it saves multiplies, as
//              for bam's bits and lowrank's exact product, that layout runs on frugal's own AVX2 conv with int16
//              sums: int8-s16-avx2) > none on the scalar path. On oneDNN's plain AVX2 int8 kernels a functional multiplier whose every term takes two
//              parts (drum, trunc, exact, mitchell's exact product) skips oneDNN and runs all its terms on the term
//              engine, which does half the multiplies there (term_engine.cpp init_functional): path "terms-avx2"
//   terms      avx512-vnni (vpdpwssd) > avx2 (vpmaddwd) > scalar
// Files: kernels.cpp (this front), lut_engine.cpp, term_engine.cpp, lowrank.cpp, kernel_quant.cpp (conv_impl.h).
// Every path gives the same integers for lut and functional; lowrank's oneDNN paths give the same result as
// each other, and its portable twin (the term engine alone) rounds u and v to int16 instead of int8.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "approx/multiplier.h"
#include "approx/quantizer.h"

namespace frugal::approx {

struct ApproxSpec {
  std::string multiplier = "exact";  // make_multiplier spec
  int weight_bits = 8, act_bits = 8;
  bool per_channel = true;   // weight scales per output channel
  std::string mode = "lut";  // lut | functional | lowrank:R
  /// Activations of signed multipliers: zero point 0 and range [-max|x|, max|x|] (true), or affine over
  /// [min, max] (false). With an approximate multiplier, affine codes of post-ReLU inputs put 0.0 at code
  /// -128, where the multiplier's error is largest; symmetric codes keep 0.0 at code 0 (exact products).
  bool act_symmetric = true;
};

/// Why spec's bit-widths are refused with multiplier m, or "" when m takes them: every width is in [2,16];
/// approximate multipliers have 8-bit operands, so only [2,8]; exact also takes 9-16 (runs_as_fake_quant).
std::string bits_error(const ApproxSpec& spec, const Multiplier& m);
/// True when layers of spec run as fake quantization (FakeQuantConv2d) instead of the integer kernels: the
/// multiplier is exact and the weight or activation width is above 8.
bool runs_as_fake_quant(const ApproxSpec& spec, const Multiplier& m);
/// How approximate layers code their operands, for a multiplier of the given signedness (the one place the
/// integer kernels and fake quantization take it from). Weights w (OC, per): unsigned -> affine unsigned,
/// signed -> symmetric signed; per output channel when spec.per_channel, else one scale.
QuantParams weight_quant_params(const ApproxSpec& spec, bool is_signed, const float* w, int oc, size_t per);
/// Activations over [lo, hi] (per tensor): unsigned -> affine unsigned; signed -> symmetric when
/// spec.act_symmetric, else affine signed.
QuantParams act_quant_params(const ApproxSpec& spec, bool is_signed, float lo, float hi);
/// [min(0, min x), max(0, max x)] over x (n values): a batch's activation range. NaNs are skipped (never
/// smaller or larger than the running bound); parallel blocks, 16 SIMD lanes.
std::pair<float, float> range_with_zero(const float* x, size_t n);
/// Its scalar twin, one value after the other (tests).
std::pair<float, float> range_with_zero_ref(const float* x, size_t n);

/// Naive reference: acc[n][oh][ow][oc] = sum over (icg, kh, kw) of m.mul(a, w) with a read from src codes
/// (N,H,W,IC) or pad_code outside, w from w_codes (OC, IC/groups, KH, KW). Codes as in code().
void conv2d_reference(const Multiplier& m, const uint8_t* src, int n, int h, int w, int ic, const uint8_t* w_codes,
                      int oc, int kh, int kw, int stride, int pad, int groups, uint8_t pad_code, int32_t* acc);

class ApproxConv2d {
 public:
  /// Built once per (shape, spec). Throws frugal::Error for a bad spec or shape. This form builds its own
  /// multiplier from spec.multiplier; layers of one model share one instead (the form below).
  ApproxConv2d(const ApproxSpec& spec, int ic, int oc, int kh, int kw, int stride, int pad, int groups);
  /// m: the multiplier (make_multiplier, built once and shared by every layer; it replaces spec.multiplier).
  ApproxConv2d(const ApproxSpec& spec, std::shared_ptr<const Multiplier> m, int ic, int oc, int kh, int kw,
               int stride, int pad, int groups);
  ~ApproxConv2d();
  ApproxConv2d(const ApproxConv2d&) = delete;
  ApproxConv2d& operator=(const ApproxConv2d&) = delete;

  /// w: (OC, IC/groups, KH, KW); bias: (OC) or nullptr. Quantizes and packs.
  void set_weights(const float* w, const float* bias);
  /// Calibrated activation range; without it each forward() uses its batch's min/max.
  void set_act_range(float lo, float hi);
  /// src (N,H,W,IC) NHWC float -> dst (N,OH,OW,OC) NHWC float, dequantized, bias added.
  void forward(const float* src, int n, int h, int w, float* dst);

  // Integer level (tests, table-gradient backward):
  /// acc (N,OH,OW,OC) = sum_k M(a_k, w_k) over quantized codes. lut and functional modes only.
  void products(const uint8_t* src_codes, int n, int h, int w, uint8_t pad_code, int32_t* acc);
  /// Same in float; lowrank mode gives its approximation here (other modes: the exact integers).
  void products_float(const uint8_t* src_codes, int n, int h, int w, uint8_t pad_code, float* acc);
  /// Backward by the multiplier's table gradient (ApproxTrain-style) for the last forward() batch, instead of the
  /// straight-through estimator. With A, B the decoded activation and weight operands, x = s_a (A - z_a),
  /// w = s_w (B - z_w) and dM/dA, dM/dB from table_gradient() (finite differences of the table):
  ///   diff_src[x_k] += diff_dst * s_w (dM/dA(A_k, B_k) - z_w)     (exact multiplier: s_w (B - z_w) = w)
  ///   w_grad[w_k]   += diff_dst * s_a (dM/dB(A_k, B_k) - z_a)     (exact multiplier: s_a (A - z_a) = x)
  /// summed over every product the weight or input took part in (padding included: it reads the code of 0).
  /// diff_dst (N,OH,OW,OC); diff_src (N,H,W,IC) or nullptr; w_grad (OC, IC/groups, KH, KW). Both overwritten.
  void backward_table(const float* diff_dst, int n, int h, int w, float* diff_src, float* w_grad);
  const std::vector<uint8_t>& weight_codes() const;  // (OC, IC/groups, KH, KW)
  const QuantParams& weight_params() const;
  QuantParams act_params(const float* src, size_t count) const;  // set range, or this batch's min/max
  const Multiplier& multiplier() const;
  /// The kernels forward() takes on this CPU now, e.g. "lut-avx512-vbmi", "onednn-int8-split+terms-avx2".
  std::string kernel_path() const;
  int out_h(int h) const;
  int out_w(int w) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

/// dst (N, OUT) = src (N, IN) x weights (OUT, IN)^T through the multiplier (a 1x1 conv on a 1x1 image).
class ApproxLinear {
 public:
  ApproxLinear(const ApproxSpec& spec, int in, int out);
  ApproxLinear(const ApproxSpec& spec, std::shared_ptr<const Multiplier> m, int in, int out);
  void set_weights(const float* w /*(OUT, IN)*/, const float* bias /*(OUT) or nullptr*/) { conv_.set_weights(w, bias); }
  void set_act_range(float lo, float hi) { conv_.set_act_range(lo, hi); }
  void forward(const float* src /*(N, IN)*/, int n, float* dst /*(N, OUT)*/) { conv_.forward(src, 1, 1, n, dst); }
  /// Table-gradient backward of the last forward (see ApproxConv2d::backward_table); diff_dst (N, OUT).
  void backward_table(const float* diff_dst, int n, float* diff_src, float* w_grad) {
    conv_.backward_table(diff_dst, 1, 1, n, diff_src, w_grad);
  }
  ApproxConv2d& conv() { return conv_; }

 private:
  ApproxConv2d conv_;
};

/// Truncated SVD of the error table E[a][b] = mul(a,b) - a*b (rows/cols in operand order lo..hi):
/// E ~ sum_{r<R} u_r(a) v_r(b), sqrt(sigma_r) folded into both. u[r][code(a)], v[r][code(b)].
struct LowRankError {
  std::vector<std::array<double, 256>> u, v;
  std::vector<double> sigma;
};
LowRankError lowrank_error(const Multiplier& m, int rank);
/// Mean |E - sum_r u_r v_r| over the 65,536 pairs (the table-level emulation error of lowrank:R).
double lowrank_table_mae(const Multiplier& m, int rank);

namespace detail {
/// Tests: the oneDNN term engine builds its expanded source with the portable loop (true) or with AVX-512 VBMI /
/// AVX2 table lookups where the kernel path and CPU allow (false). (The kernel path itself: util::set_kernel_isa.)
void set_terms_scalar_fill(bool on);
/// Tests and A/B benches: frugal's own engine for the oneDNN term layouts (onednn_terms.h: int8-s16-avx2 for the split
/// layout, int8-vnni-avx2 for the VNNI one on AVX-VNNI): -1 where it is the faster (the default), 0 never (oneDNN),
/// 1 wherever the layout allows it (one group, icg % 8 == 0, a u8 source), 2 the same with its scalar twin.
/// Takes effect for convs built after the call.
void set_terms_s16(int mode);
/// Tests: how the AVX2 source fill of the oneDNN / s16 layouts reads each code's part bytes: -1 by CPU (scalar loads
/// and a byte transpose on AMD, where vpgatherdd is microcoded; vpgatherdd elsewhere), 0 vpgatherdd, 1 scalar loads.
void set_terms_fill_loads(int mode);
/// Tests: how the AVX2 LUT path reads its 4-channel tables: -1 by CPU (scalar loads on AMD, vpgatherdq elsewhere;
/// the default), 0 vpgatherdq, 1 scalar loads. Takes effect for the next forward.
void set_lut_avx2_loads(int mode);
}  // namespace detail

}  // namespace frugal::approx
