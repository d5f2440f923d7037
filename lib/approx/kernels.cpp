#include "approx/kernels.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/parallel_reduce.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <cmath>
#include <cstring>
#include <limits>
#include <opencv2/core.hpp>
#include <sstream>
#include <tuple>

#include <immintrin.h>

#include "approx/onednn_terms.h"
#include "util/check.h"
#include "util/cpu_features.h"

// SIMD paths are compiled for their ISA with target attributes (the rest of the file for the build's baseline)
// and chosen at run time from util::kernel_isa() and the CPU's feature bits (ApproxConv2d::kernel_path() names them).
#define FRUGAL_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define FRUGAL_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define FRUGAL_AVX512_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi")))
#define FRUGAL_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace frugal::approx {

namespace {
using util::Isa;
// The paths each engine takes now: the kernel ISA, then the feature bits a path needs beyond it.
enum class LutPath { scalar, avx2, avx512, vbmi };
enum class TermPath { scalar, avx2, avx512 };
LutPath lut_path() {
  switch (util::kernel_isa()) {
    case Isa::avx512: return util::cpu_features().avx512vbmi ? LutPath::vbmi : LutPath::avx512;
    case Isa::avx2: return LutPath::avx2;
    default: return LutPath::scalar;
  }
}
TermPath term_path() {  // the AVX-512 term engine uses vpdpwssd (VNNI); without it, the AVX2 one
  switch (util::kernel_isa()) {
    case Isa::avx512: return util::cpu_features().avx512vnni ? TermPath::avx512 : TermPath::avx2;
    case Isa::avx2: return TermPath::avx2;
    default: return TermPath::scalar;
  }
}
const char* lut_path_name(LutPath p) {
  switch (p) {
    case LutPath::vbmi: return "avx512-vbmi";
    case LutPath::avx512: return "avx512";
    case LutPath::avx2: return "avx2-gather";
    default: return "scalar";
  }
}
const char* term_path_name(TermPath p) {
  switch (p) {
    case TermPath::avx512: return "avx512-vnni";
    case TermPath::avx2: return "avx2";
    default: return "scalar";
  }
}
}  // namespace

