// Selection kernels for sparsifying compressors: candidate scan, exact top-k, DGC's sampled threshold,
// shared-seed random indices. Each fast path (scalar, AVX2, AVX-512, chosen per call by util::kernel_isa())
// has a scalar twin compared in tests/gradcomp/compressors_test.cpp with every path the CPU has.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "gradcomp/blocks.h"
#include "gradcomp/compressors.h"
#include "gradcomp/simd.h"
#include "util/check.h"
#include "util/cpu_features.h"

namespace frugal::gradcomp {

namespace {

// |x| with NaN mapped to -1 so it never reaches a threshold and comparisons stay a strict weak order.
[[gnu::always_inline]] inline float mag(float v) {
  float a = std::fabs(v);
  return a == a ? a : -1.0f;
}

inline uint32_t fbits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bitsf(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint32_t magnitude_key(float m) { return m < 0.0f ? 0u : fbits(m) + 1u; }  // order-preserving, NaN: 0

}  // namespace

float kth_largest_ref(const float* m, size_t n, size_t k) {
  FRUGAL_CHECK(n >= 1, "kth_largest of an empty set");
  k = std::clamp<size_t>(k, 1, n);
  std::vector<float> t(m, m + n);
  std::nth_element(t.begin(), t.begin() + std::ptrdiff_t(k) - 1, t.end(), std::greater<float>());
  return t[k - 1];
}

// Radix select on the keys' bits in three digits of 11, 11 and 10 bits. The first histogram runs over the whole
// input (four interleaved counters per digit, so that runs of equal digits do not chain through one counter);
// then only the keys whose first digit is the k-th's are kept, and the last two digits are found among them.
float kth_largest(const float* m, size_t n, size_t k) {
  FRUGAL_CHECK(n >= 1, "kth_largest of an empty set");
  k = std::clamp<size_t>(k, 1, n);
  if (n < 4096) return kth_largest_ref(m, n, k);
  constexpr int kShift[3] = {21, 10, 0}, kWidth[3] = {11, 11, 10};
  std::vector<uint32_t> hist4(4 * 2048, 0u);
  size_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (size_t l = 0; l < 4; ++l) ++hist4[l * 2048 + (magnitude_key(m[i + l]) >> kShift[0])];
  for (; i < n; ++i) ++hist4[magnitude_key(m[i]) >> kShift[0]];
  std::vector<uint32_t> hist(2048);
  for (size_t bin = 0; bin < 2048; ++bin)
    hist[bin] = hist4[bin] + hist4[2048 + bin] + hist4[4096 + bin] + hist4[6144 + bin];
  size_t left = k;
  uint32_t top = 2047;
  for (; left > hist[top]; --top) left -= hist[top];
  std::vector<uint32_t> key;
  key.reserve(hist[top]);
  for (i = 0; i < n; ++i) {
    const uint32_t kv = magnitude_key(m[i]);
    if ((kv >> kShift[0]) == top) key.push_back(kv);
  }
  uint32_t prefix = top << kShift[0], mask = 2047u << kShift[0];
  for (int p = 1; p < 3; ++p) {
    const uint32_t wmask = (1u << kWidth[p]) - 1u;
    std::fill(hist.begin(), hist.end(), 0u);
    for (uint32_t kv : key)
      if ((kv & mask) == prefix) ++hist[(kv >> kShift[p]) & wmask];
    uint32_t digit = wmask;
    for (; left > hist[digit]; --digit) left -= hist[digit];
    prefix |= digit << kShift[p];
    mask |= wmask << kShift[p];
  }
  return prefix == 0 ? -1.0f : bitsf(prefix - 1u);
}

namespace {

// Keeps the k best of cand by (|x| desc, index asc). cand is ascending and stays ascending: the k-th best
// magnitude t comes from kth_largest, then one ordered pass keeps everything above t and, among those equal
// to t, the lowest indices. vals (optional): x at cand, filtered alongside (and read instead of x).
void keep_best(const float* x, std::vector<uint32_t>& cand, size_t k, std::vector<float>* vals = nullptr) {
  if (cand.size() <= k) return;
  const size_t c = cand.size();
  std::vector<float> m(c);
  for (size_t i = 0; i < c; ++i) m[i] = mag(vals ? (*vals)[i] : x[cand[i]]);
  const float t = kth_largest(m.data(), c, k);
  size_t above = 0;
  for (float v : m) above += v > t;
  size_t equal_left = k - above, out = 0;
  for (size_t i = 0; i < c; ++i) {
    const bool eq = m[i] == t;
    if (m[i] > t || (eq && equal_left > 0)) {
      equal_left -= eq;
      if (vals) (*vals)[out] = (*vals)[i];
      cand[out++] = cand[i];
    }
  }
  cand.resize(out);
  if (vals) vals->resize(out);
}

// DGC's sample: runs of `run` consecutive elements (16 = one cache line: the same share of the tensor as
// single-element strides in 16x fewer cache misses) every `stride`, from a random start.
struct DgcPlan {
  size_t k, ns, stride, start, ks, run;
  template <class F>
  void for_each_sample(F&& f) const {
    for (size_t b = 0, s = 0; s < ns; ++b)
      for (size_t j = 0; j < run && s < ns; ++j, ++s) f(s, start + b * stride + j);
  }
};
DgcPlan dgc_plan(size_t n, size_t k, float sample_frac, Rng& rng) {
  DgcPlan p;
  p.k = std::clamp<size_t>(k, 1, n);
  p.ns = std::clamp<size_t>(size_t(std::ceil(double(sample_frac) * double(n))), 1, n);
  p.ns = std::max<size_t>(p.ns, std::min<size_t>(n, 2 * ((n + p.k - 1) / p.k)));  // see ~2 of the top-k
  p.run = 16;
  size_t runs = (p.ns + p.run - 1) / p.run;
  if (n / runs < 4 * p.run) {  // dense sample: single elements
    p.run = 1;
    runs = p.ns;
  }
  p.stride = n / runs;
  p.start = size_t(rng.below(p.stride - p.run + 1));
  p.ks = std::max<size_t>(1, size_t(std::ceil(double(p.k) * double(p.ns) / double(n))));
  return p;
}

// The sample's k-th largest magnitude as DGC's threshold: 0 (send every element) where it is the NaN marker or
// the density is 1.
float usable_threshold(float kth, const DgcPlan& p, size_t n) { return !(kth >= 0.0f) || p.k >= n ? 0.0f : kth; }

// DGC momentum correction of one element; returns the new accumulated velocity v'. Explicit fma so the SIMD
// loop and this scalar form round identically.
//   heavy ball: u' = m u + s g;           v' = v + u'
//   Nesterov:   u' = m (u + s g);         v' = v + (u' + s g)   (synxlin/deep-gradient-compression memory.py)
[[gnu::always_inline]] inline float mc_step(float m, bool nesterov, float& u, float sg_scale, float g, float v) {
  if (nesterov) {
    u = m * std::fma(sg_scale, g, u);
    return v + std::fma(sg_scale, g, u);
  }
  u = std::fma(m, u, sg_scale * g);
  return v + u;
}

}  // namespace

void select_at_least_ref(const float* x, size_t n, float thr, std::vector<uint32_t>& idx) {
  idx.clear();
  for (size_t i = 0; i < n; ++i)
    if (std::fabs(x[i]) >= thr) idx.push_back(uint32_t(i));
}

namespace {
constexpr size_t kBlock = 4096;  // compacted indices are buffered on the stack, appended in blocks

// The SIMD scans cover whole vectors from 0 and return where they stopped; the scalar loop does the tail.
FRUGAL_TARGET_AVX512 size_t select_at_least_avx512(const float* x, size_t n, float thr, std::vector<uint32_t>& idx) {
  alignas(64) uint32_t buf[kBlock + 16];
  size_t cnt = 0, i = 0;
  const __m512 vthr = _mm512_set1_ps(thr);
  const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
  const __m512i step = _mm512_set1_epi32(16);
  __m512i iv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; i + 16 <= n; i += 16) {
    __m512 a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(_mm512_loadu_ps(x + i)), absmask));
    __mmask16 m = _mm512_cmp_ps_mask(a, vthr, _CMP_GE_OQ);  // NaN compares false
    if (m) {
      // compress into a register, then a plain store (memory-destination compress is slow on Zen 4)
      _mm512_storeu_si512(buf + cnt, _mm512_maskz_compress_epi32(m, iv));
      cnt += size_t(__builtin_popcount(m));
      if (cnt >= kBlock) {
        idx.insert(idx.end(), buf, buf + cnt);
        cnt = 0;
      }
    }
    iv = _mm512_add_epi32(iv, step);
  }
  idx.insert(idx.end(), buf, buf + cnt);
  return i;
}

