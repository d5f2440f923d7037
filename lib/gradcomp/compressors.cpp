#include "gradcomp/compressors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "gradcomp/blocks.h"
#include "gradcomp/simd.h"
#include "util/check.h"
#include "util/cpu_features.h"

namespace frugal::gradcomp {

namespace {
void seal(Message& m) { m.wire_bits = 8 * uint64_t(m.bytes.size()); }

std::string fmt(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::dense:
      return "dense";
    case Kind::fp16:
      return "fp16";
    case Kind::bf16:
      return "bf16";
    case Kind::sparse:
      return "sparse";
    case Kind::randk:
      return "randk";
    case Kind::qsgd:
      return "qsgd";
    case Kind::qsgd_elias:
      return "qsgd-elias";
    case Kind::terngrad:
      return "terngrad";
    case Kind::sign:
      return "sign";
    case Kind::onebit:
      return "onebit";
    case Kind::powersgd:
      return "powersgd";
  }
  return "?";
}

}  // namespace

const char* collective_name(Collective c) { return c == Collective::allreduce ? "allreduce" : "allgather"; }

// --------------------------------------------------------------------------------------- framing

void write_header(ByteWriter& w, Kind kind, size_t n) {
  w.u8(uint8_t(kind));
  w.varint(n);
}

void read_header(ByteReader& r, Kind kind, size_t n) {
  uint8_t k = r.u8();
  if (k != uint8_t(kind))
    r.fail("message kind " + std::to_string(k) + ", expected " + std::to_string(int(kind)) + " (" + kind_name(kind) +
           ")");
  uint64_t m = r.varint();
  if (m != n) r.fail("message is for " + std::to_string(m) + " elements, the tensor has " + std::to_string(n));
}

void write_sparse(ByteWriter& w, const uint32_t* idx, const float* vals, size_t k, size_t n) {
  write_indices(w, idx, k, n);
  w.raw(vals, 4 * k);
}

void read_sparse(ByteReader& r, size_t n, float* dst) {
  std::vector<uint32_t> idx;
  read_indices(r, n, idx);
  const uint8_t* v = r.take(4 * idx.size());
  scatter_into_zeros(idx.data(), v, idx.size(), dst, n);
}

namespace {
// Outputs from this size on are written with non-temporal stores: they cannot stay in L2 (nor, on most CPUs, in
// the last-level cache), and streaming whole lines saves the read-for-ownership of every line a plain store
// would do first (a 40 MB zero fill runs about 2x faster).
constexpr size_t kStreamMin = size_t(1) << 21;

// scatter_into_zeros for ascending idx: every 64-byte line of dst between the first and the last line boundary
// is composed in registers (zeros, the values that fall into it) and streamed once, whole; the partial lines
// at both ends take plain stores.
void scatter_into_zeros_streamed(const uint32_t* idx, const uint8_t* vals, size_t k, float* dst, size_t n) {
  const size_t a = std::min(n, size_t((64 - reinterpret_cast<uintptr_t>(dst) % 64) % 64 / 4));
  const size_t e = a + (n - a) / 16 * 16;
  size_t i = 0;
  std::fill(dst, dst + a, 0.0f);
  for (; i < k && idx[i] < a; ++i) std::memcpy(&dst[idx[i]], vals + 4 * i, 4);
  const __m128 zero = _mm_setzero_ps();
  for (size_t line = a; line < e; line += 16) {
    float* o = dst + line;
    if (i < k && idx[i] < line + 16) {
      alignas(16) float buf[16] = {};
      for (; i < k && idx[i] < line + 16; ++i) std::memcpy(&buf[idx[i] - line], vals + 4 * i, 4);
      for (int q = 0; q < 16; q += 4) _mm_stream_ps(o + q, _mm_load_ps(buf + q));
    } else {
      for (int q = 0; q < 16; q += 4) _mm_stream_ps(o + q, zero);
    }
  }
  _mm_sfence();  // the streamed lines are visible before any later load or store
  std::fill(dst + e, dst + n, 0.0f);
  for (; i < k; ++i) std::memcpy(&dst[idx[i]], vals + 4 * i, 4);
}

// One ascending pass: zero the gap up to each index, then write its value; an index below the filled prefix
// (out of order or repeated) is written over, as a zero fill followed by the writes in order would leave it.
void scatter_into_zeros_serial(const uint32_t* idx, const uint8_t* vals, size_t k, float* dst, size_t n) {
  size_t pos = 0;
  for (size_t i = 0; i < k; ++i) {
    const size_t j = idx[i];
    if (j >= pos) {
      std::fill(dst + pos, dst + j, 0.0f);
      pos = j + 1;
    }
    std::memcpy(&dst[j], vals + 4 * i, 4);
  }
  std::fill(dst + pos, dst + n, 0.0f);
}

// Outputs of at least 2 blocks with ascending indices are filled block by block in parallel (blocks.h), each block
// with the indices that fall into it.
constexpr size_t kParallelBlock = size_t(1) << 18;

void scatter_into_zeros_parallel(const uint32_t* idx, const uint8_t* vals, size_t k, float* dst, size_t n) {
  const bool stream = n >= kStreamMin;
  for_each_block(n, kParallelBlock, [&](size_t, size_t lo, size_t len) {
    const size_t first = size_t(std::lower_bound(idx, idx + k, uint64_t(lo)) - idx);
    const size_t last = size_t(std::lower_bound(idx + first, idx + k, uint64_t(lo + len)) - idx);
    std::vector<uint32_t> local(idx + first, idx + last);
    for (uint32_t& j : local) j -= uint32_t(lo);
    if (stream)
      scatter_into_zeros_streamed(local.data(), vals + 4 * first, local.size(), dst + lo, len);
    else
      scatter_into_zeros_serial(local.data(), vals + 4 * first, local.size(), dst + lo, len);
  });
}
}  // namespace

