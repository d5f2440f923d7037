// Quantization shared by the integer kernels (conv_impl.h) and fake quantization (fake_quant.h): which bit-widths a
// multiplier takes, how weights and activations are coded, and forward()'s activation codes and per-pixel code sums
// (AVX-512 and AVX2 paths, each with the scalar loop as its twin).
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/parallel_reduce.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <tuple>

#include <immintrin.h>

#include "approx/conv_impl.h"
#include "util/check.h"

namespace frugal::approx {

using util::Isa;

std::string bits_error(const ApproxSpec& spec, const Multiplier& m) {
  const int wb = spec.weight_bits, ab = spec.act_bits;
  std::ostringstream e;
  if (wb < 2 || wb > 16 || ab < 2 || ab > 16) {
    e << "weight and activation bits must be in [2,16], got w" << wb << "a" << ab;
  } else if ((wb > 8 || ab > 8) && !m.is_exact()) {
    e << "multiplier '" << m.name() << "' has 8-bit operands (a 256x256 product table), so weight and activation "
      << "bits must be in [2,8], got w" << wb << "a" << ab
      << "; 9-16 bits need multiplier=exact (or exact:signed), which runs them as fake quantization";
  }
  return e.str();
}

bool runs_as_fake_quant(const ApproxSpec& spec, const Multiplier& m) {
  return m.is_exact() && (spec.weight_bits > 8 || spec.act_bits > 8);
}

QuantParams weight_quant_params(const ApproxSpec& spec, bool is_signed, const float* w, int oc, size_t per) {
  QuantConfig qc;
  qc.bits = spec.weight_bits;
  qc.is_signed = is_signed;
  qc.symmetric = is_signed;  // unsigned multipliers need affine weights to cover negative values
  std::vector<float> lo(static_cast<size_t>(oc)), hi(static_cast<size_t>(oc));
  for (int o = 0; o < oc; ++o) {
    auto [mn, mx] = std::minmax_element(w + size_t(o) * per, w + size_t(o + 1) * per);
    lo[size_t(o)] = *mn, hi[size_t(o)] = *mx;
  }
  if (!spec.per_channel) {
    float l = *std::min_element(lo.begin(), lo.end()), h = *std::max_element(hi.begin(), hi.end());
    return make_quant_params(qc, &l, &h, 1, 1);
  }
  return make_quant_params(qc, lo.data(), hi.data(), oc, int64_t(per));
}

QuantParams act_quant_params(const ApproxSpec& spec, bool is_signed, float lo, float hi) {
  QuantConfig qc;
  qc.bits = spec.act_bits;
  qc.is_signed = is_signed;
  qc.symmetric = spec.act_symmetric && is_signed;  // unsigned codes: affine ([0, max] has zero point 0)
  return make_quant_params(qc, &lo, &hi, 1, 1);
}

std::pair<float, float> range_with_zero_ref(const float* src, size_t count) {
  float lo = 0.0f, hi = 0.0f;
  for (size_t i = 0; i < count; ++i) lo = src[i] < lo ? src[i] : lo, hi = src[i] > hi ? src[i] : hi;
  return {lo, hi};
}

std::pair<float, float> range_with_zero(const float* src, size_t count) {
  using MM = std::pair<float, float>;
  MM r = tbb::parallel_reduce(
      tbb::blocked_range<size_t>(0, count, 1 << 16), MM{0.0f, 0.0f},
      [&](const tbb::blocked_range<size_t>& rr, MM m) {
        // 16 lanes in 4 SSE registers (baseline x86-64): minps(v, m) is v < m ? v : m lane by lane, the twin's
        // comparison, so a NaN never enters and -0 / +0 resolve alike. (GCC kept the plain-C form of this loop
        // scalar: 0.37 ms for 2.1 M floats, a tenth of an approximate conv.)
        __m128 mn[4], mx[4];
        for (int k = 0; k < 4; ++k) mn[k] = _mm_set1_ps(m.first), mx[k] = _mm_set1_ps(m.second);
        size_t i = rr.begin();
        for (; i + 16 <= rr.end(); i += 16)
          for (int k = 0; k < 4; ++k) {
            const __m128 v = _mm_loadu_ps(src + i + 4 * size_t(k));
            mn[k] = _mm_min_ps(v, mn[k]);
            mx[k] = _mm_max_ps(v, mx[k]);
          }
        for (; i < rr.end(); ++i)
          m.first = src[i] < m.first ? src[i] : m.first, m.second = src[i] > m.second ? src[i] : m.second;
        alignas(16) float lmn[16], lmx[16];
        for (int k = 0; k < 4; ++k) _mm_store_ps(lmn + 4 * k, mn[k]), _mm_store_ps(lmx + 4 * k, mx[k]);
        for (int l = 0; l < 16; ++l)
          m.first = lmn[l] < m.first ? lmn[l] : m.first, m.second = lmx[l] > m.second ? lmx[l] : m.second;
        return m;
      },
      [](MM a, MM b) {
        return MM{b.first < a.first ? b.first : a.first, b.second > a.second ? b.second : a.second};
      });
  return r;  // the range always includes 0 (the reduction starts from it)
}

// ---------------------------------------------------------------------------------------------------
// forward()'s quantization and code-sum passes: SIMD twins of its scalar loops, from i (k) as far as whole vectors
// go; they return where the scalar tail starts.
namespace {
// codes[i] = code(round(src[i] * inv) + za) with round(...) clamped to [lo_z, hi_z] (the code range minus z_a).
// Clamping before rounding equals rounding then clamping (the bounds are integers) and keeps the conversion in
// range; vcvtps2dq rounds to nearest even like nearbyint.
// (GCC 12 warns of the _mm512_undefined_* operand inside these intrinsics: GCC PR 105593, a false positive)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
FRUGAL_AVX512 size_t quantize_avx512(const float* src, size_t i, size_t end, float inv, float lo_z, float hi_z,
                                     int32_t za, uint8_t* cd) {
  const __m512 vinv = _mm512_set1_ps(inv), vlo = _mm512_set1_ps(lo_z), vhi = _mm512_set1_ps(hi_z);
  const __m512i vz = _mm512_set1_epi32(za);
  for (; i + 16 <= end; i += 16) {
    const __m512 t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(src + i), vinv), vlo), vhi);
    const __m512i qi = _mm512_add_epi32(_mm512_cvtps_epi32(t), vz);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(cd + i), _mm512_cvtepi32_epi8(qi));  // code(): low byte
  }
  return i;
}
#pragma GCC diagnostic pop

