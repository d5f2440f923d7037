#include "gradcomp/wire.h"

#include <cmath>

#include "gradcomp/blocks.h"
#include "gradcomp/simd.h"
#include "util/check.h"
#include "util/cpu_features.h"

namespace frugal::gradcomp {

// ------------------------------------------------------------------------------------------ bytes

void ByteWriter::varint(uint64_t v) {
  while (v >= 0x80) {
    out_.push_back(uint8_t(v) | 0x80);
    v >>= 7;
  }
  out_.push_back(uint8_t(v));
}

void ByteReader::fail(const std::string& msg) const {
  FRUGAL_FAIL("corrupt ", what_, " message (", n_, " bytes) at byte offset ", pos_, ": ", msg,
              "; the sender and receiver must use the same compressor spec, seed and tensor shape");
}

const uint8_t* ByteReader::take(size_t n) {
  if (n > n_ - pos_) fail("truncated: need " + std::to_string(n) + " more bytes, have " + std::to_string(n_ - pos_));
  const uint8_t* p = p_ + pos_;
  pos_ += n;
  return p;
}
uint8_t ByteReader::u8() { return *take(1); }
uint32_t ByteReader::u32() {
  uint32_t v;
  std::memcpy(&v, take(4), 4);
  return v;
}
uint64_t ByteReader::u64() {
  uint64_t v;
  std::memcpy(&v, take(8), 8);
  return v;
}
float ByteReader::f32() {
  float v;
  std::memcpy(&v, take(4), 4);
  return v;
}
uint64_t ByteReader::varint() {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    uint8_t b = u8();
    if (shift == 63 && b > 1) fail("varint overflows 64 bits");
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      if (b == 0 && shift > 0) fail("overlong varint");
      return v;
    }
  }
  fail("varint longer than 10 bytes");
}
void ByteReader::expect_end() const {
  if (pos_ != n_) fail(std::to_string(n_ - pos_) + " trailing bytes after the payload");
}

// ------------------------------------------------------------------------------------------ bits

void pack_codes_ref(const uint32_t* codes, size_t n, int width, uint8_t* out) {
  std::memset(out, 0, packed_bytes(n, width));
  size_t bit = 0;
  for (size_t i = 0; i < n; ++i)
    for (int b = 0; b < width; ++b, ++bit)
      if ((codes[i] >> b) & 1u) out[bit / 8] |= uint8_t(1u << (bit % 8));
}

void unpack_codes_ref(const uint8_t* in, size_t n, int width, uint32_t* codes) {
  size_t bit = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t c = 0;
    for (int b = 0; b < width; ++b, ++bit) c |= uint32_t((in[bit / 8] >> (bit % 8)) & 1u) << b;
    codes[i] = c;
  }
}

void pack_codes(const uint32_t* codes, size_t n, int width, uint8_t* out) {
  const uint64_t mask = width == 32 ? 0xffffffffull : ((1ull << width) - 1);
  const size_t nbytes = packed_bytes(n, width);
  uint8_t* o = out;
  size_t i = 0;
  // Widths up to 16: 8 codes are exactly `width` bytes. Each block is built in a 128-bit word without a
  // dependency on the previous one and stored whole (the bytes past `width` are zeros that the next block
  // or the tail overwrites), while a 16-byte store stays inside the output.
  if (width <= 16)
    for (; i + 8 <= n && size_t(o - out) + 16 <= nbytes; i += 8, o += width) {
      unsigned __int128 g = 0;
      for (int j = 0; j < 8; ++j) g |= static_cast<unsigned __int128>(codes[i + size_t(j)] & mask) << (j * width);
      std::memcpy(o, &g, 16);
    }
  // The rest (i is a multiple of 8, so o is on a byte boundary): 64-bit accumulator, flushed 32 bits at a time.
  uint64_t acc = 0;
  int fill = 0;
  for (; i < n; ++i) {
    acc |= (uint64_t(codes[i]) & mask) << fill;
    fill += width;
    if (fill >= 32) {
      uint32_t w = uint32_t(acc);
      std::memcpy(o, &w, 4);
      o += 4;
      acc >>= 32;
      fill -= 32;
    }
  }
  while (fill > 0) {
    *o++ = uint8_t(acc);
    acc >>= 8;
    fill -= 8;
  }
}

