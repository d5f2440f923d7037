// functional mode of ApproxConv2d (conv_impl.h), and the term engine lowrank:R runs on too: bit-exact, no table.
// The multiplier's Decomposition (multiplier.h) M(a,b) = sum_t A_t(a) B_t(b) - SA SB min(FA FB, FA2 FB2): its
// separable terms run as one int8 oneDNN convolution over T x the input channels (onednn_terms.h); the min()
// correction, and every term where oneDNN cannot run them, on the direct NHWC term conv below with 16-bit
// multiplies: avx512-vnni (vpdpwssd) > avx2 (vpmaddwd) > scalar (term_row_scalar, the twin).
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <type_traits>

#include <immintrin.h>

#include "approx/conv_impl.h"
#include "util/check.h"

namespace frugal::approx {

using util::Isa;

TermPath term_path() {
  switch (util::kernel_isa()) {
    case Isa::avx512: return util::cpu_features().avx512vnni ? TermPath::avx512 : TermPath::avx2;
    case Isa::avx2: return TermPath::avx2;
    default: return TermPath::scalar;
  }
}

const char* term_path_name(TermPath p) {
  switch (p) {
    case TermPath::avx512: return "avx512-vnni";
    case TermPath::avx2: return "avx2";
    default: return "scalar";
  }
}

std::pair<int64_t, int64_t> ApproxConv2d::Impl::init_functional() {
  Decomposition d;
  FRUGAL_CHECK(mult->decomposition(d),
               "approx mode 'functional' needs a functional multiplier (exact, trunc, "
               "bam, mitchell, drum); '",
               mult->name(), "' is a table: use mode lut or lowrank:R");
  int64_t bound0 = 0;
  amaps = d.a_terms;
  bmaps = d.b_terms;
  nt0 = int(d.a_terms.size());
  for (size_t t = 0; t < d.a_terms.size(); ++t) bound0 += max_abs(d.a_terms[t]) * max_abs(d.b_terms[t]);
  if (d.has_min) {
    has_min = true;
    signed_min = mult->is_signed;
    std::array<int16_t, 256> nsb{};
    for (int c = 0; c < 256; ++c) nsb[size_t(c)] = int16_t(-d.sb[size_t(c)]);
    amaps.push_back(d.fa), amaps.push_back(d.fa2), amaps.push_back(d.sa);
    bmaps.push_back(d.fb), bmaps.push_back(d.fb2), bmaps.push_back(nsb);
    bound0 += 16384;
  }
  // the separable terms (mitchell: the exact product a*b) on oneDNN int8; a min() term stays on the term
  // engine, which then adds only that correction (run_dn_s32). Where the design has a narrow form (bam: one term
  // per bit of a, see Decomposition), the form with the fewer int8 channels on this layout: on the pre-VNNI split
  // layout the narrow one (8-bit A values take two u8 parts there), on VNNI mostly the row form (fewer terms).
  auto make_dn = [&](const std::vector<std::array<int16_t, 256>>& at, const std::vector<std::array<int16_t, 256>>& bt) {
    std::vector<std::array<double, 256>> am, bm;
    for (size_t t = 0; t < at.size(); ++t) {
      std::array<double, 256> x{}, y{};
      for (int c = 0; c < 256; ++c) x[size_t(c)] = at[t][size_t(c)], y[size_t(c)] = bt[t][size_t(c)];
      am.push_back(x), bm.push_back(y);
    }
    // signed multipliers take symmetric weights: code -128 (0x80) never occurs
    return OnednnTermConv::make(am, bm, ic, oc, kh, kw, stride, pad, groups, mult->is_signed ? 0x80 : -1);
  };
  dn = make_dn(d.a_terms, d.b_terms);
  size_t dn_terms = d.a_terms.size();
  if (!d.a_narrow.empty() && !d.has_min) {
    std::unique_ptr<OnednnTermConv> nd = make_dn(d.a_narrow, d.b_narrow);
    if (nd && (!dn || nd->channels() < dn->channels())) dn = std::move(nd), dn_terms = d.a_narrow.size();
  }
  // On oneDNN's plain AVX2 int8 kernels (the split layout) an 8-bit A term takes two int8 channels, and each
  // int8 channel costs as many multiply instructions (vpmaddubsw + vpmaddwd per 32 products) as one int16 plane
  // of the term engine (vpmaddwd per 16). When every term takes two parts (drum, trunc, mitchell's exact
  // product), the term engine alone does half the multiplies, in one pass with mitchell's min() correction, and
  // was the faster: drum:4 1.2x against 1.5x, mitchell 2.6-3.0x against 3.0-3.5x the fp32 conv on resnet20's
  // shapes (Zen 5, AVX2 forced, bench/approx_bench.cpp). bam's narrow form (one part per term) stays on oneDNN.
  // The same on frugal's s16 engine (its 8-bit terms take two 4-bit parts there): drum:4 1.0-1.2x against
  // 0.8-0.95x on the term engine, mitchell 2.6-2.8x against 2.2-2.6x.
  if (dn && (dn->plain_avx2() || dn->own_engine()) && dn->channels() >= 2 * int(dn_terms) * icg) dn.reset();
  return {bound0, 0};
}

void ApproxConv2d::Impl::init_term_layout() {
  icgp = (icg + 1) / 2 * 2;
  icp = icgp / 2;
  ob = (ocg + 15) / 16;
  for (const auto& m : amaps) {
    std::array<int32_t, 256> m32{};
    for (int c = 0; c < 256; ++c) m32[size_t(c)] = m[size_t(c)];
    amaps32.push_back(m32);
  }
}

void ApproxConv2d::Impl::pack_weights() const {
  if (mode == Mode::lut) return;
  wpack_stale = false;
  const int np = nplanes();
  wpack.assign(size_t(np) * groups * ob * kh * kw * icp * 16, 0);
  for (int p = 0; p < np; ++p)
    for (int g = 0; g < groups; ++g)
      for (int o = 0; o < ocg; ++o)
        for (int c = 0; c < icg; ++c)
          for (int y = 0; y < kh; ++y)
            for (int x = 0; x < kw; ++x) {
              uint8_t wc = wcodes[((size_t(g * ocg + o) * icg + c) * kh + y) * kw + x];
              int16_t v = bmaps[size_t(p)][wc];
              size_t idx = (((((size_t(p) * groups + g) * ob + o / 16) * kh + y) * kw + x) * icp + c / 2) * 16 + o % 16;
              auto* pair = reinterpret_cast<int16_t*>(&wpack[idx]);
              pair[c % 2] = v;
            }
}


// ---------------------------------------------------------------------------------------------------
// Term engine: direct NHWC conv, 16 output channels per vector, int16 pairs of input channels.
namespace {
struct TermArgs {
  const int16_t* planes;  // [plane][n][Hp][Wp][G*icgp], from the first plane this run uses
  size_t plane_stride;    // elements per plane
  const int32_t* wpack;   // [plane][g][ob][kh][kw][icp][16], from the same first plane
  int Hp, Wp, C, icgp, icp, kh, kw, stride, groups, ob, ocg, oc, OH, OW, nt0, nt1;
  int32_t* acc0;
  int32_t* acc1;
  bool accumulate;  // acc0 += instead of acc0 =
};

inline size_t wpack_index(const TermArgs& A, int p, int g, int o, int y, int x) {
  return ((((size_t(p) * A.groups + g) * A.ob + o) * A.kh + y) * A.kw + x) * A.icp * 16;
}

// The min() term's sign factor: SG 0 = unsigned (every sign +1: the pair sum is weighted by -1), 1 = signed with
// every activation of the image >= 0 (the weight's -sign only), 2 = signed (activation sign x weight -sign).
template <int PX, bool MIN, int SG, bool TWO>
FRUGAL_AVX512_VNNI void term_block(const TermArgs& A, int b, int oy, int ox0, int g, int o) {
  __m512i acc0[PX], acc1[PX];
  for (int i = 0; i < PX; ++i) acc0[i] = _mm512_setzero_si512(), acc1[i] = _mm512_setzero_si512();
  const int nt = A.nt0 + A.nt1;
  const __m512i neg1 = _mm512_set1_epi16(-1);
  if (A.accumulate)  // acc0 was just written by the oneDNN conv and is likely out of cache: fetch it during the block
    for (int i = 0; i < PX; ++i)
      _mm_prefetch(reinterpret_cast<const char*>(A.acc0 + ((size_t(b) * A.OH + oy) * A.OW + ox0 + i) * A.oc +
                                                 size_t(g) * A.ocg + size_t(o) * 16),
                   _MM_HINT_T0);
  for (int y = 0; y < A.kh; ++y)
    for (int x = 0; x < A.kw; ++x) {
      size_t off[PX];
      for (int i = 0; i < PX; ++i)
        off[i] =
            ((size_t(b) * A.Hp + oy * A.stride + y) * A.Wp + size_t(ox0 + i) * A.stride + x) * A.C + size_t(g) * A.icgp;
      for (int t = 0; t < nt; ++t) {
        const int32_t* wp = A.wpack + wpack_index(A, t, g, o, y, x);
        const int32_t* pl = reinterpret_cast<const int32_t*>(A.planes + size_t(t) * A.plane_stride);
        if (!TWO || t < A.nt0) {
          for (int c = 0; c < A.icp; ++c) {
            __m512i wv = _mm512_loadu_si512(wp + c * 16);
            for (int i = 0; i < PX; ++i)
              acc0[i] = _mm512_dpwssd_epi32(acc0[i], _mm512_set1_epi32(pl[off[i] / 2 + c]), wv);
          }
        } else {
          for (int c = 0; c < A.icp; ++c) {
            __m512i wv = _mm512_loadu_si512(wp + c * 16);
            for (int i = 0; i < PX; ++i)
              acc1[i] = _mm512_dpwssd_epi32(acc1[i], _mm512_set1_epi32(pl[off[i] / 2 + c]), wv);
          }
        }
      }
      if constexpr (MIN) {
        const int32_t* wf = A.wpack + wpack_index(A, nt, g, o, y, x);
        const int32_t* wf2 = A.wpack + wpack_index(A, nt + 1, g, o, y, x);
        const int32_t* wsg = A.wpack + wpack_index(A, nt + 2, g, o, y, x);
        const int32_t* pf = reinterpret_cast<const int32_t*>(A.planes + size_t(nt) * A.plane_stride);
        const int32_t* pf2 = reinterpret_cast<const int32_t*>(A.planes + size_t(nt + 1) * A.plane_stride);
        const int32_t* psg = reinterpret_cast<const int32_t*>(A.planes + size_t(nt + 2) * A.plane_stride);
        for (int c = 0; c < A.icp; ++c) {
          __m512i fb = _mm512_loadu_si512(wf + c * 16), fb2 = _mm512_loadu_si512(wf2 + c * 16);
          __m512i nsb = SG > 0 ? _mm512_loadu_si512(wsg + c * 16) : neg1;
          for (int i = 0; i < PX; ++i) {
            __m512i p1 = _mm512_mullo_epi16(_mm512_set1_epi32(pf[off[i] / 2 + c]), fb);
            __m512i p2 = _mm512_mullo_epi16(_mm512_set1_epi32(pf2[off[i] / 2 + c]), fb2);
            __m512i mn = _mm512_min_epi16(p1, p2);
            __m512i sg = SG == 2 ? _mm512_mullo_epi16(_mm512_set1_epi32(psg[off[i] / 2 + c]), nsb) : nsb;
            acc0[i] = _mm512_dpwssd_epi32(acc0[i], mn, sg);
          }
        }
      }
    }
  const int lanes = std::min(16, A.ocg - o * 16);
  const __mmask16 mask = __mmask16((1u << lanes) - 1u);
  for (int i = 0; i < PX; ++i) {
    size_t base = ((size_t(b) * A.OH + oy) * A.OW + ox0 + i) * A.oc + size_t(g) * A.ocg + size_t(o) * 16;
    __m512i r = acc0[i];
    if (A.accumulate) r = _mm512_add_epi32(r, _mm512_maskz_loadu_epi32(mask, A.acc0 + base));
    _mm512_mask_storeu_epi32(A.acc0 + base, mask, r);
    if (TWO) _mm512_mask_storeu_epi32(A.acc1 + base, mask, acc1[i]);
  }
}

template <bool MIN, int SG, bool TWO>
FRUGAL_AVX512_VNNI void term_row(const TermArgs& A, int b, int oy, int g, int o) {
  constexpr int kPx = 8;
  for (int ox = 0; ox < A.OW; ox += kPx) {
    switch (std::min(kPx, A.OW - ox)) {
      case 8:
        term_block<8, MIN, SG, TWO>(A, b, oy, ox, g, o);
        break;
      case 7:
        term_block<7, MIN, SG, TWO>(A, b, oy, ox, g, o);
        break;
      case 6:
        term_block<6, MIN, SG, TWO>(A, b, oy, ox, g, o);
        break;
      case 5:
        term_block<5, MIN, SG, TWO>(A, b, oy, ox, g, o);
        break;
      case 4:
        term_block<4, MIN, SG, TWO>(A, b, oy, ox, g, o);
        break;
      case 3:
        term_block<3, MIN, SG, TWO>(A, b, oy, ox, g, o);
        break;
      case 2:
        term_block<2, MIN, SG, TWO>(A, b, oy, ox, g, o);
        break;
      default:
        term_block<1, MIN, SG, TWO>(A, b, oy, ox, g, o);
        break;
    }
  }
}

// 32 lookups in a 256-entry int16 map: four vpermi2w over 64 entries each, blended on index bits 6 and 7
FRUGAL_AVX512 inline __m512i lookup16x32(const int16_t* map, __m512i idx, __mmask32 m6, __mmask32 m7) {
  const __m512i r0 = _mm512_permutex2var_epi16(_mm512_loadu_si512(map), idx, _mm512_loadu_si512(map + 32));
  const __m512i r1 = _mm512_permutex2var_epi16(_mm512_loadu_si512(map + 64), idx, _mm512_loadu_si512(map + 96));
  const __m512i r2 = _mm512_permutex2var_epi16(_mm512_loadu_si512(map + 128), idx, _mm512_loadu_si512(map + 160));
  const __m512i r3 = _mm512_permutex2var_epi16(_mm512_loadu_si512(map + 192), idx, _mm512_loadu_si512(map + 224));
  return _mm512_mask_blend_epi16(m7, _mm512_mask_blend_epi16(m6, r0, r1), _mm512_mask_blend_epi16(m6, r2, r3));
}

// The plane fill of image b for one group without pair padding: a row's interior is w * icg contiguous codes in
// and int16 values out, looked up 32 at a time for every plane [p0, pend); the border pixels take each plane's
// value of pad_code.
FRUGAL_AVX512 void fill_image_avx512(const std::array<int16_t, 256>* amaps, const uint8_t* img, int b, int h, int w,
                                     int icg, int pad, int Hp, int Wp, int C, int16_t* planes, size_t pstride, int p0,
                                     int pend, uint8_t pad_code) {
  const __m512i b6 = _mm512_set1_epi16(64), b7 = _mm512_set1_epi16(128);
  const size_t row_len = size_t(w) * icg;
  for (int y = 0; y < Hp; ++y) {
    for (int p = p0; p < pend; ++p) {
      int16_t* row = planes + size_t(p) * pstride + (size_t(b) * Hp + y) * Wp * C;
      const int16_t padv = amaps[p][pad_code];
      if (y < pad || y >= pad + h) {
        std::fill(row, row + size_t(Wp) * C, padv);
      } else {
        std::fill(row, row + size_t(pad) * C, padv);
        std::fill(row + size_t(pad + w) * C, row + size_t(Wp) * C, padv);
      }
    }
    if (y < pad || y >= pad + h) continue;
    const uint8_t* s = img + size_t(y - pad) * row_len;
    for (size_t i = 0; i < row_len; i += 32) {
      const size_t len = std::min<size_t>(32, row_len - i);
      const __mmask32 m = len == 32 ? ~__mmask32(0) : (__mmask32(1) << len) - 1;
      const __m512i idx = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, s + i));
      const __mmask32 m6 = _mm512_test_epi16_mask(idx, b6), m7 = _mm512_test_epi16_mask(idx, b7);
      for (int p = p0; p < pend; ++p) {
        int16_t* dst = planes + size_t(p) * pstride + ((size_t(b) * Hp + y) * Wp + pad) * C + i;
        _mm512_mask_storeu_epi16(dst, m, lookup16x32(amaps[p].data(), idx, m6, m7));
      }
    }
  }
}

