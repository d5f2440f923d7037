#include <algorithm>
#include <cmath>

#include "gradcomp/blocks.h"
#include "gradcomp/compressors.h"
#include "gradcomp/simd.h"
#include "util/check.h"
#include "util/cpu_features.h"

namespace frugal::gradcomp {

namespace {
// 16 independent partial sums so the compiler vectorizes without -ffast-math; fixed order -> deterministic.
[[gnu::always_inline]] inline float dot(const float* a, const float* b, size_t n) {
  float acc[16] = {};
  size_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; ++l) acc[l] += a[j + l] * b[j + l];
  float s = 0;
  for (int l = 0; l < 16; ++l) s += acc[l];
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

// The passes over the tensor, each over a range of rows (or, for Q, of columns) with every element's arithmetic
// in the same order whatever the range: run in parallel blocks (blocks.h) they give the serial result, bit for
// bit. The bodies are compiled three times (baseline, AVX2, AVX-512: wider vectors of the same per-lane
// operations, no FMA contraction anywhere in the build), so every ISA gives the same bits as well.
struct Dims2 {
  size_t rows, cols;
  int r;
};

// M = grad + e and p = M Q for rows [a0, a1), row by row so each row of M is still in L1 for its r dot products.
[[gnu::always_inline]] inline void p_rows_body(const Dims2& d, const float* grad, const float* mem, const float* q,
                                               float* m, float* p, size_t a0, size_t a1) {
  for (size_t a = a0; a < a1; ++a) {
    const size_t at = a * d.cols;
    float* row = m + at;
    for (size_t j = 0; j < d.cols; ++j) row[j] = grad[at + j] + mem[at + j];
    for (int c = 0; c < d.r; ++c) p[a * size_t(d.r) + size_t(c)] = dot(row, q + size_t(c) * d.cols, d.cols);
  }
}
// q (r, cols) = (M^T P)^T for columns [j0, j1): each q[c, j] accumulates p[a, c] M[a, j] over the rows in order.
[[gnu::always_inline]] inline void q_cols_body(const Dims2& d, const float* m, const float* p, float* q, size_t j0,
                                               size_t j1) {
  for (int c = 0; c < d.r; ++c) std::fill(q + size_t(c) * d.cols + j0, q + size_t(c) * d.cols + j1, 0.0f);
  for (size_t a = 0; a < d.rows; ++a) {
    const float* row = m + a * d.cols;
    for (int c = 0; c < d.r; ++c) {
      const float pa = p[a * size_t(d.r) + size_t(c)];
      float* qc = q + size_t(c) * d.cols;
      for (size_t j = j0; j < j1; ++j) qc[j] += pa * row[j];
    }
  }
}
// out = P Q^T for rows [a0, a1); with m and e: e = M - out as well, while the row is in L1. out: the rows of dst,
// or (dst null) one row of scratch per row.
[[gnu::always_inline]] inline void reconstruct_rows_body(const Dims2& d, const float* p, const float* q,
                                                         const float* m, float* e, float* dst, float* scratch,
                                                         size_t a0, size_t a1) {
  for (size_t a = a0; a < a1; ++a) {
    float* out = dst ? dst + a * d.cols : scratch;
    std::fill(out, out + d.cols, 0.0f);
    for (int c = 0; c < d.r; ++c) {
      const float pa = p[a * size_t(d.r) + size_t(c)];
      const float* qc = q + size_t(c) * d.cols;
      for (size_t j = 0; j < d.cols; ++j) out[j] += pa * qc[j];
    }
    if (!m) continue;
    const float* row = m + a * d.cols;
    float* ea = e + a * d.cols;
    for (size_t j = 0; j < d.cols; ++j) ea[j] = row[j] - out[j];
  }
}

#define FRUGAL_POWERSGD_KERNELS(SUFFIX, TARGET)                                                                     \
  TARGET void p_rows##SUFFIX(const Dims2& d, const float* grad, const float* mem, const float* q, float* m,      \
                             float* p, size_t a0, size_t a1) {                                                  \
    p_rows_body(d, grad, mem, q, m, p, a0, a1);                                                                  \
  }                                                                                                              \
  TARGET void q_cols##SUFFIX(const Dims2& d, const float* m, const float* p, float* q, size_t j0, size_t j1) {   \
    q_cols_body(d, m, p, q, j0, j1);                                                                             \
  }                                                                                                              \
  TARGET void reconstruct_rows##SUFFIX(const Dims2& d, const float* p, const float* q, const float* m, float* e, \
                                       float* dst, float* scratch, size_t a0, size_t a1) {                     \
    reconstruct_rows_body(d, p, q, m, e, dst, scratch, a0, a1);                                                  \
  }