void unpack_codes(const uint8_t* in, size_t n, int width, uint32_t* codes) {
  const size_t nbytes = packed_bytes(n, width);
  const uint64_t mask = width == 32 ? 0xffffffffull : ((1ull << width) - 1);
  const size_t bits = size_t(width);
  size_t i = 0;
  // Each code from its own 8-byte load (a code and its bit offset within the first byte fit in 64 bits):
  // independent elements instead of one accumulator chain, while the loads stay inside the input.
  for (; i + 8 <= n && ((i + 7) * bits) / 8 + 8 <= nbytes; i += 8)
    for (size_t j = 0; j < 8; ++j) {
      const size_t bit = (i + j) * bits;
      uint64_t word;
      std::memcpy(&word, in + bit / 8, 8);
      codes[i + j] = uint32_t((word >> (bit % 8)) & mask);
    }
  // The rest (i is a multiple of 8, so it starts on a byte boundary): 64-bit accumulator.
  uint64_t acc = 0;
  int fill = 0;
  size_t at = i * bits / 8;
  for (; i < n; ++i) {
    while (fill < width) {
      if (at + 4 <= nbytes) {
        uint32_t w;
        std::memcpy(&w, in + at, 4);
        acc |= uint64_t(w) << fill;
        at += 4;
        fill += 32;
      } else {
        acc |= uint64_t(in[at++]) << fill;
        fill += 8;
      }
    }
    codes[i] = uint32_t(acc & mask);
    acc >>= width;
    fill -= width;
  }
}

void pack_signs_ref(const float* x, size_t n, uint8_t* out) {
  std::memset(out, 0, (n + 7) / 8);
  for (size_t i = 0; i < n; ++i)
    if (x[i] < 0.0f) out[i / 8] |= uint8_t(1u << (i % 8));
}

namespace {
constexpr size_t kAbsLanes = 16;  // pack_signs_sum_abs's partial sums

/// The sign bytes from element i (a multiple of 8, where a SIMD body stopped) to n, the last one partial.
void pack_signs_tail(const float* x, size_t n, size_t i, uint8_t* out) {
  for (; i < n; i += 8) {
    uint8_t b = 0;
    for (size_t j = 0; j < 8 && i + j < n; ++j) b |= uint8_t(x[i + j] < 0.0f) << j;
    out[i / 8] = b;
  }
}

double add_lanes(const double* s) {  // the fixed tree: ((0+1)+(2+3))+((4+5)+(6+7)), then the two halves of 16
  double h[2];
  for (int k = 0; k < 2; ++k) {
    const double* q = s + 8 * k;
    h[k] = ((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7]));
  }
  return h[0] + h[1];
}
}  // namespace

double pack_signs_sum_abs_ref(const float* x, size_t n, uint8_t* out) {
  pack_signs_ref(x, n, out);
  double s[kAbsLanes] = {};
  for (size_t i = 0; i < n; ++i) s[i % kAbsLanes] += double(std::fabs(x[i]));
  return add_lanes(s);
}

namespace {
// The SIMD bodies cover whole vectors from 0 and return where they stopped; the scalar code does the tail.
FRUGAL_TARGET_AVX512 size_t pack_signs_sum_abs_avx512(const float* x, size_t n, uint8_t* out, double* lanes) {
  const __m512 zero = _mm512_setzero_ps();
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();  // lanes 0-7 and 8-15
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const uint16_t m = uint16_t(_mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ));
    std::memcpy(out + i / 8, &m, 2);
    const __m512 a = _mm512_abs_ps(v);
    lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(a)));
    hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1))));
  }
  _mm512_storeu_pd(lanes, lo);
  _mm512_storeu_pd(lanes + 8, hi);
  return i;
}
FRUGAL_TARGET_AVX2 size_t pack_signs_sum_abs_avx2(const float* x, size_t n, uint8_t* out, double* lanes) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256d s[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int h = 0; h < 2; ++h) {  // two vectors of 8: lanes 8h .. 8h + 7
      const __m256 v = _mm256_loadu_ps(x + i + 8 * h);
      out[(i + 8 * h) / 8] = uint8_t(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ)));
      const __m256 a = _mm256_andnot_ps(sign, v);
      s[2 * h] = _mm256_add_pd(s[2 * h], _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
      s[2 * h + 1] = _mm256_add_pd(s[2 * h + 1], _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
    }
  for (int k = 0; k < 4; ++k) _mm256_storeu_pd(lanes + 4 * k, s[k]);
  return i;
}