// dg[c] = map[sg[c]] for c < n, 32 at a time
FRUGAL_AVX512 void lookup_codes_avx512(const int16_t* map, const uint8_t* sg, int n, int16_t* dg) {
  const __m512i b6 = _mm512_set1_epi16(64), b7 = _mm512_set1_epi16(128);
  for (int c = 0; c < n; c += 32) {
    const int len = std::min(32, n - c);
    const __mmask32 m = len == 32 ? ~__mmask32(0) : (__mmask32(1) << len) - 1;
    const __m512i idx = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, sg + c));
    const __m512i v = lookup16x32(map, idx, _mm512_test_epi16_mask(idx, b6), _mm512_test_epi16_mask(idx, b7));
    _mm512_mask_storeu_epi16(dg + c, m, v);
  }
}

// AVX2 twin of fill_image_avx512: 16 codes at a time, two vpgatherdd per plane from the widened maps, packed
// (with saturation, which the int16 values never reach) to int16.
FRUGAL_AVX2 void fill_image_avx2(const std::array<int16_t, 256>* amaps, const std::array<int32_t, 256>* amaps32,
                                 const uint8_t* img, int b, int h, int w, int icg, int pad, int Hp, int Wp, int C,
                                 int16_t* planes, size_t pstride, int p0, int pend, uint8_t pad_code) {
  const size_t row_len = size_t(w) * icg;
  for (int y = 0; y < Hp; ++y) {
    for (int p = p0; p < pend; ++p) {
      int16_t* row = planes + size_t(p) * pstride + (size_t(b) * Hp + y) * Wp * C;
      const int16_t padv = amaps[p][pad_code];
      if (y < pad || y >= pad + h) {
        std::fill(row, row + size_t(Wp) * C, padv);
      } else {
        std::fill(row, row + size_t(pad) * C, padv);
        std::fill(row + size_t(pad + w) * C, row + size_t(Wp) * C, padv);
      }
    }
    if (y < pad || y >= pad + h) continue;
    const uint8_t* s = img + size_t(y - pad) * row_len;
    const size_t at = ((size_t(b) * Hp + y) * Wp + pad) * C;
    size_t i = 0;
    for (; i + 16 <= row_len; i += 16) {
      const __m128i c16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
      const __m256i lo = _mm256_cvtepu8_epi32(c16), hi = _mm256_cvtepu8_epi32(_mm_srli_si128(c16, 8));
      for (int p = p0; p < pend; ++p) {
        const int* m = amaps32[p].data();
        const __m256i v = _mm256_packs_epi32(_mm256_i32gather_epi32(m, lo, 4), _mm256_i32gather_epi32(m, hi, 4));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(planes + size_t(p) * pstride + at + i),
                            _mm256_permute4x64_epi64(v, 0xD8));  // (lo 0-3, hi 0-3, lo 4-7, hi 4-7) -> in order
      }
    }
    for (; i < row_len; ++i)
      for (int p = p0; p < pend; ++p) planes[size_t(p) * pstride + at + i] = amaps[p][s[i]];
  }
}

