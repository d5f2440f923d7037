#include "approx/onednn_terms.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <tuple>

#include <immintrin.h>

#include "approx/kernels.h"
#include "tensor/tensor.h"
#include "util/check.h"
#include "util/cpu_features.h"

// The VBMI source fill is compiled for its ISA here and chosen at run time (util::kernel_isa() and the CPU's
// VBMI bit), so a baseline x86-64 build has it too.
#define FRUGAL_TERMS_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi")))
#define FRUGAL_TERMS_AVX2 __attribute__((target("avx2,fma,f16c")))
#define FRUGAL_TERMS_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))

namespace frugal::approx {

namespace detail {
namespace {
std::atomic<bool> g_terms_scalar_fill{false};
std::atomic<int> g_terms_s16{-1};
std::atomic<int> g_terms_fill_loads{-1};
}
void set_terms_scalar_fill(bool on) { g_terms_scalar_fill = on; }
void set_terms_s16(int mode) { g_terms_s16 = mode; }
void set_terms_fill_loads(int mode) { g_terms_fill_loads = mode; }
}  // namespace detail

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

namespace {
// oneDNN's int8 convolution accumulates u8 x s8 with vpdpbusd (never saturates)
bool has_vnni() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx512_core_vnni:
    case dnnl::cpu_isa::avx512_core_bf16:
    case dnnl::cpu_isa::avx512_core_amx:
    case dnnl::cpu_isa::avx2_vnni:
      return true;
    default:
      return false;
  }
}
// oneDNN has a JIT int8 convolution (AVX2 and up: vpmaddubsw + vpmaddwd, whose int16 pair sums saturate)
bool has_int8_jit() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx2:
    case dnnl::cpu_isa::avx2_vnni:
    case dnnl::cpu_isa::avx512_core:
    case dnnl::cpu_isa::avx512_core_vnni:
    case dnnl::cpu_isa::avx512_core_bf16:
    case dnnl::cpu_isa::avx512_core_amx:
      return true;
    default:
      return false;
  }
}
bool vbmi_fill() {
  return util::kernel_isa() == util::Isa::avx512 && util::cpu_features().avx512vbmi &&
         !detail::g_terms_scalar_fill.load();
}
bool avx2_fill() { return util::kernel_isa() >= util::Isa::avx2 && !detail::g_terms_scalar_fill.load(); }
// The AVX2 fill reads each code's part bytes with scalar loads and transposes them (avx2_pixels_loads) instead of
// vpgatherdd, which AMD microcodes: on AMD, or as detail::set_terms_fill_loads says.
bool fill_loads() {
  const int mode = detail::g_terms_fill_loads.load();
  return mode < 0 ? util::cpu_features().amd : mode > 0;
}

// ---------------------------------------------------------------------------------------------------------------
// The s16 engine: a direct NHWC conv of a u8 source with s8 weights, 16 output channels (two 8-lane halves) by PX
// output pixels per block. A step is 4 input channels of one part: vpbroadcastd of the pixel's 4 bytes, vpmaddubsw
// against 8 channels x 4 weight bytes (int16 lane pairs: bytes 0-1 and 2-3 of one output channel), summed in int16
// (vpaddw) for up to steps[p] steps, then widened into int32 by vpmaddwd with the part's scale (which also adds the
// lane pair). oneDNN's pre-VNNI kernel widens after every step: 2 multiplies per step against ~1 here when the
// part's values are small, as bam's bits are.
struct S16Args {
  const uint8_t* src;    // padded rows of Wp x C bytes, C = T * icg: image b's padded row y at b * Hp + y - y0
  const uint8_t* wpack;  // [ob][T][kh][kw][icg / 4][16][4]
  const int16_t* scale;  // [T]
  const int32_t* steps;  // [T]
  int Hp, Wp, C, icg, T, kh, kw, stride, OH, OW, oc;
  int32_t* dst;  // (N, OH, OW, oc)
  bool vnni;     // the VNNI layout (vnni_row): sums straight into int32
  int y0;        // the first padded row src holds (a tile of one image: Hp = 0)
};

// The source row that output row oy of image b reads at kernel row y.
inline size_t s16_src_row(const S16Args& A, int b, int oy, int y) {
  return size_t(b) * A.Hp + size_t(oy) * A.stride + y - A.y0;
}

// acc (int32, PX x 16 in memory) += the int16 sums times scale (vpmaddwd, which also adds each output channel's
// lane pair); the sums restart from 0
template <int PX>
FRUGAL_TERMS_AVX2 inline void s16_widen(int32_t* acc, __m256i (&sums)[PX][2], __m256i scale) {
  for (int i = 0; i < PX; ++i)
    for (int hf = 0; hf < 2; ++hf) {
      __m256i* a = reinterpret_cast<__m256i*>(acc + 16 * i + 8 * hf);
      _mm256_storeu_si256(a, _mm256_add_epi32(_mm256_loadu_si256(a), _mm256_madd_epi16(sums[i][hf], scale)));
      sums[i][hf] = _mm256_setzero_si256();
    }
}

// Part p of one output row's pixels [ox0, ox0 + PX) x the 16 output channels of block o, added to acc (PX x 16
// int32). The int16 sums of PX pixels x 2 halves stay in registers (12 at PX = 6) and are widened once the part's
// steps are used up, or at its end (bam's bits take 127 steps, more than a 3x3 window over 64 channels has).
// Q: quads per tap (icg / 4) when known at compile time, else 0. TAPWISE: widen at tap boundaries (the part's
// steps >= quads), else after any step.
template <int PX, int Q, bool TAPWISE>
FRUGAL_TERMS_AVX2 void s16_block(const S16Args& A, int p, int b, int oy, int ox0, int o, int32_t* acc) {
  __m256i part[PX][2];
  const int quads = Q ? Q : A.icg / 4;
  const size_t tap_bytes = size_t(quads) * 64;
  const uint8_t* wo = A.wpack + (size_t(o) * A.T + p) * A.kh * A.kw * tap_bytes;
  const size_t pixel_step = size_t(A.stride) * A.C;
  const int S = A.steps[p];
  const __m256i sc = _mm256_set1_epi16(A.scale[p]);
  for (int i = 0; i < PX; ++i) part[i][0] = part[i][1] = _mm256_setzero_si256();
  int k = 0;
  for (int y = 0; y < A.kh; ++y) {
    const uint8_t* row = A.src + (s16_src_row(A, b, oy, y) * A.Wp + size_t(ox0) * A.stride) * A.C +
                         size_t(p) * A.icg;
    for (int x = 0; x < A.kw; ++x) {
      const uint8_t* px0 = row + size_t(x) * A.C;
      const uint8_t* wp = wo + (size_t(y) * A.kw + x) * tap_bytes;
      if (TAPWISE && k + quads > S) {
        s16_widen<PX>(acc, part, sc);
        k = 0;
      }
#pragma GCC unroll 1  // (unrolled, GCC hoists the loads of every quad and spills the sums)
      for (int q = 0; q < quads; ++q) {
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + 64 * q));
        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + 64 * q + 32));
        for (int i = 0; i < PX; ++i) {
          int32_t four;
          std::memcpy(&four, px0 + i * pixel_step + 4 * q, 4);
          const __m256i a = _mm256_set1_epi32(four);
          part[i][0] = _mm256_add_epi16(_mm256_maddubs_epi16(a, w0), part[i][0]);
          part[i][1] = _mm256_add_epi16(_mm256_maddubs_epi16(a, w1), part[i][1]);
        }
        if (!TAPWISE && ++k == S) {
          s16_widen<PX>(acc, part, sc);
          k = 0;
        }
      }
      if (TAPWISE) k += quads;
    }
  }
  s16_widen<PX>(acc, part, sc);
}

// The kernels of the own engines' row driver (own_row): block<PX, Q>(...) adds part p of PX pixels x 16 output
// channels to acc. (Calls, not inlined: each block is a whole window of work.)
template <bool TAPWISE>
struct S16Kernel {
  template <int PX, int Q>
  static void block(const S16Args& A, int p, int b, int oy, int ox0, int o, int32_t* acc) {
    s16_block<PX, Q, TAPWISE>(A, p, b, oy, ox0, o, acc);
  }
};