// ---------------------------------------------------------------------------------------------------
// Reference
void conv2d_reference(const Multiplier& m, const uint8_t* src, int n, int h, int w, int ic, const uint8_t* w_codes,
                      int oc, int kh, int kw, int stride, int pad, int groups, uint8_t pad_code, int32_t* acc) {
  const int oh_n = (h + 2 * pad - kh) / stride + 1, ow_n = (w + 2 * pad - kw) / stride + 1;
  const int icg = ic / groups, ocg = oc / groups;
  const bool s = m.is_signed;
  for (int b = 0; b < n; ++b)
    for (int oy = 0; oy < oh_n; ++oy)
      for (int ox = 0; ox < ow_n; ++ox)
        for (int o = 0; o < oc; ++o) {
          int g = o / ocg;
          int32_t sum = 0;
          for (int c = 0; c < icg; ++c)
            for (int y = 0; y < kh; ++y)
              for (int x = 0; x < kw; ++x) {
                int iy = oy * stride + y - pad, ix = ox * stride + x - pad;
                uint8_t a = (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                ? pad_code
                                : src[((size_t(b) * h + iy) * w + ix) * ic + size_t(g) * icg + c];
                uint8_t wc = w_codes[((size_t(o) * icg + c) * kh + y) * kw + x];
                sum += m.mul(decode(a, s), decode(wc, s));
              }
          acc[((size_t(b) * oh_n + oy) * ow_n + ox) * oc + o] = sum;
        }
}

// ---------------------------------------------------------------------------------------------------
// Low-rank error tables
LowRankError lowrank_error(const Multiplier& m, int rank) {
  FRUGAL_CHECK(rank >= 0 && rank <= 256, "low-rank rank must be in [0,256], got ", rank);
  std::vector<int32_t> t = build_table(m);
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
  std::vector<int32_t> t = build_table(m);
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

// ---------------------------------------------------------------------------------------------------
struct ApproxConv2d::Impl {
  ApproxSpec spec;
  std::unique_ptr<Multiplier> mult;
  int ic, oc, kh, kw, stride, pad, groups, icg, ocg, K;
  enum class Mode { lut, functional, lowrank } mode = Mode::lut;
  int rank = 0;

  // weights
  QuantParams wq;
  std::vector<uint8_t> wcodes;  // (OC, ICg, KH, KW)
  std::vector<float> bias;      // (OC)
  std::vector<int64_t> wsum;    // (OC) sum of decoded weight values
  bool weights_set = false;
  bool act_set = false;
  float act_lo = 0, act_hi = 0;

  // lut engine
  std::vector<int32_t> table;  // (256*256) code(a)*256 + code(b)
  std::vector<uint16_t> lt;    // (256*256) code(b)*256 + code(a): table + lut_bias
  std::vector<uint8_t> lt8;    // (256 * 512) per code(b): 256 low bytes, then 256 high bytes of its lt row
  int32_t lut_bias = 0;

  // term engine: a-planes / b-maps: terms [0, nt0) -> acc0, [nt0, nt0+nt1) -> acc1, then fa, fa2, sa (min)
  std::vector<std::array<int16_t, 256>> amaps, bmaps;
  std::vector<std::array<int32_t, 256>> amaps32;  // amaps widened (the AVX2 plane fill gathers 32-bit entries)
  int nt0 = 0, nt1 = 0;
  bool has_min = false, signed_min = false;
  double inv_s = 1.0;  // lowrank: acc1 scale
  int icgp = 0, icp = 0, ob = 0;
  mutable std::vector<int32_t> wpack;  // [plane][g][ob][kh][kw][icp][16], packed on the term engine's first use
  mutable bool wpack_stale = true;      // after set_weights (the oneDNN engine, where used, has its own copy)
  // oneDNN engine (onednn_terms.h): the separable terms on int8 (lowrank: the exact product); null where the
  // terms do not fit or the CPU lacks the ISA (the term engine above runs instead)
  std::unique_ptr<OnednnTermConv> dn;
  std::unique_ptr<OnednnTermConv> dn_lr;  // lowrank: the int8 rank-1 corrections, scaled by lr_inv_gamma
  double lr_inv_gamma = 0;
  // The oneDNN path, when dn was built and SIMD is on (else false, nothing written): acc = dn's terms (functional:
  // the separable ones, plus the min() correction from the term engine where has_min; lowrank: the exact product).
  // raw: without dn's weight-shift correction, whose A sums go to s_psum (see OnednnTermConv::run_s32_raw).
  // lowrank: corr = the int8 rank-1 corrections (scale lr_inv_gamma), when dn_lr exists.
  bool run_dn_s32(const uint8_t* src, int n, int h, int w, uint8_t pad_code, int32_t* acc, bool raw,
                  int32_t* corr = nullptr) const;

  // Scratch kept between calls, so a forward allocates and page-faults nothing once shapes are seen (one forward
  // at a time per instance: in-process workers run their steps in turn).
  mutable std::vector<uint8_t> s_codes, s_plane;
  mutable std::vector<int16_t> s_planes;
  mutable std::array<int, 3> s_planes_shape{-1, -1, -1};
  mutable std::vector<int32_t> s_acci, s_a0, s_a1, s_chsum, s_asum, s_ssum, s_psum;
  mutable std::vector<float> s_acc;
  // last forward (for backward_table): its activation codes are s_codes
  int last_n = -1, last_h = -1, last_w = -1;
  float last_sa = 1.0f;
  int32_t last_za = 0;
  TableGradient tgrad;  // built on the first backward_table

  int out_h(int h) const { return (h + 2 * pad - kh) / stride + 1; }
  int out_w(int w) const { return (w + 2 * pad - kw) / stride + 1; }
  int nplanes() const { return nt0 + nt1 + (has_min ? 3 : 0); }

  void pack_weights() const;
  void run_lut(const uint8_t* src, int n, int h, int w, uint8_t pad_code, int32_t* acc) const;
  /// acc0 (+)= the nt0 separable terms (unless skip_sep) and the min() term; acc1 = the nt1 low-rank terms.
  /// accumulate: add to acc0 instead of overwriting it.
  void run_terms(const uint8_t* src, int n, int h, int w, uint8_t pad_code, int32_t* acc0, int32_t* acc1,
                 bool skip_sep = false, bool accumulate = false) const;
};

namespace {
bool parse_mode(const std::string& mode, ApproxConv2d::Impl& I) {
  using Mode = ApproxConv2d::Impl::Mode;
  if (mode == "lut")
    I.mode = Mode::lut;
  else if (mode == "functional")
    I.mode = Mode::functional;
  else if (mode.rfind("lowrank:", 0) == 0) {
    I.mode = Mode::lowrank;
    std::string r = mode.substr(8);
    char* end = nullptr;
    long v = std::strtol(r.c_str(), &end, 10);
    FRUGAL_CHECK(!r.empty() && end == r.c_str() + r.size() && v >= 0 && v <= 64, "approx mode '", mode,
                 "': rank R must be an integer in [0,64]");
    I.rank = int(v);
  } else {
    return false;
  }
  return true;
}
}  // namespace

// ---------------------------------------------------------------------------------------------------
// Bit-widths and quantization shared by the integer kernels and fake quantization (fake_quant.h)
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

std::pair<float, float> range_with_zero(const float* src, size_t count) {
  using MM = std::pair<float, float>;
  MM r = tbb::parallel_reduce(
      tbb::blocked_range<size_t>(0, count, 1 << 16), MM{0.0f, 0.0f},
      [&](const tbb::blocked_range<size_t>& rr, MM m) {
        // 16 independent lanes (the ternaries are vminps / vmaxps), then the tail
        float mn[16], mx[16];
        for (int l = 0; l < 16; ++l) mn[l] = m.first, mx[l] = m.second;
        size_t i = rr.begin();
        for (; i + 16 <= rr.end(); i += 16)
          for (int l = 0; l < 16; ++l) {
            const float v = src[i + size_t(l)];
            mn[l] = v < mn[l] ? v : mn[l];
            mx[l] = v > mx[l] ? v : mx[l];
          }
        for (; i < rr.end(); ++i) m.first = std::min(m.first, src[i]), m.second = std::max(m.second, src[i]);
        for (int l = 0; l < 16; ++l) m.first = std::min(m.first, mn[l]), m.second = std::max(m.second, mx[l]);
        return m;
      },
      [](MM a, MM b) {
        return MM{std::min(a.first, b.first), std::max(a.second, b.second)};
      });
  return r;  // the range always includes 0 (the reduction starts from it)
}

ApproxConv2d::ApproxConv2d(const ApproxSpec& spec, int ic, int oc, int kh, int kw, int stride, int pad, int groups)
    : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.spec = spec;
  FRUGAL_CHECK(ic > 0 && oc > 0 && kh > 0 && kw > 0 && stride > 0 && pad >= 0 && groups > 0,
               "approx conv: bad shape ic=", ic, " oc=", oc, " k=", kh, "x", kw, " stride=", stride, " pad=", pad,
               " groups=", groups);
  FRUGAL_CHECK(ic % groups == 0 && oc % groups == 0, "approx conv: ic=", ic, " and oc=", oc,
               " must be multiples of groups=", groups);
  FRUGAL_CHECK(parse_mode(spec.mode, I), "approx mode '", spec.mode,
               "' unknown; expected lut, functional or lowrank:R");
  I.mult = make_multiplier(spec.multiplier);
  const std::string bad_bits = bits_error(spec, *I.mult);
  FRUGAL_CHECK(bad_bits.empty(), "approx conv: ", bad_bits);
  FRUGAL_CHECK(!runs_as_fake_quant(spec, *I.mult), "approx conv: multiplier '", I.mult->name(), "' at w",
               spec.weight_bits, "a", spec.act_bits, " is above the 8-bit integer kernels; run it as FakeQuantConv2d");
  I.ic = ic, I.oc = oc, I.kh = kh, I.kw = kw, I.stride = stride, I.pad = pad, I.groups = groups;
  I.icg = ic / groups, I.ocg = oc / groups, I.K = I.icg * kh * kw;
  I.table = build_table(*I.mult);

  if (I.mode == Impl::Mode::lut) {
    int32_t mn = *std::min_element(I.table.begin(), I.table.end());
    int32_t mx = *std::max_element(I.table.begin(), I.table.end());
    I.lut_bias = mn < 0 ? 32768 : 0;
    FRUGAL_CHECK(mn + I.lut_bias >= 0 && mx + I.lut_bias <= 65535, "approx conv: multiplier '", I.mult->name(),
                 "' has products in [", mn, ",", mx, "], outside 16 bits; use mode functional");
    I.lt.assign(65536 + 2, 0);  // + 2: the AVX2 gather reads entry 65535 as a 32-bit load
    for (int ca = 0; ca < 256; ++ca)
      for (int cb = 0; cb < 256; ++cb)
        I.lt[size_t(cb) * 256 + ca] = uint16_t(I.table[size_t(ca) * 256 + cb] + I.lut_bias);
    I.lt8.resize(256 * 512);
    for (int cb = 0; cb < 256; ++cb)
      for (int ca = 0; ca < 256; ++ca) {
        const uint16_t v = I.lt[size_t(cb) * 256 + ca];
        I.lt8[size_t(cb) * 512 + ca] = uint8_t(v & 0xFF);
        I.lt8[size_t(cb) * 512 + 256 + ca] = uint8_t(v >> 8);
      }
    FRUGAL_CHECK(int64_t(I.K) * 65535 < (int64_t(1) << 31), "approx conv: K=", I.K, " products overflow int32");
  } else {
    std::array<int16_t, 256> ident{};
    for (int c = 0; c < 256; ++c) ident[size_t(c)] = int16_t(decode(uint8_t(c), I.mult->is_signed));
    int64_t bound0 = 0, bound1 = 0;
    auto maxabs = [](const std::array<int16_t, 256>& a) {
      int m = 0;
      for (auto v : a) m = std::max(m, std::abs(int(v)));
      return int64_t(m);
    };
    if (I.mode == Impl::Mode::functional) {
      Decomposition d;
      FRUGAL_CHECK(I.mult->decomposition(d),
                   "approx mode 'functional' needs a functional multiplier (exact, trunc, "
                   "bam, mitchell, drum); '",
                   I.mult->name(), "' is a table: use mode lut or lowrank:R");
      I.amaps = d.a_terms;
      I.bmaps = d.b_terms;
      I.nt0 = int(d.a_terms.size());
      for (size_t t = 0; t < d.a_terms.size(); ++t) bound0 += maxabs(d.a_terms[t]) * maxabs(d.b_terms[t]);
      if (d.has_min) {
        I.has_min = true;
        I.signed_min = I.mult->is_signed;
        std::array<int16_t, 256> nsb{};
        for (int c = 0; c < 256; ++c) nsb[size_t(c)] = int16_t(-d.sb[size_t(c)]);
        I.amaps.push_back(d.fa), I.amaps.push_back(d.fa2), I.amaps.push_back(d.sa);
        I.bmaps.push_back(d.fb), I.bmaps.push_back(d.fb2), I.bmaps.push_back(nsb);
        bound0 += 16384;
      }
      {
        // the separable terms (mitchell: the exact product a*b) on oneDNN int8; a min() term stays on the term
        // engine, which then adds only that correction (run_dn_s32)
        std::vector<std::array<double, 256>> am, bm;
        for (size_t t = 0; t < d.a_terms.size(); ++t) {
          std::array<double, 256> x{}, y{};
          for (int c = 0; c < 256; ++c) x[size_t(c)] = d.a_terms[t][size_t(c)], y[size_t(c)] = d.b_terms[t][size_t(c)];
          am.push_back(x), bm.push_back(y);
        }
        // signed multipliers take symmetric weights: code -128 (0x80) never occurs
        I.dn = OnednnTermConv::make(am, bm, ic, oc, kh, kw, stride, pad, groups,
                                    I.mult->is_signed ? 0x80 : -1);
      }
    } else {
      I.amaps.push_back(ident), I.bmaps.push_back(ident);
      I.nt0 = 1;
      bound0 = 128 * 255 + 255 * 255;
      LowRankError lr = lowrank_error(*I.mult, I.rank);
      double sum_uv = 0, max_u = 0, max_v = 0;
      for (int r = 0; r < I.rank; ++r) {
        double mu = 0, mv = 0;
        for (int c = 0; c < 256; ++c)
          mu = std::max(mu, std::abs(lr.u[size_t(r)][size_t(c)])),
          mv = std::max(mv, std::abs(lr.v[size_t(r)][size_t(c)]));
        sum_uv += mu * mv;
        max_u = std::max(max_u, mu), max_v = std::max(max_v, mv);
      }
      double cscale = 1.0;
      if (sum_uv > 0) {
        cscale = std::sqrt(double(1 << 29) / (double(I.K) * sum_uv));
        cscale = std::min({cscale, 32000.0 / max_u, 32000.0 / max_v});
      }
      I.inv_s = 1.0 / (cscale * cscale);
      for (int r = 0; r < I.rank; ++r) {
        std::array<int16_t, 256> ua{}, vb{};
        for (int c = 0; c < 256; ++c) {
          ua[size_t(c)] = int16_t(std::lround(lr.u[size_t(r)][size_t(c)] * cscale));
          vb[size_t(c)] = int16_t(std::lround(lr.v[size_t(r)][size_t(c)] * cscale));
        }
        I.amaps.push_back(ua), I.bmaps.push_back(vb);
        bound1 += maxabs(ua) * maxabs(vb);
      }
      I.nt1 = I.rank;
      // oneDNN: the exact product a*b on one int8 conv, the R rank-1 factors rounded to int8 on a second one.
      // Term r: u8_r = round(alpha_r u_r) in [-127, 127], v8_r = round(gamma / alpha_r * v_r), one gamma for all
      // terms (their sum shares an accumulator) and as large as every v8_r in [-127, 127] allows.
      std::vector<std::array<double, 256>> ea{{}}, eb{{}};
      for (int c = 0; c < 256; ++c) ea[0][size_t(c)] = eb[0][size_t(c)] = ident[size_t(c)];
      I.dn = OnednnTermConv::make(ea, eb, ic, oc, kh, kw, stride, pad, groups,
                                  I.mult->is_signed ? 0x80 : -1);
      if (I.dn && I.rank > 0) {
        std::vector<double> alpha(size_t(I.rank), 0.0);
        double gamma = 0;
        for (int r = 0; r < I.rank; ++r) {
          double mu = 0, mv = 0;
          for (int c = 0; c < 256; ++c)
            mu = std::max(mu, std::abs(lr.u[size_t(r)][size_t(c)])),
            mv = std::max(mv, std::abs(lr.v[size_t(r)][size_t(c)]));
          if (mu == 0 || mv == 0) continue;  // an all-zero term (rank beyond the table's)
          alpha[size_t(r)] = 127.0 / mu;
          const double g = alpha[size_t(r)] * 127.0 / mv;
          gamma = gamma == 0 ? g : std::min(gamma, g);
        }
        std::vector<std::array<double, 256>> ua, vb;
        for (int r = 0; r < I.rank; ++r) {
          std::array<double, 256> u{}, v{};
          if (alpha[size_t(r)] > 0)
            for (int c = 0; c < 256; ++c) {
              u[size_t(c)] = std::nearbyint(lr.u[size_t(r)][size_t(c)] * alpha[size_t(r)]);
              v[size_t(c)] = std::nearbyint(lr.v[size_t(r)][size_t(c)] * gamma / alpha[size_t(r)]);
            }
          ua.push_back(u), vb.push_back(v);
        }
        I.dn_lr = OnednnTermConv::make(ua, vb, ic, oc, kh, kw, stride, pad, groups);
        I.lr_inv_gamma = gamma > 0 ? 1.0 / gamma : 0.0;
        if (!I.dn_lr) I.dn.reset();  // both on oneDNN or neither
      }
    }
    FRUGAL_CHECK(int64_t(I.K) * bound0 < (int64_t(1) << 31) && int64_t(I.K) * bound1 < (int64_t(1) << 31),
                 "approx conv: K=", I.K, " products of '", I.mult->name(), "' may overflow the int32 accumulator");
    I.icgp = (I.icg + 1) / 2 * 2;
    I.icp = I.icgp / 2;
    I.ob = (I.ocg + 15) / 16;
    for (const auto& m : I.amaps) {
      std::array<int32_t, 256> m32{};
      for (int c = 0; c < 256; ++c) m32[size_t(c)] = m[size_t(c)];
      I.amaps32.push_back(m32);
    }
  }
}

ApproxConv2d::~ApproxConv2d() = default;

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

void ApproxConv2d::set_weights(const float* w, const float* bias) {
  Impl& I = *impl_;
  const size_t per = size_t(I.K), total = size_t(I.oc) * per;
  I.wq = weight_quant_params(I.spec, I.mult->is_signed, w, I.oc, per);
  std::vector<int32_t> q(total);
  quantize(w, total, I.wq, q.data());
  I.wcodes.resize(total);
  I.wsum.assign(size_t(I.oc), 0);
  for (size_t i = 0; i < total; ++i) {
    I.wcodes[i] = code(q[i]);
    I.wsum[i / per] += q[i];
  }
  I.bias.assign(size_t(I.oc), 0.0f);
  if (bias) std::copy(bias, bias + I.oc, I.bias.begin());
  I.wpack_stale = true;
  if (I.dn) I.dn->set_weights(I.wcodes.data());
  if (I.dn_lr) I.dn_lr->set_weights(I.wcodes.data());
  I.weights_set = true;
}

void ApproxConv2d::set_act_range(float lo, float hi) {
  FRUGAL_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "approx conv: bad activation range [", lo, ",", hi,
               "]");
  impl_->act_set = true;
  impl_->act_lo = lo, impl_->act_hi = hi;
}

