#include <algorithm>
#include <cmath>

#include "gradcomp/compressors.h"
#include "util/check.h"

namespace frugal::gradcomp {

namespace {
// 16 independent partial sums so the compiler vectorizes without -ffast-math; fixed order -> deterministic.
float dot(const float* a, const float* b, size_t n) {
  float acc[16] = {};
  size_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; ++l) acc[l] += a[j + l] * b[j + l];
  float s = 0;
  for (int l = 0; l < 16; ++l) s += acc[l];
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
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
  // row by row, so each row of M is still in L1 for its r dot products (one pass over the tensor, not two)
  for (size_t a = 0; a < rows_; ++a) {
    const size_t at = a * cols_;
    float* row = &m_[at];
    for (size_t j = 0; j < cols_; ++j) row[j] = grad[at + j] + mem_[at + j];
    for (int c = 0; c < r_; ++c) p[a * r_ + c] = dot(row, &q_[c * cols_], cols_);
  }
}

void PowerSgd::compute_q(const float* p, float* q) {
  // q (r, cols) = (M^T P)^T: row c accumulates p[a, c] * M[a, :] over rows a in order.
  std::fill(q, q + size_t(r_) * cols_, 0.0f);
  for (size_t a = 0; a < rows_; ++a) {
    const float* row = &m_[a * cols_];
    for (int c = 0; c < r_; ++c) {
      const float pa = p[a * r_ + c];
      float* qc = q + size_t(c) * cols_;
      for (size_t j = 0; j < cols_; ++j) qc[j] += pa * row[j];
    }
  }
}

void PowerSgd::finish(const float* p_orth, const float* q_sum, int world, float* dst) {
  const float w = float(world);
  for (size_t i = 0; i < q_.size(); ++i) q_[i] = q_sum[i] / w;  // warm start for the next step
  // row by row: the reconstruction's row (into dst, or a row buffer when dst is null), then e = M - row, while
  // both are in L1
  std::vector<float> buf(dst ? 0 : cols_);
  for (size_t a = 0; a < rows_; ++a) {
    float* out = dst ? dst + a * cols_ : buf.data();
    std::fill(out, out + cols_, 0.0f);
    for (int c = 0; c < r_; ++c) {
      const float pa = p_orth[a * r_ + c];
      const float* qc = &q_[size_t(c) * cols_];
      for (size_t j = 0; j < cols_; ++j) out[j] += pa * qc[j];
    }
    const float* row = &m_[a * cols_];
    float* e = &mem_[a * cols_];
    for (size_t j = 0; j < cols_; ++j) e[j] = row[j] - out[j];
  }
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
  for (size_t a = 0; a < rows_; ++a) {
    float* o = dst + a * cols_;
    std::fill(o, o + cols_, 0.0f);
    for (int c = 0; c < r_; ++c) {
      const float pa = p[a * r_ + c];
      for (size_t j = 0; j < cols_; ++j) o[j] += pa * q[c * cols_ + j];
    }
  }
}

}  // namespace frugal::gradcomp
