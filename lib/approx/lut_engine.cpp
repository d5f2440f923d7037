// lut mode of ApproxConv2d (conv_impl.h): bit-exact for any multiplier. im2col tiles of kTile output pixels, one
// 256x256 table row per weight value; paths avx512-vbmi (vpermt2b byte planes) > avx512 (vpermt2w) > avx2-gather
// (vpgatherdq over 4-output-channel tables, lut_tile_avx2_quad; vpgatherdd over the uint16 table where ocg % 4 != 0
// or those tables are too large) > scalar (lut_tile_scalar, the twin every path is tested against).
// avx2-loads: avx2-gather with the 4-channel tables read by scalar loads put together into vectors, which AMD CPUs
// run faster than their microcoded vpgatherdq (Zen 5, AVX2 paths forced, resnet20 shapes: 33-35 -> 19-22 ms a call,
// results/bench/zen5_forced_avx2); taken on AMD, vpgatherdq elsewhere (detail::set_lut_avx2_loads for tests).
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include <immintrin.h>

#include "approx/conv_impl.h"
#include "util/check.h"

namespace frugal::approx {

namespace detail {
namespace {
std::atomic<int> g_lut_avx2_loads{-1};
}
void set_lut_avx2_loads(int mode) { g_lut_avx2_loads = mode; }
}  // namespace detail

LutPath lut_path() {
  switch (util::kernel_isa()) {
    case util::Isa::avx512: return util::cpu_features().avx512vbmi ? LutPath::vbmi : LutPath::avx512;
    case util::Isa::avx2: {
      const int loads = detail::g_lut_avx2_loads.load();
      return (loads < 0 ? util::cpu_features().amd : loads > 0) ? LutPath::avx2_loads : LutPath::avx2;
    }
    default: return LutPath::scalar;
  }
}

const char* lut_path_name(LutPath p) {
  switch (p) {
    case LutPath::vbmi: return "avx512-vbmi";
    case LutPath::avx512: return "avx512";
    case LutPath::avx2: return "avx2-gather";
    case LutPath::avx2_loads: return "avx2-loads";
    default: return "scalar";
  }
}

// The table as uint16 rows per weight code (lt, biased to be non-negative) and as byte planes (lt8, VBMI).
void ApproxConv2d::Impl::init_lut() {
  int32_t mn = *std::min_element(table().begin(), table().end());
  int32_t mx = *std::max_element(table().begin(), table().end());
  lut_bias = mn < 0 ? 32768 : 0;
  FRUGAL_CHECK(mn + lut_bias >= 0 && mx + lut_bias <= 65535, "approx conv: multiplier '", mult->name(),
               "' has products in [", mn, ",", mx, "], outside 16 bits; use mode functional");
  lt.assign(65536 + 2, 0);  // + 2: the AVX2 gather reads entry 65535 as a 32-bit load
  for (int ca = 0; ca < 256; ++ca)
    for (int cb = 0; cb < 256; ++cb) lt[size_t(cb) * 256 + ca] = uint16_t(table()[size_t(ca) * 256 + cb] + lut_bias);
  lt8.resize(256 * 512);
  for (int cb = 0; cb < 256; ++cb)
    for (int ca = 0; ca < 256; ++ca) {
      const uint16_t v = lt[size_t(cb) * 256 + ca];
      lt8[size_t(cb) * 512 + ca] = uint8_t(v & 0xFF);
      lt8[size_t(cb) * 512 + 256 + ca] = uint8_t(v >> 8);
    }
  FRUGAL_CHECK(int64_t(K) * 65535 < (int64_t(1) << 31), "approx conv: K=", K, " products overflow int32");
}

namespace {
constexpr int kTile = 256;  // output pixels per im2col tile: the 8 table-row loads per k serve 4 (VBMI) vectors

FRUGAL_AVX512 void lut_tile_avx512(const uint16_t* col /*(K,kTile)*/, const uint16_t* lt, const uint8_t* wrow /*(K)*/,
                                   int K, int32_t* res /*(kTile)*/) {
  constexpr int V = kTile / 32;
  __m512i acc[2 * V];
  for (auto& a : acc) a = _mm512_setzero_si512();
  const __m512i zero = _mm512_setzero_si512();
  const __m512i b6 = _mm512_set1_epi16(64), b7 = _mm512_set1_epi16(128);
  for (int k = 0; k < K; ++k) {
    const uint16_t* row = lt + size_t(wrow[k]) * 256;
    __m512i t0 = _mm512_loadu_si512(row), t1 = _mm512_loadu_si512(row + 32);
    __m512i t2 = _mm512_loadu_si512(row + 64), t3 = _mm512_loadu_si512(row + 96);
    __m512i t4 = _mm512_loadu_si512(row + 128), t5 = _mm512_loadu_si512(row + 160);
    __m512i t6 = _mm512_loadu_si512(row + 192), t7 = _mm512_loadu_si512(row + 224);
    const uint16_t* c = col + size_t(k) * kTile;
    for (int v = 0; v < V; ++v) {
      __m512i idx = _mm512_loadu_si512(c + v * 32);
      __mmask32 m6 = _mm512_test_epi16_mask(idx, b6), m7 = _mm512_test_epi16_mask(idx, b7);
      __m512i r0 = _mm512_permutex2var_epi16(t0, idx, t1);
      __m512i r1 = _mm512_permutex2var_epi16(t2, idx, t3);
      __m512i r2 = _mm512_permutex2var_epi16(t4, idx, t5);
      __m512i r3 = _mm512_permutex2var_epi16(t6, idx, t7);
      __m512i r01 = _mm512_mask_blend_epi16(m6, r0, r1);
      __m512i r23 = _mm512_mask_blend_epi16(m6, r2, r3);
      __m512i r = _mm512_mask_blend_epi16(m7, r01, r23);
      acc[2 * v] = _mm512_add_epi32(acc[2 * v], _mm512_unpacklo_epi16(r, zero));
      acc[2 * v + 1] = _mm512_add_epi32(acc[2 * v + 1], _mm512_unpackhi_epi16(r, zero));
    }
  }
  // unpacklo of lane L holds words L*8+0..3, unpackhi words L*8+4..7
  alignas(64) int32_t tmp[16];
  for (int v = 0; v < V; ++v)
    for (int half = 0; half < 2; ++half) {
      _mm512_store_si512(tmp, acc[2 * v + half]);
      for (int j = 0; j < 16; ++j) res[v * 32 + (j / 4) * 8 + half * 4 + j % 4] = tmp[j];
    }
}

// Byte-plane variant (AVX-512 VBMI): a table row is split into its low and high bytes; per plane, one vpermi2b
// looks up the codes >= 128 (merging into the index register: the others keep their index) and a second, masked
// to the codes < 128, looks those up in the low half. The bytes are summed in 16-bit lanes, even and odd pixels
// apart (& 0xFF, >> 8; flushed to 32 bits every 256 k, before they can overflow): 13 instructions per 64 products,
// 4 of them on the shuffle port.
// col8: (K, kTile) activation codes; lt8: per weight code 256 low then 256 high bytes; res (kTile) = sum_k lt.
FRUGAL_AVX512_VBMI void lut_tile_vbmi(const uint8_t* col8, const uint8_t* lt8, const uint8_t* wrow, int K,
                                      int32_t* res) {
  alignas(64) int32_t sum[kTile];
  for (int p = 0; p < kTile; ++p) sum[p] = 0;
  const __m512i low_byte = _mm512_set1_epi16(0x00FF);
  for (int k0 = 0; k0 < K; k0 += 256) {
    const int k1 = std::min(K, k0 + 256);
    constexpr int V = kTile / 64;
    __m512i lo[2 * V], hi[2 * V];  // [v*2 + odd]: 16-bit sums of pixels v*64 + 2j + odd (word j)
    for (int i = 0; i < 2 * V; ++i) lo[i] = _mm512_setzero_si512(), hi[i] = _mm512_setzero_si512();
    for (int k = k0; k < k1; ++k) {
      const uint8_t* row = lt8 + size_t(wrow[k]) * 512;
      const __m512i l0 = _mm512_loadu_si512(row), l1 = _mm512_loadu_si512(row + 64);
      const __m512i l2 = _mm512_loadu_si512(row + 128), l3 = _mm512_loadu_si512(row + 192);
      const __m512i h0 = _mm512_loadu_si512(row + 256), h1 = _mm512_loadu_si512(row + 320);
      const __m512i h2 = _mm512_loadu_si512(row + 384), h3 = _mm512_loadu_si512(row + 448);
      const uint8_t* c = col8 + size_t(k) * kTile;
      for (int v = 0; v < V; ++v) {
        const __m512i idx = _mm512_loadu_si512(c + v * 64);
        const __mmask64 top = _mm512_movepi8_mask(idx);  // code >= 128
        const __m512i bl = _mm512_mask2_permutex2var_epi8(l0, _mm512_mask2_permutex2var_epi8(l2, idx, top, l3),
                                                          ~top, l1);
        const __m512i bh = _mm512_mask2_permutex2var_epi8(h0, _mm512_mask2_permutex2var_epi8(h2, idx, top, h3),
                                                          ~top, h1);
        lo[2 * v] = _mm512_add_epi16(lo[2 * v], _mm512_and_si512(bl, low_byte));
        lo[2 * v + 1] = _mm512_add_epi16(lo[2 * v + 1], _mm512_srli_epi16(bl, 8));
        hi[2 * v] = _mm512_add_epi16(hi[2 * v], _mm512_and_si512(bh, low_byte));
        hi[2 * v + 1] = _mm512_add_epi16(hi[2 * v + 1], _mm512_srli_epi16(bh, 8));
      }
    }
    alignas(64) uint16_t tl[32], th[32];
    for (int v = 0; v < V; ++v)
      for (int odd = 0; odd < 2; ++odd) {
        _mm512_store_si512(tl, lo[2 * v + odd]);
        _mm512_store_si512(th, hi[2 * v + odd]);
        for (int j = 0; j < 32; ++j) sum[v * 64 + 2 * j + odd] += int32_t(tl[j]) + 256 * int32_t(th[j]);
      }
  }
  for (int p = 0; p < kTile; ++p) res[p] = sum[p];
}

// AVX2: vpgatherdd of 8 table entries at a time from the weight's lt row (uint16 entries read as the low half of
// a 32-bit load at 2-byte scale; lt carries 2 bytes of padding for the last entry). 4 x 8 pixels per k step.
// res (kTile) = sum_k lt, as lut_tile_avx512.
FRUGAL_AVX2 void lut_tile_avx2(const uint16_t* col /*(K,kTile)*/, const uint16_t* lt, const uint8_t* wrow, int K,
                               int32_t* res) {
  const __m256i low16 = _mm256_set1_epi32(0xFFFF);
  for (int p0 = 0; p0 < kTile; p0 += 32) {
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    __m256i a2 = _mm256_setzero_si256(), a3 = _mm256_setzero_si256();
    for (int k = 0; k < K; ++k) {
      const int* row = reinterpret_cast<const int*>(lt + size_t(wrow[k]) * 256);
      const uint16_t* c = col + size_t(k) * kTile + p0;
      const __m256i i0 = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
      const __m256i i1 = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 8)));
      const __m256i i2 = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16)));
      const __m256i i3 = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 24)));
      a0 = _mm256_add_epi32(a0, _mm256_and_si256(_mm256_i32gather_epi32(row, i0, 2), low16));
      a1 = _mm256_add_epi32(a1, _mm256_and_si256(_mm256_i32gather_epi32(row, i1, 2), low16));
      a2 = _mm256_add_epi32(a2, _mm256_and_si256(_mm256_i32gather_epi32(row, i2, 2), low16));
      a3 = _mm256_add_epi32(a3, _mm256_and_si256(_mm256_i32gather_epi32(row, i3, 2), low16));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(res + p0), a0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(res + p0 + 8), a1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(res + p0 + 16), a2);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(res + p0 + 24), a3);
  }
}