void scatter_into_zeros(const uint32_t* idx, const uint8_t* vals, size_t k, float* dst, size_t n) {
  const bool sorted = std::is_sorted(idx, idx + k);
  if (block_count(n, kParallelBlock) > 1 && sorted) return scatter_into_zeros_parallel(idx, vals, k, dst, n);
  if (n >= kStreamMin && sorted) return scatter_into_zeros_streamed(idx, vals, k, dst, n);
  scatter_into_zeros_serial(idx, vals, k, dst, n);
}

size_t Compressor::round_len(int) const { FRUGAL_FAIL("compressor '", name(), "' has no multi-round protocol"); }
void Compressor::round_payload(int, const float*, const float*, float*) {
  FRUGAL_FAIL("compressor '", name(), "' has no multi-round protocol");
}
void Compressor::finish(std::span<const float* const>, int, float*) {
  FRUGAL_FAIL("compressor '", name(), "' has no multi-round protocol");
}

SummableBody Compressor::summable_body(size_t) const {
  FRUGAL_FAIL("compressor '", name(), "' is exchanged with allgather: its messages have no summable body");
}

void Compressor::aggregate(std::span<const Message* const> msgs, float* dst, size_t n) const {
  FRUGAL_CHECK(!msgs.empty(), "aggregate needs at least one message");
  decode(*msgs[0], dst, n);
  std::vector<float> tmp(msgs.size() > 1 ? n : 0);
  for (size_t w = 1; w < msgs.size(); ++w) {
    decode(*msgs[w], tmp.data(), n);
    for (size_t i = 0; i < n; ++i) dst[i] += tmp[i];
  }
  const float world = float(msgs.size());
  for (size_t i = 0; i < n; ++i) dst[i] /= world;
}

// --------------------------------------------------------------------------------------- error feedback

void put_floats(ByteWriter& w, const std::vector<float>& v) {
  w.u64(v.size());
  if (!v.empty()) w.raw(v.data(), 4 * v.size());
}

void get_floats(ByteReader& r, std::vector<float>& v, size_t expected, bool allow_empty) {
  const uint64_t n = r.u64();
  if (n != expected && !(allow_empty && n == 0))
    r.fail("compressor state holds " + std::to_string(n) + " values where this tensor has " + std::to_string(expected));
  v.resize(size_t(n));
  if (n) std::memcpy(v.data(), r.take(4 * size_t(n)), 4 * size_t(n));
}

void ErrorFeedback::save_state(ByteWriter& w) const {
  put_floats(w, residual_);
  inner_->save_state(w);
}
void ErrorFeedback::load_state(ByteReader& r) {
  get_floats(r, residual_, residual_.size());
  inner_->load_state(r);
}

void Dgc::save_state(ByteWriter& w) const {
  rng_.save(w);
  w.u8(u_live_ ? 1 : 0);
  put_floats(w, u_);
  put_floats(w, v_);
}
void Dgc::load_state(ByteReader& r) {
  rng_.load(r);
  u_live_ = r.u8() != 0;
  get_floats(r, u_, v_.size(), !u_live_);
  get_floats(r, v_, v_.size());
}

ErrorFeedback::ErrorFeedback(std::unique_ptr<Compressor> inner, size_t n, std::string name)
    : inner_(std::move(inner)), residual_(n, 0.0f), buf_(n), dec_(n), name_(std::move(name)) {}

void ErrorFeedback::encode(const float* grad, size_t n, Message& out) {
  FRUGAL_CHECK(n == residual_.size(), name_, ": tensor has ", n, " elements, compressor was built for ",
               residual_.size());
  for (size_t i = 0; i < n; ++i) buf_[i] = grad[i] + residual_[i];
  inner_->encode(buf_.data(), n, out);
  inner_->decode(out, dec_.data(), n);
  for (size_t i = 0; i < n; ++i) residual_[i] = buf_[i] - dec_[i];
}

