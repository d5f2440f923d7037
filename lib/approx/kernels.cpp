// ApproxConv2d / ApproxLinear (kernels.h): construction, weights, forward() (quantize, products on the mode's
// engine, dequantize), the table-gradient backward and the naive reference. The engines are in conv_impl.h's files.
#include "approx/kernels.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>

#include <immintrin.h>

#include "approx/conv_impl.h"
#include "util/check.h"

namespace frugal::approx {

using util::Isa;

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

ApproxConv2d::ApproxConv2d(const ApproxSpec& spec, int ic, int oc, int kh, int kw, int stride, int pad, int groups)
    : ApproxConv2d(spec, make_multiplier(spec.multiplier), ic, oc, kh, kw, stride, pad, groups) {}

ApproxConv2d::ApproxConv2d(const ApproxSpec& spec, std::shared_ptr<const Multiplier> m, int ic, int oc, int kh, int kw,
                           int stride, int pad, int groups)
    : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  FRUGAL_CHECK(m != nullptr, "approx conv: no multiplier given (build one with make_multiplier)");
  I.spec = spec;
  FRUGAL_CHECK(ic > 0 && oc > 0 && kh > 0 && kw > 0 && stride > 0 && pad >= 0 && groups > 0,
               "approx conv: bad shape ic=", ic, " oc=", oc, " k=", kh, "x", kw, " stride=", stride, " pad=", pad,
               " groups=", groups);
  FRUGAL_CHECK(ic % groups == 0 && oc % groups == 0, "approx conv: ic=", ic, " and oc=", oc,
               " must be multiples of groups=", groups);
  FRUGAL_CHECK(parse_mode(spec.mode, I), "approx mode '", spec.mode,
               "' unknown; expected lut, functional or lowrank:R");
  I.mult = std::move(m);
  const std::string bad_bits = bits_error(spec, *I.mult);
  FRUGAL_CHECK(bad_bits.empty(), "approx conv: ", bad_bits);
  FRUGAL_CHECK(!runs_as_fake_quant(spec, *I.mult), "approx conv: multiplier '", I.mult->name(), "' at w",
               spec.weight_bits, "a", spec.act_bits, " is above the 8-bit integer kernels; run it as FakeQuantConv2d");
  I.ic = ic, I.oc = oc, I.kh = kh, I.kw = kw, I.stride = stride, I.pad = pad, I.groups = groups;
  I.icg = ic / groups, I.ocg = oc / groups, I.K = I.icg * kh * kw;
  if (I.mode == Impl::Mode::lut) {
    I.init_lut();
    return;
  }
  const auto [bound0, bound1] = I.mode == Impl::Mode::functional ? I.init_functional() : I.init_lowrank();
  FRUGAL_CHECK(int64_t(I.K) * bound0 < (int64_t(1) << 31) && int64_t(I.K) * bound1 < (int64_t(1) << 31),
               "approx conv: K=", I.K, " products of '", I.mult->name(), "' may overflow the int32 accumulator");
  I.init_term_layout();
}

ApproxConv2d::~ApproxConv2d() = default;

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
  I.lq_stale = true;
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
  return impl_->act_params(src, count);
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

// forward()'s output pass: dst = scale * (products + zero-point corrections) + bias per output channel (kernels.h).
struct ApproxConv2d::Impl::OutputTerms {
  const int32_t* acci = nullptr;  // integer products (N,OH,OW,OC), unless accf
  const float* accf = nullptr;    // lowrank on the term engine: products_float's sums
  const int32_t* lr_acc = nullptr;  // lowrank on oneDNN: the int8 rank-1 corrections, scaled by lr_inv_gamma
  bool shifted = false;  // oneDNN with weights shifted by -128: 128 * s_ssum joins the sum
  const int32_t* chan = nullptr;     // oneDNN (raw): per output channel, a constant that joins acci
  const int32_t* lr_chan = nullptr;  // and one that joins lr_acc
};