// AVX2 over 4-channel tables (Impl::lq, the path taken when ocg % 4 == 0): per k, one vpgatherdq fetches the
// 64-bit entries of 4 pixels' codes from that k's table, each holding 4 output channels' uint16 products: 16
// products per gather of 4 elements, where lut_tile_avx2 gets 8 per gather of 8 (the index vector serves 4
// channels at once). The int32 sums of channels 0, 2 (entry & 0xFFFF) and 1, 3 (entry >> 16) accumulate in
// registers over chunks of kQuadChunk k steps, whose tables (2 KiB each) stay in L1 while the whole tile passes.
// tq: the quad's tables (K, 256); res (kTile * 4): res[p * 4 + j] = sum_k lt of pixel p, channel j.
// kLoads: each 4-pixel vector of entries is put together from scalar loads (vmovq, vpinsrq, vinserti128) instead of
// one vpgatherdq: the same 64-bit entries in the same lanes, so the same sums.
constexpr int kQuadChunk = 16;
template <bool kLoads>
FRUGAL_AVX2 void lut_tile_avx2_quad(const uint16_t* col /*(K,kTile)*/, const uint64_t* tq, int K, int32_t* res) {
  // per 4 pixels (one gather) 16 lanes: 8 of channels 0 / 2 (pixel i at 2i / 2i+1), 8 of channels 1 / 3
  alignas(32) int32_t buf[kTile * 4];
  const __m256i low16 = _mm256_set1_epi32(0xFFFF);
  for (int k0 = 0; k0 < K; k0 += kQuadChunk) {
    const int k1 = std::min(K, k0 + kQuadChunk);
    // The next chunk's tables (kQuadChunk x 2 KiB), fetched while this chunk's gathers run: a layer's quads
    // together outgrow L2 (64 channels 3x3: 19 MB), and gathers miss the hardware prefetcher's patterns.
    // Spread over the tile's kSteps steps of 16 pixels.
    constexpr int kLineBytes = 64, kTableLines = 256 * int(sizeof(uint64_t)) / kLineBytes, kSteps = kTile / 16;
    const char* next = reinterpret_cast<const char*>(tq + size_t(k1) * 256);
    const int next_lines = std::min(K - k1, kQuadChunk) * kTableLines;
    const int lines_per_step = (next_lines + kSteps - 1) / kSteps;
    for (int p0 = 0; p0 < kTile; p0 += 16) {
      for (int l = (p0 / 16) * lines_per_step, le = std::min(next_lines, l + lines_per_step); l < le; ++l)
        _mm_prefetch(next + size_t(l) * kLineBytes, _MM_HINT_T0);
      __m256i acc[8];  // [gather g][channels 0,2 | 1,3]
      int32_t* b = buf + p0 * 4;
      for (int i = 0; i < 8; ++i)
        acc[i] = k0 == 0 ? _mm256_setzero_si256() : _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 8 * i));
      for (int k = k0; k < k1; ++k) {
        const auto* t = reinterpret_cast<const long long*>(tq + size_t(k) * 256);
        const uint16_t* c = col + size_t(k) * kTile + p0;
        const __m256i i01 = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
        const __m256i i23 = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 8)));
        const __m128i idx[4] = {_mm256_castsi256_si128(i01), _mm256_extracti128_si256(i01, 1),
                                _mm256_castsi256_si128(i23), _mm256_extracti128_si256(i23, 1)};
        for (int g = 0; g < 4; ++g) {
          __m256i v;
          if constexpr (kLoads) {
            const uint16_t* cg = c + 4 * g;
            const __m128i lo = _mm_insert_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(t + cg[0])), t[cg[1]], 1);
            const __m128i hi = _mm_insert_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(t + cg[2])), t[cg[3]], 1);
            v = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
          } else {
            v = _mm256_i32gather_epi64(t, idx[g], 8);
          }
          acc[2 * g] = _mm256_add_epi32(acc[2 * g], _mm256_and_si256(v, low16));
          acc[2 * g + 1] = _mm256_add_epi32(acc[2 * g + 1], _mm256_srli_epi32(v, 16));
        }
      }
      for (int i = 0; i < 8; ++i) _mm256_store_si256(reinterpret_cast<__m256i*>(b + 8 * i), acc[i]);
    }
  }
  for (int p = 0; p < kTile; ++p) {
    const int32_t* q = buf + (p / 4) * 16;
    const int i = p % 4;
    res[p * 4 + 0] = q[2 * i], res[p * 4 + 1] = q[8 + 2 * i];
    res[p * 4 + 2] = q[2 * i + 1], res[p * 4 + 3] = q[8 + 2 * i + 1];
  }
}