FRUGAL_TARGET_AVX2 size_t select_at_least_avx2(const float* x, size_t n, float thr, std::vector<uint32_t>& idx) {
  alignas(32) uint32_t buf[kBlock + 8];
  size_t cnt = 0, i = 0;
  const __m256 vthr = _mm256_set1_ps(thr);
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i step = _mm256_set1_epi32(8);
  __m256i iv = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i), absmask);
    const uint32_t m = uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(a, vthr, _CMP_GE_OQ)));  // NaN compares false
    if (m) {  // left-pack the selected lanes' indices with one permute, store all 8, advance by the count
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(buf + cnt),
                          _mm256_permutevar8x32_epi32(iv, simd::compact_perm8(m)));
      cnt += simd::kCompact8.count[m];
      if (cnt >= kBlock) {
        idx.insert(idx.end(), buf, buf + cnt);
        cnt = 0;
      }
    }
    iv = _mm256_add_epi32(iv, step);
  }
  idx.insert(idx.end(), buf, buf + cnt);
  return i;
}
}  // namespace

namespace {
// The memory-bound scans (the candidate scan here, DGC's fused update below) run large tensors in blocks of this
// many elements in parallel (TBB), each collecting its own indices, concatenated in block order: the serial
// result, bit for bit.
constexpr size_t kParallelBlock = size_t(1) << 18;

void select_at_least_serial(const float* x, size_t n, float thr, std::vector<uint32_t>& idx) {
  size_t i = 0;
  switch (util::kernel_isa()) {
    case util::Isa::avx512:
      i = select_at_least_avx512(x, n, thr, idx);
      break;
    case util::Isa::avx2:
      i = select_at_least_avx2(x, n, thr, idx);
      break;
    case util::Isa::scalar:
      break;
  }
  for (; i < n; ++i)
    if (std::fabs(x[i]) >= thr) idx.push_back(uint32_t(i));
}
}  // namespace