// --------------------------------------------------------------------------------------- casts

std::string CastCompressor::name() const {
  return kind_ == Kind::dense ? "none" : kind_ == Kind::fp16 ? "fp16" : "bf16";
}

void CastCompressor::encode(const float* grad, size_t n, Message& out) {
  std::vector<uint8_t> head;
  ByteWriter hw(head);
  write_header(hw, kind_, n);
  // resize, not clear + append: a message reused at the same size is written over in place, not zero-filled first
  out.bytes.resize(head.size() + (kind_ == Kind::dense ? 4 : 2) * n);
  std::memcpy(out.bytes.data(), head.data(), head.size());
  uint8_t* dst = out.bytes.data() + head.size();
  if (kind_ == Kind::dense)
    std::memcpy(dst, grad, 4 * n);
  else
    f32_to_half_bytes(kind_ == Kind::bf16, grad, n, dst);
  seal(out);
}

void CastCompressor::decode(const Message& in, float* dst, size_t n) const {
  ByteReader r(in.bytes.data(), in.bytes.size(), name());
  read_header(r, kind_, n);
  if (kind_ == Kind::dense) {
    std::memcpy(dst, r.take(4 * n), 4 * n);
  } else {
    half_bytes_to_f32(kind_ == Kind::bf16, r.take(2 * n), n, dst);
  }
  r.expect_end();
}

SummableBody CastCompressor::summable_body(size_t n) const {
  return {n, kind_ == Kind::dense ? SumType::f32 : kind_ == Kind::fp16 ? SumType::f16 : SumType::bf16};
}

// --------------------------------------------------------------------------------------- sparse

/// out <- sparse message of (idx, vals) for a tensor of n elements.
static void encode_sparse(const std::vector<uint32_t>& idx, const std::vector<float>& vals, size_t n, Message& out) {
  out.bytes.clear();
  ByteWriter w(out.bytes);
  write_header(w, Kind::sparse, n);
  write_sparse(w, idx.data(), vals.data(), idx.size(), n);
  seal(out);
}

/// vals <- src[idx]; out <- their sparse message.
// store(i, src[idx[i]]) for i < k. In a large tensor each read is a cache miss: many indices are read in parallel
// blocks, each block prefetching 32 indices ahead so that the misses overlap.
template <class Store>
static void gather_values(const float* src, const uint32_t* idx, size_t k, Store&& store) {
  for_each_block(k, size_t(1) << 14, [&](size_t, size_t lo, size_t len) {
    for (size_t i = lo; i < lo + len; ++i) {
      if (i + 32 < lo + len) __builtin_prefetch(src + idx[i + 32]);
      store(i, src[idx[i]]);
    }
  });
}

static void encode_gathered(const float* src, size_t n, const std::vector<uint32_t>& idx, std::vector<float>& vals,
                            Message& out) {
  vals.resize(idx.size());
  gather_values(src, idx.data(), idx.size(), [&](size_t i, float v) { vals[i] = v; });
  encode_sparse(idx, vals, n, out);
}

static size_t k_of(double ratio, size_t n) {
  return std::clamp<size_t>(size_t(std::ceil(ratio * double(n))), n ? 1 : 0, n);
}

std::string TopK::name() const { return "topk:" + fmt(ratio_); }

void TopK::encode(const float* grad, size_t n, Message& out) {
  topk_select(grad, n, k_of(ratio_, n), idx_);
  encode_gathered(grad, n, idx_, vals_, out);
}

static void decode_sparse(const Message& in, float* dst, size_t n, const std::string& what) {
  ByteReader r(in.bytes.data(), in.bytes.size(), what);
  read_header(r, Kind::sparse, n);
  read_sparse(r, n, dst);
  r.expect_end();
}

void TopK::decode(const Message& in, float* dst, size_t n) const { decode_sparse(in, dst, n, name()); }

std::string Threshold::name() const { return "threshold:" + fmt(v_); }

void Threshold::encode(const float* grad, size_t n, Message& out) {
  select_at_least(grad, n, v_, idx_);
  encode_gathered(grad, n, idx_, vals_, out);
}
void Threshold::decode(const Message& in, float* dst, size_t n) const { decode_sparse(in, dst, n, name()); }

std::string RandK::name() const { return "randk:" + fmt(ratio_); }

