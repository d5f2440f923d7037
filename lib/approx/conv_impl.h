// Internal to lib/approx: the state of an ApproxConv2d (kernels.h) shared by its front (kernels.cpp) and its
// engines, one file each with the scalar twin of every fast path beside it:
//   lut_engine.cpp    lut mode: im2col tiles, one 256x256 table row per weight (AVX-512 VBMI / AVX-512 / AVX2 gather)
//   term_engine.cpp   functional mode: the multiplier's separable terms on oneDNN int8 (onednn_terms.h) and the
//                     direct 16-bit term conv (the min() term, and every term where oneDNN cannot run them)
//   lowrank.cpp       lowrank:R mode: the SVD of the error table and its rank-1 factors (run by the term engine)
//   kernel_quant.cpp  bit-widths and quantization parameters; forward()'s activation codes and per-pixel code sums
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "approx/kernels.h"
#include "approx/onednn_terms.h"
#include "util/cpu_features.h"

// SIMD paths are compiled for their ISA with target attributes (the rest of each file for the build's baseline)
// and chosen at run time from util::kernel_isa() and the CPU's feature bits (ApproxConv2d::kernel_path() names them).
#define FRUGAL_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define FRUGAL_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define FRUGAL_AVX512_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi")))
#define FRUGAL_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace frugal::approx {

// The paths each engine takes now: the kernel ISA, then the feature bits a path needs beyond it.
enum class LutPath { scalar, avx2, avx2_loads, avx512, vbmi };
enum class TermPath { scalar, avx2, avx512 };
LutPath lut_path();
TermPath term_path();  // the AVX-512 term engine uses vpdpwssd (VNNI); without it, the AVX2 one
const char* lut_path_name(LutPath p);
const char* term_path_name(TermPath p);
/// NHWC codes (n, h, w, ic) -> padded planes (n, ic, h + 2 pad, w + 2 pad), the border set to pad_code (the LUT
/// engine's im2col source). 16 x 16 byte transposes where ic % 16 == 0, else byte by byte.
void code_planes(const uint8_t* src, int n, int h, int w, int ic, int pad, uint8_t pad_code, uint8_t* plane);

/// max |v| over a 256-entry operand map (the accumulator bounds of the term engines).
inline int64_t max_abs(const std::array<int16_t, 256>& map) {
  int m = 0;
  for (auto v : map) m = std::max(m, v < 0 ? -int(v) : int(v));
  return int64_t(m);
}

struct ApproxConv2d::Impl {
  ApproxSpec spec;
  std::shared_ptr<const Multiplier> mult;  // shared by every layer built from the same make_multiplier()
  int ic, oc, kh, kw, stride, pad, groups, icg, ocg, K;
  enum class Mode { lut, functional, lowrank } mode = Mode::lut;
  int rank = 0;

  // weights
  QuantParams wq;
  std::vector<uint8_t> wcodes;  // (OC, ICg, KH, KW)
  std::vector<float> bias;      // (OC)
  std::vector<int64_t> wsum;    // (OC) sum of decoded weight values
  bool weights_set = false;
  bool act_set = false;
  float act_lo = 0, act_hi = 0;

  // lut engine
  const std::vector<int32_t>& table() const { return mult->table(); }  // (256*256) code(a)*256 + code(b)
  std::vector<uint16_t> lt;    // (256*256) code(b)*256 + code(a): table + lut_bias
  std::vector<uint8_t> lt8;    // (256 * 512) per code(b): 256 low bytes, then 256 high bytes of its lt row
  int32_t lut_bias = 0;
  // AVX2 lut path: per group of 4 output channels and k, a 256-entry table of 64-bit entries, entry[code(a)] =
  // the lt values of the 4 channels' weights at k (uint16 each, channel j in bits 16j..16j+15), so one vpgatherdq
  // fetches 16 products (4 pixels x 4 channels); [o/4][k][256]. Built on the first forward after set_weights.
  mutable std::vector<uint64_t> lq;
  mutable bool lq_stale = true;
  bool lut_quads() const;  // the AVX2 lut path uses lq (ocg % 4 == 0 and lq within its size cap)
  void build_lq() const;