FRUGAL_POWERSGD_KERNELS(_base, )
FRUGAL_POWERSGD_KERNELS(_avx2, FRUGAL_TARGET_AVX2)
FRUGAL_POWERSGD_KERNELS(_avx512, FRUGAL_TARGET_AVX512)
#undef FRUGAL_POWERSGD_KERNELS

// Row (column) blocks of about kParallelBlock elements each: one serial call below two blocks (blocks.h).
constexpr size_t kParallelBlock = size_t(1) << 18;
size_t rows_per_block(const Dims2& d) { return std::max<size_t>(1, kParallelBlock / std::max<size_t>(1, d.cols)); }

void p_rows(const Dims2& d, const float* grad, const float* mem, const float* q, float* m, float* p) {
  for_each_block(d.rows, rows_per_block(d), [&](size_t, size_t a0, size_t len) {
    switch (util::kernel_isa()) {
      case util::Isa::avx512: return p_rows_avx512(d, grad, mem, q, m, p, a0, a0 + len);
      case util::Isa::avx2: return p_rows_avx2(d, grad, mem, q, m, p, a0, a0 + len);
      case util::Isa::scalar: return p_rows_base(d, grad, mem, q, m, p, a0, a0 + len);
    }
  });
}
void q_cols(const Dims2& d, const float* m, const float* p, float* q) {
  // column blocks: every block reads a stripe of each row; at least 256 columns (1 KB of a row) per block
  // (whole 64-byte lines of each q row, so that two blocks never write the same line)
  const size_t cols_per_block = (std::max<size_t>(256, kParallelBlock / std::max<size_t>(1, d.rows)) + 15) / 16 * 16;
  for_each_block(d.cols, cols_per_block, [&](size_t, size_t j0, size_t len) {
    switch (util::kernel_isa()) {
      case util::Isa::avx512: return q_cols_avx512(d, m, p, q, j0, j0 + len);
      case util::Isa::avx2: return q_cols_avx2(d, m, p, q, j0, j0 + len);
      case util::Isa::scalar: return q_cols_base(d, m, p, q, j0, j0 + len);
    }
  });
}
void reconstruct_rows(const Dims2& d, const float* p, const float* q, const float* m, float* e, float* dst) {
  for_each_block(d.rows, rows_per_block(d), [&](size_t, size_t a0, size_t len) {
    std::vector<float> scratch(dst ? 0 : d.cols);
    switch (util::kernel_isa()) {
      case util::Isa::avx512: return reconstruct_rows_avx512(d, p, q, m, e, dst, scratch.data(), a0, a0 + len);
      case util::Isa::avx2: return reconstruct_rows_avx2(d, p, q, m, e, dst, scratch.data(), a0, a0 + len);
      case util::Isa::scalar: return reconstruct_rows_base(d, p, q, m, e, dst, scratch.data(), a0, a0 + len);
    }
  });
}
}  // namespace

void orthogonalize(float* p, size_t rows, int r) {
  for (int i = 0; i < r; ++i) {
    double ss = 0;
    for (size_t a = 0; a < rows; ++a) ss += double(p[a * r + i]) * p[a * r + i];
    const float inv = 1.0f / (float(std::sqrt(ss)) + 1e-8f);
    for (size_t a = 0; a < rows; ++a) p[a * r + i] *= inv;
    for (int j = i + 1; j < r; ++j) {
      double d = 0;
      for (size_t a = 0; a < rows; ++a) d += double(p[a * r + i]) * p[a * r + j];
      const float df = float(d);
      for (size_t a = 0; a < rows; ++a) p[a * r + j] -= df * p[a * r + i];
    }
  }
}