void lut_tile_scalar(const uint16_t* col, const int32_t* table, const uint8_t* wrow, int K, int32_t bias,
                     int32_t* res) {
  for (int p = 0; p < kTile; ++p) res[p] = 0;
  for (int k = 0; k < K; ++k) {
    const int32_t* trow = table + wrow[k];  // table[a*256 + b]
    const uint16_t* c = col + size_t(k) * kTile;
    for (int p = 0; p < kTile; ++p) res[p] += trow[size_t(c[p]) * 256] + bias;
  }
}
}  // namespace

// lq's size is OC * K * 512 bytes (9x the lt table for a 3x3 16-channel layer); past this the AVX2 path keeps to
// the one table (lut_tile_avx2)
constexpr size_t kLqMaxBytes = size_t(64) << 20;

bool ApproxConv2d::Impl::lut_quads() const { return ocg % 4 == 0 && size_t(oc) * size_t(K) * 512 <= kLqMaxBytes; }

void ApproxConv2d::Impl::build_lq() const {
  const size_t quads = size_t(oc / 4), k_all = size_t(K);
  lq.resize(quads * k_all * 256);
  tbb::parallel_for(size_t(0), quads, [&](size_t q) {
    for (size_t k = 0; k < k_all; ++k) {
      const uint16_t* r[4];
      for (size_t j = 0; j < 4; ++j) r[j] = lt.data() + size_t(wcodes[(4 * q + j) * k_all + k]) * 256;
      uint64_t* e = lq.data() + (q * k_all + k) * 256;
      for (int a = 0; a < 256; ++a)
        e[a] = uint64_t(r[0][a]) | uint64_t(r[1][a]) << 16 | uint64_t(r[2][a]) << 32 | uint64_t(r[3][a]) << 48;
    }
  });
  lq_stale = false;
}