void ApproxConv2d::forward(const float* src, int n, int h, int w, float* dst) {
  Impl& I = *impl_;
  FRUGAL_CHECK(I.weights_set, "approx conv: set_weights() before forward");
  const Impl::ActCodes ac = I.quantize_input(src, n, h, w);
  I.last_n = n, I.last_h = h, I.last_w = w, I.last_sa = ac.sa, I.last_za = ac.za;
  const int G = I.groups;
  const size_t total = size_t(n) * I.out_h(h) * I.out_w(w) * I.oc;
  const uint8_t* codes = I.s_codes.data();
  Impl::OutputTerms t;
  I.s_acci.resize(total);
  if (I.mode == Impl::Mode::lowrank) I.s_a1.resize(total);
  if (I.run_dn_s32(codes, n, h, w, code(ac.za), I.s_acci.data(), /*raw=*/true, I.s_a1.data())) {
    t.acci = I.s_acci.data();
    t.shifted = I.dn->shift_weights();
    t.chan = I.s_chan.data();
    if (I.dn_lr) t.lr_acc = I.s_a1.data(), t.lr_chan = I.s_lr_chan.data();
  } else if (I.mode == Impl::Mode::lowrank) {
    I.s_acc.resize(total);
    products_float(codes, n, h, w, code(ac.za), I.s_acc.data());
    t.accf = I.s_acc.data();
  } else {
    products(codes, n, h, w, code(ac.za), I.s_acci.data());
    t.acci = I.s_acci.data();
  }
  const size_t out_pixels = size_t(n) * I.out_h(h) * I.out_w(w);
  if (ac.need_asum) {
    I.s_asum.resize(out_pixels * G);
    window_sums(I.s_chsum.data(), n, h, w, G, I.kh, I.kw, I.stride, I.pad, ac.za * I.icg, I.s_asum.data());
  }
  if (t.shifted) {
    I.s_ssum.resize(out_pixels * G);
    window_sums(I.s_psum.data(), n, h, w, G, I.kh, I.kw, I.stride, I.pad, I.dn->shift_border_sum(code(ac.za)),
                I.s_ssum.data());
  }
  I.write_output(ac, t, out_pixels, dst);
}

namespace {
// write_output's integer path for one group (the common case), per pixel p:
//   d[o] = so[o] * (exact(o) [+ float(int32(lr[o] + lc[o])) * lr_ig]) + bs[o],
//   exact(o) = float(int32(a[o] + sh + co[o] - zo[o] * as)) in wrapping int32 arithmetic,
// sh = 128 * ssum[p] (shifted weights) and as = asum[p] (weight zero points) where given, else 0. The AVX-512 and
// AVX2 loops do the same operations in the same order as the scalar loop (the build has -ffp-contract=off), so all
// three give the same floats.
struct OutputPixels {
  const int32_t* acc;   // (P, OC)
  const int32_t* ssum;  // (P) or nullptr
  const int32_t* asum;  // (P) or nullptr
  const int32_t *co, *zo;
  const float *so, *bs;
  const int32_t* lr;    // (P, OC) or nullptr
  const int32_t* lc;    // (OC), with lr
  float lr_ig;
  int oc;
  int32_t sh(size_t p) const { return ssum ? int32_t(128u * uint32_t(ssum[p])) : 0; }
  int32_t as(size_t p) const { return asum ? asum[p] : 0; }
};

// Channels [o0, oc) of pixel p: the scalar loop, and the AVX2 loop's last oc % 8 channels.
void output_channels_scalar(const OutputPixels& q, size_t p, int o0, float* dst) {
  const int oc = q.oc;
  const int32_t* a = q.acc + p * size_t(oc);
  float* d = dst + p * size_t(oc);
  const uint32_t sh = uint32_t(q.sh(p)), as = uint32_t(q.as(p));
  for (int o = o0; o < oc; ++o) {
    const float ex = float(int32_t(uint32_t(a[o]) + sh + uint32_t(q.co[o]) - uint32_t(q.zo[o]) * as));
    if (q.lr) {
      const float c = float(int32_t(uint32_t(q.lr[p * size_t(oc) + size_t(o)]) + uint32_t(q.lc[o])));
      d[o] = q.so[o] * (ex + c * q.lr_ig) + q.bs[o];
    } else {
      d[o] = q.so[o] * ex + q.bs[o];
    }
  }
}

void output_pixels_scalar(const OutputPixels& q, size_t p0, size_t p1, float* dst) {
  for (size_t p = p0; p < p1; ++p) output_channels_scalar(q, p, 0, dst);
}

// (GCC 12 warns of the _mm512_undefined_* operand inside the masked loads: GCC PR 105593, a false positive)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
FRUGAL_AVX512 void output_pixels_avx512(const OutputPixels& q, size_t p0, size_t p1, float* dst) {
  const int oc = q.oc;
  const __m512 ig = _mm512_set1_ps(q.lr_ig);
  for (size_t p = p0; p < p1; ++p) {
    const int32_t* a = q.acc + p * size_t(oc);
    float* d = dst + p * size_t(oc);
    const __m512i sh = _mm512_set1_epi32(q.sh(p)), as = _mm512_set1_epi32(q.as(p));
    for (int o = 0; o < oc; o += 16) {
      const __mmask16 m = oc - o >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (oc - o)) - 1);
      __m512i v = _mm512_add_epi32(_mm512_maskz_loadu_epi32(m, a + o), sh);
      v = _mm512_add_epi32(v, _mm512_maskz_loadu_epi32(m, q.co + o));
      v = _mm512_sub_epi32(v, _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(m, q.zo + o), as));
      __m512 f = _mm512_cvtepi32_ps(v);
      if (q.lr) {
        const __m512i c = _mm512_add_epi32(_mm512_maskz_loadu_epi32(m, q.lr + p * size_t(oc) + size_t(o)),
                                           _mm512_maskz_loadu_epi32(m, q.lc + o));
        f = _mm512_add_ps(f, _mm512_mul_ps(_mm512_cvtepi32_ps(c), ig));
      }
      const __m512 r = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, q.so + o), f),
                                     _mm512_maskz_loadu_ps(m, q.bs + o));
      _mm512_mask_storeu_ps(d + o, m, r);
    }
  }
}

