// Selection kernels for sparsifying compressors: candidate scan, exact top-k, DGC's sampled threshold,
// shared-seed random indices. Each fast path has a scalar twin compared in tests/gradcomp/select_test.cpp.
#include <algorithm>
#include <cmath>
#include <numeric>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "gradcomp/compressors.h"
#include "util/check.h"

namespace frugal::gradcomp {

namespace {

// |x| with NaN mapped to -1 so it never reaches a threshold and comparisons stay a strict weak order.
inline float mag(float v) {
  float a = std::fabs(v);
  return a == a ? a : -1.0f;
}

// Keeps the k best of cand by (|x| desc, index asc), then sorts them ascending by index.
void keep_best(const float* x, std::vector<uint32_t>& cand, size_t k) {
  if (cand.size() > k) {
    auto better = [x](uint32_t a, uint32_t b) {
      float fa = mag(x[a]), fb = mag(x[b]);
      return fa > fb || (fa == fb && a < b);
    };
    std::nth_element(cand.begin(), cand.begin() + std::ptrdiff_t(k) - 1, cand.end(), better);
    cand.resize(k);
  }
  std::sort(cand.begin(), cand.end());
}

// The ks-th largest (1-based) of the sampled magnitudes.
float kth_largest(std::vector<float>& s, size_t ks) {
  ks = std::clamp<size_t>(ks, 1, s.size());
  std::nth_element(s.begin(), s.begin() + std::ptrdiff_t(ks) - 1, s.end(), std::greater<float>());
  return s[ks - 1];
}

}  // namespace

void select_at_least_ref(const float* x, size_t n, float thr, std::vector<uint32_t>& idx) {
  idx.clear();
  for (size_t i = 0; i < n; ++i)
    if (std::fabs(x[i]) >= thr) idx.push_back(uint32_t(i));
}

void select_at_least(const float* x, size_t n, float thr, std::vector<uint32_t>& idx) {
  idx.clear();
  size_t i = 0;
#if defined(__AVX512F__)
  constexpr size_t kBlock = 4096;
  alignas(64) uint32_t buf[kBlock + 16];
  size_t cnt = 0;
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
#endif
  for (; i < n; ++i)
    if (std::fabs(x[i]) >= thr) idx.push_back(uint32_t(i));
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
    std::vector<float> tmp = sample;
    float thr = kth_largest(tmp, ks);
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
  k = std::clamp<size_t>(k, 1, n);
  size_t ns = std::clamp<size_t>(size_t(std::ceil(double(sample_frac) * double(n))), 1, n);
  ns = std::max<size_t>(ns, std::min<size_t>(n, 2 * ((n + k - 1) / k)));  // enough samples to see ~2 of the top-k
  const size_t stride = n / ns;
  const size_t start = size_t(rng.below(stride));
  std::vector<float> sample(ns);
  for (size_t i = 0; i < ns; ++i) sample[i] = mag(x[start + i * stride]);
  const size_t ks = std::max<size_t>(1, size_t(std::ceil(double(k) * double(ns) / double(n))));
  float thr = kth_largest(sample, ks);
  if (!(thr >= 0.0f)) thr = 0.0f;
  int r = 0;
  for (; r < 10; ++r) {
    if (kRef) select_at_least_ref(x, n, thr, idx);
    else select_at_least(x, n, thr, idx);
    if (double(idx.size()) >= 0.8 * double(k) || thr == 0.0f) break;
    thr *= 0.8f;  // undershoot: lower the threshold (DGC's adaptation loop)
    if (thr < 1e-30f) thr = 0.0f;
  }
  if (rounds) *rounds = r + 1;
  keep_best(x, idx, k);  // overshoot: exact top-k among the candidates
}
}  // namespace

void dgc_select(const float* x, size_t n, size_t k, float sample_frac, Rng& rng, std::vector<uint32_t>& idx,
                int* rounds) {
  dgc_select_impl<false>(x, n, k, sample_frac, rng, idx, rounds);
}
void dgc_select_ref(const float* x, size_t n, size_t k, float sample_frac, Rng& rng, std::vector<uint32_t>& idx) {
  dgc_select_impl<true>(x, n, k, sample_frac, rng, idx, nullptr);
}

void randk_indices(uint64_t seed, uint64_t nonce, size_t n, size_t k, std::vector<uint32_t>& idx) {
  FRUGAL_CHECK(k <= n && n < (size_t(1) << 32), "randk: k=", k, " must be <= n=", n, " < 2^32");
  Rng rng(mix_seed(seed, nonce));
  idx.clear();
  if (k * 16 >= n) {  // partial Fisher-Yates
    std::vector<uint32_t> all(n);
    std::iota(all.begin(), all.end(), 0u);
    for (size_t i = 0; i < k; ++i) std::swap(all[i], all[i + size_t(rng.below(n - i))]);
    idx.assign(all.begin(), all.begin() + std::ptrdiff_t(k));
  } else {  // draw, sort, dedupe, top up: every k-subset equally likely by symmetry
    while (idx.size() < k) {
      size_t need = k - idx.size();
      for (size_t i = 0; i < need; ++i) idx.push_back(uint32_t(rng.below(n)));
      std::sort(idx.begin(), idx.end());
      idx.erase(std::unique(idx.begin(), idx.end()), idx.end());
    }
  }
  std::sort(idx.begin(), idx.end());
}

}  // namespace frugal::gradcomp
