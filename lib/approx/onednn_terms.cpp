#include "approx/onednn_terms.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
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

namespace frugal::approx {

namespace detail {
namespace {
std::atomic<bool> g_terms_scalar_fill{false};
}
void set_terms_scalar_fill(bool on) { g_terms_scalar_fill = on; }
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

  // Walks the source buffer (N, H + 2 bp, W + 2 bp, groups * T * icg) row by row in parallel: border pixels get
  // padv, and body(d, pix) fills the pixel at d from input pixel pix (codes + pix * ic).
  template <class Body>
  void for_each_src_pixel(int n, int h, int w, int bp, const uint8_t* padv, uint8_t* dst, const Body& body) const {
    const int Hp = h + 2 * bp, Wp = w + 2 * bp, C = groups * T * icg;
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, int64_t(n) * Hp), [&](const tbb::blocked_range<int64_t>& r) {
      for (int64_t row = r.begin(); row < r.end(); ++row) {
        const int b = int(row / Hp), y = int(row % Hp);
        uint8_t* d = dst + size_t(row) * Wp * C;
        const bool row_in = y >= bp && y < bp + h;
        for (int x = 0; x < Wp; ++x, d += C) {
          if (!row_in || x < bp || x >= bp + w)
            std::memcpy(d, padv, size_t(C));
          else
            body(d, (size_t(b) * h + y - bp) * w + x - bp);
        }
      }
    });
  }

  void fill_src(const std::vector<std::array<uint8_t, 256>>& maps, const uint8_t* codes, int n, int h, int w,
                uint8_t pad_code, int bp, uint8_t* dst, int32_t* a_sums) const {
    std::vector<uint8_t> padv(static_cast<size_t>(groups) * T * icg);
    for (int g = 0; g < groups; ++g)
      for (int t = 0; t < T; ++t)
        for (int c = 0; c < icg; ++c) padv[size_t((g * T + t) * icg + c)] = maps[size_t(t)][pad_code];
    if (T <= kVbmiMaxTerms && vbmi_fill()) {
      fill_src_vbmi(maps, codes, n, h, w, padv.data(), bp, dst, a_sums);
      return;
    }
    // sum over terms of A_t(code), for the shift_w correction: one lookup per input element
    std::array<int32_t, 256> asum{};
    if (a_sums)
      for (int t = 0; t < T; ++t)
        for (int c = 0; c < 256; ++c) asum[size_t(c)] += aval[size_t(t)][size_t(c)];
    if (icg % 8 == 0 && avx2_fill()) {
      // the T bytes of each code in chunks of 4 terms: packed[q][code] holds terms 4q..4q+3, term 4q+i in byte i
      std::vector<std::array<int32_t, 256>> packed(size_t((T + 3) / 4));
      for (int c = 0; c < 256; ++c)
        for (int t = 0; t < T; ++t)
          packed[size_t(t / 4)][size_t(c)] |= int32_t(uint32_t(maps[size_t(t)][size_t(c)]) << (8 * (t % 4)));
      const int Hp = h + 2 * bp, Wp = w + 2 * bp, C = groups * T * icg;
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, int64_t(n) * Hp), [&](const tbb::blocked_range<int64_t>& r) {
        for (int64_t row = r.begin(); row < r.end(); ++row) {
          const int b = int(row / Hp), y = int(row % Hp);
          uint8_t* d = dst + size_t(row) * Wp * C;
          if (y < bp || y >= bp + h) {
            for (int x = 0; x < Wp; ++x) std::memcpy(d + size_t(x) * C, padv.data(), size_t(C));
            continue;
          }
          for (int x = 0; x < bp; ++x) {
            std::memcpy(d + size_t(x) * C, padv.data(), size_t(C));
            std::memcpy(d + size_t(bp + w + x) * C, padv.data(), size_t(C));
          }
          avx2_pixels(packed, asum.data(), codes, d + size_t(bp) * C, (size_t(b) * h + y - bp) * w, w, size_t(C),
                      a_sums);
        }
      });
      return;
    }
    for_each_src_pixel(n, h, w, bp, padv.data(), dst, [&](uint8_t* d, size_t pix) {
      const uint8_t* s = codes + pix * ic;
      for (int g = 0; g < groups; ++g) {
        const uint8_t* sg = s + g * icg;
        for (int t = 0; t < T; ++t) {
          const uint8_t* m = maps[size_t(t)].data();
          uint8_t* dg = d + (g * T + t) * icg;
          for (int c = 0; c < icg; ++c) dg[c] = m[sg[c]];
        }
        if (a_sums) {
          int32_t sum = 0;
          for (int c = 0; c < icg; ++c) sum += asum[sg[c]];
          a_sums[pix * groups + g] = sum;
        }
      }
    });
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

  Prims* run(const uint8_t* codes, int n, int h, int w, uint8_t pad_code, int32_t* dst, int32_t* a_sums) {
    if (!weights_ok) return nullptr;
    bool zero_border = true;
    for (int t = 0; t < T; ++t)
      zero_border = zero_border && a8[size_t(t)][pad_code] == 0;
    const int bp = zero_border ? 0 : pad;
    Prims* p = prims(n, h, w, bp);
    if (!p) return nullptr;
    if (p->wversion != wversion) {
      memory user(wdesc(tag::goihw), cpu_engine(), wplain.data());
      dnnl::reorder(user, p->wmem).execute(cpu_stream(), user, p->wmem);
      cpu_stream().wait();
      p->wversion = wversion;
    }
    fill_src(a8, codes, n, h, w, pad_code, bp, static_cast<uint8_t*>(p->src.get_data_handle()), a_sums);
    memory dst_mem(p->pd.dst_desc(), cpu_engine(), dst);
    p->prim.execute(cpu_stream(), {{DNNL_ARG_SRC, p->src},
                                   {DNNL_ARG_WEIGHTS, p->wmem},
                                   {DNNL_ARG_DST, dst_mem},
                                   {DNNL_ARG_SCRATCHPAD, p->scratch}});
    cpu_stream().wait();
    return p;
  }
};

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
  if (!vnni) {
    // per term, u = A_t + off_t in [0, umax_t] as parts_t channels of min(128, max(0, u - 128 j)): u8 values
    // <= 128 times s8 weights, so every vpmaddubsw pair sum is in [-32768, 32512] (exact)
    I->split = true;
    abound = 0;
    for (size_t t = 0; t < amaps.size(); ++t) {
      double lo = 0, hi = 0;
      for (double v : amaps[t]) lo = std::min(lo, v), hi = std::max(hi, v);
      const int off = int(-lo), parts = std::max(1, int(std::ceil((hi - lo) / 128.0)));
      if (parts > 4) return nullptr;
      abound = std::max(abound, hi - lo);
      I->term_off.push_back(off);
      for (int j = 0; j < parts; ++j) {
        std::array<double, 256> part{};
        for (int c = 0; c < 256; ++c)
          part[size_t(c)] = std::min(128.0, std::max(0.0, amaps[t][size_t(c)] + off - 128.0 * j));
        split_a.push_back(part), split_b.push_back(bmaps[t]), I->part_term.push_back(int(t));
      }
    }
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
  if (bmin >= -128 && bmax <= 127)
    I->shift_w = false;
  else if (bmin >= 0 && bmax <= 255)
    I->shift_w = true;
  else
    return nullptr;
  const auto& A = split_a.empty() ? amaps : split_a;
  const auto& B = split_a.empty() ? bmaps : split_b;
  I->T = int(A.size());
  if (K * abound * 128.0 >= 2147483647.0) return nullptr;  // s32 accumulator bound
  for (size_t t = 0; t < A.size(); ++t) {
    std::array<uint8_t, 256> a{}, b{};
    for (int c = 0; c < 256; ++c) {
      a[size_t(c)] = uint8_t(int32_t(A[t][size_t(c)]) & 0xFF);
      b[size_t(c)] = uint8_t((int32_t(B[t][size_t(c)]) - (I->shift_w ? 128 : 0)) & 0xFF);
    }
    // the A_t values proper (split: the first part of a term carries -off_t, so the parts of a term sum to A_t)
    std::array<int16_t, 256> av{};
    const bool first_part = I->split && (t == 0 || I->part_term[t - 1] != I->part_term[t]);
    const int off = first_part ? I->term_off[size_t(I->part_term[t])] : 0;
    for (int c = 0; c < 256; ++c) av[size_t(c)] = int16_t(A[t][size_t(c)] - off);
    I->a8.push_back(a), I->b8.push_back(b), I->aval.push_back(av);
  }
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

const char* OnednnTermConv::path() const { return impl_->split ? "onednn-int8-split" : "onednn-int8-vnni"; }

bool OnednnTermConv::plain_avx2() const {
  return impl_->split && dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx2;
}

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