PowerSgd::PowerSgd(int rank, const std::vector<int64_t>& shape, uint64_t shared_seed, int64_t dense_steps)
    : dense_steps_(dense_steps) {
  FRUGAL_CHECK(dense_steps >= 0, "powersgd: warmup steps must be >= 0, got ", dense_steps);
  FRUGAL_CHECK(rank >= 1, "powersgd: rank must be >= 1, got ", rank);
  FRUGAL_CHECK(shape.size() >= 2, "powersgd compresses tensors of 2 or more dimensions; a tensor of shape (",
               shape.empty() ? 0 : shape[0], ") must stay dense (the exchange does this for 1-D tensors)");
  size_t n = shape_numel(shape);
  rows_ = size_t(shape[0]);
  FRUGAL_CHECK(rows_ > 0 && n > 0, "powersgd: empty tensor");
  cols_ = n / rows_;
  r_ = int(std::min({size_t(rank), rows_, cols_}));
  q_.resize(size_t(r_) * cols_);  // stored transposed: (r, cols)
  Rng rng(shared_seed);
  for (auto& v : q_) v = rng.normal();
  m_.assign(n, 0.0f);
  mem_.assign(n, 0.0f);
}

std::string PowerSgd::name() const {
  return "powersgd:" + std::to_string(r_) + (dense_steps_ ? ":warmup=" + std::to_string(dense_steps_) : "");
}

void PowerSgd::save_state(ByteWriter& w) const {
  put_floats(w, q_);
  put_floats(w, mem_);
}
void PowerSgd::load_state(ByteReader& r) {
  get_floats(r, q_, q_.size());
  get_floats(r, mem_, mem_.size());
}

void PowerSgd::compute_p(const float* grad, float* p) {
  p_rows({rows_, cols_, r_}, grad, mem_.data(), q_.data(), m_.data(), p);
}

void PowerSgd::compute_q(const float* p, float* q) { q_cols({rows_, cols_, r_}, m_.data(), p, q); }

void PowerSgd::finish(const float* p_orth, const float* q_sum, int world, float* dst) {
  const float w = float(world);
  for (size_t i = 0; i < q_.size(); ++i) q_[i] = q_sum[i] / w;  // warm start for the next step
  // the reconstruction's rows (into dst, or scratch when dst is null), then e = M - row, while both are in L1
  reconstruct_rows({rows_, cols_, r_}, p_orth, q_.data(), m_.data(), mem_.data(), dst);
}

void PowerSgd::encode(const float* grad, size_t n, Message& out) {
  FRUGAL_CHECK(n == rows_ * cols_, "powersgd: tensor has ", n, " elements, compressor was built for ", rows_ * cols_);
  p_.resize(p_len());
  std::vector<float> q(q_len());
  compute_p(grad, p_.data());
  orthogonalize(p_.data(), rows_, r_);
  compute_q(p_.data(), q.data());
  finish(p_.data(), q.data(), 1, nullptr);  // the reconstruction is the decoder's: only e is kept here
  out.bytes.clear();
  ByteWriter w(out.bytes);
  write_header(w, Kind::powersgd, n);
  w.u8(uint8_t(r_));
  w.raw(p_.data(), 4 * p_.size());
  w.raw(q_.data(), 4 * q_.size());
  out.wire_bits = 8 * uint64_t(out.bytes.size());
}

void PowerSgd::decode(const Message& in, float* dst, size_t n) const {
  ByteReader r(in.bytes.data(), in.bytes.size(), name());
  read_header(r, Kind::powersgd, n);
  if (r.u8() != uint8_t(r_)) r.fail("rank differs from " + name());
  std::vector<float> p(p_len()), q(q_len());
  std::memcpy(p.data(), r.take(4 * p.size()), 4 * p.size());
  std::memcpy(q.data(), r.take(4 * q.size()), 4 * q.size());
  r.expect_end();
  reconstruct_rows({rows_, cols_, r_}, p.data(), q.data(), nullptr, nullptr, dst);
}

}  // namespace frugal::gradcomp