void select_at_least(const float* x, size_t n, float thr, std::vector<uint32_t>& idx) {
  idx.clear();
  const size_t blocks = block_count(n, kParallelBlock);
  if (blocks == 1) return select_at_least_serial(x, n, thr, idx);
  std::vector<std::vector<uint32_t>> bidx(blocks);
  for_each_block(n, kParallelBlock, [&](size_t b, size_t lo, size_t len) {
    select_at_least_serial(x + lo, len, thr, bidx[b]);
    for (uint32_t& j : bidx[b]) j += uint32_t(lo);
  });
  size_t total = 0;
  for (const auto& b : bidx) total += b.size();
  idx.reserve(total);
  for (const auto& b : bidx) idx.insert(idx.end(), b.begin(), b.end());
}

void topk_select_ref(const float* x, size_t n, size_t k, std::vector<uint32_t>& idx) {
  idx.clear();
  for (size_t i = 0; i < n; ++i)
    if (mag(x[i]) >= 0.0f) idx.push_back(uint32_t(i));
  keep_best(x, idx, std::min(k, idx.size()));
}

void topk_select(const float* x, size_t n, size_t k, std::vector<uint32_t>& idx) {
  FRUGAL_CHECK(n < (size_t(1) << 32), "top-k supports tensors below 2^32 elements, got ", n);
  if (k == 0) {
    idx.clear();
    return;
  }
  if (k * 8 > n || n < 4096) return topk_select_ref(x, n, k, idx);
  // Threshold from a strided sample, a little below the expected k-th magnitude, so that the candidate
  // set holds every element of the exact top-k; retry lower if it does not reach k.
  const size_t s = std::min(n, std::max<size_t>(4096, n / 100));
  const size_t stride = n / s;
  std::vector<float> sample(s);
  for (size_t i = 0; i < s; ++i) sample[i] = mag(x[i * stride]);
  size_t ks = size_t(std::ceil(double(k) * double(s) / double(n) * 1.5)) + 4;
  for (int attempt = 0; attempt < 3 && ks < s; ++attempt, ks *= 4) {
    float thr = kth_largest(sample.data(), s, ks);
    if (!(thr > 0.0f)) break;
    select_at_least(x, n, thr, idx);
    if (idx.size() >= k) {
      keep_best(x, idx, k);
      return;
    }
  }
  topk_select_ref(x, n, k, idx);
}