FRUGAL_TARGET_AVX512 size_t pack_signs_avx512(const float* x, size_t n, uint8_t* out) {
  const __m512 zero = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const uint16_t m = uint16_t(_mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), zero, _CMP_LT_OQ));
    std::memcpy(out + i / 8, &m, 2);
  }
  return i;
}
FRUGAL_TARGET_AVX2 size_t pack_signs_avx2(const float* x, size_t n, uint8_t* out) {
  const __m256 zero = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8)  // x < 0 (ordered): -0.0 and NaN give 0, as the scalar twin
    out[i / 8] = uint8_t(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), zero, _CMP_LT_OQ)));
  return i;
}
FRUGAL_TARGET_AVX512 size_t unpack_signs_avx512(const uint8_t* in, size_t n, float pos, float neg, float* dst) {
  const __m512 vp = _mm512_set1_ps(pos), vn = _mm512_set1_ps(neg);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    uint16_t m;
    std::memcpy(&m, in + i / 8, 2);
    _mm512_storeu_ps(dst + i, _mm512_mask_blend_ps(__mmask16(m), vp, vn));
  }
  return i;
}
FRUGAL_TARGET_AVX2 size_t unpack_signs_avx2(const uint8_t* in, size_t n, float pos, float neg, float* dst) {
  const __m256 vp = _mm256_set1_ps(pos), vn = _mm256_set1_ps(neg);
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {  // lane j takes neg where bit j of the byte is set
    const __m256i b = _mm256_and_si256(_mm256_set1_epi32(in[i / 8]), bit);
    _mm256_storeu_ps(dst + i, _mm256_blendv_ps(vp, vn, _mm256_castsi256_ps(_mm256_cmpeq_epi32(b, bit))));
  }
  return i;
}
}  // namespace

void pack_signs(const float* x, size_t n, uint8_t* out) {
  size_t i = 0;
  switch (util::kernel_isa()) {
    case util::Isa::avx512:
      i = pack_signs_avx512(x, n, out);
      break;
    case util::Isa::avx2:
      i = pack_signs_avx2(x, n, out);
      break;
    case util::Isa::scalar:
      break;
  }
  pack_signs_tail(x, n, i, out);
}

double pack_signs_sum_abs(const float* x, size_t n, uint8_t* out) {
  double lanes[kAbsLanes] = {};
  size_t i = 0;
  switch (util::kernel_isa()) {
    case util::Isa::avx512:
      i = pack_signs_sum_abs_avx512(x, n, out, lanes);
      break;
    case util::Isa::avx2:
      i = pack_signs_sum_abs_avx2(x, n, out, lanes);
      break;
    case util::Isa::scalar:
      break;
  }
  // i is a multiple of 16: the tail continues every lane where the vectors stopped
  for (size_t j = i; j < n; ++j) lanes[j % kAbsLanes] += double(std::fabs(x[j]));
  pack_signs_tail(x, n, i, out);
  return add_lanes(lanes);
}

void unpack_signs_ref(const uint8_t* in, size_t n, float pos, float neg, float* dst) {
  for (size_t i = 0; i < n; ++i) dst[i] = ((in[i / 8] >> (i % 8)) & 1) ? neg : pos;
}

void unpack_signs(const uint8_t* in, size_t n, float pos, float neg, float* dst) {
  size_t i = 0;
  switch (util::kernel_isa()) {
    case util::Isa::avx512:
      i = unpack_signs_avx512(in, n, pos, neg, dst);
      break;
    case util::Isa::avx2:
      i = unpack_signs_avx2(in, n, pos, neg, dst);
      break;
    case util::Isa::scalar:
      break;
  }
  for (; i < n; ++i) dst[i] = ((in[i / 8] >> (i % 8)) & 1) ? neg : pos;
}