namespace {
// 16 x 16 bytes transposed in registers: four rounds of interleaving row i with row i + 8 each rotate the 8-bit
// address (row << 4 | byte) left by one bit, so four of them swap row and byte. SSE2 (baseline x86-64).
inline void transpose16x16(__m128i r[16]) {
  for (int round = 0; round < 4; ++round) {
    __m128i t[16];
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm_unpacklo_epi8(r[i], r[i + 8]);
      t[2 * i + 1] = _mm_unpackhi_epi8(r[i], r[i + 8]);
    }
    for (int i = 0; i < 16; ++i) r[i] = t[i];
  }
}
}  // namespace

namespace {
// The im2col copies of run_lut: one output row's run of codes (at most OW), 16 at a time (SSE2) where a library
// memcpy call would cost more than the copy.
inline void copy_run(const uint8_t* s, int run, uint8_t* d) {
  int i = 0;
  for (; i + 16 <= run; i += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
  if (i + 8 <= run) {  // (8 x 8 feature maps: every run)
    _mm_storel_epi64(reinterpret_cast<__m128i*>(d + i), _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i)));
    i += 8;
  }
  for (; i < run; ++i) d[i] = s[i];
}
inline void widen_run(const uint8_t* s, int run, uint16_t* d) {
  const __m128i zero = _mm_setzero_si128();
  int i = 0;
  for (; i + 16 <= run; i += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), _mm_unpacklo_epi8(v, zero));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i + 8), _mm_unpackhi_epi8(v, zero));
  }
  if (i + 8 <= run) {
    const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), _mm_unpacklo_epi8(v, zero));
    i += 8;
  }
  for (; i < run; ++i) d[i] = s[i];
}
}  // namespace