QuantParams ApproxConv2d::act_params(const float* src, size_t count) const {
  const Impl& I = *impl_;
  float lo = I.act_lo, hi = I.act_hi;
  if (!I.act_set) std::tie(lo, hi) = range_with_zero(src, count);
  return act_quant_params(I.spec, I.mult->is_signed, lo, hi);
}

const std::vector<uint8_t>& ApproxConv2d::weight_codes() const { return impl_->wcodes; }
const QuantParams& ApproxConv2d::weight_params() const { return impl_->wq; }
const Multiplier& ApproxConv2d::multiplier() const { return *impl_->mult; }

std::string ApproxConv2d::kernel_path() const {
  const Impl& I = *impl_;
  if (I.mode == Impl::Mode::lut) return std::string("lut-") + lut_path_name(lut_path());
  std::string p;
  const bool dn = I.dn && util::kernel_isa() != Isa::scalar;  // (run_dn_s32's condition)
  if (dn) p = I.dn->path();
  if (!dn || I.has_min) p += std::string(p.empty() ? "" : "+") + "terms-" + term_path_name(term_path());
  return p;
}
int ApproxConv2d::out_h(int h) const { return impl_->out_h(h); }
int ApproxConv2d::out_w(int w) const { return impl_->out_w(w); }

// ---------------------------------------------------------------------------------------------------
// LUT engine: im2col tiles of kTile output pixels, codes as uint16 (k-major), one table row per weight.
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