// The same direct conv on AVX-VNNI (the VNNI layout: parts of 0..255, no split): vpdpbusd sums the 4 products of
// a step straight into int32, so there is nothing to widen; the part's sums join acc at its end.
template <int PX, int Q>
FRUGAL_TERMS_AVXVNNI void vnni_block(const S16Args& A, int p, int b, int oy, int ox0, int o, int32_t* acc) {
  __m256i part[PX][2];
  const int quads = Q ? Q : A.icg / 4;
  const size_t tap_bytes = size_t(quads) * 64;
  const uint8_t* wo = A.wpack + (size_t(o) * A.T + p) * A.kh * A.kw * tap_bytes;
  const size_t pixel_step = size_t(A.stride) * A.C;
  for (int i = 0; i < PX; ++i) part[i][0] = part[i][1] = _mm256_setzero_si256();
  for (int y = 0; y < A.kh; ++y) {
    const uint8_t* row = A.src + (s16_src_row(A, b, oy, y) * A.Wp + size_t(ox0) * A.stride) * A.C +
                         size_t(p) * A.icg;
    for (int x = 0; x < A.kw; ++x) {
      const uint8_t* px0 = row + size_t(x) * A.C;
      const uint8_t* wp = wo + (size_t(y) * A.kw + x) * tap_bytes;
#pragma GCC unroll 1
      for (int q = 0; q < quads; ++q) {
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + 64 * q));
        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + 64 * q + 32));
        for (int i = 0; i < PX; ++i) {
          int32_t four;
          std::memcpy(&four, px0 + i * pixel_step + 4 * q, 4);
          const __m256i a = _mm256_set1_epi32(four);
          part[i][0] = _mm256_dpbusd_avx_epi32(part[i][0], a, w0);
          part[i][1] = _mm256_dpbusd_avx_epi32(part[i][1], a, w1);
        }
      }
    }
  }
  for (int i = 0; i < PX; ++i)
    for (int hf = 0; hf < 2; ++hf) {
      __m256i* d = reinterpret_cast<__m256i*>(acc + 16 * i + 8 * hf);
      _mm256_storeu_si256(d, _mm256_add_epi32(_mm256_loadu_si256(d), part[i][hf]));
    }
}

struct VnniKernel {
  template <int PX, int Q>
  static void block(const S16Args& A, int p, int b, int oy, int ox0, int o, int32_t* acc) {
    vnni_block<PX, Q>(A, p, b, oy, ox0, o, acc);
  }
};

// One output row x 16 output channels: part by part over the whole row (the part's weights, kh x kw x icg x 16
// bytes, stay in L1 while the row's blocks run), in blocks of 6 pixels, the last ones of 5 or 4 rather than one
// short block (16 = 6 + 5 + 5, 8 = 4 + 4).
template <class Kernel, int Q>
void own_row_q(const S16Args& A, int b, int oy, int o, int32_t* acc) {
  const int blocks = (A.OW + 5) / 6;
  for (int p = 0; p < A.T; ++p)
    for (int k = 0, ox = 0; k < blocks; ++k) {
      const int width = A.OW / blocks + (k < A.OW % blocks ? 1 : 0);
      int32_t* a = acc + 16 * ox;
      switch (width) {
        case 6: Kernel::template block<6, Q>(A, p, b, oy, ox, o, a); break;
        case 5: Kernel::template block<5, Q>(A, p, b, oy, ox, o, a); break;
        case 4: Kernel::template block<4, Q>(A, p, b, oy, ox, o, a); break;
        case 3: Kernel::template block<3, Q>(A, p, b, oy, ox, o, a); break;
        case 2: Kernel::template block<2, Q>(A, p, b, oy, ox, o, a); break;
        default: Kernel::template block<1, Q>(A, p, b, oy, ox, o, a); break;
      }
      ox += width;
    }
}

// Output row oy of image b, output channels 16 o.. : int32 sums in acc (OW x 16 scratch), then into dst.
template <class Kernel>
void own_row(const S16Args& A, int b, int oy, int o, int32_t* acc) {
  std::memset(acc, 0, size_t(A.OW) * 16 * sizeof(int32_t));
  switch (A.icg) {  // quads per tap known at compile time for the common widths
    case 8: own_row_q<Kernel, 2>(A, b, oy, o, acc); break;
    case 16: own_row_q<Kernel, 4>(A, b, oy, o, acc); break;
    case 32: own_row_q<Kernel, 8>(A, b, oy, o, acc); break;
    case 64: own_row_q<Kernel, 16>(A, b, oy, o, acc); break;
    default: own_row_q<Kernel, 0>(A, b, oy, o, acc); break;
  }
  const int lanes = std::min(16, A.oc - 16 * o);
  for (int ox = 0; ox < A.OW; ++ox)
    std::memcpy(A.dst + ((size_t(b) * A.OH + oy) * A.OW + ox) * A.oc + size_t(o) * 16, acc + 16 * ox,
                size_t(lanes) * sizeof(int32_t));
}

// The split layout: int16 sums widened at tap boundaries when every part's steps cover a tap's quads.
void s16_row(const S16Args& A, int b, int oy, int o, int32_t* acc) {
  const int quads = A.icg / 4;
  bool tapwise = true;
  for (int p = 0; p < A.T; ++p) tapwise = tapwise && A.steps[p] >= quads;
  (tapwise ? own_row<S16Kernel<true>> : own_row<S16Kernel<false>>)(A, b, oy, o, acc);
}

void vnni_row(const S16Args& A, int b, int oy, int o, int32_t* acc) { own_row<VnniKernel>(A, b, oy, o, acc); }

// The scalar twin of s16_row and vnni_row (tests): int16 sums wrapped as vpaddw does, widened after every steps[p]
// steps (s16_row may widen sooner, at tap boundaries: every int16 sum is exact either way, so the results are the
// same); on the VNNI layout every product sum goes straight into int32.
void s16_row_scalar(const S16Args& A, int b, int oy, int o, int32_t*) {
  const int quads = A.icg / 4;
  const int lanes = std::min(16, A.oc - 16 * o);
  for (int ox = 0; ox < A.OW; ++ox)
    for (int l = 0; l < lanes; ++l) {
      int32_t acc = 0;
      for (int p = 0; p < A.T; ++p) {
        int16_t part[2] = {0, 0};
        int k = 0;
        auto widen = [&]() {
          acc += int32_t(part[0]) * A.scale[p] + int32_t(part[1]) * A.scale[p];
          part[0] = part[1] = 0, k = 0;
        };
        for (int y = 0; y < A.kh; ++y)
          for (int x = 0; x < A.kw; ++x) {
            const uint8_t* s = A.src + (s16_src_row(A, b, oy, y) * A.Wp + size_t(ox) * A.stride +
                                        x) * A.C + size_t(p) * A.icg;
            const uint8_t* wp = A.wpack + ((((size_t(o) * A.T + p) * A.kh + y) * A.kw + x) * quads) * 64;
            for (int q = 0; q < quads; ++q) {
              const uint8_t* w4 = wp + 64 * q + 4 * l;
              for (int j = 0; j < 2; ++j) {
                const int32_t pair = int32_t(s[4 * q + 2 * j]) * int8_t(w4[2 * j]) +
                                     int32_t(s[4 * q + 2 * j + 1]) * int8_t(w4[2 * j + 1]);
                if (A.vnni)
                  acc += pair;
                else
                  part[j] = int16_t(uint16_t(uint16_t(part[j]) + uint16_t(std::clamp(pair, -32768, 32767))));
              }
              if (++k == A.steps[p]) widen();
            }
          }
        if (k) widen();
      }
      A.dst[((size_t(b) * A.OH + oy) * A.OW + ox) * A.oc + size_t(o) * 16 + l] = acc;
    }
}
}  // namespace