void code_planes(const uint8_t* src, int n, int h, int w, int ic, int pad, uint8_t pad_code, uint8_t* plane) {
  const int Hp = h + 2 * pad, Wp = w + 2 * pad;
  tbb::parallel_for(0, n, [&](int b) {
    // the border only: the body is overwritten below
    for (int c = 0; c < ic; ++c) {
      uint8_t* p = plane + (size_t(b) * ic + c) * Hp * Wp;
      std::memset(p, pad_code, size_t(pad) * Wp);
      std::memset(p + size_t(pad + h) * Wp, pad_code, size_t(pad) * Wp);
      if (pad > 0)
        for (int y = pad; y < pad + h; ++y) {
          std::memset(p + size_t(y) * Wp, pad_code, size_t(pad));
          std::memset(p + size_t(y) * Wp + pad + w, pad_code, size_t(pad));
        }
    }
    for (int y = 0; y < h; ++y) {
      const uint8_t* row = src + (size_t(b) * h + y) * w * ic;
      uint8_t* out = plane + (size_t(b) * ic * Hp + y + pad) * Wp + pad;  // channel c at out + c * Hp * Wp
      int c = 0;
      for (; c + 16 <= ic; c += 16)
        for (int x = 0; x < w; x += 16) {
          const int m = std::min(16, w - x);
          __m128i r[16];
          for (int i = 0; i < 16; ++i)
            r[i] = i < m ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + size_t(x + i) * ic + c))
                         : _mm_setzero_si128();
          transpose16x16(r);
          for (int j = 0; j < 16; ++j) {
            uint8_t* d = out + size_t(c + j) * Hp * Wp + x;
            if (m == 16) {
              _mm_storeu_si128(reinterpret_cast<__m128i*>(d), r[j]);
            } else {
              alignas(16) uint8_t tmp[16];
              _mm_store_si128(reinterpret_cast<__m128i*>(tmp), r[j]);
              std::memcpy(d, tmp, size_t(m));
            }
          }
        }
      for (; c < ic; ++c)
        for (int x = 0; x < w; ++x) out[size_t(c) * Hp * Wp + x] = row[size_t(x) * ic + c];
    }
  });
}