FRUGAL_AVX2 inline __m256i quantize8_avx2(const float* s, __m256 vinv, __m256 vlo, __m256 vhi, __m256i vz) {
  const __m256 t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(s), vinv), vlo), vhi);
  return _mm256_and_si256(_mm256_add_epi32(_mm256_cvtps_epi32(t), vz), _mm256_set1_epi32(0xFF));  // code()
}

FRUGAL_AVX2 size_t quantize_avx2(const float* src, size_t i, size_t end, float inv, float lo_z, float hi_z,
                                 int32_t za, uint8_t* cd) {
  const __m256 vinv = _mm256_set1_ps(inv), vlo = _mm256_set1_ps(lo_z), vhi = _mm256_set1_ps(hi_z);
  const __m256i vz = _mm256_set1_epi32(za), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (; i + 32 <= end; i += 32) {
    // 4 x 8 codes (each in [0, 255]) packed to bytes; the packs work per 128-bit lane, the permute restores order
    const __m256i a = quantize8_avx2(src + i, vinv, vlo, vhi, vz), b = quantize8_avx2(src + i + 8, vinv, vlo, vhi, vz);
    const __m256i c = quantize8_avx2(src + i + 16, vinv, vlo, vhi, vz);
    const __m256i d = quantize8_avx2(src + i + 24, vinv, vlo, vhi, vz);
    const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(cd + i), _mm256_permutevar8x32_epi32(bytes, order));
  }
  return i;
}

// chsum[k] = sum of the icg codes of (pixel, group) k read as u8 (or s8 when sgn). vpsadbw sums each 8 bytes; a
// signed byte + 128 is its unsigned twin (128 per value taken off).
FRUGAL_AVX512 size_t code_sums_avx512(const uint8_t* cd, size_t k, size_t end, int icg, bool sgn, int32_t* chsum) {
  if (icg != 8 && icg != 16 && icg != 32 && icg != 64) return k;
  const int per = icg / 8, gpv = 8 / per;  // 8-byte sums per group, groups per 64-byte vector
  const __m512i zero = _mm512_setzero_si512(), flip = _mm512_set1_epi8(sgn ? char(0x80) : 0);
  const int32_t off = sgn ? 128 * icg : 0;
  for (; k + size_t(gpv) <= end; k += size_t(gpv)) {
    const __m512i v = _mm512_xor_si512(_mm512_loadu_si512(cd + k * size_t(icg)), flip);
    alignas(64) int64_t lanes[8];
    _mm512_store_si512(lanes, _mm512_sad_epu8(v, zero));
    for (int j = 0; j < gpv; ++j) {
      int64_t t = 0;
      for (int l = 0; l < per; ++l) t += lanes[j * per + l];
      chsum[k + size_t(j)] = int32_t(t) - off;
    }
  }
  return k;
}