FRUGAL_AVX2 inline __m256i ld8(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// AVX2 twin of term_block: the 16 output channels as two 8-lane halves, vpmaddwd + vpaddd for vpdpwssd.
template <int PX, bool MIN, int SG, bool TWO>
FRUGAL_AVX2 void term_block_avx2(const TermArgs& A, int b, int oy, int ox0, int g, int o) {
  __m256i acc0[PX][2], acc1[PX][2];
  for (int i = 0; i < PX; ++i)
    for (int hf = 0; hf < 2; ++hf) acc0[i][hf] = _mm256_setzero_si256(), acc1[i][hf] = _mm256_setzero_si256();
  const int nt = A.nt0 + A.nt1;
  const __m256i neg1 = _mm256_set1_epi16(-1);
  for (int y = 0; y < A.kh; ++y)
    for (int x = 0; x < A.kw; ++x) {
      size_t off[PX];
      for (int i = 0; i < PX; ++i)
        off[i] =
            ((size_t(b) * A.Hp + oy * A.stride + y) * A.Wp + size_t(ox0 + i) * A.stride + x) * A.C + size_t(g) * A.icgp;
      for (int t = 0; t < nt; ++t) {
        const int32_t* wp = A.wpack + wpack_index(A, t, g, o, y, x);
        const int32_t* pl = reinterpret_cast<const int32_t*>(A.planes + size_t(t) * A.plane_stride);
        if (!TWO || t < A.nt0) {
          for (int c = 0; c < A.icp; ++c) {
            const __m256i w0 = ld8(wp + c * 16), w1 = ld8(wp + c * 16 + 8);
            for (int i = 0; i < PX; ++i) {
              const __m256i av = _mm256_set1_epi32(pl[off[i] / 2 + c]);
              acc0[i][0] = _mm256_add_epi32(acc0[i][0], _mm256_madd_epi16(av, w0));
              acc0[i][1] = _mm256_add_epi32(acc0[i][1], _mm256_madd_epi16(av, w1));
            }
          }
        } else {
          for (int c = 0; c < A.icp; ++c) {
            const __m256i w0 = ld8(wp + c * 16), w1 = ld8(wp + c * 16 + 8);
            for (int i = 0; i < PX; ++i) {
              const __m256i av = _mm256_set1_epi32(pl[off[i] / 2 + c]);
              acc1[i][0] = _mm256_add_epi32(acc1[i][0], _mm256_madd_epi16(av, w0));
              acc1[i][1] = _mm256_add_epi32(acc1[i][1], _mm256_madd_epi16(av, w1));
            }
          }
        }
      }
      if constexpr (MIN) {
        const int32_t* wf = A.wpack + wpack_index(A, nt, g, o, y, x);
        const int32_t* wf2 = A.wpack + wpack_index(A, nt + 1, g, o, y, x);
        const int32_t* wsg = A.wpack + wpack_index(A, nt + 2, g, o, y, x);
        const int32_t* pf = reinterpret_cast<const int32_t*>(A.planes + size_t(nt) * A.plane_stride);
        const int32_t* pf2 = reinterpret_cast<const int32_t*>(A.planes + size_t(nt + 1) * A.plane_stride);
        const int32_t* psg = reinterpret_cast<const int32_t*>(A.planes + size_t(nt + 2) * A.plane_stride);
        for (int c = 0; c < A.icp; ++c)
          for (int hf = 0; hf < 2; ++hf) {
            const __m256i fb = ld8(wf + c * 16 + 8 * hf), fb2 = ld8(wf2 + c * 16 + 8 * hf);
            const __m256i nsb = SG > 0 ? ld8(wsg + c * 16 + 8 * hf) : neg1;
            for (int i = 0; i < PX; ++i) {
              const __m256i p1 = _mm256_mullo_epi16(_mm256_set1_epi32(pf[off[i] / 2 + c]), fb);
              const __m256i p2 = _mm256_mullo_epi16(_mm256_set1_epi32(pf2[off[i] / 2 + c]), fb2);
              const __m256i mn = _mm256_min_epi16(p1, p2);
              const __m256i sg = SG == 2 ? _mm256_mullo_epi16(_mm256_set1_epi32(psg[off[i] / 2 + c]), nsb) : nsb;
              acc0[i][hf] = _mm256_add_epi32(acc0[i][hf], _mm256_madd_epi16(mn, sg));
            }
          }
      }
    }
  const int lanes = std::min(16, A.ocg - o * 16);
  for (int i = 0; i < PX; ++i) {
    const size_t base = ((size_t(b) * A.OH + oy) * A.OW + ox0 + i) * A.oc + size_t(g) * A.ocg + size_t(o) * 16;
    alignas(32) int32_t r0[16], r1[16];
    _mm256_store_si256(reinterpret_cast<__m256i*>(r0), acc0[i][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(r0 + 8), acc0[i][1]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(r1), acc1[i][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(r1 + 8), acc1[i][1]);
    for (int l = 0; l < lanes; ++l) {
      A.acc0[base + l] = A.accumulate ? int32_t(uint32_t(A.acc0[base + l]) + uint32_t(r0[l])) : r0[l];
      if (TWO) A.acc1[base + l] = r1[l];
    }
  }
}

template <bool MIN, int SG, bool TWO>
FRUGAL_AVX2 void term_row_avx2(const TermArgs& A, int b, int oy, int g, int o) {
  constexpr int kPx = 4;
  for (int ox = 0; ox < A.OW; ox += kPx) {
    switch (std::min(kPx, A.OW - ox)) {
      case 4:
        term_block_avx2<4, MIN, SG, TWO>(A, b, oy, ox, g, o);
        break;
      case 3:
        term_block_avx2<3, MIN, SG, TWO>(A, b, oy, ox, g, o);
        break;
      case 2:
        term_block_avx2<2, MIN, SG, TWO>(A, b, oy, ox, g, o);
        break;
      default:
        term_block_avx2<1, MIN, SG, TWO>(A, b, oy, ox, g, o);
        break;
    }
  }
}

// Runs the term kernel family K (term_row or term_row_avx2) with the template arguments this layer needs.
template <class Row>
void term_dispatch(const Row& row, bool has_min, bool signed_min, bool img_neg, bool two) {
  if (has_min) {
    if (!signed_min)
      row(std::integral_constant<bool, true>(), std::integral_constant<int, 0>(), std::false_type());
    else if (!img_neg)
      row(std::integral_constant<bool, true>(), std::integral_constant<int, 1>(), std::false_type());
    else
      row(std::integral_constant<bool, true>(), std::integral_constant<int, 2>(), std::false_type());
  } else if (two) {
    row(std::integral_constant<bool, false>(), std::integral_constant<int, 0>(), std::true_type());
  } else {
    row(std::integral_constant<bool, false>(), std::integral_constant<int, 0>(), std::false_type());
  }
}

void term_row_scalar(const TermArgs& A, bool has_min, int b, int oy, int g, int o) {
  const int nt = A.nt0 + A.nt1;
  const int lanes = std::min(16, A.ocg - o * 16);
  for (int ox = 0; ox < A.OW; ++ox) {
    int32_t s0[16] = {}, s1[16] = {};
    for (int y = 0; y < A.kh; ++y)
      for (int x = 0; x < A.kw; ++x) {
        size_t off =
            ((size_t(b) * A.Hp + oy * A.stride + y) * A.Wp + size_t(ox) * A.stride + x) * A.C + size_t(g) * A.icgp;
        auto plane = [&](int p) { return A.planes + size_t(p) * A.plane_stride + off; };
        auto wts = [&](int p, int c, int l) {
          return reinterpret_cast<const int16_t*>(A.wpack + wpack_index(A, p, g, o, y, x) + size_t(c) * 16 + l);
        };
        for (int c = 0; c < A.icp; ++c)
          for (int l = 0; l < lanes; ++l)
            for (int j = 0; j < 2; ++j) {
              for (int t = 0; t < nt; ++t) {
                int32_t v = int32_t(plane(t)[2 * c + j]) * wts(t, c, l)[j];
                (t < A.nt0 ? s0 : s1)[l] += v;
              }
              if (has_min) {
                int32_t p1 = int32_t(plane(nt)[2 * c + j]) * wts(nt, c, l)[j];
                int32_t p2 = int32_t(plane(nt + 1)[2 * c + j]) * wts(nt + 1, c, l)[j];
                s0[l] += std::min(p1, p2) * int32_t(plane(nt + 2)[2 * c + j]) * wts(nt + 2, c, l)[j];
              }
            }
      }
    for (int l = 0; l < lanes; ++l) {
      size_t base = ((size_t(b) * A.OH + oy) * A.OW + ox) * A.oc + size_t(g) * A.ocg + size_t(o) * 16 + l;
      A.acc0[base] = A.accumulate ? A.acc0[base] + s0[l] : s0[l];
      if (A.nt1) A.acc1[base] = s1[l];
    }
  }
}
}  // namespace

std::vector<uint8_t> ApproxConv2d::Impl::fill_planes(const uint8_t* src, int n, int h, int w, uint8_t pad_code,
                                                     int p0) const {
  const int Hp = h + 2 * pad, Wp = w + 2 * pad, C = groups * icgp, np = nplanes();
  const size_t pstride = size_t(n) * Hp * Wp * C;
  const bool simd = term_path() != TermPath::scalar;  // the SIMD kernels skip the sign plane of non-negative images
  const bool fill512 = util::kernel_isa() == Isa::avx512;  // the plane fill's lookups (AVX-512 BW)
  const bool fill2 = util::kernel_isa() == Isa::avx2;
  // every (pixel, real channel) is written below; the pair-padding channels stay zero from the first fill
  std::vector<int16_t>& planes = s_planes;
  if (s_planes_shape != std::array<int, 3>{n, h, w} || planes.size() != size_t(np) * pstride) {
    planes.assign(size_t(np) * pstride, 0);
    s_planes_shape = {n, h, w};
  }
  // signed min(): images whose activations (and padding) are all >= 0 skip the sign plane (kernel SG 1)
  std::vector<uint8_t> img_neg(size_t(n), 1);
  tbb::parallel_for(0, n, [&](int b) {
    const uint8_t* img = src + size_t(b) * h * w * ic;
    if (has_min && signed_min && simd) {
      uint8_t any = pad_code;
      const size_t len = size_t(h) * w * ic;
      for (size_t i = 0; i < len; ++i) any |= img[i];
      img_neg[size_t(b)] = (any & 0x80) != 0;
    }
    const int pend = has_min && signed_min && simd && !img_neg[size_t(b)] ? np - 1 : np;  // sign plane unused?
    if (fill512 && groups == 1 && icgp == icg) {
      fill_image_avx512(amaps.data(), img, b, h, w, icg, pad, Hp, Wp, C, planes.data(), pstride, p0, pend, pad_code);
      return;
    }
    if (fill2 && groups == 1 && icgp == icg) {
      fill_image_avx2(amaps.data(), amaps32.data(), img, b, h, w, icg, pad, Hp, Wp, C, planes.data(), pstride, p0,
                      pend, pad_code);
      return;
    }
    for (int p = p0; p < pend; ++p) {
      const auto& map = amaps[size_t(p)];
      int16_t* pl = planes.data() + size_t(p) * pstride;
      const int16_t padv = map[pad_code];
      for (int y = 0; y < Hp; ++y) {
        const bool row_in = y >= pad && y < pad + h;
        for (int x = 0; x < Wp; ++x) {
          int16_t* d = pl + ((size_t(b) * Hp + y) * Wp + x) * C;
          if (!row_in || x < pad || x >= pad + w) {
            for (int g = 0; g < groups; ++g)
              for (int c = 0; c < icg; ++c) d[g * icgp + c] = padv;
            continue;
          }
          const uint8_t* s = img + (size_t(y - pad) * w + x - pad) * ic;
          for (int g = 0; g < groups; ++g) {
            int16_t* dg = d + g * icgp;
            const uint8_t* sg = s + g * icg;
            if (fill512)
              lookup_codes_avx512(map.data(), sg, icg, dg);
            else
              for (int c = 0; c < icg; ++c) dg[c] = map[sg[c]];
          }
        }
      }
    }
  });
  return img_neg;
}

void ApproxConv2d::Impl::run_terms(const uint8_t* src, int n, int h, int w, uint8_t pad_code, int32_t* acc0,
                                   int32_t* acc1, bool skip_sep, bool accumulate) const {
  const int Hp = h + 2 * pad, Wp = w + 2 * pad, C = groups * icgp;
  const size_t pstride = size_t(n) * Hp * Wp * C;
  const TermPath tpath = term_path();
  const int p0 = skip_sep ? nt0 : 0;  // the first plane this run reads
  const std::vector<uint8_t> img_neg = fill_planes(src, n, h, w, pad_code, p0);
  const std::vector<int16_t>& planes = s_planes;
  if (wpack_stale) pack_weights();
  const size_t wplane = size_t(groups) * ob * kh * kw * icp * 16;
  TermArgs A{planes.data() + size_t(p0) * pstride,
             pstride,
             wpack.data() + size_t(p0) * wplane,
             Hp,
             Wp,
             C,
             icgp,
             icp,
             kh,
             kw,
             stride,
             groups,
             ob,
             ocg,
             oc,
             out_h(h),
             out_w(w),
             skip_sep ? 0 : nt0,
             nt1,
             acc0,
             acc1,
             accumulate};
  const int64_t rows = int64_t(n) * A.OH;
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, rows * groups * ob), [&](const tbb::blocked_range<int64_t>& rr) {
    for (int64_t job = rr.begin(); job < rr.end(); ++job) {
      int o = int(job % ob), g = int((job / ob) % groups);
      int64_t row = job / (int64_t(ob) * groups);
      int b = int(row / A.OH), oy = int(row % A.OH);
      if (tpath == TermPath::avx512) {
        term_dispatch(
            [&](auto mn, auto sg, auto two) {
              term_row<decltype(mn)::value, decltype(sg)::value, decltype(two)::value>(A, b, oy, g, o);
            },
            has_min, signed_min, img_neg[size_t(b)], nt1 > 0);
        continue;
      }
      if (tpath == TermPath::avx2) {
        term_dispatch(
            [&](auto mn, auto sg, auto two) {
              term_row_avx2<decltype(mn)::value, decltype(sg)::value, decltype(two)::value>(A, b, oy, g, o);
            },
            has_min, signed_min, img_neg[size_t(b)], nt1 > 0);
        continue;
      }
      term_row_scalar(A, has_min, b, oy, g, o);
    }
  });
}