void ApproxConv2d::Impl::run_lut(const uint8_t* src, int n, int h, int w, uint8_t pad_code, int32_t* acc) const {
  const int OH = out_h(h), OW = out_w(w), Hp = h + 2 * pad, Wp = w + 2 * pad;
  // padded code planes [n][IC][Hp][Wp]
  std::vector<uint8_t>& plane = s_plane;
  plane.resize(size_t(n) * ic * Hp * Wp);
  code_planes(src, n, h, w, ic, pad, pad_code, plane.data());
  const int64_t P = int64_t(n) * OH * OW;
  const int64_t tiles = (P + kTile - 1) / kTile;
  const LutPath path = lut_path();
  const bool bytes = path == LutPath::vbmi;  // byte codes (VBMI) or uint16 codes (the others)
  const int32_t kb = int32_t(K) * lut_bias;
  const bool avx2 = path == LutPath::avx2 || path == LutPath::avx2_loads;
  const bool quads = avx2 && lut_quads();
  if (quads && lq_stale) build_lq();
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, tiles * groups), [&](const tbb::blocked_range<int64_t>& rr) {
    std::vector<uint16_t> col(bytes ? 0 : size_t(K) * kTile);
    std::vector<uint8_t> col8(bytes ? size_t(K) * kTile : 0);
    alignas(64) int32_t res[kTile];
    std::vector<int32_t> res4(quads ? size_t(kTile) * 4 : 0);
    for (int64_t job = rr.begin(); job < rr.end(); ++job) {
      const int g = int(job % groups);
      const int64_t p0 = (job / groups) * kTile, pend = std::min(P, p0 + kTile);
      if (pend - p0 < kTile) {  // a partial tile: its unused columns are summed too, as zeros
        if (bytes)
          std::fill(col8.begin(), col8.end(), uint8_t(0));
        else
          std::fill(col.begin(), col.end(), uint16_t(0));
      }
      for (int64_t p = p0; p < pend;) {
        int64_t b = p / (OH * OW), rem = p % (OH * OW);
        int oy = int(rem / OW), ox = int(rem % OW);
        int run = int(std::min<int64_t>(OW - ox, pend - p));
        for (int c = 0; c < icg; ++c)
          for (int y = 0; y < kh; ++y)
            for (int x = 0; x < kw; ++x) {
              const uint8_t* s =
                  plane.data() + ((size_t(b) * ic + g * icg + c) * Hp + oy * stride + y) * Wp + size_t(ox) * stride + x;
              const size_t at = size_t((c * kh + y) * kw + x) * kTile + size_t(p - p0);
              if (bytes) {
                uint8_t* d = col8.data() + at;
                if (stride == 1)
                  copy_run(s, run, d);
                else
                  for (int i = 0; i < run; ++i) d[i] = s[size_t(i) * stride];
              } else {
                uint16_t* d = col.data() + at;
                if (stride == 1)
                  widen_run(s, run, d);
                else
                  for (int i = 0; i < run; ++i) d[i] = s[size_t(i) * stride];
              }
            }
        p += run;
      }
      if (quads) {
        for (int o = g * ocg; o < (g + 1) * ocg; o += 4) {
          const uint64_t* tq = lq.data() + size_t(o / 4) * K * 256;
          if (path == LutPath::avx2_loads)
            lut_tile_avx2_quad<true>(col.data(), tq, K, res4.data());
          else
            lut_tile_avx2_quad<false>(col.data(), tq, K, res4.data());
          for (int64_t p = p0; p < pend; ++p)
            for (int j = 0; j < 4; ++j) acc[size_t(p) * oc + o + j] = res4[size_t(p - p0) * 4 + j] - kb;
        }
        continue;
      }
      for (int o = g * ocg; o < (g + 1) * ocg; ++o) {
        const uint8_t* wrow = wcodes.data() + size_t(o) * K;
        switch (path) {
          case LutPath::vbmi: lut_tile_vbmi(col8.data(), lt8.data(), wrow, K, res); break;
          case LutPath::avx512: lut_tile_avx512(col.data(), lt.data(), wrow, K, res); break;
          case LutPath::avx2:
          case LutPath::avx2_loads: lut_tile_avx2(col.data(), lt.data(), wrow, K, res); break;
          case LutPath::scalar:
            lut_tile_scalar(col.data(), table().data(), wrow, K, 0, res);
            for (int64_t p = p0; p < pend; ++p) acc[size_t(p) * oc + o] = res[p - p0];
            continue;
        }
        for (int64_t p = p0; p < pend; ++p) acc[size_t(p) * oc + o] = res[p - p0] - kb;
      }
    }
  });
}

}  // namespace frugal::approx