bool tail_bits_clear(const uint8_t* in, size_t nbits) {
  if (nbits % 8 == 0) return true;
  return (in[nbits / 8] >> (nbits % 8)) == 0;
}

void BitWriter::put(uint64_t bits, int width) {
  acc_ |= bits << fill_;
  fill_ += width;
  nbits_ += uint64_t(width);
  while (fill_ >= 8) {
    out_.push_back(uint8_t(acc_));
    acc_ >>= 8;
    fill_ -= 8;
  }
}
void BitWriter::flush() {
  if (fill_ > 0) out_.push_back(uint8_t(acc_));
  acc_ = 0;
  fill_ = 0;
}

uint32_t BitReader::get(int width) {
  if (uint64_t(width) > nbits_ - pos_) owner_.fail("bit stream ends inside a code");
  uint32_t v = 0;
  for (int b = 0; b < width; ++b, ++pos_) v |= uint32_t((p_[pos_ / 8] >> (pos_ % 8)) & 1u) << b;
  return v;
}

void elias_gamma_put(BitWriter& w, uint32_t v) {
  int nb = 31 - __builtin_clz(v);  // floor(log2 v)
  w.put(0, nb);
  // the nb+1 significant bits, most significant first
  for (int b = nb; b >= 0; --b) w.put((v >> b) & 1u, 1);
}
uint32_t elias_gamma_get(BitReader& r) {
  int zeros = 0;
  while (r.get(1) == 0) {
    if (++zeros > 31) r.owner().fail("Elias gamma prefix longer than 31 bits");
  }
  uint32_t v = 1;
  for (int b = 0; b < zeros; ++b) v = (v << 1) | r.get(1);
  return v;
}

// ------------------------------------------------------------------------------------------ halves

uint16_t f32_to_f16_ref(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t exp = (x >> 23) & 0xffu;
  uint32_t man = x & 0x7fffffu;
  if (exp == 0xff) return uint16_t(sign | 0x7c00u | (man ? (0x200u | (man >> 13)) : 0u));  // inf / quiet NaN
  int e = int(exp) - 127 + 15;
  if (e >= 31) return uint16_t(sign | 0x7c00u);  // overflow -> inf
  if (e <= 0) {                                  // subnormal or zero
    if (e < -10) return uint16_t(sign);
    man |= 0x800000u;
    int shift = 14 - e;  // 1 - e + 13
    uint32_t half = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return uint16_t(sign | half);
  }
  uint32_t half = (uint32_t(e) << 10) | (man >> 13);
  uint32_t rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;  // may carry into the exponent: correct
  return uint16_t(sign | half);
}

float f16_to_f32_ref(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    if (man == 0) {
      x = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while (!(man & 0x400u));
      x = sign | (uint32_t(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (man << 13);
  } else {
    x = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // NaN stays (quiet) NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

namespace {
// ---- fp16: the hardware conversions round to nearest even and keep inf / quiet NaN, as the twins do.
FRUGAL_TARGET_AVX512 size_t f32_to_f16_avx512(const float* src, size_t n, uint8_t* dst) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2 * i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  return i;
}
FRUGAL_TARGET_AVX2 size_t f32_to_f16_avx2(const float* src, size_t n, uint8_t* dst) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  return i;
}
FRUGAL_TARGET_AVX512 size_t f16_to_f32_avx512(const uint8_t* src, size_t n, float* dst) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i))));
  return i;
}
FRUGAL_TARGET_AVX2 size_t f16_to_f32_avx2(const uint8_t* src, size_t n, float* dst) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i))));
  return i;
}