// Byte-plane variant (AVX-512 VBMI): a table row is split into its low and high bytes; two vpermt2b + a blend
// on the index's top bit look up 64 operands per plane, and the bytes are summed in 16-bit lanes (flushed to
// 32 bits every 256 k, before they can overflow): 15 instructions per 64 products instead of 28.
// col8: (K, kTile) activation codes; lt8: per weight code 256 low then 256 high bytes; res (kTile) = sum_k lt.
FRUGAL_AVX512_VBMI void lut_tile_vbmi(const uint8_t* col8, const uint8_t* lt8, const uint8_t* wrow, int K,
                                      int32_t* res) {
  alignas(64) int32_t sum[kTile];
  for (int p = 0; p < kTile; ++p) sum[p] = 0;
  const __m512i zero = _mm512_setzero_si512();
  for (int k0 = 0; k0 < K; k0 += 256) {
    const int k1 = std::min(K, k0 + 256);
    constexpr int V = kTile / 64;
    __m512i lo[2 * V], hi[2 * V];  // [v*2 + half]: 16-bit sums of pixels (v*64 + lane*16 + half*8 + 0..7)
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
        const __m512i bl =
            _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(l0, idx, l1), _mm512_permutex2var_epi8(l2, idx, l3));
        const __m512i bh =
            _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(h0, idx, h1), _mm512_permutex2var_epi8(h2, idx, h3));
        lo[2 * v] = _mm512_add_epi16(lo[2 * v], _mm512_unpacklo_epi8(bl, zero));
        lo[2 * v + 1] = _mm512_add_epi16(lo[2 * v + 1], _mm512_unpackhi_epi8(bl, zero));
        hi[2 * v] = _mm512_add_epi16(hi[2 * v], _mm512_unpacklo_epi8(bh, zero));
        hi[2 * v + 1] = _mm512_add_epi16(hi[2 * v + 1], _mm512_unpackhi_epi8(bh, zero));
      }
    }
    alignas(64) uint16_t tl[32], th[32];
    for (int v = 0; v < V; ++v)
      for (int half = 0; half < 2; ++half) {
        _mm512_store_si512(tl, lo[2 * v + half]);
        _mm512_store_si512(th, hi[2 * v + half]);
        for (int j = 0; j < 32; ++j) {  // word j: lane j/8, element j%8 -> pixel lane*16 + half*8 + j%8
          const int p = v * 64 + (j / 8) * 16 + half * 8 + j % 8;
          sum[p] += int32_t(tl[j]) + 256 * int32_t(th[j]);
        }
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

void ApproxConv2d::Impl::run_lut(const uint8_t* src, int n, int h, int w, uint8_t pad_code, int32_t* acc) const {
  const int OH = out_h(h), OW = out_w(w), Hp = h + 2 * pad, Wp = w + 2 * pad;
  // padded code planes [n][IC][Hp][Wp]
  std::vector<uint8_t>& plane = s_plane;
  plane.resize(size_t(n) * ic * Hp * Wp);
  std::fill(plane.begin(), plane.end(), pad_code);
  tbb::parallel_for(0, n, [&](int b) {
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const uint8_t* s = src + ((size_t(b) * h + y) * w + x) * ic;
        for (int c = 0; c < ic; ++c) plane[((size_t(b) * ic + c) * Hp + y + pad) * Wp + x + pad] = s[c];
      }
  });
  const int64_t P = int64_t(n) * OH * OW;
  const int64_t tiles = (P + kTile - 1) / kTile;
  const LutPath path = lut_path();
  const bool bytes = path == LutPath::vbmi;  // byte codes (VBMI) or uint16 codes (the others)
  const int32_t kb = int32_t(K) * lut_bias;
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, tiles * groups), [&](const tbb::blocked_range<int64_t>& rr) {
    std::vector<uint16_t> col(bytes ? 0 : size_t(K) * kTile);
    std::vector<uint8_t> col8(bytes ? size_t(K) * kTile : 0);
    alignas(64) int32_t res[kTile];
    for (int64_t job = rr.begin(); job < rr.end(); ++job) {
      const int g = int(job % groups);
      const int64_t p0 = (job / groups) * kTile, pend = std::min(P, p0 + kTile);
      if (bytes)
        std::fill(col8.begin(), col8.end(), uint8_t(0));
      else
        std::fill(col.begin(), col.end(), uint16_t(0));
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
                  std::memcpy(d, s, size_t(run));
                else
                  for (int i = 0; i < run; ++i) d[i] = s[size_t(i) * stride];
              } else {
                uint16_t* d = col.data() + at;
                if (stride == 1)
                  for (int i = 0; i < run; ++i) d[i] = s[i];
                else
                  for (int i = 0; i < run; ++i) d[i] = s[size_t(i) * stride];
              }
            }
        p += run;
      }
      for (int o = g * ocg; o < (g + 1) * ocg; ++o) {
        const uint8_t* wrow = wcodes.data() + size_t(o) * K;
        switch (path) {
          case LutPath::vbmi: lut_tile_vbmi(col8.data(), lt8.data(), wrow, K, res); break;
          case LutPath::avx512: lut_tile_avx512(col.data(), lt.data(), wrow, K, res); break;
          case LutPath::avx2: lut_tile_avx2(col.data(), lt.data(), wrow, K, res); break;
          case LutPath::scalar:
            lut_tile_scalar(col.data(), table.data(), wrow, K, 0, res);
            for (int64_t p = p0; p < pend; ++p) acc[size_t(p) * oc + o] = res[p - p0];
            continue;
        }
        for (int64_t p = p0; p < pend; ++p) acc[size_t(p) * oc + o] = res[p - p0] - kb;
      }
    }
  });
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