#pragma GCC diagnostic pop

FRUGAL_AVX2 inline __m256i ld(const int32_t* x) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)); }

FRUGAL_AVX2 void output_pixels_avx2(const OutputPixels& q, size_t p0, size_t p1, float* dst) {
  const int oc = q.oc, body = oc / 8 * 8;
  const __m256 ig = _mm256_set1_ps(q.lr_ig);
  for (size_t p = p0; p < p1; ++p) {
    const int32_t* a = q.acc + p * size_t(oc);
    float* d = dst + p * size_t(oc);
    const __m256i sh = _mm256_set1_epi32(q.sh(p)), as = _mm256_set1_epi32(q.as(p));
    for (int o = 0; o < body; o += 8) {
      __m256i v = _mm256_add_epi32(_mm256_add_epi32(ld(a + o), sh), ld(q.co + o));
      v = _mm256_sub_epi32(v, _mm256_mullo_epi32(ld(q.zo + o), as));
      __m256 f = _mm256_cvtepi32_ps(v);
      if (q.lr) {
        const __m256i c = _mm256_add_epi32(ld(q.lr + p * size_t(oc) + size_t(o)), ld(q.lc + o));
        f = _mm256_add_ps(f, _mm256_mul_ps(_mm256_cvtepi32_ps(c), ig));
      }
      _mm256_storeu_ps(d + o, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(q.so + o), f), _mm256_loadu_ps(q.bs + o)));
    }
    output_channels_scalar(q, p, body, dst);  // the last oc % 8 channels
  }
}
}  // namespace