struct OnednnTermConv::Impl {
  int T = 1, ic = 0, oc = 0, kh = 1, kw = 1, stride = 1, pad = 0, groups = 1, icg = 0, ocg = 0;
  bool src_signed = false;  // s8 source (else u8)
  int b_skip_code = -1;     // a weight code whose B value the int8 layout cannot hold; set_weights checks for it
  bool weights_ok = true;   // false when the weights use b_skip_code: run_* then return false (caller falls back)
  bool shift_w = false;     // weights stored as B - 128; run_s32 adds 128 * window sum of A back
  // Without VNNI (split): every A_t + off_t (off_t = -min(0, min A_t) >= 0, per term) is stored as parts_t u8
  // channels of at most 128 each, so that vpmaddubsw's pair sums (2 * 128 * [-128, 127]) never saturate; the
  // offsets' share, sum_t off_t * (sum of term t's stored weights), is taken off per output channel (wcorr) after
  // the convolution. part_term[p]: the term of stored part p (parts of a term are adjacent).
  bool split = false;
  int T_orig = 1;
  std::vector<int> term_off, part_term;
  std::vector<int32_t> wcorr;  // (OC) added to acc after the convolution (split with an off_t != 0)
  int32_t sum_off = 0;          // the stored bytes of a pixel and group sum to sum_t sum_c A_t + sum_off
  // per term: code -> the operand byte
  std::vector<std::array<uint8_t, 256>> a8, b8;
  std::vector<std::array<int16_t, 256>> aval;  // integer A_t values (for the shift_w correction)
  std::vector<int32_t> s_psum, s_wsum;           // scratch (run_s32): A-sum plane and its window sums
  std::vector<uint8_t> wplain;  // (G, ocg, T*icg, kh, kw) s8 bytes
  uint64_t wversion = 0;
  // The s16 engine (split layout, one group, icg % 8 == 0; see s16_block): instead of oneDNN, frugal's own AVX2
  // conv sums vpmaddubsw's int16 pair sums in int16 for up to s16_steps[p] steps of part p before widening them
  // (vpmaddwd by s16_scale[p]) into int32. Its parts are stored divided by their common factor s16_scale[p]
  // (bam's narrow terms a_i 2^i become bits), so a step's pair sums are small and many fit int16 exactly.
  bool s16 = false;
  bool own_vnni = false;  // the VNNI layout on the same engine with vpdpbusd (AVX-VNNI: vnni_row)
  bool own_twin = false;  // either runs its scalar twin (tests: detail::set_terms_s16(2) when built)
  std::vector<int16_t> s16_scale;
  std::vector<int32_t> s16_steps;
  std::vector<uint8_t> s16_wpack;  // [oc block of 16][part][kh][kw][icg / 4][16 oc][4 bytes]
  uint64_t s16_wversion = ~uint64_t(0);

  struct Prims {
    dnnl::convolution_forward::primitive_desc pd;
    dnnl::convolution_forward prim;
    memory wmem, src, scratch;
    uint64_t wversion = ~uint64_t(0);
  };
  std::map<std::tuple<int, int, int, int>, std::unique_ptr<Prims>> cache;  // (n, h, w, border)
  std::map<std::tuple<int, int, int, int>, bool> unavailable;

  int out_h(int h) const { return (h + 2 * pad - kh) / stride + 1; }
  int out_w(int w) const { return (w + 2 * pad - kw) / stride + 1; }
  dt src_dt() const { return src_signed ? dt::s8 : dt::u8; }
  dt wei_dt() const { return dt::s8; }
  dt dst_dt() const { return dt::s32; }
  memory::desc wdesc(tag t) const {
    if (groups == 1) return memory::desc({ocg, int64_t(T) * icg, kh, kw}, wei_dt(), t == tag::goihw ? tag::oihw : t);
    return memory::desc({groups, ocg, int64_t(T) * icg, kh, kw}, wei_dt(), t);
  }

