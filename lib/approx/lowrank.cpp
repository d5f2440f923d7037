// lowrank:R mode of ApproxConv2d (conv_impl.h): an approximate emulation of any multiplier. The error table
// E = T - a*b is truncated to R rank-1 terms by its SVD (E ~ sum_r u_r(a) v_r(b)); the exact product runs on one int8
// oneDNN conv and the R factors, rounded to int8 with a common scale, on a second one. The portable twin (the term
// engine alone, term_engine.cpp) rounds u and v to int16 instead.
#include <opencv2/core.hpp>

#include <algorithm>
#include <cmath>

#include "approx/conv_impl.h"
#include "util/check.h"

namespace frugal::approx {

LowRankError lowrank_error(const Multiplier& m, int rank) {
  FRUGAL_CHECK(rank >= 0 && rank <= 256, "low-rank rank must be in [0,256], got ", rank);
  const std::vector<int32_t>& t = m.table();
  cv::Mat e(256, 256, CV_64F);
  for (int ca = 0; ca < 256; ++ca)
    for (int cb = 0; cb < 256; ++cb)
      e.at<double>(ca, cb) = double(t[size_t(ca) * 256 + cb]) -
                             double(decode(uint8_t(ca), m.is_signed)) * decode(uint8_t(cb), m.is_signed);
  cv::Mat wv, u, vt;
  cv::SVD::compute(e, wv, u, vt, cv::SVD::FULL_UV);
  LowRankError r;
  for (int k = 0; k < rank; ++k) {
    double sg = wv.at<double>(k);
    double sq = std::sqrt(std::max(0.0, sg));
    std::array<double, 256> uu{}, vv{};
    for (int i = 0; i < 256; ++i) uu[i] = u.at<double>(i, k) * sq, vv[i] = vt.at<double>(k, i) * sq;
    r.u.push_back(uu);
    r.v.push_back(vv);
    r.sigma.push_back(sg);
  }
  return r;
}

double lowrank_table_mae(const Multiplier& m, int rank) {
  LowRankError r = lowrank_error(m, rank);
  const std::vector<int32_t>& t = m.table();
  double s = 0;
  for (int ca = 0; ca < 256; ++ca)
    for (int cb = 0; cb < 256; ++cb) {
      double e = double(t[size_t(ca) * 256 + cb]) -
                 double(decode(uint8_t(ca), m.is_signed)) * decode(uint8_t(cb), m.is_signed);
      for (int k = 0; k < rank; ++k) e -= r.u[size_t(k)][size_t(ca)] * r.v[size_t(k)][size_t(cb)];
      s += std::abs(e);
    }
  return s / 65536.0;
}

std::pair<int64_t, int64_t> ApproxConv2d::Impl::init_lowrank() {
  std::array<int16_t, 256> ident{};
  for (int c = 0; c < 256; ++c) ident[size_t(c)] = int16_t(decode(uint8_t(c), mult->is_signed));
  amaps.push_back(ident), bmaps.push_back(ident);
  nt0 = 1;
  const int64_t bound0 = 128 * 255 + 255 * 255;
  int64_t bound1 = 0;
  LowRankError lr = lowrank_error(*mult, rank);
  double sum_uv = 0, max_u = 0, max_v = 0;
  for (int r = 0; r < rank; ++r) {
    double mu = 0, mv = 0;
    for (int c = 0; c < 256; ++c)
      mu = std::max(mu, std::abs(lr.u[size_t(r)][size_t(c)])), mv = std::max(mv, std::abs(lr.v[size_t(r)][size_t(c)]));
    sum_uv += mu * mv;
    max_u = std::max(max_u, mu), max_v = std::max(max_v, mv);
  }
  double cscale = 1.0;
  if (sum_uv > 0) {
    cscale = std::sqrt(double(1 << 29) / (double(K) * sum_uv));
    cscale = std::min({cscale, 32000.0 / max_u, 32000.0 / max_v});
  }
  inv_s = 1.0 / (cscale * cscale);
  for (int r = 0; r < rank; ++r) {
    std::array<int16_t, 256> ua{}, vb{};
    for (int c = 0; c < 256; ++c) {
      ua[size_t(c)] = int16_t(std::lround(lr.u[size_t(r)][size_t(c)] * cscale));
      vb[size_t(c)] = int16_t(std::lround(lr.v[size_t(r)][size_t(c)] * cscale));
    }
    amaps.push_back(ua), bmaps.push_back(vb);
    bound1 += max_abs(ua) * max_abs(vb);
  }
  nt1 = rank;
  // oneDNN: the exact product a*b on one int8 conv, the R rank-1 factors rounded to int8 on a second one.
  std::vector<std::array<double, 256>> ea{{}}, eb{{}};
  for (int c = 0; c < 256; ++c) ea[0][size_t(c)] = eb[0][size_t(c)] = ident[size_t(c)];
  dn = OnednnTermConv::make(ea, eb, ic, oc, kh, kw, stride, pad, groups, mult->is_signed ? 0x80 : -1);
  if (dn && rank > 0) init_lowrank_int8(lr);
  return {bound0, bound1};
}

// Term r: u8_r = round(alpha_r u_r) in [-kLowRankUMax, kLowRankUMax], v8_r = round(gamma / alpha_r * v_r), one gamma
// for all terms (their sum shares an accumulator) and as large as every v8_r in [-127, 127] allows.
// kLowRankUMax = 64, not 127: on the split (pre-VNNI) layout u8_r + 64 in [0, 128] is one u8 part instead of two,
// which halves the correction convolution's input channels there; the VNNI layout uses the same factors, so the
// two paths still give the same result. The u factor keeps 129 levels; the error is the SVD truncation's (the
// rounding is a small share, see the low-rank tests and the bench's emulation error).
void ApproxConv2d::Impl::init_lowrank_int8(const LowRankError& lr) {
  constexpr double kLowRankUMax = 64;
  std::vector<double> alpha(size_t(rank), 0.0);
  double gamma = 0;
  for (int r = 0; r < rank; ++r) {
    double mu = 0, mv = 0;
    for (int c = 0; c < 256; ++c)
      mu = std::max(mu, std::abs(lr.u[size_t(r)][size_t(c)])), mv = std::max(mv, std::abs(lr.v[size_t(r)][size_t(c)]));
    if (mu == 0 || mv == 0) continue;  // an all-zero term (rank beyond the table's)
    alpha[size_t(r)] = kLowRankUMax / mu;
    const double g = alpha[size_t(r)] * 127.0 / mv;
    gamma = gamma == 0 ? g : std::min(gamma, g);
  }
  std::vector<std::array<double, 256>> ua, vb;
  for (int r = 0; r < rank; ++r) {
    std::array<double, 256> u{}, v{};
    if (alpha[size_t(r)] > 0)
      for (int c = 0; c < 256; ++c) {
        u[size_t(c)] = std::nearbyint(lr.u[size_t(r)][size_t(c)] * alpha[size_t(r)]);
        v[size_t(c)] = std::nearbyint(lr.v[size_t(r)][size_t(c)] * gamma / alpha[size_t(r)]);
      }
    ua.push_back(u), vb.push_back(v);
  }
  dn_lr = OnednnTermConv::make(ua, vb, ic, oc, kh, kw, stride, pad, groups);
  lr_inv_gamma = gamma > 0 ? 1.0 / gamma : 0.0;
  if (!dn_lr) dn.reset();  // both on oneDNN or neither
}

}  // namespace frugal::approx