  // term engine: a-planes / b-maps: terms [0, nt0) -> acc0, [nt0, nt0+nt1) -> acc1, then fa, fa2, sa (min)
  std::vector<std::array<int16_t, 256>> amaps, bmaps;
  std::vector<std::array<int32_t, 256>> amaps32;  // amaps widened (the AVX2 plane fill gathers 32-bit entries)
  int nt0 = 0, nt1 = 0;
  bool has_min = false, signed_min = false;
  double inv_s = 1.0;  // lowrank: acc1 scale
  int icgp = 0, icp = 0, ob = 0;
  mutable std::vector<int32_t> wpack;  // [plane][g][ob][kh][kw][icp][16], packed on the term engine's first use
  mutable bool wpack_stale = true;      // after set_weights (the oneDNN engine, where used, has its own copy)
  // oneDNN engine (onednn_terms.h): the separable terms on int8 (lowrank: the exact product); null where the
  // terms do not fit or the CPU lacks the ISA (the term engine above runs instead)
  std::unique_ptr<OnednnTermConv> dn;
  std::unique_ptr<OnednnTermConv> dn_lr;  // lowrank: the int8 rank-1 corrections, scaled by lr_inv_gamma
  double lr_inv_gamma = 0;
  // The oneDNN path, when dn was built and SIMD is on (else false, nothing written): acc = dn's terms (functional:
  // the separable ones, plus the min() correction from the term engine where has_min; lowrank: the exact product).
  // raw: without dn's weight-shift correction, whose A sums go to s_psum, and without the per-output-channel
  // constants of dn and dn_lr, which go to s_chan and s_lr_chan (see OnednnTermConv::run_s32_raw): forward()'s
  // output pass adds them.
  // lowrank: corr = the int8 rank-1 corrections (scale lr_inv_gamma), when dn_lr exists.
  bool run_dn_s32(const uint8_t* src, int n, int h, int w, uint8_t pad_code, int32_t* acc, bool raw,
                  int32_t* corr = nullptr) const;

  // Scratch kept between calls, so a forward allocates and page-faults nothing once shapes are seen (one forward
  // at a time per instance: in-process workers run their steps in turn).
  mutable std::vector<uint8_t> s_codes, s_plane;
  mutable std::vector<int16_t> s_planes;
  mutable std::array<int, 3> s_planes_shape{-1, -1, -1};
  mutable std::vector<int32_t> s_acci, s_a0, s_a1, s_chsum, s_asum, s_ssum, s_psum, s_chan, s_lr_chan;
  mutable std::vector<float> s_acc;
  // last forward (for backward_table): its activation codes are s_codes
  int last_n = -1, last_h = -1, last_w = -1;
  float last_sa = 1.0f;
  int32_t last_za = 0;

  int out_h(int h) const { return (h + 2 * pad - kh) / stride + 1; }
  int out_w(int w) const { return (w + 2 * pad - kw) / stride + 1; }
  int nplanes() const { return nt0 + nt1 + (has_min ? 3 : 0); }

  // Construction, per mode (after the shape fields are set): the lut engine's table layouts (lut_engine.cpp); the
  // functional terms and their oneDNN conv (term_engine.cpp); the rank-1 factors (lowrank.cpp). The last two
  // return the int32 bounds of |sum of one product's terms| for acc0 and acc1, then init_term_layout() sizes the
  // term engine's packing.
  void init_lut();
  std::pair<int64_t, int64_t> init_functional();
  std::pair<int64_t, int64_t> init_lowrank();
  void init_lowrank_int8(const LowRankError& lr);  // dn_lr and lr_inv_gamma
  void init_term_layout();

  void pack_weights() const;
  void run_lut(const uint8_t* src, int n, int h, int w, uint8_t pad_code, int32_t* acc) const;
  /// s_planes [plane][n][Hp][Wp][G*icgp] = each plane's map of the activation codes (padding: of pad_code), for the
  /// planes from p0 on; returns per image whether it holds a negative activation (signed min(): else the sign plane
  /// is skipped and not filled on the SIMD paths).
  std::vector<uint8_t> fill_planes(const uint8_t* src, int n, int h, int w, uint8_t pad_code, int p0) const;
  /// acc0 (+)= the nt0 separable terms (unless skip_sep) and the min() term; acc1 = the nt1 low-rank terms.
  /// accumulate: add to acc0 instead of overwriting it.
  void run_terms(const uint8_t* src, int n, int h, int w, uint8_t pad_code, int32_t* acc0, int32_t* acc1,
                 bool skip_sep = false, bool accumulate = false) const;

  // forward()'s steps (kernels.cpp, kernel_quant.cpp)
  struct ActCodes {
    float sa = 1.0f;
    int32_t za = 0;
    bool need_asum = false;  // weights have zero points: chsum holds each (pixel, group)'s code sum
  };
  QuantParams act_params(const float* src, size_t count) const;  // set range, or this batch's min/max
  /// s_codes (N,H,W,IC) = the activation codes of src; s_chsum (N*H*W*G) their sums where weights have zero points.
  ActCodes quantize_input(const float* src, int n, int h, int w) const;
  struct OutputTerms;
  /// dst (pixels, OC) from the products in t and the window sums s_asum / s_ssum.
  void write_output(const ActCodes& ac, const OutputTerms& t, size_t pixels, float* dst) const;
};

/// codes[i] = code(clamp(nearbyint(src[i] * inv) + za, lo, hi)) for i in [begin, end) (kernel_quant.cpp): the SIMD
/// path of isa for whole vectors, the scalar loop for the rest.
void quantize_codes(util::Isa isa, const float* src, size_t begin, size_t end, float inv, float lo, float hi,
                    int32_t za, uint8_t* codes);
/// chsum[k] = sum of the icg codes of (pixel, group) k, read as u8 (or s8 when sgn), for k in [begin, end).
void code_sums(util::Isa isa, const uint8_t* codes, size_t begin, size_t end, int icg, bool sgn, int32_t* chsum);

}  // namespace frugal::approx