namespace {
template <bool kRef>
void dgc_select_impl(const float* x, size_t n, size_t k, float sample_frac, Rng& rng, std::vector<uint32_t>& idx,
                     int* rounds) {
  FRUGAL_CHECK(n < (size_t(1) << 32), "dgc supports tensors below 2^32 elements, got ", n);
  const DgcPlan p = dgc_plan(n, k, sample_frac, rng);
  std::vector<float> sample(p.ns);
  p.for_each_sample([&](size_t s, size_t j) { sample[s] = mag(x[j]); });
  float thr = usable_threshold(kth_largest(sample.data(), p.ns, p.ks), p, n);
  int r = 0;
  for (; r < 10; ++r) {
    if (kRef)
      select_at_least_ref(x, n, thr, idx);
    else
      select_at_least(x, n, thr, idx);
    if (double(idx.size()) >= 0.8 * double(p.k) || thr == 0.0f) break;
    thr *= 0.8f;  // undershoot: lower the threshold (DGC's adaptation loop)
    if (thr < 1e-30f) thr = 0.0f;
  }
  if (rounds) *rounds = r + 1;
  keep_best(x, idx, p.k);  // overshoot: exact top-k among the candidates
}
}  // namespace

void dgc_select(const float* x, size_t n, size_t k, float sample_frac, Rng& rng, std::vector<uint32_t>& idx,
                int* rounds) {
  dgc_select_impl<false>(x, n, k, sample_frac, rng, idx, rounds);
}
void dgc_select_ref(const float* x, size_t n, size_t k, float sample_frac, Rng& rng, std::vector<uint32_t>& idx) {
  dgc_select_impl<true>(x, n, k, sample_frac, rng, idx, nullptr);
}

void dgc_update_select_ref(const float* g, float scale, float m, bool nesterov, float* u, float* v, size_t n,
                           size_t k, float sample_frac, Rng& rng, std::vector<uint32_t>& idx,
                           std::vector<float>& vals) {
  for (size_t i = 0; i < n; ++i) {
    if (u) {
      v[i] = mc_step(m, nesterov, u[i], scale, g[i], v[i]);
    } else {
      v[i] = std::fma(scale, g[i], v[i]);
    }
  }
  dgc_select_ref(v, n, k, sample_frac, rng, idx);
  vals.resize(idx.size());
  for (size_t i = 0; i < idx.size(); ++i) vals[i] = v[idx[i]];
}