FRUGAL_AVX2 size_t code_sums_avx2(const uint8_t* cd, size_t k, size_t end, int icg, bool sgn, int32_t* chsum) {
  if (icg != 8 && icg != 16 && icg != 32 && icg % 32 != 0) return k;
  const __m256i zero = _mm256_setzero_si256(), flip = _mm256_set1_epi8(sgn ? char(0x80) : 0);
  const int32_t off = sgn ? 128 * icg : 0;
  alignas(32) int64_t lanes[4];
  if (icg <= 32) {
    const int per = icg / 8, gpv = 4 / per;  // 8-byte sums per group, groups per 32-byte vector
    for (; k + size_t(gpv) <= end; k += size_t(gpv)) {
      const __m256i v =
          _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(cd + k * size_t(icg))), flip);
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_sad_epu8(v, zero));
      for (int j = 0; j < gpv; ++j) {
        int64_t t = 0;
        for (int l = 0; l < per; ++l) t += lanes[j * per + l];
        chsum[k + size_t(j)] = int32_t(t) - off;
      }
    }
    return k;
  }
  for (; k < end; ++k) {  // icg a multiple of 32: whole vectors per group
    __m256i acc = zero;
    for (int c = 0; c < icg; c += 32) {
      const __m256i v =
          _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(cd + k * size_t(icg) + c)), flip);
      acc = _mm256_add_epi64(acc, _mm256_sad_epu8(v, zero));
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
    chsum[k] = int32_t(lanes[0] + lanes[1] + lanes[2] + lanes[3]) - off;
  }
  return k;
}
}  // namespace

void quantize_codes(Isa isa, const float* src, size_t begin, size_t end, float inv, float lo, float hi, int32_t za,
                    uint8_t* codes) {
  const float zf = float(za);
  size_t i = begin;
  if (isa == Isa::avx512)
    i = quantize_avx512(src, i, end, inv, lo - zf, hi - zf, za, codes);
  else if (isa == Isa::avx2)
    i = quantize_avx2(src, i, end, inv, lo - zf, hi - zf, za, codes);
  for (; i < end; ++i) {
    const float q = std::min(std::max(std::nearbyint(src[i] * inv) + zf, lo), hi);
    codes[i] = static_cast<uint8_t>(static_cast<int32_t>(q) & 0xFF);  // code()
  }
}

void code_sums(Isa isa, const uint8_t* codes, size_t begin, size_t end, int icg, bool sgn, int32_t* chsum) {
  size_t k = begin;
  if (isa == Isa::avx512)
    k = code_sums_avx512(codes, k, end, icg, sgn, chsum);
  else if (isa == Isa::avx2)
    k = code_sums_avx2(codes, k, end, icg, sgn, chsum);
  for (; k < end; ++k) {
    const uint8_t* c = codes + k * size_t(icg);
    int32_t t = 0;
    for (int j = 0; j < icg; ++j) t += sgn ? int32_t(int8_t(c[j])) : int32_t(c[j]);
    chsum[k] = t;
  }
}

QuantParams ApproxConv2d::Impl::act_params(const float* src, size_t count) const {
  float lo = act_lo, hi = act_hi;
  if (!act_set) std::tie(lo, hi) = range_with_zero(src, count);
  return act_quant_params(spec, mult->is_signed, lo, hi);
}

ApproxConv2d::Impl::ActCodes ApproxConv2d::Impl::quantize_input(const float* src, int n, int h, int w) const {
  const size_t in_total = size_t(n) * h * w * ic;
  const QuantParams aq = act_params(src, in_total);
  ActCodes r;
  r.sa = aq.scale[0];
  r.za = aq.zero_point[0];
  s_codes.resize(in_total);
  // where weight zero points are non-zero, also sum the activation values per pixel and group (their window sums
  // give the z_w * sum(a) term)
  r.need_asum = std::any_of(wq.zero_point.begin(), wq.zero_point.end(), [](int32_t z) { return z != 0; });
  const Isa isa = util::kernel_isa();
  // one flat pass, 16 values per step (a per-pixel, per-group loop spent more on its loop control and horizontal
  // sums than on the memory traffic: 1.0 vs 0.35 ms on a 16-channel 32x32 batch of 128); the per-pixel sums, where
  // needed, come from the codes afterwards
  const float inv = 1.0f / r.sa, lo = float(aq.qmin), hi = float(aq.qmax);
  tbb::parallel_for(tbb::blocked_range<size_t>(0, in_total, size_t(1) << 15), [&](const tbb::blocked_range<size_t>& rr) {
    quantize_codes(isa, src, rr.begin(), rr.end(), inv, lo, hi, r.za, s_codes.data());
  });
  if (!r.need_asum) return r;
  // chsum[k] = sum of the icg quantized values q (z_a included) of (pixel, group) k = sum of its codes read as
  // u8 or s8. (Today only unsigned multipliers have weight zero points, so the codes are unsigned here; the
  // signed case is kept correct for per-tensor signed affine weights.)
  const bool sgn = aq.qmin < 0;
  const size_t groups_total = size_t(n) * h * w * size_t(groups);
  s_chsum.resize(groups_total);
  tbb::parallel_for(tbb::blocked_range<size_t>(0, groups_total, 4096), [&](const tbb::blocked_range<size_t>& rr) {
    code_sums(isa, s_codes.data(), rr.begin(), rr.end(), icg, sgn, s_chsum.data());
  });
  return r;
}

}  // namespace frugal::approx