void RandK::encode(const float* grad, size_t n, Message& out) {
  const size_t k = k_of(ratio_, n);
  const uint64_t nonce = nonce_++;
  indices_for(nonce, n, k);
  out.bytes.clear();
  ByteWriter w(out.bytes);
  write_header(w, Kind::randk, n);
  w.u64(nonce);
  w.varint(k);
  uint8_t* v = w.grow(4 * k);
  const float scale = scaled_ ? float(double(n) / double(k)) : 1.0f;
  gather_values(grad, idx_.data(), k, [&](size_t i, float g) {
    const float val = g * scale;
    std::memcpy(v + 4 * i, &val, 4);
  });
  seal(out);
}

SummableBody RandK::summable_body(size_t n) const { return {k_of(ratio_, n), SumType::f32}; }

void RandK::decode(const Message& in, float* dst, size_t n) const {
  ByteReader r(in.bytes.data(), in.bytes.size(), name());
  read_header(r, Kind::randk, n);
  uint64_t nonce = r.u64();
  uint64_t k = r.varint();
  if (k != k_of(ratio_, n)) r.fail("randk count " + std::to_string(k) + " does not match the ratio");
  const uint8_t* v = r.take(4 * k);
  r.expect_end();
  indices_for(nonce, n, k);
  scatter_into_zeros(idx_.data(), v, k, dst, n);
}

void RandK::indices_for(uint64_t nonce, size_t n, size_t k) const {
  if (idx_valid_ && idx_nonce_ == nonce && idx_n_ == n && idx_.size() == k) return;  // encode's draw, decoded
  randk_indices(seed_, nonce, n, k, idx_);
  idx_valid_ = true, idx_nonce_ = nonce, idx_n_ = n;
}

// --------------------------------------------------------------------------------------- DGC

Dgc::Dgc(const Options& o, size_t n, int world, uint64_t seed)
    : o_(o), world_(world), rng_(seed), density_(o.ratio), v_(n, 0.0f) {
  begin_step(StepInfo{});
}

std::string Dgc::name() const {
  std::string s = "dgc:" + fmt(o_.ratio);
  if (o_.sample_frac != 0.01f) s += ":sample=" + fmt(o_.sample_frac);
  if (o_.clip > 0) s += ":clip=" + fmt(o_.clip);
  if (!o_.masking) s += ":nomask";
  return s;
}

void Dgc::begin_step(const StepInfo& s) {
  capture_ = s.capture_reference;
  momentum_ = s.momentum;
  nesterov_ = s.nesterov;
  density_ = o_.ratio;
  if (s.epoch < o_.warmup_epochs) density_ = std::max(o_.ratio, std::pow(0.25, double(s.epoch + 1)));
}

void Dgc::encode(const float* grad, size_t n, Message& out) {
  FRUGAL_CHECK(n == v_.size(), "dgc: tensor has ", n, " elements, compressor was built for ", v_.size());
  float scale = 1.0f;
  if (o_.clip > 0) {  // local gradient clipping, threshold scaled by world^-1/2 (Lin et al. sec. 3.2)
    double ss = 0;
    for (size_t i = 0; i < n; ++i) ss += double(grad[i]) * grad[i];
    double lim = double(o_.clip) / std::sqrt(double(world_));
    double norm = std::sqrt(ss);
    if (norm > lim) scale = float(lim / norm);
  }
  // momentum correction (accumulate velocity, not gradient) and selection in one pass
  // With momentum 0 the velocity is the gradient itself: no buffer is read or written (a later step with
  // momentum starts it from zero).
  const bool use_u = momentum_ != 0.0f;
  if (use_u && !u_live_) u_.assign(n, 0.0f);
  u_live_ = use_u;
  if (capture_) ref_.assign(v_.begin(), v_.end());
  dgc_update_select(grad, scale, momentum_, nesterov_, use_u ? u_.data() : nullptr, v_.data(), n, k_of(density_, n),
                    o_.sample_frac, rng_, idx_, vals_);
  if (capture_)  // the increment this step added to v, before the sent entries are cleared
    for (size_t i = 0; i < n; ++i) ref_[i] = v_[i] - ref_[i];
  // Clear the sent entries (and their momentum: momentum factor masking). Each is a cache miss in a large
  // tensor: many of them are cleared in parallel blocks of the index list.
  const bool mask_u = o_.masking && use_u;
  for_each_block(idx_.size(), size_t(1) << 14, [&](size_t, size_t lo, size_t len) {
    for (size_t i = lo; i < lo + len; ++i) {
      const uint32_t j = idx_[i];
      v_[j] = 0.0f;
      if (mask_u) u_[j] = 0.0f;
    }
  });
  encode_sparse(idx_, vals_, n, out);
}

void Dgc::decode(const Message& in, float* dst, size_t n) const { decode_sparse(in, dst, n, name()); }

// --------------------------------------------------------------------------------------- adaptive

std::string AdaptiveTopK::name() const {
  return "adaptive:" + fmt(ratio_) + (energy_ != 0.5 ? ":energy=" + fmt(energy_) : "");
}