namespace {
// DGC's fused update: the buffers and constants of one call. u == nullptr: no momentum (v += scale g).
struct DgcUpdate {
  const float* g;
  float scale, m;
  bool nesterov;
  float* u;
  float* v;
};
enum { kPlain = 0, kHeavyBall = 1, kNesterov = 2 };
int dgc_mode(const DgcUpdate& d) { return !d.u ? kPlain : d.nesterov ? kNesterov : kHeavyBall; }

// Updates element i (u and v); returns the new v. The scalar twin of the vector bodies below.
inline float dgc_update_one(const DgcUpdate& d, size_t i) {
  if (d.u)
    d.v[i] = mc_step(d.m, d.nesterov, d.u[i], d.scale, d.g[i], d.v[i]);
  else
    d.v[i] = std::fma(d.scale, d.g[i], d.v[i]);
  return d.v[i];
}

// |v'| (NaN -> -1) at the sample positions of runs [b0, b1), v' the value the update is about to write there (u,
// v unchanged). Runs of 16 are one cache line of g, v (and u) each: the lines a few runs ahead are prefetched,
// since the hardware prefetcher does not follow a stride of thousands of elements.
[[gnu::always_inline]] inline void dgc_sample_body(const DgcPlan& p, const DgcUpdate& d, float* out, size_t b0,
                                                   size_t b1) {
  constexpr size_t kAhead = 24;
  for (size_t b = b0, s = b0 * p.run; b < b1 && s < p.ns; ++b) {
    const size_t base = p.start + b * p.stride;
    if (b + kAhead < b1) {
      const size_t ahead = base + kAhead * p.stride;
      __builtin_prefetch(d.g + ahead);
      __builtin_prefetch(d.v + ahead);
      if (d.u) __builtin_prefetch(d.u + ahead);
    }
    for (size_t j = 0; j < p.run && s < p.ns; ++j, ++s) {
      const size_t at = base + j;
      if (d.u) {
        float uj = d.u[at];
        out[s] = mag(mc_step(d.m, d.nesterov, uj, d.scale, d.g[at], d.v[at]));
      } else {
        out[s] = mag(std::fma(d.scale, d.g[at], d.v[at]));
      }
    }
  }
}
// The same code twice: for baseline x86-64, where std::fma is a libm call, and with FMA, where it is one
// instruction (the AVX2 and AVX-512 paths). Both round identically.
void dgc_sample_runs(const DgcPlan& p, const DgcUpdate& d, float* out, size_t b0, size_t b1) {
  dgc_sample_body(p, d, out, b0, b1);
}
FRUGAL_TARGET_AVX2 void dgc_sample_runs_fma(const DgcPlan& p, const DgcUpdate& d, float* out, size_t b0, size_t b1) {
  dgc_sample_body(p, d, out, b0, b1);
}
// The sample of a large tensor is thousands of cache misses, one or two per run: blocks of runs in parallel (each
// run's values land at the same place in out whichever thread reads them).
void dgc_sample(const DgcPlan& p, const DgcUpdate& d, float* out) {
  const size_t runs = (p.ns + p.run - 1) / p.run;
  const bool fma = util::kernel_isa() != util::Isa::scalar;
  for_each_block(runs, 512, [&](size_t, size_t b0, size_t len) {
    if (fma)
      dgc_sample_runs_fma(p, d, out, b0, b0 + len);
    else
      dgc_sample_runs(p, d, out, b0, b0 + len);
  });
}

// The vector bodies compute exactly mc_step's operations (explicit fma where it has std::fma, plain mul/add
// elsewhere), so every path writes the same bits. Each covers whole vectors from 0 and returns where it stopped.
template <int kMode>
FRUGAL_TARGET_AVX512 size_t update_collect_avx512_t(const DgcUpdate& d, size_t n, float thr, std::vector<uint32_t>& idx,
                                                    std::vector<float>& vals) {
  alignas(64) uint32_t ibuf[kBlock + 16];
  alignas(64) float vbuf[kBlock + 16];
  size_t cnt = 0, i = 0;
  const __m512 vthr = _mm512_set1_ps(thr), vm = _mm512_set1_ps(d.m), vs = _mm512_set1_ps(d.scale);
  const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
  const __m512i step = _mm512_set1_epi32(16);
  __m512i iv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; i + 16 <= n; i += 16) {
    __m512 vn;
    const __m512 gi = _mm512_loadu_ps(d.g + i);
    if constexpr (kMode == kNesterov) {
      const __m512 un = _mm512_mul_ps(vm, _mm512_fmadd_ps(vs, gi, _mm512_loadu_ps(d.u + i)));
      _mm512_storeu_ps(d.u + i, un);
      vn = _mm512_add_ps(_mm512_loadu_ps(d.v + i), _mm512_fmadd_ps(vs, gi, un));
    } else if constexpr (kMode == kHeavyBall) {
      const __m512 un = _mm512_fmadd_ps(vm, _mm512_loadu_ps(d.u + i), _mm512_mul_ps(vs, gi));
      _mm512_storeu_ps(d.u + i, un);
      vn = _mm512_add_ps(_mm512_loadu_ps(d.v + i), un);
    } else {
      vn = _mm512_fmadd_ps(vs, gi, _mm512_loadu_ps(d.v + i));
    }
    _mm512_storeu_ps(d.v + i, vn);
    const __m512 a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(vn), absmask));
    const __mmask16 msk = _mm512_cmp_ps_mask(a, vthr, _CMP_GE_OQ);  // NaN compares false
    if (msk) {  // compress into registers, then plain stores (memory-destination compress is slow on Zen 4)
      _mm512_storeu_si512(ibuf + cnt, _mm512_maskz_compress_epi32(msk, iv));
      _mm512_storeu_ps(vbuf + cnt, _mm512_maskz_compress_ps(msk, vn));
      cnt += size_t(__builtin_popcount(msk));
      if (cnt >= kBlock) {
        idx.insert(idx.end(), ibuf, ibuf + cnt);
        vals.insert(vals.end(), vbuf, vbuf + cnt);
        cnt = 0;
      }
    }
    iv = _mm512_add_epi32(iv, step);
  }
  idx.insert(idx.end(), ibuf, ibuf + cnt);
  vals.insert(vals.end(), vbuf, vbuf + cnt);
  return i;
}