  // bp: the border the source buffer carries: pad (explicit, it reads A_t(pad_code)) or 0 (oneDNN pads with
  // zeros, used when every A_t(pad_code) is 0: a smaller buffer and oneDNN's own border handling)
  Prims* prims(int n, int h, int w, int bp) {
    const auto key = std::make_tuple(n, h, w, bp);
    if (unavailable.count(key)) return nullptr;
    auto it = cache.find(key);
    if (it != cache.end()) return it->second.get();
    const int Hp = h + 2 * bp, Wp = w + 2 * bp, op = pad - bp;
    try {
      auto p = std::make_unique<Prims>();
      memory::desc src_md({n, int64_t(groups) * T * icg, Hp, Wp}, src_dt(), tag::nhwc);
      memory::desc dst_md({n, int64_t(groups) * ocg, out_h(h), out_w(w)}, dst_dt(), tag::nhwc);
      auto desc = dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                  dnnl::algorithm::convolution_direct, src_md, wdesc(tag::any),
                                                  dst_md, {stride, stride}, {op, op}, {op, op});
      // a scratchpad of our own: in oneDNN's default mode it is allocated and freed around every execution,
      // which page-faults megabytes per call on these shapes
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      p->pd = dnnl::convolution_forward::primitive_desc(desc, attr, cpu_engine());
      p->prim = dnnl::convolution_forward(p->pd);
      p->scratch = memory(p->pd.scratchpad_desc(), cpu_engine());
      p->wmem = memory(p->pd.weights_desc(), cpu_engine());
      p->src = memory(src_md, cpu_engine());
      Prims* raw = p.get();
      cache[key] = std::move(p);
      return raw;
    } catch (const dnnl::error&) {
      unavailable[key] = true;
      return nullptr;
    }
  }

  // The source (N, H + 2 bp, W + 2 bp, groups * T * icg) of the a8 maps: VBMI lookups where the path allows,
  // else row by row (fill_row). a_sums (N*H*W*groups, or nullptr): sum_t sum_c A_t per input pixel and group.
  void fill_src(const uint8_t* codes, int n, int h, int w, uint8_t pad_code, int bp, uint8_t* dst,
                int32_t* a_sums) const {
    const RowFill F = row_fill(pad_code);
    if (T <= kVbmiMaxTerms && vbmi_fill()) {
      fill_src_vbmi(a8, codes, n, h, w, F.padv.data(), bp, dst, a_sums);
      return;
    }
    const int Hp = h + 2 * bp;
    const size_t row_bytes = size_t(w + 2 * bp) * groups * T * icg;
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, int64_t(n) * Hp), [&](const tbb::blocked_range<int64_t>& r) {
      for (int64_t row = r.begin(); row < r.end(); ++row)
        fill_row(F, codes, int(row / Hp), int(row % Hp), h, w, bp, dst + size_t(row) * row_bytes, a_sums);
    });
  }

  // What fill_row reads: a padded pixel's bytes, the code tables of the AVX2 paths, and sum_t A_t per code.
  struct RowFill {
    std::vector<uint8_t> padv;                    // groups * T * icg bytes: A_t(pad_code)
    std::vector<std::array<int32_t, 256>> packed;  // avx2_pixels (vpgatherdd): terms 4q..4q+3, term 4q+i in byte i
    std::array<uint64_t, 256> all{};               // avx2_pixels_loads (T <= 8): every term of a code, term t in byte t
    std::array<int32_t, 256> asum{};               // sum_t A_t(code), for a_sums
    int mode = 0;                                  // 0 the portable loop, 1 avx2_pixels, 2 avx2_pixels_loads
  };
  RowFill row_fill(uint8_t pad_code) const {
    RowFill F;
    F.padv.resize(size_t(groups) * T * icg);
    for (int g = 0; g < groups; ++g)
      for (int t = 0; t < T; ++t)
        for (int c = 0; c < icg; ++c) F.padv[size_t((g * T + t) * icg + c)] = a8[size_t(t)][pad_code];
    F.mode = icg % 8 != 0 || !avx2_fill() ? 0 : T <= 8 && fill_loads() ? 2 : 1;
    F.packed.resize(size_t((T + 3) / 4));
    for (int c = 0; c < 256; ++c)
      for (int t = 0; t < T; ++t) {
        F.packed[size_t(t / 4)][size_t(c)] |= int32_t(uint32_t(a8[size_t(t)][size_t(c)]) << (8 * (t % 4)));
        if (t < 8) F.all[size_t(c)] |= uint64_t(a8[size_t(t)][size_t(c)]) << (8 * t);
        F.asum[size_t(c)] += aval[size_t(t)][size_t(c)];
      }
    return F;
  }
  // Padded row y (border bp) of image b into d: border pixels get padv, the others their codes' bytes.
  void fill_row(const RowFill& F, const uint8_t* codes, int b, int y, int h, int w, int bp, uint8_t* d,
                int32_t* a_sums) const {
    const int Wp = w + 2 * bp, C = groups * T * icg;
    if (y < bp || y >= bp + h) {
      for (int x = 0; x < Wp; ++x) std::memcpy(d + size_t(x) * C, F.padv.data(), size_t(C));
      return;
    }
    for (int x = 0; x < bp; ++x) {
      std::memcpy(d + size_t(x) * C, F.padv.data(), size_t(C));
      std::memcpy(d + size_t(bp + w + x) * C, F.padv.data(), size_t(C));
    }
    const size_t pix0 = (size_t(b) * h + y - bp) * w;
    uint8_t* di = d + size_t(bp) * C;
    if (F.mode == 2) return avx2_pixels_loads(F.all.data(), F.asum.data(), codes, di, pix0, w, size_t(C), a_sums);
    if (F.mode == 1) return avx2_pixels(F.packed, F.asum.data(), codes, di, pix0, w, size_t(C), a_sums);
    for (int x = 0; x < w; ++x) {
      const size_t pix = pix0 + size_t(x);
      const uint8_t* s = codes + pix * ic;
      for (int g = 0; g < groups; ++g) {
        const uint8_t* sg = s + g * icg;
        uint8_t* dg = di + size_t(x) * C + size_t(g) * T * icg;
        for (int t = 0; t < T; ++t)
          for (int c = 0; c < icg; ++c) dg[size_t(t) * icg + c] = a8[size_t(t)][sg[c]];
        if (a_sums) {
          int32_t sum = 0;
          for (int c = 0; c < icg; ++c) sum += F.asum[sg[c]];
          a_sums[pix * groups + g] = sum;
        }
      }
    }
  }

  // fill_src's AVX2 path with scalar loads (T <= 8, icg a multiple of 8): per 8 codes, the 8 part bytes of each
  // (all[code], byte t = part t) are loaded as 8 qwords and transposed (3 rounds of unpacks) into one qword per
  // part. a_sums: sum_t A_t by a scalar lookup per code (asum). Same bytes and sums as the scalar loop.
  FRUGAL_TERMS_AVX2 void avx2_pixels_loads(const uint64_t* all, const int32_t* asum, const uint8_t* codes, uint8_t* d,
                                           size_t pix0, int count, size_t stride, int32_t* a_sums) const {
    for (int i = 0; i < count; ++i) {
      const size_t pix = pix0 + size_t(i);
      const uint8_t* s = codes + pix * ic;
      uint8_t* dp = d + size_t(i) * stride;
      for (int g = 0; g < groups; ++g) {
        const uint8_t* sg = s + g * icg;
        uint8_t* dg = dp + size_t(g) * T * icg;
        int32_t sum = 0;
        for (int c = 0; c < icg; c += 8) {
          const uint8_t* k = sg + c;
          auto two = [&](int j) {  // codes j (low qword) and j + 1
            return _mm_set_epi64x(int64_t(all[k[j + 1]]), int64_t(all[k[j]]));
          };
          const __m128i r0 = two(0), r1 = two(2), r2 = two(4), r3 = two(6);
          // codes 0-3: u = A0 C0 A1 C1 .. / B0 D0 B1 D1 ..; v = A0 B0 C0 D0 A1 B1 C1 D1 .. (parts 0-3, 4-7)
          const __m128i u0 = _mm_unpacklo_epi8(r0, r1), u1 = _mm_unpackhi_epi8(r0, r1);
          const __m128i u2 = _mm_unpacklo_epi8(r2, r3), u3 = _mm_unpackhi_epi8(r2, r3);
          const __m128i v0 = _mm_unpacklo_epi8(u0, u1), v1 = _mm_unpackhi_epi8(u0, u1);
          const __m128i w0 = _mm_unpacklo_epi8(u2, u3), w1 = _mm_unpackhi_epi8(u2, u3);
          const __m128i x[4] = {_mm_unpacklo_epi32(v0, w0), _mm_unpackhi_epi32(v0, w0), _mm_unpacklo_epi32(v1, w1),
                                _mm_unpackhi_epi32(v1, w1)};  // x[j]: part 2j in the low qword, 2j + 1 high
          for (int t = 0; t < T; ++t) {
            uint8_t* dt = dg + size_t(t) * icg + c;
            if (t % 2 == 0)
              _mm_storel_epi64(reinterpret_cast<__m128i*>(dt), x[t / 2]);
            else
              _mm_storeh_pd(reinterpret_cast<double*>(dt), _mm_castsi128_pd(x[t / 2]));
          }
          if (a_sums)
            for (int j = 0; j < 8; ++j) sum += asum[k[j]];
        }
        if (a_sums) a_sums[pix * groups + g] = sum;
      }
    }
  }

  // fill_src's AVX2 path (icg a multiple of 8) for `count` pixels from pix0 (destination stride apart): per chunk
  // of 4 terms, one vpgatherdd fetches the bytes of 8 codes (packed: term 4q+i in byte i), vpshufb + vpermd
  // transpose them to 8 bytes per term; for a_sums, vpsadbw sums the bytes (an unsigned source), or a second gather
  // over asum sums sum_t A_t (a signed one). Same bytes and sums as the scalar loop.
  FRUGAL_TERMS_AVX2 void avx2_pixels(const std::vector<std::array<int32_t, 256>>& packed, const int32_t* asum,
                                     const uint8_t* codes, uint8_t* d, size_t pix0, int count, size_t stride,
                                     int32_t* a_sums) const {
    const __m256i tr = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9,
                                        13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const int chunks = int(packed.size());
    alignas(32) uint64_t q[4];
    alignas(32) int32_t lanes[8];
    for (int i = 0; i < count; ++i) {
      const size_t pix = pix0 + size_t(i);
      const uint8_t* s = codes + pix * ic;
      uint8_t* dp = d + size_t(i) * stride;
      for (int g = 0; g < groups; ++g) {
        const uint8_t* sg = s + g * icg;
        uint8_t* dg = dp + size_t(g) * T * icg;
        __m256i sacc = _mm256_setzero_si256();
        for (int c = 0; c < icg; c += 8) {
          const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sg + c)));
          for (int k = 0; k < chunks; ++k) {
            const __m256i v = _mm256_permutevar8x32_epi32(
                _mm256_shuffle_epi8(_mm256_i32gather_epi32(packed[size_t(k)].data(), idx, 4), tr),
                order);  // qword i: term 4k+i's bytes
            const int nt = std::min(4, T - 4 * k);
            uint8_t* dk = dg + size_t(4 * k) * icg + c;
            if (nt == 4) {  // the four qwords straight from the registers
              const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
              _mm_storel_epi64(reinterpret_cast<__m128i*>(dk), lo);
              _mm_storeh_pd(reinterpret_cast<double*>(dk + icg), _mm_castsi128_pd(lo));
              _mm_storel_epi64(reinterpret_cast<__m128i*>(dk + 2 * icg), hi);
              _mm_storeh_pd(reinterpret_cast<double*>(dk + 3 * icg), _mm_castsi128_pd(hi));
            } else {
              _mm256_store_si256(reinterpret_cast<__m256i*>(q), v);
              for (int t = 0; t < nt; ++t) std::memcpy(dk + size_t(t) * icg, &q[t], 8);
            }
            // an unsigned source: its bytes (the missing terms' are 0) sum to sum_t A_t + sum_off (vpsadbw)
            if (a_sums && !src_signed) sacc = _mm256_add_epi64(sacc, _mm256_sad_epu8(v, _mm256_setzero_si256()));
          }
          if (a_sums && src_signed) sacc = _mm256_add_epi32(sacc, _mm256_i32gather_epi32(asum, idx, 4));
        }
        if (a_sums) {
          _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sacc);
          int64_t sum = 0;
          if (src_signed)
            for (int32_t l : lanes) sum += l;
          else
            for (int l = 0; l < 4; ++l) sum += int64_t(uint64_t(uint32_t(lanes[2 * l])) | uint64_t(uint32_t(lanes[2 * l + 1])) << 32);
          a_sums[pix * groups + g] = int32_t(sum) - (src_signed ? 0 : sum_off);
        }
      }
    }
  }

  static constexpr int kVbmiMaxTerms = 16;
  // 64 lookups in a byte map held in q[0..3]: entries 0-127 and 128-255 by two vpermi2b, blended on bit 7 (hi)
  FRUGAL_TERMS_VBMI static __m512i lookup(const __m512i* q, __m512i idx, __mmask64 hi) {
    return _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(q[0], idx, q[1]),
                                  _mm512_permutex2var_epi8(q[2], idx, q[3]));
  }
  FRUGAL_TERMS_VBMI void load_tables(const std::vector<std::array<uint8_t, 256>>& maps, __m512i* tab) const {
    for (int t = 0; t < T; ++t)
      for (int q = 0; q < 4; ++q) tab[4 * t + q] = _mm512_loadu_si512(maps[size_t(t)].data() + 64 * q);
  }
  // One pixel of the source (any groups / icg): tab holds the maps (load_tables).
  FRUGAL_TERMS_VBMI void vbmi_pixel(const __m512i* tab, const uint8_t* codes, uint8_t* d, size_t pix,
                                    int32_t* a_sums) const {
    const __m512i zero = _mm512_setzero_si512(), x80 = _mm512_set1_epi8(char(0x80));
    const uint8_t* s = codes + pix * ic;
    for (int g = 0; g < groups; ++g) {
      const uint8_t* sg = s + g * icg;
      __m512i sacc = _mm512_setzero_si512();
      for (int c0 = 0; c0 < icg; c0 += 64) {
        const int len = std::min(64, icg - c0);
        const __mmask64 m = len == 64 ? ~__mmask64(0) : (__mmask64(1) << len) - 1;
        const __m512i idx = _mm512_maskz_loadu_epi8(m, sg + c0);
        const __mmask64 hi = _mm512_movepi8_mask(idx);  // bit 7: entries 128-255
        for (int t = 0; t < T; ++t) {
          const __m512i v = lookup(tab + 4 * t, idx, hi);
          _mm512_mask_storeu_epi8(d + (g * T + t) * icg + c0, m, v);
          if (a_sums) {  // signed bytes + 128 are unsigned: sum those, subtract 128 per byte below
            const __m512i u = src_signed ? _mm512_xor_si512(v, x80) : v;
            sacc = _mm512_add_epi64(sacc, _mm512_sad_epu8(_mm512_maskz_mov_epi8(m, u), zero));
          }
        }
      }
      if (a_sums) {
        alignas(64) int64_t lanes[8];  // (a store, not _mm512_reduce_add_epi64: GCC 12 warns inside it)
        _mm512_store_si512(lanes, sacc);
        int64_t sum = 0;
        for (int64_t l : lanes) sum += l;
        a_sums[pix * groups + g] = int32_t(sum) - sum_off;
      }
    }
  }
  FRUGAL_TERMS_VBMI void vbmi_pixels(const std::vector<std::array<uint8_t, 256>>& maps, const uint8_t* codes,
                                     uint8_t* d, size_t pix0, int count, size_t stride, int32_t* a_sums) const {
    __m512i tab[4 * kVbmiMaxTerms];
    load_tables(maps, tab);
    for (int i = 0; i < count; ++i) vbmi_pixel(tab, codes, d + size_t(i) * stride, pix0 + size_t(i), a_sums);
  }
  // Narrow layers (16 or 32 channels, one group), source rows [r0, r1): one 64-byte load holds the codes of
  // 64 / icg neighbouring pixels; each term's lookup is stored to every pixel's slot with a byte mask (lanes
  // p*icg.. of the vector land at pixel p, term t), so the lookups run on full vectors.
  FRUGAL_TERMS_VBMI void vbmi_rows(const std::vector<std::array<uint8_t, 256>>& maps, const uint8_t* codes, int h,
                                   int w, const uint8_t* padv, int bp, uint8_t* dst, int32_t* a_sums, int64_t r0,
                                   int64_t r1) const {
    __m512i tab[4 * kVbmiMaxTerms];
    load_tables(maps, tab);
    const __m512i zero = _mm512_setzero_si512(), x80 = _mm512_set1_epi8(char(0x80));
    const int Hp = h + 2 * bp, Wp = w + 2 * bp, C = T * icg, ppv = 64 / icg;
    const __mmask64 lane_mask = icg == 16 ? __mmask64(0xFFFF) : __mmask64(0xFFFFFFFFu);
    alignas(64) uint8_t group[64 * kVbmiMaxTerms];
    for (int64_t row = r0; row < r1; ++row) {
      const int b = int(row / Hp), y = int(row % Hp);
      uint8_t* d = dst + size_t(row) * Wp * C;
      if (y < bp || y >= bp + h) {
        for (int x = 0; x < Wp; ++x) std::memcpy(d + size_t(x) * C, padv, size_t(C));
        continue;
      }
      for (int x = 0; x < bp; ++x) {
        std::memcpy(d + size_t(x) * C, padv, size_t(C));
        std::memcpy(d + size_t(bp + w + x) * C, padv, size_t(C));
      }
      const size_t pix0 = (size_t(b) * h + y - bp) * w;
      int x = 0;
      for (; x + ppv <= w; x += ppv) {
        const __m512i idx = _mm512_loadu_si512(codes + (pix0 + x) * ic);
        const __mmask64 hi = _mm512_movepi8_mask(idx);
        __m512i sacc = _mm512_setzero_si512();
        uint8_t* dp = d + size_t(bp + x) * C;
        // the group's bytes are T whole cache lines: on an aligned destination they are assembled in an L1
        // buffer and written with streaming stores (no read-for-ownership of lines about to be overwritten)
        const bool stream = (reinterpret_cast<uintptr_t>(dp) & 63) == 0;
        uint8_t* out = stream ? group : dp;
        for (int t = 0; t < T; ++t) {
          const __m512i v = lookup(tab + 4 * t, idx, hi);
          for (int p = 0; p < ppv; ++p)  // lanes [p icg, (p+1) icg) -> pixel p, term t
            _mm512_mask_storeu_epi8(out + ptrdiff_t(p) * C + ptrdiff_t(t - p) * icg, lane_mask << (p * icg), v);
          if (a_sums) sacc = _mm512_add_epi64(sacc, _mm512_sad_epu8(src_signed ? _mm512_xor_si512(v, x80) : v, zero));
        }
        if (a_sums) {
          alignas(64) int64_t lanes[8];
          _mm512_store_si512(lanes, sacc);
          const int per = icg / 8;  // 8-byte sums per pixel
          for (int p = 0; p < ppv; ++p) {
            int64_t sum = 0;
            for (int k = 0; k < per; ++k) sum += lanes[p * per + k];
            a_sums[pix0 + size_t(x + p)] = int32_t(sum) - sum_off;
          }
        }
        if (stream)
          for (int l = 0; l < T; ++l)
            _mm512_stream_si512(reinterpret_cast<__m512i*>(dp + 64 * l),
                                _mm512_load_si512(reinterpret_cast<const __m512i*>(group + 64 * l)));
      }
      for (; x < w; ++x) vbmi_pixel(tab, codes, d + size_t(bp + x) * C, pix0 + size_t(x), a_sums);
    }
    _mm_sfence();  // the streaming stores are visible before the convolution reads them
  }
  // fill_src for byte maps: each 256-entry map lives in four zmm registers; two vpermi2b (entries 0-127 and
  // 128-255) and a blend on bit 7 look up 64 codes at once. Same bytes as the scalar loop.
  // a_sums: the sum of the bytes just written (as u8, or as s8 for a signed source), less sum_off, is
  // sum_t sum_c A_t, summed with vpsadbw while the bytes are still in registers.
  void fill_src_vbmi(const std::vector<std::array<uint8_t, 256>>& maps, const uint8_t* codes, int n, int h, int w,
                     const uint8_t* padv, int bp, uint8_t* dst, int32_t* a_sums) const {
    const int Hp = h + 2 * bp, Wp = w + 2 * bp, C = groups * T * icg;
    if (groups != 1 || (icg != 16 && icg != 32)) {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, int64_t(n) * Hp), [&](const tbb::blocked_range<int64_t>& r) {
        for (int64_t row = r.begin(); row < r.end(); ++row) {
          const int b = int(row / Hp), y = int(row % Hp);
          uint8_t* d = dst + size_t(row) * Wp * C;
          if (y < bp || y >= bp + h) {
            for (int x = 0; x < Wp; ++x) std::memcpy(d + size_t(x) * C, padv, size_t(C));
            continue;
          }
          for (int x = 0; x < bp; ++x) {
            std::memcpy(d + size_t(x) * C, padv, size_t(C));
            std::memcpy(d + size_t(bp + w + x) * C, padv, size_t(C));
          }
          vbmi_pixels(maps, codes, d + size_t(bp) * C, (size_t(b) * h + y - bp) * w, w, size_t(C), a_sums);
        }
      });
      return;
    }
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, int64_t(n) * Hp), [&](const tbb::blocked_range<int64_t>& r) {
      vbmi_rows(maps, codes, h, w, padv, bp, dst, a_sums, r.begin(), r.end());
    });
  }

  void pack_s16_weights() {
    const int quads = icg / 4, ob = (oc + 15) / 16, TK = T * icg;
    s16_wpack.assign(size_t(ob) * T * kh * kw * quads * 64, 0);
    for (int o = 0; o < oc; ++o)
      for (int p = 0; p < T; ++p)
        for (int c = 0; c < icg; ++c)
          for (int y = 0; y < kh; ++y)
            for (int x = 0; x < kw; ++x) {
              const size_t to = (((((size_t(o / 16) * T + p) * kh + y) * kw + x) * quads + c / 4) * 16 + o % 16) * 4 + c % 4;
              s16_wpack[to] = wplain[((size_t(o) * TK + size_t(p) * icg + c) * kh + y) * kw + x];
            }
    s16_wversion = wversion;
  }

  // The own engines (one group): per image, tiles of output rows whose padded source rows (filled here, from the
  // codes) fit in L2, so the expanded source never goes to memory; a_sums (sum_t sum_c A_t per input pixel, for the
  // shifted weights' correction) in a pass of its own.
  void run_s16(const uint8_t* codes, int n, int h, int w, uint8_t pad_code, int32_t* dst, int32_t* a_sums) {
    const int Wp = w + 2 * pad, C = T * icg, OH = out_h(h), OW = out_w(w), ob = (oc + 15) / 16;
    if (s16_wversion != wversion) pack_s16_weights();
    const RowFill F = row_fill(pad_code);
    if (a_sums) {
      const std::array<int32_t, 256>& asum = F.asum;
      tbb::parallel_for(tbb::blocked_range<size_t>(0, size_t(n) * h * w, 1024), [&](const tbb::blocked_range<size_t>& r) {
        for (size_t pix = r.begin(); pix < r.end(); ++pix) {
          int32_t sum = 0;
          for (int c = 0; c < icg; ++c) sum += asum[codes[pix * ic + size_t(c)]];
          a_sums[pix] = sum;
        }
      });
    }
    // output rows per tile: their source rows ((R - 1) stride + kh of Wp x C bytes) within ~256 KB
    const size_t row_bytes = size_t(Wp) * C;
    const int fit = int((size_t(256) << 10) / row_bytes);
    const int R = std::clamp((fit - kh) / stride + 1, 1, OH);
    const int tiles = (OH + R - 1) / R;
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, int64_t(n) * tiles), [&](const tbb::blocked_range<int64_t>& r) {
      std::vector<int32_t> acc(size_t(OW) * 16);
      std::vector<uint8_t> tile;
      for (int64_t job = r.begin(); job < r.end(); ++job) {
        const int b = int(job / tiles), oy0 = int(job % tiles) * R, oy1 = std::min(OH, oy0 + R);
        const int y0 = oy0 * stride, y1 = (oy1 - 1) * stride + kh;  // the padded rows read
        tile.resize(size_t(y1 - y0) * row_bytes);
        for (int y = y0; y < y1; ++y)
          fill_row(F, codes, b, y, h, w, pad, tile.data() + size_t(y - y0) * row_bytes, nullptr);
        const S16Args A{tile.data(), s16_wpack.data(), s16_scale.data(), s16_steps.data(), 0, Wp, C, icg, T, kh, kw,
                        stride, OH, OW, oc, dst, own_vnni, y0};
        for (int oy = oy0; oy < oy1; ++oy)
          for (int o = 0; o < ob; ++o) (own_twin ? s16_row_scalar : own_vnni ? vnni_row : s16_row)(A, b, oy, o, acc.data());
      }
    });
  }

  bool run(const uint8_t* codes, int n, int h, int w, uint8_t pad_code, int32_t* dst, int32_t* a_sums) {
    if (!weights_ok) return false;
    if (s16 || own_vnni) {
      run_s16(codes, n, h, w, pad_code, dst, a_sums);
      return true;
    }
    bool zero_border = true;
    for (int t = 0; t < T; ++t)
      zero_border = zero_border && a8[size_t(t)][pad_code] == 0;
    const int bp = zero_border ? 0 : pad;
    Prims* p = prims(n, h, w, bp);
    if (!p) return false;
    if (p->wversion != wversion) {
      memory user(wdesc(tag::goihw), cpu_engine(), wplain.data());
      dnnl::reorder(user, p->wmem).execute(cpu_stream(), user, p->wmem);
      cpu_stream().wait();
      p->wversion = wversion;
    }
    fill_src(codes, n, h, w, pad_code, bp, static_cast<uint8_t*>(p->src.get_data_handle()), a_sums);
    memory dst_mem(p->pd.dst_desc(), cpu_engine(), dst);
    p->prim.execute(cpu_stream(), {{DNNL_ARG_SRC, p->src},
                                   {DNNL_ARG_WEIGHTS, p->wmem},
                                   {DNNL_ARG_DST, dst_mem},
                                   {DNNL_ARG_SCRATCHPAD, p->scratch}});
    cpu_stream().wait();
    return true;
  }
};