void AdaptiveTopK::encode(const float* grad, size_t n, Message& out) {
  const size_t ns = std::min(n, std::max<size_t>(1024, n / 100));
  const size_t stride = std::max<size_t>(1, n / std::max<size_t>(ns, 1));
  const size_t start = ns ? size_t(rng_.below(stride)) : 0;
  std::vector<float> sq(ns);
  double total = 0;
  for (size_t i = 0; i < ns; ++i) {
    float v = grad[std::min(n - 1, start + i * stride)];
    sq[i] = std::isfinite(v) ? v * v : 0.0f;
    total += sq[i];
  }
  std::sort(sq.begin(), sq.end(), std::greater<float>());
  size_t c = 0;
  double acc = 0;
  while (c < ns && acc < energy_ * total) acc += sq[c++];
  double density = ns ? double(std::max<size_t>(c, 1)) / double(ns) : ratio_;
  density = std::clamp(density, ratio_ / 8, std::min(1.0, ratio_ * 8));
  last_density_ = density;
  topk_select(grad, n, k_of(density, n), idx_);
  encode_gathered(grad, n, idx_, vals_, out);
}
void AdaptiveTopK::decode(const Message& in, float* dst, size_t n) const { decode_sparse(in, dst, n, name()); }

// --------------------------------------------------------------------------------------- QSGD

// QSGD's stochastic rounding. With a = |x| scale and r the element's uniform draw: level l = floor(a) +
// (r < a - floor(a)), at most smax; code = l << 1 | (x < 0). The uniforms come from the serial RNG in
// blocks (rbits = next() >> 40, r = rbits 2^-24, exactly Rng::uniform()); the vector bodies then compute the
// same float operations lane by lane, so every path gives the same codes.
namespace {
inline uint32_t qsgd_code(float x, float scale, uint32_t smax, uint32_t rbits) {
  const float a = std::fabs(x) * scale;
  const float fl = std::floor(a);
  const float r = float(rbits) * (1.0f / 16777216.0f);
  const uint32_t l = std::min(uint32_t(fl) + (r < a - fl ? 1u : 0u), smax);
  return (l << 1) | uint32_t(x < 0.0f);
}

// Each body covers whole vectors from 0 and returns where it stopped. Levels stay below 2^16 (smax <= 65535
// and a <= s (1 + eps)), so the signed conversions and compares agree with the scalar unsigned ones.
FRUGAL_TARGET_AVX512 size_t qsgd_codes_avx512(const float* x, size_t n, float scale, uint32_t smax,
                                              const uint32_t* rbits, uint32_t* codes) {
  const __m512 vscale = _mm512_set1_ps(scale), inv24 = _mm512_set1_ps(1.0f / 16777216.0f);
  const __m512 zero = _mm512_setzero_ps();
  const __m512i vsmax = _mm512_set1_epi32(int(smax)), one = _mm512_set1_epi32(1);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i);
    const __m512 a = _mm512_mul_ps(_mm512_abs_ps(xv), vscale);
    const __m512 fl = _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(rbits + i)), inv24);
    const __mmask16 up = _mm512_cmp_ps_mask(r, _mm512_sub_ps(a, fl), _CMP_LT_OQ);
    const __m512i fi = _mm512_cvttps_epi32(fl);
    const __m512i l2 = _mm512_slli_epi32(_mm512_min_epu32(_mm512_mask_add_epi32(fi, up, fi, one), vsmax), 1);
    const __mmask16 neg = _mm512_cmp_ps_mask(xv, zero, _CMP_LT_OQ);
    _mm512_storeu_si512(codes + i, _mm512_mask_or_epi32(l2, neg, l2, one));
  }
  return i;
}
FRUGAL_TARGET_AVX2 size_t qsgd_codes_avx2(const float* x, size_t n, float scale, uint32_t smax, const uint32_t* rbits,
                                          uint32_t* codes) {
  const __m256 vscale = _mm256_set1_ps(scale), inv24 = _mm256_set1_ps(1.0f / 16777216.0f);
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), zero = _mm256_setzero_ps();
  const __m256i vsmax = _mm256_set1_epi32(int(smax));
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    const __m256 a = _mm256_mul_ps(_mm256_and_ps(xv, absmask), vscale);
    const __m256 fl = _mm256_floor_ps(a);
    const __m256 r =
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rbits + i))), inv24);
    const __m256i up = _mm256_srli_epi32(_mm256_castps_si256(_mm256_cmp_ps(r, _mm256_sub_ps(a, fl), _CMP_LT_OQ)), 31);
    const __m256i l = _mm256_min_epu32(_mm256_add_epi32(_mm256_cvttps_epi32(fl), up), vsmax);
    const __m256i neg = _mm256_srli_epi32(_mm256_castps_si256(_mm256_cmp_ps(xv, zero, _CMP_LT_OQ)), 31);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i), _mm256_or_si256(_mm256_slli_epi32(l, 1), neg));
  }
  return i;
}