template <int kMode>
FRUGAL_TARGET_AVX2 size_t update_collect_avx2_t(const DgcUpdate& d, size_t n, float thr, std::vector<uint32_t>& idx,
                                                std::vector<float>& vals) {
  alignas(32) uint32_t ibuf[kBlock + 8];
  alignas(32) float vbuf[kBlock + 8];
  size_t cnt = 0, i = 0;
  const __m256 vthr = _mm256_set1_ps(thr), vm = _mm256_set1_ps(d.m), vs = _mm256_set1_ps(d.scale);
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i step = _mm256_set1_epi32(8);
  __m256i iv = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (; i + 8 <= n; i += 8) {
    __m256 vn;
    const __m256 gi = _mm256_loadu_ps(d.g + i);
    if constexpr (kMode == kNesterov) {
      const __m256 un = _mm256_mul_ps(vm, _mm256_fmadd_ps(vs, gi, _mm256_loadu_ps(d.u + i)));
      _mm256_storeu_ps(d.u + i, un);
      vn = _mm256_add_ps(_mm256_loadu_ps(d.v + i), _mm256_fmadd_ps(vs, gi, un));
    } else if constexpr (kMode == kHeavyBall) {
      const __m256 un = _mm256_fmadd_ps(vm, _mm256_loadu_ps(d.u + i), _mm256_mul_ps(vs, gi));
      _mm256_storeu_ps(d.u + i, un);
      vn = _mm256_add_ps(_mm256_loadu_ps(d.v + i), un);
    } else {
      vn = _mm256_fmadd_ps(vs, gi, _mm256_loadu_ps(d.v + i));
    }
    _mm256_storeu_ps(d.v + i, vn);
    const uint32_t msk =
        uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(vn, absmask), vthr, _CMP_GE_OQ)));  // NaN: false
    if (msk) {  // left-pack indices and values with the same permute, store all 8, advance by the count
      const __m256i perm = simd::compact_perm8(msk);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ibuf + cnt), _mm256_permutevar8x32_epi32(iv, perm));
      _mm256_storeu_ps(vbuf + cnt, _mm256_permutevar8x32_ps(vn, perm));
      cnt += simd::kCompact8.count[msk];
      if (cnt >= kBlock) {
        idx.insert(idx.end(), ibuf, ibuf + cnt);
        vals.insert(vals.end(), vbuf, vbuf + cnt);
        cnt = 0;
      }
    }
    iv = _mm256_add_epi32(iv, step);
  }
  idx.insert(idx.end(), ibuf, ibuf + cnt);
  vals.insert(vals.end(), vbuf, vbuf + cnt);
  return i;
}