namespace {
// The split layout's stored parts: values u8 (before division by scale), their weights' B map, their term, and per
// term the source offset off_t = -min(0, min A_t).
struct SplitParts {
  std::vector<std::array<double, 256>> a, b;
  std::vector<int> term, off;
  std::vector<int16_t> scale;
  std::vector<int32_t> steps;  // the s16 engine's int16 steps per part (s16_steps)
};

int gcd_of(const std::array<double, 256>& v) {
  int g = 0;
  for (double x : v) g = std::gcd(g, int(x));
  return std::max(g, 1);
}

// oneDNN's parts (for_s16 false): u = A_t + off_t as ceil(umax / 128) parts of min(128, max(0, u - 128 j)), scale 1.
// The s16 engine's (for_s16 true): terms with the same B map are merged first (bam's rows >= V: a_6 64 + a_7 128
// is one term), then a term whose u / gcd(u) <= 128 is one part stored as u / gcd (bam's bits: 0 or 1), any other
// as its two 4-bit fields (the exact product's a: 0..15 and 16 x 0..15). Empty when a term needs more parts than
// that (oneDNN: more than 4).
SplitParts split_parts(const std::vector<std::array<double, 256>>& amaps,
                       const std::vector<std::array<double, 256>>& bmaps, bool for_s16) {
  std::vector<std::array<double, 256>> at, bt;
  for (size_t t = 0; t < amaps.size(); ++t) {
    size_t same = at.size();
    if (for_s16)
      for (size_t k = 0; k < bt.size(); ++k)
        if (bt[k] == bmaps[t]) same = k;
    if (same == at.size()) {
      at.push_back(amaps[t]), bt.push_back(bmaps[t]);
    } else {
      for (int c = 0; c < 256; ++c) at[same][size_t(c)] += amaps[t][size_t(c)];
    }
  }
  SplitParts P;
  for (size_t t = 0; t < at.size(); ++t) {
    double lo = 0, hi = 0;
    for (double v : at[t]) lo = std::min(lo, v), hi = std::max(hi, v);
    const int off = int(-lo);
    std::array<double, 256> u{};
    for (int c = 0; c < 256; ++c) u[size_t(c)] = at[t][size_t(c)] + off;
    P.off.push_back(off);
    if (for_s16 && hi - lo > 32767) return {};  // (scales and A values are int16)
    if (for_s16 && (hi - lo) / gcd_of(u) <= 128) {  // (2 x 128 x [-128, 127] still fits int16)
      P.a.push_back(u), P.b.push_back(bt[t]), P.term.push_back(int(t)), P.scale.push_back(int16_t(gcd_of(u)));
      continue;
    }
    if (for_s16) {
      // wider values: 4-bit fields (u = sum_k 16^k nibble_k), each a part of 0..15 times 16^k: a step then sums
      // 2 x 15 x 128 at most, 8 steps in int16 (parts of up to 128 would need widening after every step)
      const int umax = int(hi - lo);
      const int fields = std::max(1, int(std::ceil(std::log2(double(umax) + 1) / 4)));
      if (fields > 2) return {};  // (scales 16^k must fit int16 and u8 values: 8-bit terms only)
      for (int k = 0; k < fields; ++k) {
        std::array<double, 256> part{};
        for (int c = 0; c < 256; ++c) part[size_t(c)] = double(((int(u[size_t(c)]) >> (4 * k)) & 15) << (4 * k));
        P.a.push_back(part), P.b.push_back(bt[t]), P.term.push_back(int(t)), P.scale.push_back(int16_t(gcd_of(part)));
      }
      continue;
    }
    const int parts = std::max(1, int(std::ceil((hi - lo) / 128.0)));
    if (parts > 4) return {};
    for (int j = 0; j < parts; ++j) {
      std::array<double, 256> part{};
      for (int c = 0; c < 256; ++c) part[size_t(c)] = std::min(128.0, std::max(0.0, u[size_t(c)] - 128.0 * j));
      P.a.push_back(part), P.b.push_back(bt[t]), P.term.push_back(int(t)), P.scale.push_back(1);
    }
  }
  return P;
}

// Per part, how many steps (4 channels: two pair sums per int16 lane) the s16 engine sums in int16 exactly: a lane
// gains 2 products of u / scale in [0, umax] and a stored weight in [wmin, wmax] per step.
std::vector<int32_t> s16_steps(const SplitParts& P, bool shift_w, int b_skip_code) {
  std::vector<int32_t> steps;
  for (size_t p = 0; p < P.a.size(); ++p) {
    int umax = 0, wmin = 0, wmax = 0;
    for (double v : P.a[p]) umax = std::max(umax, int(v) / P.scale[p]);
    for (int c = 0; c < 256; ++c)
      if (c != b_skip_code) {
        const int w = int(P.b[p][size_t(c)]) - (shift_w ? 128 : 0);
        wmin = std::min(wmin, w), wmax = std::max(wmax, w);
      }
    const int64_t hi = 2LL * umax * wmax, lo = 2LL * umax * -wmin;
    int64_t S = 1 << 20;
    if (hi > 0) S = std::min<int64_t>(S, 32767 / hi);
    if (lo > 0) S = std::min<int64_t>(S, 32768 / lo);
    steps.push_back(int32_t(std::max<int64_t>(S, 1)));  // (S >= 1: umax <= 128, weights s8)
  }
  return steps;
}
}  // namespace