// codes (n) <- QSGD codes of x (n), drawing one uniform per element from rng in order.
void qsgd_codes(const float* x, size_t n, float scale, uint32_t smax, Rng& rng, uint32_t* codes) {
  constexpr size_t kChunk = 1024;
  alignas(64) uint32_t rbits[kChunk];
  const util::Isa isa = util::kernel_isa();
  for (size_t at = 0; at < n; at += kChunk) {
    const size_t c = std::min(kChunk, n - at);
    for (size_t j = 0; j < c; ++j) rbits[j] = uint32_t(rng.next() >> 40);
    size_t j = 0;
    switch (isa) {
      case util::Isa::avx512:
        j = qsgd_codes_avx512(x + at, c, scale, smax, rbits, codes + at);
        break;
      case util::Isa::avx2:
        j = qsgd_codes_avx2(x + at, c, scale, smax, rbits, codes + at);
        break;
      case util::Isa::scalar:
        break;
    }
    for (; j < c; ++j) codes[at + j] = qsgd_code(x[at + j], scale, smax, rbits[j]);
  }
}

// dst[i] = +-unit * level of codes[i]. Returns n, or the first i whose level exceeds smax (dst is then partly
// written; the caller rejects the message). The vector bodies stop at a block holding a bad level.
FRUGAL_TARGET_AVX512 size_t qsgd_values_avx512(const uint32_t* codes, size_t n, float unit, uint32_t smax, float* dst) {
  const __m512 vunit = _mm512_set1_ps(unit);
  const __m512i vsmax = _mm512_set1_epi32(int(smax)), one = _mm512_set1_epi32(1);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i c = _mm512_loadu_si512(codes + i);
    const __m512i l = _mm512_srli_epi32(c, 1);
    if (_mm512_cmpgt_epu32_mask(l, vsmax)) return i;  // the scalar tail names the bad element
    const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(c, one), 31);
    const __m512 v = _mm512_mul_ps(vunit, _mm512_cvtepu32_ps(l));
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), sign)));
  }
  return i;
}
FRUGAL_TARGET_AVX2 size_t qsgd_values_avx2(const uint32_t* codes, size_t n, float unit, uint32_t smax, float* dst) {
  const __m256 vunit = _mm256_set1_ps(unit);
  const __m256i vsmax = _mm256_set1_epi32(int(smax)), one = _mm256_set1_epi32(1);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + i));
    const __m256i l = _mm256_srli_epi32(c, 1);  // below 2^31: the signed compare and conversion are exact
    const __m256i over = _mm256_cmpgt_epi32(l, vsmax);
    if (!_mm256_testz_si256(over, over)) return i;  // the scalar tail names the bad element
    const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(c, one), 31);
    const __m256 v = _mm256_mul_ps(vunit, _mm256_cvtepi32_ps(l));
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(v), sign)));
  }
  return i;
}

size_t qsgd_values(const uint32_t* codes, size_t n, float unit, uint32_t smax, float* dst) {
  size_t i = 0;
  switch (util::kernel_isa()) {
    case util::Isa::avx512:
      i = qsgd_values_avx512(codes, n, unit, smax, dst);
      break;
    case util::Isa::avx2:
      i = qsgd_values_avx2(codes, n, unit, smax, dst);
      break;
    case util::Isa::scalar:
      break;
  }
  for (; i < n; ++i) {  // also finds the exact bad element after a vector block refused
    const uint32_t l = codes[i] >> 1;
    if (l > smax) return i;
    const float v = unit * float(l);
    dst[i] = (codes[i] & 1u) ? -v : v;
  }
  return n;
}
}  // namespace

static int bits_for(uint32_t v) { return v == 0 ? 1 : 32 - __builtin_clz(v); }

std::string Qsgd::name() const { return "qsgd:" + std::to_string(s_) + (elias_ ? ":elias" : ""); }