size_t update_collect_avx512(const DgcUpdate& d, size_t n, float thr, std::vector<uint32_t>& idx,
                             std::vector<float>& vals) {
  switch (dgc_mode(d)) {
    case kNesterov:
      return update_collect_avx512_t<kNesterov>(d, n, thr, idx, vals);
    case kHeavyBall:
      return update_collect_avx512_t<kHeavyBall>(d, n, thr, idx, vals);
    default:
      return update_collect_avx512_t<kPlain>(d, n, thr, idx, vals);
  }
}
size_t update_collect_avx2(const DgcUpdate& d, size_t n, float thr, std::vector<uint32_t>& idx,
                           std::vector<float>& vals) {
  switch (dgc_mode(d)) {
    case kNesterov:
      return update_collect_avx2_t<kNesterov>(d, n, thr, idx, vals);
    case kHeavyBall:
      return update_collect_avx2_t<kHeavyBall>(d, n, thr, idx, vals);
    default:
      return update_collect_avx2_t<kPlain>(d, n, thr, idx, vals);
  }
}

// update_collect_* over [0, n) plus the scalar tail: idx / vals get the ascending positions and new values.
void update_collect_serial(const DgcUpdate& d, size_t n, float thr, std::vector<uint32_t>& idx,
                           std::vector<float>& vals) {
  size_t i = 0;
  switch (util::kernel_isa()) {
    case util::Isa::avx512:
      i = update_collect_avx512(d, n, thr, idx, vals);
      break;
    case util::Isa::avx2:
      i = update_collect_avx2(d, n, thr, idx, vals);
      break;
    case util::Isa::scalar:
      break;
  }
  for (; i < n; ++i) {
    const float vi = dgc_update_one(d, i);
    if (std::fabs(vi) >= thr) {
      idx.push_back(uint32_t(i));
      vals.push_back(vi);
    }
  }
}

// The fused pass is memory-bound and one core does not reach the memory bandwidth: blocks of kParallelBlock in
// parallel, as select_at_least.

void update_collect(const DgcUpdate& d, size_t n, float thr, std::vector<uint32_t>& idx, std::vector<float>& vals) {
  idx.clear();
  vals.clear();
  const size_t blocks = block_count(n, kParallelBlock);
  if (blocks == 1) return update_collect_serial(d, n, thr, idx, vals);
  std::vector<std::vector<uint32_t>> bidx(blocks);
  std::vector<std::vector<float>> bvals(blocks);
  for_each_block(n, kParallelBlock, [&](size_t b, size_t lo, size_t len) {
    const DgcUpdate db{d.g + lo, d.scale, d.m, d.nesterov, d.u ? d.u + lo : nullptr, d.v + lo};
    update_collect_serial(db, len, thr, bidx[b], bvals[b]);
    for (uint32_t& j : bidx[b]) j += uint32_t(lo);
  });
  size_t total = 0;
  for (const auto& b : bidx) total += b.size();
  idx.reserve(total);
  vals.reserve(total);
  for (size_t b = 0; b < blocks; ++b) {
    idx.insert(idx.end(), bidx[b].begin(), bidx[b].end());
    vals.insert(vals.end(), bvals[b].begin(), bvals[b].end());
  }
}
}  // namespace

namespace {
// DGC's threshold: the k-th largest |v'| of the sample, from the values the update is about to write at the sample
// positions (u, v unchanged); 0 where every element is sent.
float sampled_threshold(const DgcPlan& p, const DgcUpdate& d, size_t n) {
  std::vector<float> sample(p.ns);
  dgc_sample(p, d, sample.data());
  return usable_threshold(kth_largest(sample.data(), p.ns, p.ks), p, n);
}
}  // namespace

float dgc_update_threshold(const float* g, float scale, float m, bool nesterov, const float* u, const float* v,
                           size_t n, size_t k, float sample_frac, Rng& rng) {
  FRUGAL_CHECK(n < (size_t(1) << 32), "dgc supports tensors below 2^32 elements, got ", n);
  const DgcPlan p = dgc_plan(n, k, sample_frac, rng);
  return sampled_threshold(p, {g, scale, m, nesterov, const_cast<float*>(u), const_cast<float*>(v)}, n);
}