OnednnTermConv::OnednnTermConv(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
OnednnTermConv::~OnednnTermConv() = default;

std::unique_ptr<OnednnTermConv> OnednnTermConv::make(const std::vector<std::array<double, 256>>& amaps,
                                                     const std::vector<std::array<double, 256>>& bmaps, int ic,
                                                     int oc, int kh, int kw, int stride, int pad, int groups,
                                                     int b_skip_code) {
  FRUGAL_CHECK(!amaps.empty() && amaps.size() == bmaps.size(), "onednn terms: need matching, non-empty term maps");
  auto I = std::make_unique<Impl>();
  std::vector<std::array<double, 256>> split_a, split_b;
  I->T = I->T_orig = int(amaps.size());
  I->ic = ic, I->oc = oc, I->kh = kh, I->kw = kw, I->stride = stride, I->pad = pad, I->groups = groups;
  I->icg = ic / groups, I->ocg = oc / groups;
  const double K = double(I->icg) * kh * kw * I->T;
  // The path by ISA: VNNI where oneDNN has it and kernels may use AVX-512, or where oneDNN runs AVX2-VNNI (vpdpbusd
  // on ymm: Intel client CPUs since Alder Lake have it without AVX-512); else (AVX2 CPUs, or FRUGAL_ISA=avx2 under
  // an AVX-512 oneDNN) the split u8 layout that oneDNN's pre-VNNI int8 convolution computes exactly; none on the
  // scalar path.
  const util::Isa isa = util::kernel_isa();
  if (isa == util::Isa::scalar || !has_int8_jit()) return nullptr;
  const bool vnni = has_vnni() && (isa == util::Isa::avx512 || dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx2_vnni);
  double amin = 0, amax = 0, bmin = 0, bmax = 0;
  for (const auto& m : amaps)
    for (double v : m) {
      if (v != std::floor(v)) return nullptr;
      amin = std::min(amin, v), amax = std::max(amax, v);
    }
  for (const auto& m : bmaps)
    for (int c = 0; c < 256; ++c) {
      if (c == b_skip_code) continue;
      const double v = m[size_t(c)];
      if (v != std::floor(v)) return nullptr;
      bmin = std::min(bmin, v), bmax = std::max(bmax, v);
    }
  I->b_skip_code = b_skip_code;
  double abound = 255;  // the largest |stored source value| (accumulator bound below)
  // the stored weights' layout depends on B alone: s8, or B - 128 for B in [0, 255]
  if (bmin >= -128 && bmax <= 127)
    I->shift_w = false;
  else if (bmin >= 0 && bmax <= 255)
    I->shift_w = true;
  else
    return nullptr;
  std::vector<int16_t> part_scale;  // split: each stored part's common factor (1 unless on the s16 engine)
  const int own_mode = detail::g_terms_s16.load();  // frugal's own engine: -1 where faster, 0 never, 1 / 2 forced
  if (!vnni) {
    I->split = true;
    abound = 0;
    for (size_t t = 0; t < amaps.size(); ++t) {
      double lo = 0, hi = 0;
      for (double v : amaps[t]) lo = std::min(lo, v), hi = std::max(hi, v);
      abound = std::max(abound, hi - lo);
    }
    // oneDNN's parts: per term, u = A_t + off_t in [0, umax_t] as parts_t channels of min(128, max(0, u - 128 j)):
    // u8 values <= 128 times s8 weights, so every vpmaddubsw pair sum is in [-32768, 32512] (exact)
    SplitParts dnn = split_parts(amaps, bmaps, false);
    if (dnn.a.empty()) return nullptr;
    SplitParts own;
    if (groups == 1 && I->icg % 8 == 0 && own_mode != 0) {
      own = split_parts(amaps, bmaps, true);
      const bool plain = isa == util::Isa::avx2 || dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx2;
      if (!own.a.empty()) {
        own.steps = s16_steps(own, I->shift_w, b_skip_code);
        double cost = 0;  // multiplies per step of 4 channels: 1 + 1 / steps per part, against oneDNN's 2
        for (int32_t S : own.steps) cost += 1.0 + 1.0 / double(S);
        double reach = 0;  // the largest |int32 sum|: 128 x the window x sum_p max u_p
        for (const auto& part : own.a) reach += *std::max_element(part.begin(), part.end());
        const bool fits = 128.0 * I->icg * kh * kw * reach < 2147483647.0;
        I->s16 = fits && (own_mode > 0 || (plain && cost <= 0.75 * 2.0 * double(dnn.a.size())));
      }
    }
    SplitParts& use = I->s16 ? own : dnn;
    split_a = std::move(use.a), split_b = std::move(use.b);
    I->part_term = std::move(use.term), I->term_off = std::move(use.off), part_scale = std::move(use.scale);
    if (I->s16) I->s16_steps = std::move(use.steps), I->s16_scale = part_scale;
    I->src_signed = false;
  } else if (amin >= 0 && amax <= 255) {
    I->src_signed = false;
  } else if (amin >= -128 && amax <= 127) {
    I->src_signed = true;
  } else if (amin >= -256 && amax <= 254) {
    // e.g. sign-magnitude DRUM: |A(-128)| = 144. Each term becomes two s8 terms, clamp(A) and A - clamp(A),
    // with the same B (twice the channels, still exact).
    std::vector<std::array<double, 256>> a2, b2;
    for (size_t t = 0; t < amaps.size(); ++t) {
      std::array<double, 256> lo{}, hi{};
      for (int c = 0; c < 256; ++c) {
        lo[size_t(c)] = std::min(127.0, std::max(-128.0, amaps[t][size_t(c)]));
        hi[size_t(c)] = amaps[t][size_t(c)] - lo[size_t(c)];
      }
      a2.push_back(lo), a2.push_back(hi), b2.push_back(bmaps[t]), b2.push_back(bmaps[t]);
    }
    I->src_signed = true;
    split_a = std::move(a2), split_b = std::move(b2);
    abound = 2 * 255;
  } else {
    return nullptr;
  }
  const auto& A = split_a.empty() ? amaps : split_a;
  const auto& B = split_a.empty() ? bmaps : split_b;
  I->T = int(A.size());
  if (K * abound * 128.0 >= 2147483647.0) return nullptr;  // s32 accumulator bound
  for (size_t t = 0; t < A.size(); ++t) {
    std::array<uint8_t, 256> a{}, b{};
    const int32_t g = part_scale.empty() ? 1 : part_scale[t];  // the s16 engine stores a part divided by it
    for (int c = 0; c < 256; ++c) {
      a[size_t(c)] = uint8_t((int32_t(A[t][size_t(c)]) / g) & 0xFF);
      b[size_t(c)] = uint8_t((int32_t(B[t][size_t(c)]) - (I->shift_w ? 128 : 0)) & 0xFF);
    }
    // the A_t values proper (split: the first part of a term carries -off_t, so the parts of a term sum to A_t)
    std::array<int16_t, 256> av{};
    const bool first_part = I->split && (t == 0 || I->part_term[t - 1] != I->part_term[t]);
    const int off = first_part ? I->term_off[size_t(I->part_term[t])] : 0;
    for (int c = 0; c < 256; ++c) av[size_t(c)] = int16_t(A[t][size_t(c)] - off);
    I->a8.push_back(a), I->b8.push_back(b), I->aval.push_back(av);
  }
  // The VNNI layout on frugal's engine (vnni_row): where oneDNN runs AVX2-VNNI, whose jit_uni_int8 kernel is slow on
  // these wide sources (bam:0,6 on 32 channels: 224 -> 32 at 16x16 took 12 ms against 3 for the fp32 conv)
  if (!I->split && !I->src_signed && groups == 1 && I->icg % 8 == 0 && util::cpu_features().avxvnni &&
      own_mode != 0 && (own_mode > 0 || dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx2_vnni)) {
    I->own_vnni = true;
    I->s16_scale.assign(size_t(I->T), 1);
    I->s16_steps.assign(size_t(I->T), 1 << 20);
  }
  I->own_twin = (I->s16 || I->own_vnni) && own_mode == 2;
  int off_sum = 0;
  for (int off : I->term_off) off_sum += off;
  I->sum_off = (I->src_signed ? 128 * I->T * I->icg : 0) + off_sum * I->icg;
  return std::unique_ptr<OnednnTermConv>(new OnednnTermConv(std::move(I)));
}

void OnednnTermConv::set_weights(const uint8_t* wcodes) {
  Impl& I = *impl_;
  const size_t nw = size_t(I.oc) * I.icg * I.kh * I.kw;
  I.weights_ok = I.b_skip_code < 0 || std::none_of(wcodes, wcodes + nw, [&](uint8_t c) { return c == I.b_skip_code; });
  const int TK = I.T * I.icg;
  I.wplain.assign(size_t(I.groups) * I.ocg * TK * I.kh * I.kw, 0);
  auto put = [&](size_t idx, int t, uint8_t wc) { I.wplain[idx] = I.b8[size_t(t)][wc]; };
  for (int g = 0; g < I.groups; ++g)
    for (int o = 0; o < I.ocg; ++o)
      for (int t = 0; t < I.T; ++t)
        for (int c = 0; c < I.icg; ++c)
          for (int y = 0; y < I.kh; ++y)
            for (int x = 0; x < I.kw; ++x) {
              const size_t idx = (((size_t(g) * I.ocg + o) * TK + t * I.icg + c) * I.kh + y) * I.kw + x;
              put(idx, t, wcodes[((size_t(g * I.ocg + o) * I.icg + c) * I.kh + y) * I.kw + x]);
            }
  I.wcorr.clear();
  if (std::any_of(I.term_off.begin(), I.term_off.end(), [](int off) { return off != 0; })) {
    // the source offsets' share: per term, off_t * (the sum of its stored s8 weights, taken from its first part)
    I.wcorr.resize(size_t(I.oc));
    const size_t per = size_t(TK) * I.kh * I.kw, part_len = size_t(I.icg) * I.kh * I.kw;
    for (int o = 0; o < I.oc; ++o) {
      int64_t corr = 0;
      for (int t = 0; t < I.T; ++t) {
        if (t > 0 && I.part_term[size_t(t - 1)] == I.part_term[size_t(t)]) continue;
        const int off = I.term_off[size_t(I.part_term[size_t(t)])];
        if (off == 0) continue;
        int64_t sum = 0;
        const uint8_t* wt = I.wplain.data() + size_t(o) * per + size_t(t) * part_len;
        for (size_t i = 0; i < part_len; ++i) sum += int8_t(wt[i]);
        corr -= int64_t(off) * sum;
      }
      I.wcorr[size_t(o)] = int32_t(corr);
    }
  }
  ++I.wversion;
}

bool OnednnTermConv::run_s32(const uint8_t* codes, int n, int h, int w, uint8_t pad_code, int32_t* acc) {
  Impl& I = *impl_;
  std::vector<int32_t>& ps = I.s_psum;
  if (!run_s32_raw(codes, n, h, w, pad_code, acc, I.shift_w ? &ps : nullptr)) return false;
  if (!I.shift_w) return true;
  const int OH = I.out_h(h), OW = I.out_w(w), G = I.groups;
  std::vector<int32_t>& ws = I.s_wsum;
  ws.resize(size_t(n) * OH * OW * G);
  window_sums(ps.data(), n, h, w, G, I.kh, I.kw, I.stride, I.pad, shift_border_sum(pad_code), ws.data());
  tbb::parallel_for(tbb::blocked_range<size_t>(0, size_t(n) * OH * OW, 512), [&](const tbb::blocked_range<size_t>& r) {
    for (size_t px = r.begin(); px < r.end(); ++px)
      for (int g = 0; g < G; ++g) {
        const int32_t add = 128 * ws[px * G + g];
        int32_t* ag = acc + px * size_t(I.oc) + size_t(g) * I.ocg;
        for (int o = 0; o < I.ocg; ++o) ag[o] += add;
      }
  });
  return true;
}

bool OnednnTermConv::run_s32_raw(const uint8_t* codes, int n, int h, int w, uint8_t pad_code, int32_t* acc,
                                 std::vector<int32_t>* a_sums, std::vector<int32_t>* chan) {
  Impl& I = *impl_;
  if (a_sums) a_sums->resize(size_t(n) * h * w * I.groups);
  if (!I.run(codes, n, h, w, pad_code, acc, a_sums ? a_sums->data() : nullptr)) return false;
  if (chan) {
    chan->assign(size_t(I.oc), 0);
    if (!I.wcorr.empty()) *chan = I.wcorr;
  } else if (!I.wcorr.empty()) {
    const int32_t* wc = I.wcorr.data();
    const size_t oc = size_t(I.oc);
    tbb::parallel_for(tbb::blocked_range<size_t>(0, size_t(n) * I.out_h(h) * I.out_w(w), 512),
                      [&](const tbb::blocked_range<size_t>& r) {
                        for (size_t px = r.begin(); px < r.end(); ++px) {
                          int32_t* a = acc + px * oc;
                          for (size_t o = 0; o < oc; ++o) a[o] += wc[o];
                        }
                      });
  }
  return true;
}

int OnednnTermConv::channels() const { return impl_->T * impl_->icg; }

const char* OnednnTermConv::path() const {
  return impl_->s16        ? "int8-s16-avx2"
         : impl_->own_vnni ? "int8-vnni-avx2"
         : impl_->split    ? "onednn-int8-split"
                           : "onednn-int8-vnni";
}

bool OnednnTermConv::plain_avx2() const {
  return impl_->split && dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx2;
}

bool OnednnTermConv::own_engine() const { return impl_->s16 || impl_->own_vnni; }

bool OnednnTermConv::shift_weights() const { return impl_->shift_w; }

int32_t OnednnTermConv::shift_border_sum(uint8_t pad_code) const {
  const Impl& I = *impl_;
  int32_t s = 0;
  for (int t = 0; t < I.T; ++t) s += I.icg * I.aval[size_t(t)][pad_code];
  return s;
}

void window_sums(const int32_t* plane, int n, int h, int w, int G, int kh, int kw, int stride, int pad,
                 int32_t border, int32_t* out) {
  // Separable: per output row, the column sums over the kh window rows of the padded plane (a padded position
  // counts `border`), then the kw-wide sums along the row. Both loops run over contiguous int32 and vectorize.
  const int OH = (h + 2 * pad - kh) / stride + 1, OW = (w + 2 * pad - kw) / stride + 1, Wp = w + 2 * pad;
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, int64_t(n) * OH), [&](const tbb::blocked_range<int64_t>& r) {
    std::vector<int32_t> col(size_t(Wp) * G);
    for (int64_t row = r.begin(); row < r.end(); ++row) {
      const int b = int(row / OH), oy = int(row % OH);
      const int y0 = oy * stride - pad, ya = std::max(0, y0), yb = std::min(h, y0 + kh);
      const int32_t outside_rows = kh - std::max(0, yb - ya);
      int32_t* c = col.data();
      std::fill(c, c + size_t(Wp) * G, int32_t(kh) * border);  // the padded columns, and rows added below
      int32_t* ci = c + size_t(pad) * G;
      const size_t wg = size_t(w) * G;
      for (size_t i = 0; i < wg; ++i) ci[i] = outside_rows * border;
      for (int y = ya; y < yb; ++y) {
        const int32_t* pr = plane + (size_t(b) * h + y) * wg;
        for (size_t i = 0; i < wg; ++i) ci[i] += pr[i];
      }
      int32_t* o = out + size_t(row) * OW * G;
      if (G == 1 && stride == 1) {
        std::memcpy(o, c, size_t(OW) * sizeof(int32_t));
        for (int dx = 1; dx < kw; ++dx)
          for (int ox = 0; ox < OW; ++ox) o[ox] += c[ox + dx];
        continue;
      }
      for (int ox = 0; ox < OW; ++ox) {
        const int32_t* cx = c + size_t(ox) * stride * G;
        for (int g = 0; g < G; ++g) {
          int32_t s = 0;
          for (int dx = 0; dx < kw; ++dx) s += cx[size_t(dx) * G + g];
          o[size_t(ox) * G + g] = s;
        }
      }
    }
  });
}


}  // namespace frugal::approx