// ---- bf16: f32_to_bf16's integer rounding on 32-bit lanes (u + 0x7fff + lsb, NaN -> top half | quiet bit).
FRUGAL_TARGET_AVX512 __m512i bf16_round_avx512(__m512i u) {
  const __m512i one = _mm512_set1_epi32(1);
  const __mmask16 nan =
      _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
  const __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_mask_blend_epi32(nan, r, q);
}
FRUGAL_TARGET_AVX512 size_t f32_to_bf16_avx512(const float* src, size_t n, uint8_t* dst) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i h = bf16_round_avx512(_mm512_castps_si512(_mm512_loadu_ps(src + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2 * i), _mm512_cvtepi32_epi16(h));  // vpmovdw: low halves
  }
  return i;
}
FRUGAL_TARGET_AVX2 __m256i bf16_round_avx2(__m256i u) {
  const __m256i one = _mm256_set1_epi32(1);
  // |u| > inf as signed 32-bit compare: both sides are below 2^31
  const __m256i nan =
      _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  const __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(r, q, nan);
}
FRUGAL_TARGET_AVX2 size_t f32_to_bf16_avx2(const float* src, size_t n, uint8_t* dst) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i a = bf16_round_avx2(_mm256_castps_si256(_mm256_loadu_ps(src + i)));
    const __m256i b = bf16_round_avx2(_mm256_castps_si256(_mm256_loadu_ps(src + i + 8)));
    // lanes hold 0..0xffff, so the unsigned-saturating pack is exact; it interleaves 128-bit halves: a0 b0 a1 b1
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2 * i), p);
  }
  return i;
}
FRUGAL_TARGET_AVX512 size_t bf16_to_f32_avx512(const uint8_t* src, size_t n, float* dst) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i)));
    _mm512_storeu_si512(dst + i, _mm512_slli_epi32(w, 16));
  }
  return i;
}
FRUGAL_TARGET_AVX2 size_t bf16_to_f32_avx2(const uint8_t* src, size_t n, float* dst) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_slli_epi32(w, 16));
  }
  return i;
}
}  // namespace

namespace {
using ToHalf = size_t (*)(const float*, size_t, uint8_t*);
using FromHalf = size_t (*)(const uint8_t*, size_t, float*);
// The vector path for util::kernel_isa() (it covers whole vectors and returns where it stopped), or null.
ToHalf to_half_path(bool bf16) {
  switch (util::kernel_isa()) {
    case util::Isa::avx512:
      return bf16 ? f32_to_bf16_avx512 : f32_to_f16_avx512;
    case util::Isa::avx2:
      return bf16 ? f32_to_bf16_avx2 : f32_to_f16_avx2;
    case util::Isa::scalar:
      break;
  }
  return nullptr;
}
FromHalf from_half_path(bool bf16) {
  switch (util::kernel_isa()) {
    case util::Isa::avx512:
      return bf16 ? bf16_to_f32_avx512 : f16_to_f32_avx512;
    case util::Isa::avx2:
      return bf16 ? bf16_to_f32_avx2 : f16_to_f32_avx2;
    case util::Isa::scalar:
      break;
  }
  return nullptr;
}
}  // namespace

namespace {
void f32_to_half_serial(bool bf16, const float* src, size_t n, uint8_t* dst) {
  const ToHalf path = to_half_path(bf16);
  size_t i = path ? path(src, n, dst) : 0;
  for (; i < n; ++i) {
    const uint16_t h = bf16 ? f32_to_bf16(src[i]) : f32_to_f16_ref(src[i]);
    std::memcpy(dst + 2 * i, &h, 2);
  }
}
void half_to_f32_serial(bool bf16, const uint8_t* src, size_t n, float* dst) {
  const FromHalf path = from_half_path(bf16);
  size_t i = path ? path(src, n, dst) : 0;
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    dst[i] = bf16 ? bf16_to_f32(h) : f16_to_f32_ref(h);
  }
}
// Large tensors convert in parallel blocks (blocks.h); each element is converted on its own, so the bytes are those
// of the serial pass.
constexpr size_t kHalfBlock = size_t(1) << 17;
}  // namespace

void f32_to_half_bytes(bool bf16, const float* src, size_t n, uint8_t* dst) {
  for_each_block(n, kHalfBlock,
                 [&](size_t, size_t lo, size_t len) { f32_to_half_serial(bf16, src + lo, len, dst + 2 * lo); });
}

void half_bytes_to_f32(bool bf16, const uint8_t* src, size_t n, float* dst) {
  for_each_block(n, kHalfBlock,
                 [&](size_t, size_t lo, size_t len) { half_to_f32_serial(bf16, src + 2 * lo, len, dst + lo); });
}