namespace {
// sum of x^2 in double, in 8 interleaved partial sums (element i into sum i % 8, combined pairwise): the same
// order in every build, and 8 independent chains the compiler vectorizes instead of one serial one.
double sum_squares(const float* x, size_t n) {
  double acc[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (size_t l = 0; l < 8; ++l) acc[l] += double(x[i + l]) * double(x[i + l]);
  for (size_t l = 0; i < n; ++i, ++l) acc[l] += double(x[i]) * double(x[i]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}
}  // namespace

void Qsgd::encode(const float* grad, size_t n, Message& out) {
  const float norm = float(std::sqrt(sum_squares(grad, n)));
  const bool ok = norm > 0 && std::isfinite(norm);
  const float scale = ok ? float(s_) / norm : 0.0f;
  codes_.resize(n);
  const uint32_t smax = uint32_t(s_);
  if (ok)
    qsgd_codes(grad, n, scale, smax, rng_, codes_.data());
  else
    for (size_t i = 0; i < n; ++i) codes_[i] = uint32_t(grad[i] < 0.0f);
  out.bytes.clear();
  ByteWriter w(out.bytes);
  write_header(w, elias_ ? Kind::qsgd_elias : Kind::qsgd, n);
  w.u32(uint32_t(s_));
  w.f32(ok ? norm : 0.0f);
  if (!elias_) {
    const int width = bits_for(smax) + 1;
    pack_codes(codes_.data(), n, width, w.grow(packed_bytes(n, width)));
  } else {
    std::vector<uint8_t> bits;
    BitWriter bw(bits);
    for (size_t i = 0; i < n; ++i) {
      uint32_t l = codes_[i] >> 1;
      elias_gamma_put(bw, l + 1);
      if (l) bw.put(codes_[i] & 1u, 1);
    }
    bw.flush();
    w.varint(bits.size());
    w.raw(bits.data(), bits.size());
  }
  seal(out);
}

void Qsgd::decode(const Message& in, float* dst, size_t n) const {
  ByteReader r(in.bytes.data(), in.bytes.size(), name());
  read_header(r, elias_ ? Kind::qsgd_elias : Kind::qsgd, n);
  if (r.u32() != uint32_t(s_)) r.fail("level count differs from qsgd:" + std::to_string(s_));
  const float norm = r.f32();
  if (!(norm >= 0.0f) || !std::isfinite(norm)) r.fail("norm is negative or not finite");
  const float unit = norm / float(s_);
  const uint32_t smax = uint32_t(s_);
  if (!elias_) {
    const int width = bits_for(smax) + 1;
    const uint8_t* p = r.take(packed_bytes(n, width));
    if (!tail_bits_clear(p, n * size_t(width))) r.fail("padding bits set");
    // in chunks of 4096 codes (a multiple of 8: each starts on a byte), unpacked into L1 and converted from there
    uint32_t codes[4096];
    for (size_t at = 0; at < n; at += 4096) {
      const size_t c = std::min<size_t>(4096, n - at);
      unpack_codes(p + at * size_t(width) / 8, c, width, codes);
      const size_t bad = qsgd_values(codes, c, unit, smax, dst + at);
      if (bad < c) r.fail("level " + std::to_string(codes[bad] >> 1) + " exceeds " + std::to_string(smax));
    }
  } else {
    uint64_t nb = r.varint();
    if (nb > r.remaining()) r.fail("bit stream length exceeds the message");
    const uint8_t* p = r.take(size_t(nb));
    BitReader br(p, size_t(nb), r);
    for (size_t i = 0; i < n; ++i) {
      uint32_t l = elias_gamma_get(br) - 1;
      if (l > smax) r.fail("level " + std::to_string(l) + " exceeds " + std::to_string(smax));
      bool neg = l ? br.get(1) != 0 : false;
      float v = unit * float(l);
      dst[i] = neg ? -v : v;
    }
    if ((br.pos() + 7) / 8 != nb || !tail_bits_clear(p, size_t(br.pos()))) r.fail("bit stream has trailing data");
  }
  r.expect_end();
}

// --------------------------------------------------------------------------------------- TernGrad

std::string TernGrad::name() const { return clip_ == 2.5f ? "terngrad" : "terngrad:clip=" + fmt(clip_); }

void TernGrad::encode(const float* grad, size_t n, Message& out) {
  float c = INFINITY;
  if (clip_ > 0 && n > 0) {
    double s = 0, ss = 0;
    for (size_t i = 0; i < n; ++i) {
      s += grad[i];
      ss += double(grad[i]) * grad[i];
    }
    double mean = s / double(n);
    double sd = std::sqrt(std::max(0.0, ss / double(n) - mean * mean));
    c = float(clip_ * sd);
  }
  float smax = 0;
  for (size_t i = 0; i < n; ++i) smax = std::max(smax, std::min(std::fabs(grad[i]), c));
  if (!std::isfinite(smax)) smax = 0;
  codes_.resize(n);
  const float inv = smax > 0 ? 1.0f / smax : 0.0f;
  for (size_t i = 0; i < n; ++i) {
    float a = std::min(std::fabs(grad[i]), c) * inv;
    bool b = smax > 0 && rng_.uniform() < a;
    codes_[i] = b ? (grad[i] < 0 ? 2u : 1u) : 0u;
  }
  out.bytes.clear();
  ByteWriter w(out.bytes);
  write_header(w, Kind::terngrad, n);
  w.f32(smax);
  pack_codes(codes_.data(), n, 2, w.grow(packed_bytes(n, 2)));
  seal(out);
}

void TernGrad::decode(const Message& in, float* dst, size_t n) const {
  ByteReader r(in.bytes.data(), in.bytes.size(), name());
  read_header(r, Kind::terngrad, n);
  float s = r.f32();
  if (!(s >= 0.0f) || !std::isfinite(s)) r.fail("scale is negative or not finite");
  const uint8_t* p = r.take(packed_bytes(n, 2));
  if (!tail_bits_clear(p, 2 * n)) r.fail("padding bits set");
  r.expect_end();
  std::vector<uint32_t> codes(n);
  unpack_codes(p, n, 2, codes.data());
  for (size_t i = 0; i < n; ++i) {
    if (codes[i] == 3) r.fail("ternary code 3 is not defined");
    dst[i] = codes[i] == 0 ? 0.0f : codes[i] == 1 ? s : -s;
  }
}

// --------------------------------------------------------------------------------------- signs

namespace {
void write_signs(Message& out, Kind kind, size_t n, std::initializer_list<float> scalars, const float* x) {
  out.bytes.clear();
  ByteWriter w(out.bytes);
  write_header(w, kind, n);
  for (float s : scalars) w.f32(s);
  pack_signs(x, n, w.grow((n + 7) / 8));
  out.wire_bits = 8 * uint64_t(out.bytes.size());
}

// Reads `ns` scalars and the sign field; returns a pointer to the bits.
const uint8_t* read_signs(ByteReader& r, Kind kind, size_t n, float* scalars, int ns) {
  read_header(r, kind, n);
  for (int i = 0; i < ns; ++i) {
    scalars[i] = r.f32();
    if (!std::isfinite(scalars[i])) r.fail("scale is not finite");
  }
  const uint8_t* p = r.take((n + 7) / 8);
  if (!tail_bits_clear(p, n)) r.fail("padding bits set");
  r.expect_end();
  return p;
}
}  // namespace

void SignCompressor::encode(const float* grad, size_t n, Message& out) {
  // as write_signs with the scale mean |g|, which the same pass over the gradient computes (pack_signs_sum_abs)
  out.bytes.clear();
  ByteWriter w(out.bytes);
  write_header(w, Kind::sign, n);
  const size_t scale_at = w.size();
  w.f32(0.0f);
  const double sum = pack_signs_sum_abs(grad, n, w.grow((n + 7) / 8));
  const float scale = n ? float(sum / double(n)) : 0.0f;
  std::memcpy(out.bytes.data() + scale_at, &scale, sizeof scale);  // f32 as ByteWriter writes it
  out.wire_bits = 8 * uint64_t(out.bytes.size());
}

void SignCompressor::decode(const Message& in, float* dst, size_t n) const {
  ByteReader r(in.bytes.data(), in.bytes.size(), name());
  float s;
  const uint8_t* p = read_signs(r, Kind::sign, n, &s, 1);
  unpack_signs(p, n, s, -s, dst);
}

void SignCompressor::aggregate(std::span<const Message* const> msgs, float* dst, size_t n) const {
  if (!vote_) return Compressor::aggregate(msgs, dst, n);
  FRUGAL_CHECK(!msgs.empty(), "aggregate needs at least one message");
  std::vector<int32_t> votes(n, 0);
  double scale_sum = 0;
  for (const Message* m : msgs) {
    ByteReader r(m->bytes.data(), m->bytes.size(), name());
    float s;
    const uint8_t* p = read_signs(r, Kind::sign, n, &s, 1);
    scale_sum += s;
    for (size_t i = 0; i < n; ++i) votes[i] += ((p[i / 8] >> (i % 8)) & 1) ? -1 : 1;
  }
  const float scale = float(scale_sum / double(msgs.size()));
  for (size_t i = 0; i < n; ++i) dst[i] = votes[i] > 0 ? scale : votes[i] < 0 ? -scale : 0.0f;
}

void OneBit::encode(const float* grad, size_t n, Message& out) {
  double sp = 0, sn = 0;
  size_t np = 0, nn = 0;
  for (size_t i = 0; i < n; ++i) {
    if (grad[i] < 0.0f) {
      sn += grad[i];
      ++nn;
    } else {
      sp += grad[i];
      ++np;
    }
  }
  float mp = np ? float(sp / double(np)) : 0.0f, mn = nn ? float(sn / double(nn)) : 0.0f;
  write_signs(out, Kind::onebit, n, {mp, mn}, grad);
}

void OneBit::decode(const Message& in, float* dst, size_t n) const {
  ByteReader r(in.bytes.data(), in.bytes.size(), name());
  float s[2];
  const uint8_t* p = read_signs(r, Kind::onebit, n, s, 2);
  unpack_signs(p, n, s[0], s[1], dst);
}

}  // namespace frugal::gradcomp
