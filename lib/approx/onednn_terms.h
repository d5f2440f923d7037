// Separable products on oneDNN: acc = sum over a conv window of sum_t A_t(a) * B_t(b), computed as ONE oneDNN
// convolution whose input has T*ICg channels per group (channel t*ICg + c holds A_t of input channel c) and whose
// weights hold B_t of the weight codes in the same order: A_t as u8 or s8, B_t as s8 (or B_t - 128, with 128 *
// (window sum of A_t) added back after the convolution), s32 accumulation, bit-exact.
// Paths, chosen at make() by util::kernel_isa() and oneDNN's ISA:
//   vnni   (kernel ISA avx512 and oneDNN with VNNI, or oneDNN on AVX2-VNNI): the layout above; vpdpbusd never
//          saturates. Where oneDNN runs AVX2-VNNI, a u8 source (one group, icg % 8 == 0) runs on frugal's own
//          AVX-VNNI conv instead (the s16 engine's loops with vpdpbusd): oneDNN's jit_uni_int8 kernel there took
//          12 ms for bam:0,6's 224 -> 32 channels at 16x16, 4x the fp32 conv.
//   split  (AVX2 CPUs without AVX-VNNI, or kernel ISA avx2 under an AVX-512 oneDNN): oneDNN's pre-VNNI int8 kernels
//          sum u8 x s8 pairs in saturating int16
//          (vpmaddubsw), so each A_t + off_t (off_t = -min A_t >= 0, per term) is stored as u8 parts of at most
//          128 (twice the channels for 8-bit A); 2 * 128 * [-128, 127] fits int16, so this too is bit-exact;
//          sum_t off_t * (sum of term t's stored weights) is taken off per output channel after the convolution.
//          On oneDNN's plain AVX2 kernels (or FRUGAL_ISA=avx2) the split layout runs on frugal's own s16 engine
//          instead where that saves multiplies (onednn_terms.cpp: bam's narrow bits): a direct AVX2 conv that sums
//          vpmaddubsw's pair sums in int16 over many steps before widening them, where oneDNN widens after each.
//          Its parts are stored divided by their common factor, terms with the same B merged and wider values as
//          4-bit fields, so they stay small: bam:0,6 as 7 parts of 0..3 instead of 8 parts of 0..128, an 8-bit
//          exact product as 2 parts of 0..15 (x 1, x 16). Exact too.
//   none   on the scalar kernel path (make() returns nullptr).
// Used by the approximate conv kernels (term_engine.cpp, lowrank.cpp) for the separable terms of the functional multipliers (exact, trunc, drum, bam, and mitchell's exact part), and for lowrank:R
// (the exact product on one instance, the R rank-1 error factors rounded to int8 on a second one).
// The padded border reads A_t(pad_code), as on every other path: oneDNN zero padding where that is 0, else an
// explicitly padded source.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

namespace frugal::approx {

class OnednnTermConv {
 public:
  /// amaps/bmaps: T maps from operand code to integer value. Returns nullptr when the values do not fit the
  /// operand types, the sums could overflow, or this CPU lacks the ISA (callers keep their own engine).
  /// A values in [-256, 254] that fit neither u8 nor s8 are split into two s8 terms; b_skip_code names a
  /// weight code the quantizer does not produce (e.g. -128 under symmetric weights), left out of the B range.
  static std::unique_ptr<OnednnTermConv> make(const std::vector<std::array<double, 256>>& amaps,
                                              const std::vector<std::array<double, 256>>& bmaps, int ic, int oc,
                                              int kh, int kw, int stride, int pad, int groups, int b_skip_code = -1);
  ~OnednnTermConv();
  /// wcodes (OC, IC/groups, KH, KW) operand codes. Weights holding b_skip_code make run_* return false.
  void set_weights(const uint8_t* wcodes);
  /// codes (N,H,W,IC) -> acc (N,OH,OW,OC). Returns false when oneDNN has no primitive for this shape (nothing
  /// written; the caller falls back).
  bool run_s32(const uint8_t* codes, int n, int h, int w, uint8_t pad_code, int32_t* acc);
  /// run_s32 without the shift correction: when shift_weights(), acc lacks 128 * (window sum of sum_t A_t), and
  /// a_sums (resized to N*H*W*groups) receives sum_t sum_c A_t per input pixel and group, for window_sums() with
  /// border value shift_border_sum(pad_code). Lets a caller fold the correction into its own output pass.
  /// chan: when given, the split layout's per-output-channel constant (its source offsets' share) is not added
  /// to acc either but written to chan (OC; all zeros when there is none), for the caller's output pass too.
  bool run_s32_raw(const uint8_t* codes, int n, int h, int w, uint8_t pad_code, int32_t* acc,
                   std::vector<int32_t>* a_sums, std::vector<int32_t>* chan = nullptr);
  bool shift_weights() const;
  /// Input channels per group of the int8 convolution (the terms' stored parts x IC/groups): its cost.
  int channels() const;
  /// "onednn-int8-vnni", "onednn-int8-split", or frugal's own engine: "int8-s16-avx2" (the split layout) or
  /// "int8-vnni-avx2" (the VNNI layout on AVX-VNNI); see above.
  const char* path() const;
  /// True when oneDNN runs this conv with its plain AVX2 int8 kernels (the split layout, 256-bit vpmaddubsw +
  /// vpmaddwd): as many multiply instructions per int8 channel as the term engine's vpmaddwd per int16 plane.
  bool plain_avx2() const;
  /// True when this conv runs on frugal's own engine (path "int8-s16-avx2" or "int8-vnni-avx2") rather than oneDNN.
  bool own_engine() const;
  int32_t shift_border_sum(uint8_t pad_code) const;

  struct Impl;

 private:
  explicit OnednnTermConv(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// out (N,OH,OW,G) = sum over each conv window of plane (N,H,W,G), a padded position counting `border`.
void window_sums(const int32_t* plane, int n, int h, int w, int G, int kh, int kw, int stride, int pad,
                 int32_t border, int32_t* out);

}  // namespace frugal::approx