float dgc_update_threshold_ref(const float* g, float scale, float m, bool nesterov, const float* u, const float* v,
                               size_t n, size_t k, float sample_frac, Rng& rng) {
  const DgcPlan p = dgc_plan(n, k, sample_frac, rng);
  std::vector<float> sample(p.ns);
  p.for_each_sample([&](size_t s, size_t j) {
    float uj = u ? u[j] : 0.0f;
    sample[s] = mag(u ? mc_step(m, nesterov, uj, scale, g[j], v[j]) : std::fma(scale, g[j], v[j]));
  });
  return usable_threshold(kth_largest_ref(sample.data(), p.ns, p.ks), p, n);
}

void dgc_update_select(const float* g, float scale, float m, bool nesterov, float* u, float* v, size_t n, size_t k,
                       float sample_frac, Rng& rng, std::vector<uint32_t>& idx, std::vector<float>& vals, int* rounds) {
  FRUGAL_CHECK(n < (size_t(1) << 32), "dgc supports tensors below 2^32 elements, got ", n);
  FRUGAL_CHECK(u || m == 0.0f, "dgc: momentum ", m, " needs the momentum buffer");
  const DgcPlan p = dgc_plan(n, k, sample_frac, rng);
  const DgcUpdate d{g, scale, m, nesterov, u, v};
  float thr = sampled_threshold(p, d, n);
  // one pass: update u and v, collect (index, value) where |v| >= thr
  update_collect(d, n, thr, idx, vals);
  int r = 1;
  for (; r < 10 && double(idx.size()) < 0.8 * double(p.k) && thr > 0.0f; ++r) {  // undershoot, as dgc_select
    thr *= 0.8f;
    if (thr < 1e-30f) thr = 0.0f;
    select_at_least(v, n, thr, idx);
    vals.resize(idx.size());
    for (size_t j = 0; j < idx.size(); ++j) vals[j] = v[idx[j]];
  }
  if (rounds) *rounds = r;
  keep_best(v, idx, p.k, &vals);
}

namespace {
// Sorts v ascending: LSD radix sort in three passes of 11, 11 and 10 bits (small inputs: std::sort). The same
// order as std::sort, in O(n) instead of O(n log n) with a mispredicted branch per comparison.
void sort_u32(uint32_t* v, size_t n) {
  if (n < 2048) {
    std::sort(v, v + n);
    return;
  }
  std::vector<uint32_t> tmp(n);
  uint32_t* src = v;
  uint32_t* dst = tmp.data();
  for (int shift : {0, 11, 22}) {
    size_t count[2049] = {};
    for (size_t i = 0; i < n; ++i) ++count[((src[i] >> shift) & 2047u) + 1];
    for (size_t b = 1; b <= 2048; ++b) count[b] += count[b - 1];
    for (size_t i = 0; i < n; ++i) dst[count[(src[i] >> shift) & 2047u]++] = src[i];
    std::swap(src, dst);
  }
  if (src != v) std::memcpy(v, src, 4 * n);  // three passes: the result is in tmp
}
}  // namespace

void randk_indices(uint64_t seed, uint64_t nonce, size_t n, size_t k, std::vector<uint32_t>& idx) {
  FRUGAL_CHECK(k <= n && n < (size_t(1) << 32), "randk: k=", k, " must be <= n=", n, " < 2^32");
  Rng rng(mix_seed(seed, nonce));
  idx.clear();
  if (k * 16 >= n) {  // partial Fisher-Yates
    std::vector<uint32_t> all(n);
    std::iota(all.begin(), all.end(), 0u);
    for (size_t i = 0; i < k; ++i) std::swap(all[i], all[i + size_t(rng.below(n - i))]);
    idx.assign(all.begin(), all.begin() + std::ptrdiff_t(k));
    sort_u32(idx.data(), k);
  } else {  // draw, sort, dedupe, top up: every k-subset equally likely by symmetry
    while (idx.size() < k) {
      const size_t have = idx.size(), need = k - have;
      for (size_t i = 0; i < need; ++i) idx.push_back(uint32_t(rng.below(n)));
      sort_u32(idx.data() + have, need);  // the new draws, then merged into the sorted rest
      std::inplace_merge(idx.begin(), idx.begin() + std::ptrdiff_t(have), idx.end());
      idx.erase(std::unique(idx.begin(), idx.end()), idx.end());
    }
  }
}

}  // namespace frugal::gradcomp