void ApproxConv2d::Impl::write_output(const ActCodes& ac, const OutputTerms& t, size_t pixels, float* dst) const {
  // per output channel: dequantization scale, the exact zero-point correction (an integer), weight zero point;
  // dst = scale * (products + corr - z_w * asum) + bias, in integers up to the final scaling
  const float sa = ac.sa;
  const int32_t za = ac.za;
  const bool need_asum = ac.need_asum, shifted = t.shifted;
  const int G = groups;
  const size_t noc = static_cast<size_t>(oc);
  std::vector<float> scale_o(noc);
  std::vector<int64_t> corr_o(noc), zw_o(noc);
  for (int o = 0; o < oc; ++o) {
    const size_t c = wq.channel_of(size_t(o) * K);
    const int64_t zw = wq.zero_point[c];
    scale_o[size_t(o)] = float(double(sa) * wq.scale[c]);
    corr_o[size_t(o)] = -int64_t(za) * wsum[size_t(o)] + int64_t(K) * za * zw;
    if (t.chan) corr_o[size_t(o)] += t.chan[o];  // the oneDNN path's per-channel constant: an exact integer too
    zw_o[size_t(o)] = zw;
  }
  const float* bs = bias.data();
  const float* so = scale_o.data();
  const int64_t *co = corr_o.data(), *zo = zw_o.data();
  std::vector<int32_t> corr32(noc), zw32(noc);
  for (size_t o = 0; o < noc; ++o) corr32[o] = int32_t(uint32_t(uint64_t(corr_o[o]))), zw32[o] = int32_t(zw_o[o]);
  const int32_t *co32 = corr32.data(), *zo32 = zw32.data();
  const float lr_ig = float(lr_inv_gamma);
  const int32_t* lr_acc = t.lr_acc;
  const int32_t* asum = s_asum.data();
  const int32_t* ssum = s_ssum.data();
  if (G == 1 && !t.accf) {
    // int32 arithmetic (wrapping): the result, sum_k (M(a,w) - z_w a - z_a w + z_a z_w), fits int32 (the
    // constructor's accumulator bound), so the low 32 bits are exact
    const OutputPixels q{t.acci, shifted ? ssum : nullptr, need_asum ? asum : nullptr, co32, zo32, so, bs,
                         lr_acc, t.lr_chan, lr_ig, oc};
    const Isa isa = util::kernel_isa();
    tbb::parallel_for(tbb::blocked_range<size_t>(0, pixels, 256), [&](const tbb::blocked_range<size_t>& r) {
      switch (isa) {
        case Isa::avx512: output_pixels_avx512(q, r.begin(), r.end(), dst); break;
        case Isa::avx2: output_pixels_avx2(q, r.begin(), r.end(), dst); break;
        default: output_pixels_scalar(q, r.begin(), r.end(), dst); break;
      }
    });
    return;
  }
  tbb::parallel_for(tbb::blocked_range<size_t>(0, pixels, 256), [&](const tbb::blocked_range<size_t>& r) {
    for (size_t p = r.begin(); p < r.end(); ++p) {
      float* d = dst + p * noc;
      if (t.accf) {
        const float* a = t.accf + p * noc;
        if (need_asum) {
          for (int o = 0; o < oc; ++o)
            d[o] = so[o] * (a[o] + float(co[o] - zo[o] * asum[p * size_t(G) + size_t(o / ocg)])) + bs[o];
        } else {
          for (int o = 0; o < oc; ++o) d[o] = so[o] * (a[o] + float(co[o])) + bs[o];
        }
        continue;
      }
      const int32_t* a = t.acci + p * noc;
      for (int o = 0; o < oc; ++o) {  // groups > 1
        const size_t pg = p * size_t(G) + size_t(o / ocg);
        const int64_t as = need_asum ? asum[pg] : 0, sh = shifted ? 128 * int64_t(ssum[pg]) : 0;
        const float ex = float(int64_t(a[o]) + sh + co[o] - zo[o] * as);
        d[o] = so[o] * (lr_acc ? ex + float(int32_t(uint32_t(lr_acc[p * noc + size_t(o)]) + uint32_t(t.lr_chan[o]))) * lr_ig
                               : ex) +
               bs[o];
      }
    }
  });
}

void ApproxConv2d::backward_table(const float* diff_dst, int n, int h, int w, float* diff_src, float* w_grad) {
  Impl& I = *impl_;
  FRUGAL_CHECK(I.weights_set && I.last_n == n && I.last_h == h && I.last_w == w,
               "approx conv: backward_table() needs the forward() of the same batch first");
  const TableGradient& tg = I.mult->gradient();
  const float* dA = tg.d_da.data();
  const float* dB = tg.d_db.data();
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
ApproxLinear::ApproxLinear(const ApproxSpec& spec, std::shared_ptr<const Multiplier> m, int in, int out)
    : conv_(spec, std::move(m), in, out, 1, 1, 1, 0, 1) {}

}  // namespace frugal::approx