void f32_to_f16(const float* src, size_t n, uint16_t* dst) {
  f32_to_half_bytes(false, src, n, reinterpret_cast<uint8_t*>(dst));
}
void f16_to_f32(const uint16_t* src, size_t n, float* dst) {
  half_bytes_to_f32(false, reinterpret_cast<const uint8_t*>(src), n, dst);
}
void f32_to_bf16(const float* src, size_t n, uint16_t* dst) {
  f32_to_half_bytes(true, src, n, reinterpret_cast<uint8_t*>(dst));
}
void bf16_to_f32(const uint16_t* src, size_t n, float* dst) {
  half_bytes_to_f32(true, reinterpret_cast<const uint8_t*>(src), n, dst);
}

// ------------------------------------------------------------------------------------------ indices

static size_t delta_varint_bytes(const uint32_t* idx, size_t k) {
  size_t s = 0;
  uint32_t prev = 0;
  for (size_t i = 0; i < k; ++i) {
    uint32_t gap = i == 0 ? idx[0] : idx[i] - prev - 1;
    s += varint_size(gap);
    prev = idx[i];
  }
  return s;
}

size_t indices_bytes(const uint32_t* idx, size_t k, size_t n) {
  return 1 + varint_size(k) + std::min(delta_varint_bytes(idx, k), (n + 7) / 8);
}

void write_indices(ByteWriter& w, const uint32_t* idx, size_t k, size_t n) {
  size_t dv = delta_varint_bytes(idx, k), bm = (n + 7) / 8;
  if (dv <= bm) {
    w.u8(0);
    w.varint(k);
    uint32_t prev = 0;
    for (size_t i = 0; i < k; ++i) {
      w.varint(i == 0 ? idx[0] : idx[i] - prev - 1);
      prev = idx[i];
    }
  } else {
    w.u8(1);
    w.varint(k);
    uint8_t* b = w.grow(bm);
    std::memset(b, 0, bm);
    for (size_t i = 0; i < k; ++i) b[idx[i] / 8] |= uint8_t(1u << (idx[i] % 8));
  }
}

void read_indices(ByteReader& r, size_t n, std::vector<uint32_t>& idx) {
  uint8_t tag = r.u8();
  uint64_t k = r.varint();
  if (k > n) r.fail("index count " + std::to_string(k) + " exceeds tensor size " + std::to_string(n));
  idx.resize(k);
  if (tag == 0) {
    uint64_t pos = 0;
    for (uint64_t i = 0; i < k; ++i) {
      uint64_t gap = r.varint();
      pos = i == 0 ? gap : pos + 1 + gap;
      if (gap >= n || pos >= n) r.fail("index out of range for a tensor of " + std::to_string(n) + " elements");
      idx[i] = uint32_t(pos);
    }
  } else if (tag == 1) {
    const uint8_t* b = r.take((n + 7) / 8);
    if (!tail_bits_clear(b, n)) r.fail("bitmap has bits set past the tensor end");
    size_t c = 0;
    for (size_t byte = 0; byte < (n + 7) / 8; ++byte) {
      for (uint32_t bits = b[byte]; bits; bits &= bits - 1) {
        if (c == k) r.fail("bitmap holds more indices than its count " + std::to_string(k));
        idx[c++] = uint32_t(byte * 8 + __builtin_ctz(bits));
      }
    }
    if (c != k) r.fail("bitmap holds " + std::to_string(c) + " indices, count says " + std::to_string(k));
  } else {
    r.fail("unknown index block tag " + std::to_string(tag));
  }
}

// ------------------------------------------------------------------------------------------ rng

uint64_t mix_seed(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9e3779b97f4a7c15ull + b + 0x632be59bd9b4e019ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void Rng::reseed(uint64_t seed) {
  uint64_t z = seed;
  for (auto& s : s_) {
    z += 0x9e3779b97f4a7c15ull;
    uint64_t x = z;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    s = x ^ (x >> 31);
  }
}

float Rng::normal() {
  float u1 = (float(next() >> 40) + 1.0f) * (1.0f / 16777217.0f);  // (0, 1)
  float u2 = uniform();
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.28318530718f * u2);
}

}  // namespace frugal::gradcomp