void ApproxConv2d::Impl::run_terms(const uint8_t* src, int n, int h, int w, uint8_t pad_code, int32_t* acc0,
                                   int32_t* acc1, bool skip_sep, bool accumulate) const {
  const int Hp = h + 2 * pad, Wp = w + 2 * pad, C = groups * icgp, np = nplanes();
  const size_t pstride = size_t(n) * Hp * Wp * C;
  const TermPath tpath = term_path();
  const bool simd = tpath != TermPath::scalar;  // the SIMD kernels skip the sign plane of non-negative images
  const bool fill512 = util::kernel_isa() == Isa::avx512;  // the plane fill's lookups (AVX-512 BW)
  const bool fill2 = util::kernel_isa() == Isa::avx2;
  const int p0 = skip_sep ? nt0 : 0;  // the first plane this run reads
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
  const bool ok = raw ? dn->run_s32_raw(src, n, h, w, pad_code, acc, dn->shift_weights() ? &s_psum : nullptr)
                      : dn->run_s32(src, n, h, w, pad_code, acc);
  if (!ok || (dn_lr && !dn_lr->run_s32(src, n, h, w, pad_code, corr))) return false;
  if (has_min) run_terms(src, n, h, w, pad_code, acc, nullptr, /*skip_sep=*/true, /*accumulate=*/true);
  return true;
}