// ---------------------------------------------------------------------------------------------------
bool ApproxConv2d::Impl::run_dn_s32(const uint8_t* src, int n, int h, int w, uint8_t pad_code, int32_t* acc,
                                    bool raw, int32_t* corr) const {
  if (!dn || util::kernel_isa() == Isa::scalar) return false;
  const bool ok = raw ? dn->run_s32_raw(src, n, h, w, pad_code, acc, dn->shift_weights() ? &s_psum : nullptr, &s_chan)
                      : dn->run_s32(src, n, h, w, pad_code, acc);
  if (!ok) return false;
  if (dn_lr) {
    // (the rank-1 factors' weights are never shifted: raw leaves out only the per-channel constant)
    const bool lr_raw = raw && !dn_lr->shift_weights();
    if (lr_raw ? !dn_lr->run_s32_raw(src, n, h, w, pad_code, corr, nullptr, &s_lr_chan)
               : !dn_lr->run_s32(src, n, h, w, pad_code, corr))
      return false;
    if (raw && !lr_raw) s_lr_chan.assign(size_t(oc), 0);
  }
  if (has_min) run_terms(src, n, h, w, pad_code, acc, nullptr, /*skip_sep=*/true, /*accumulate=*/true);
  return true;
}

}  // namespace frugal::approx