void ApproxConv2d::products(const uint8_t* src_codes, int n, int h, int w, uint8_t pad_code, int32_t* acc) {
  Impl& I = *impl_;
  FRUGAL_CHECK(I.weights_set, "approx conv: set_weights() before forward");
  FRUGAL_CHECK(n > 0 && h + 2 * I.pad >= I.kh && w + 2 * I.pad >= I.kw, "approx conv: input ", n, "x", h, "x", w,
               " too small for kernel ", I.kh, "x", I.kw, " pad ", I.pad);
  FRUGAL_CHECK(I.mode != Impl::Mode::lowrank, "approx conv: products() is exact; lowrank mode gives products_float()");
  if (I.mode == Impl::Mode::lut)
    I.run_lut(src_codes, n, h, w, pad_code, acc);
  else if (I.mode == Impl::Mode::functional && I.run_dn_s32(src_codes, n, h, w, pad_code, acc, /*raw=*/false))
    return;
  else
    I.run_terms(src_codes, n, h, w, pad_code, acc, nullptr);
}

void ApproxConv2d::products_float(const uint8_t* src_codes, int n, int h, int w, uint8_t pad_code, float* acc) {
  Impl& I = *impl_;
  const size_t total = size_t(n) * I.out_h(h) * I.out_w(w) * I.oc;
  std::vector<int32_t>& a0 = I.s_a0;
  a0.resize(total);
  if (I.mode != Impl::Mode::lowrank) {
    products(src_codes, n, h, w, pad_code, a0.data());
    for (size_t i = 0; i < total; ++i) acc[i] = float(a0[i]);
    return;
  }
  FRUGAL_CHECK(I.weights_set, "approx conv: set_weights() before forward");
  std::vector<int32_t>& a1 = I.s_a1;
  a1.resize(total);
  if (I.run_dn_s32(src_codes, n, h, w, pad_code, a0.data(), /*raw=*/false, a1.data())) {
    const float ig = float(I.lr_inv_gamma);
    if (!I.dn_lr)
      for (size_t i = 0; i < total; ++i) acc[i] = float(a0[i]);
    else
      for (size_t i = 0; i < total; ++i) acc[i] = float(a0[i]) + float(a1[i]) * ig;
    return;
  }
  a1.assign(total, 0);
  I.run_terms(src_codes, n, h, w, pad_code, a0.data(), a1.data());
  for (size_t i = 0; i < total; ++i) acc[i] = float(double(a0[i]) + double(a1[i]) * I.inv_s);
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

void ApproxConv2d::forward(const float* src, int n, int h, int w, float* dst) {
  Impl& I = *impl_;
  FRUGAL_CHECK(I.weights_set, "approx conv: set_weights() before forward");
  const size_t in_total = size_t(n) * h * w * I.ic;
  QuantParams aq = act_params(src, in_total);
  const float sa = aq.scale[0];
  const int32_t za = aq.zero_point[0];
  I.last_n = n, I.last_h = h, I.last_w = w, I.last_sa = sa, I.last_za = za;
  std::vector<uint8_t>& codes = I.s_codes;
  codes.resize(in_total);
  // Quantize; where weight zero points are non-zero, also sum the activation values per pixel and group (their
  // window sums give the z_w * sum(a) term).
  const bool need_asum =
      std::any_of(I.wq.zero_point.begin(), I.wq.zero_point.end(), [](int32_t z) { return z != 0; });
  const int G = I.groups, icg = I.icg;
  const size_t in_pixels = size_t(n) * h * w;
  std::vector<int32_t>& chsum = I.s_chsum;
  if (need_asum) chsum.resize(in_pixels * G);
  const Isa isa = util::kernel_isa();
  // one flat pass, 16 values per step (a per-pixel, per-group loop spent more on its loop control and horizontal
  // sums than on the memory traffic: 1.0 vs 0.35 ms on a 16-channel 32x32 batch of 128); the per-pixel sums, where
  // needed, come from the codes afterwards
  tbb::parallel_for(tbb::blocked_range<size_t>(0, in_total, size_t(1) << 15), [&](const tbb::blocked_range<size_t>& r) {
    const float inv = 1.0f / sa, lo = float(aq.qmin), hi = float(aq.qmax), zf = float(za);
    uint8_t* cd = codes.data();
    size_t i = r.begin();
    if (isa == Isa::avx512)
      i = quantize_avx512(src, i, r.end(), inv, lo - zf, hi - zf, za, cd);
    else if (isa == Isa::avx2)
      i = quantize_avx2(src, i, r.end(), inv, lo - zf, hi - zf, za, cd);
    for (; i < r.end(); ++i) {
      const float q = std::min(std::max(std::nearbyint(src[i] * inv) + zf, lo), hi);
      cd[i] = static_cast<uint8_t>(static_cast<int32_t>(q) & 0xFF);  // code()
    }
  });
  if (need_asum) {
    // chsum[k] = sum of the icg quantized values q (z_a included) of (pixel, group) k = sum of its codes read as
    // u8 or s8. (Today only unsigned multipliers have weight zero points, so the codes are unsigned here; the
    // signed case is kept correct for per-tensor signed affine weights.)
    const bool sgn = aq.qmin < 0;
    const size_t groups_total = in_pixels * size_t(G);
    tbb::parallel_for(tbb::blocked_range<size_t>(0, groups_total, 4096), [&](const tbb::blocked_range<size_t>& r) {
      const uint8_t* cd = codes.data();
      size_t k = r.begin();
      if (isa == Isa::avx512)
        k = code_sums_avx512(cd, k, r.end(), icg, sgn, chsum.data());
      else if (isa == Isa::avx2)
        k = code_sums_avx2(cd, k, r.end(), icg, sgn, chsum.data());
      for (; k < r.end(); ++k) {
        const uint8_t* c = cd + k * size_t(icg);
        int32_t t = 0;
        for (int j = 0; j < icg; ++j) t += sgn ? int32_t(int8_t(c[j])) : int32_t(c[j]);
        chsum[k] = t;
      }
    });
  }
  const int OH = I.out_h(h), OW = I.out_w(w);
  const size_t total = size_t(n) * OH * OW * I.oc;
  std::vector<float>& acc = I.s_acc;
  std::vector<int32_t>& acci = I.s_acci;
  const bool lowrank = I.mode == Impl::Mode::lowrank;
  // oneDNN int8 path with weights shifted by -128: its correction 128 * window sum of A joins the pass below
  bool shifted = false;
  // lowrank on oneDNN: the exact products join the integer pass below, the int8 rank-1 corrections (lr_acc,
  // scaled by lr_inv_gamma) are added in float; otherwise (portable engine) products_float gives it all in acc
  const int32_t* lr_acc = nullptr;
  bool lowrank_float = false;
  acci.resize(total);
  std::vector<int32_t>& a1 = I.s_a1;
  if (lowrank) a1.resize(total);
  if (I.run_dn_s32(codes.data(), n, h, w, code(za), acci.data(), /*raw=*/true, a1.data())) {
    shifted = I.dn->shift_weights();
    if (I.dn_lr) lr_acc = a1.data();
  } else if (lowrank) {
    lowrank_float = true;
    acc.resize(total);
    products_float(codes.data(), n, h, w, code(za), acc.data());
  } else {
    products(codes.data(), n, h, w, code(za), acci.data());
  }
  const size_t out_pixels = size_t(n) * OH * OW;
  std::vector<int32_t>& asum = I.s_asum;
  if (need_asum) {
    asum.resize(out_pixels * G);
    window_sums(chsum.data(), n, h, w, G, I.kh, I.kw, I.stride, I.pad, za * icg, asum.data());
  }
  std::vector<int32_t>& ssum = I.s_ssum;
  if (shifted) {
    ssum.resize(out_pixels * G);
    window_sums(I.s_psum.data(), n, h, w, G, I.kh, I.kw, I.stride, I.pad, I.dn->shift_border_sum(code(za)),
                ssum.data());
  }
  // per output channel: dequantization scale, the exact zero-point correction (an integer), weight zero point;
  // dst = scale * (products + corr - z_w * asum) + bias, in integers up to the final scaling
  const size_t pixels = size_t(n) * OH * OW;
  const int oc = I.oc;
  const size_t noc = static_cast<size_t>(oc);
  std::vector<float> scale_o(noc);
  std::vector<int64_t> corr_o(noc), zw_o(noc);
  for (int o = 0; o < oc; ++o) {
    const size_t c = I.wq.channel_of(size_t(o) * I.K);
    const int64_t zw = I.wq.zero_point[c];
    scale_o[size_t(o)] = float(double(sa) * I.wq.scale[c]);
    corr_o[size_t(o)] = -int64_t(za) * I.wsum[size_t(o)] + int64_t(I.K) * za * zw;
    zw_o[size_t(o)] = zw;
  }
  const float* bias = I.bias.data();
  const float* so = scale_o.data();
  const int64_t *co = corr_o.data(), *zo = zw_o.data();
  std::vector<int32_t> corr32(noc), zw32(noc);
  for (size_t o = 0; o < noc; ++o) corr32[o] = int32_t(uint32_t(uint64_t(corr_o[o]))), zw32[o] = int32_t(zw_o[o]);
  const int32_t *co32 = corr32.data(), *zo32 = zw32.data();
  const float lr_ig = float(I.lr_inv_gamma);
  tbb::parallel_for(tbb::blocked_range<size_t>(0, pixels, 256), [&](const tbb::blocked_range<size_t>& r) {
    for (size_t p = r.begin(); p < r.end(); ++p) {
      float* d = dst + p * noc;
      if (lowrank_float) {
        const float* a = acc.data() + p * noc;
        if (need_asum) {
          for (int o = 0; o < oc; ++o)
            d[o] = so[o] * (a[o] + float(co[o] - zo[o] * asum[p * size_t(G) + size_t(o / I.ocg)])) + bias[o];
        } else {
          for (int o = 0; o < oc; ++o) d[o] = so[o] * (a[o] + float(co[o])) + bias[o];
        }
        continue;
      }
      const int32_t* a = acci.data() + p * noc;
      if (G == 1) {
        // int32 arithmetic (wrapping): the result, sum_k (M(a,w) - z_w a - z_a w + z_a z_w), fits int32 (the
        // constructor's accumulator bound), so the low 32 bits are exact; 16 channels per vector
        const int32_t as = need_asum ? asum[p] : 0, sh = shifted ? int32_t(128u * uint32_t(ssum[p])) : 0;
        auto exact = [&](int o) {
          return float(int32_t(uint32_t(a[o]) + uint32_t(sh) + uint32_t(co32[o]) - uint32_t(zo32[o]) * uint32_t(as)));
        };
        if (lr_acc) {
          const int32_t* c = lr_acc + p * noc;
          for (int o = 0; o < oc; ++o) d[o] = so[o] * (exact(o) + float(c[o]) * lr_ig) + bias[o];
        } else {
          for (int o = 0; o < oc; ++o) d[o] = so[o] * exact(o) + bias[o];
        }
      } else {
        for (int o = 0; o < oc; ++o) {
          const size_t pg = p * size_t(G) + size_t(o / I.ocg);
          const int64_t as = need_asum ? asum[pg] : 0, sh = shifted ? 128 * int64_t(ssum[pg]) : 0;
          const float ex = float(int64_t(a[o]) + sh + co[o] - zo[o] * as);
          d[o] = so[o] * (lr_acc ? ex + float(lr_acc[p * noc + size_t(o)]) * lr_ig : ex) + bias[o];
        }
      }
    }
  });
}

void ApproxConv2d::backward_table(const float* diff_dst, int n, int h, int w, float* diff_src, float* w_grad) {
  Impl& I = *impl_;
  FRUGAL_CHECK(I.weights_set && I.last_n == n && I.last_h == h && I.last_w == w,
               "approx conv: backward_table() needs the forward() of the same batch first");
  if (I.tgrad.d_da.empty()) I.tgrad = table_gradient(*I.mult);
  const float* dA = I.tgrad.d_da.data();
  const float* dB = I.tgrad.d_db.data();
  const int OH = I.out_h(h), OW = I.out_w(w), ic = I.ic, oc = I.oc, icg = I.icg, ocg = I.ocg, kh = I.kh, kw = I.kw;
  const int stride = I.stride, pad = I.pad, khw = kh * kw;
  const uint8_t* a = I.s_codes.data();
  const uint8_t* wc = I.wcodes.data();
  const uint8_t pad_code = code(I.last_za);
  const float za = float(I.last_za), sa = I.last_sa;
  auto dd = [&](int b, int oy, int ox, int o) { return diff_dst[((size_t(b) * OH + oy) * OW + ox) * oc + o]; };
  if (diff_src) {
    std::fill(diff_src, diff_src + size_t(n) * h * w * ic, 0.0f);
    tbb::parallel_for(0, n, [&](int b) {  // images are independent: each task writes its own diff_src
      for (int oy = 0; oy < OH; ++oy)
        for (int ox = 0; ox < OW; ++ox)
          for (int o = 0; o < oc; ++o) {
            const float g = dd(b, oy, ox, o);
            if (g == 0.0f) continue;
            const size_t ch = I.wq.channel_of(size_t(o) * I.K);
            const float gs = g * I.wq.scale[ch], zw = float(I.wq.zero_point[ch]);
            const int grp = o / ocg;
            for (int ky = 0; ky < kh; ++ky) {
              const int iy = oy * stride - pad + ky;
              if (iy < 0 || iy >= h) continue;
              for (int kx = 0; kx < kw; ++kx) {
                const int ix = ox * stride - pad + kx;
                if (ix < 0 || ix >= w) continue;
                const size_t off = ((size_t(b) * h + iy) * w + ix) * ic + size_t(grp) * icg;
                const uint8_t* ar = a + off;
                float* dr = diff_src + off;
                const uint8_t* wr = wc + size_t(o) * icg * khw + size_t(ky) * kw + kx;
                for (int c = 0; c < icg; ++c) dr[c] += gs * (dA[size_t(ar[c]) * 256 + wr[size_t(c) * khw]] - zw);
              }
            }
          }
    });
  }
  tbb::parallel_for(0, oc, [&](int o) {  // output channels are independent: each task writes its own filter
    float* gw = w_grad + size_t(o) * icg * khw;
    std::fill(gw, gw + size_t(icg) * khw, 0.0f);
    const uint8_t* wo = wc + size_t(o) * icg * khw;
    const int grp = o / ocg;
    for (int b = 0; b < n; ++b)
      for (int oy = 0; oy < OH; ++oy)
        for (int ox = 0; ox < OW; ++ox) {
          const float g = dd(b, oy, ox, o);
          if (g == 0.0f) continue;
          const float gs = g * sa;
          for (int ky = 0; ky < kh; ++ky) {
            const int iy = oy * stride - pad + ky;
            for (int kx = 0; kx < kw; ++kx) {
              const int ix = ox * stride - pad + kx;
              const bool inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
              const uint8_t* ar = inside ? a + ((size_t(b) * h + iy) * w + ix) * ic + size_t(grp) * icg : nullptr;
              for (int c = 0; c < icg; ++c) {
                const size_t k = size_t(c) * khw + size_t(ky) * kw + kx;
                const uint8_t ac = inside ? ar[c] : pad_code;
                gw[k] += gs * (dB[size_t(ac) * 256 + wo[k]] - za);
              }
            }
          }
        }
  });
}

ApproxLinear::ApproxLinear(const ApproxSpec& spec, int in, int out) : conv_(spec, in, out, 1, 1, 1, 0, 1) {}

}  // namespace frugal::approx
