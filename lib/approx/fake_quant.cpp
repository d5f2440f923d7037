#include "approx/fake_quant.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <array>
#include <cmath>
#include <map>
#include <unordered_map>

#include "tensor/tensor.h"
#include "util/check.h"

namespace frugal::approx {

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {
/// fake_quant_forward over n values with per-tensor params, in parallel chunks.
void fake_quant_tensor(const float* src, size_t n, const QuantParams& p, float* dst, uint8_t* mask) {
  FRUGAL_CHECK(p.channels == 1, "fake quant: activations are quantized per tensor");
  tbb::parallel_for(tbb::blocked_range<size_t>(0, n, size_t(1) << 14), [&](const tbb::blocked_range<size_t>& r) {
    fake_quant_forward(src + r.begin(), r.size(), p, dst + r.begin(), mask ? mask + r.begin() : nullptr);
  });
}
}  // namespace

struct FakeQuantConv2d::Impl {
  ApproxSpec spec;
  bool is_signed = false;
  int ic = 0, oc = 0, kh = 1, kw = 1, stride = 1, pad = 0, groups = 1, K = 0;
  QuantParams wq;
  std::vector<float> w_hat;     // (OC, IC/G, KH, KW) dequantized weights
  std::vector<float> bias;      // (OC), zeros without a bias
  uint64_t w_version = 0;       // bumped by set_weights
  bool weights_set = false, act_set = false;
  float act_lo = 0, act_hi = 0;
  std::vector<float> x_hat;     // (N,H,W,IC) the last forward's dequantized input
  std::vector<uint8_t> x_mask;  // (N,H,W,IC) 1 where the input was not clipped; empty without a calibrated range
  int last_n = -1, last_h = -1, last_w = -1;

  struct Prims {
    convolution_forward::primitive_desc fwd_pd;
    convolution_forward fwd;
    memory w_fwd;  // w_hat in the forward primitive's layout
    uint64_t w_fwd_version = UINT64_MAX;
    bool bwd_ready = false;
    convolution_backward_data::primitive_desc bd_pd;
    convolution_backward_data bd;
    memory w_bd;  // w_hat in the backward-data primitive's layout (may be w_fwd)
    uint64_t w_bd_version = UINT64_MAX;
    convolution_backward_weights::primitive_desc bw_pd;
    convolution_backward_weights bw;
    memory diff_w;  // in the backward-weights primitive's layout
  };
  std::map<std::array<int, 3>, std::unique_ptr<Prims>> cache;  // by (n, h, w)

  int out_h(int h) const { return (h + 2 * pad - kh) / stride + 1; }
  int out_w(int w) const { return (w + 2 * pad - kw) / stride + 1; }
  memory::desc weights_desc(tag t) const {
    if (groups == 1) return memory::desc({oc, ic, kh, kw}, dt::f32, t);
    return memory::desc({groups, oc / groups, ic / groups, kh, kw}, dt::f32, t == tag::any ? tag::any : tag::goihw);
  }
  memory::desc src_desc(int n, int h, int w) const { return memory::desc({n, ic, h, w}, dt::f32, tag::nhwc); }
  memory::desc dst_desc(int n, int h, int w) const {
    return memory::desc({n, oc, out_h(h), out_w(w)}, dt::f32, tag::nhwc);
  }
  Prims& prims(int n, int h, int w);
  void prepare_backward(Prims& p, int n, int h, int w);
};

FakeQuantConv2d::Impl::Prims& FakeQuantConv2d::Impl::prims(int n, int h, int w) {
  auto& slot = cache[{n, h, w}];
  if (slot) return *slot;
  slot = std::make_unique<Prims>();
  memory::dims strides{stride, stride}, padding{pad, pad};
  auto desc = convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct, src_desc(n, h, w),
                                        weights_desc(tag::any), memory::desc({oc}, dt::f32, tag::a), dst_desc(n, h, w),
                                        strides, padding, padding);
  slot->fwd_pd = convolution_forward::primitive_desc(desc, cpu_engine());
  slot->fwd = convolution_forward(slot->fwd_pd);
  slot->w_fwd = memory(slot->fwd_pd.weights_desc(), cpu_engine());
  return *slot;
}

void FakeQuantConv2d::Impl::prepare_backward(Prims& p, int n, int h, int w) {
  if (p.bwd_ready) return;
  memory::dims strides{stride, stride}, padding{pad, pad};
  auto bd = convolution_backward_data::desc(algorithm::convolution_direct, src_desc(n, h, w), weights_desc(tag::any),
                                            dst_desc(n, h, w), strides, padding, padding);
  p.bd_pd = convolution_backward_data::primitive_desc(bd, cpu_engine(), p.fwd_pd);
  p.bd = convolution_backward_data(p.bd_pd);
  p.w_bd = p.bd_pd.weights_desc() == p.fwd_pd.weights_desc() ? p.w_fwd : memory(p.bd_pd.weights_desc(), cpu_engine());
  auto bw = convolution_backward_weights::desc(algorithm::convolution_direct, src_desc(n, h, w), weights_desc(tag::any),
                                               dst_desc(n, h, w), strides, padding, padding);
  p.bw_pd = convolution_backward_weights::primitive_desc(bw, cpu_engine(), p.fwd_pd);
  p.bw = convolution_backward_weights(p.bw_pd);
  p.diff_w = memory(p.bw_pd.diff_weights_desc(), cpu_engine());
  p.bwd_ready = true;
}

FakeQuantConv2d::FakeQuantConv2d(const ApproxSpec& spec, int ic, int oc, int kh, int kw, int stride, int pad,
                                 int groups)
    : FakeQuantConv2d(spec, *make_multiplier(spec.multiplier), ic, oc, kh, kw, stride, pad, groups) {}

FakeQuantConv2d::FakeQuantConv2d(const ApproxSpec& spec, const Multiplier& mult, int ic, int oc, int kh, int kw,
                                 int stride, int pad, int groups)
    : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  FRUGAL_CHECK(ic > 0 && oc > 0 && kh > 0 && kw > 0 && stride > 0 && pad >= 0 && groups > 0,
               "fake-quant conv: bad shape ic=", ic, " oc=", oc, " k=", kh, "x", kw, " stride=", stride, " pad=", pad,
               " groups=", groups);
  FRUGAL_CHECK(ic % groups == 0 && oc % groups == 0, "fake-quant conv: ic=", ic, " and oc=", oc,
               " must be multiples of groups=", groups);
  FRUGAL_CHECK(mult.is_exact(), "fake-quant conv: multiplier '", mult.name(),
               "' is approximate; fake quantization stands for exact products only (approximate multipliers run on "
               "ApproxConv2d at 2-8 bits)");
  const std::string bad_bits = bits_error(spec, mult);
  FRUGAL_CHECK(bad_bits.empty(), "fake-quant conv: ", bad_bits);
  I.spec = spec;
  I.is_signed = mult.is_signed;
  I.ic = ic, I.oc = oc, I.kh = kh, I.kw = kw, I.stride = stride, I.pad = pad, I.groups = groups;
  I.K = ic / groups * kh * kw;
}

FakeQuantConv2d::~FakeQuantConv2d() = default;

void FakeQuantConv2d::set_weights(const float* w, const float* bias) {
  Impl& I = *impl_;
  const size_t total = size_t(I.oc) * size_t(I.K);
  I.wq = weight_quant_params(I.spec, I.is_signed, w, I.oc, size_t(I.K));
  I.w_hat.resize(total);
  fake_quant_forward(w, total, I.wq, I.w_hat.data(), nullptr);  // per channel: one serial pass
  I.bias.assign(size_t(I.oc), 0.0f);
  if (bias) std::copy(bias, bias + I.oc, I.bias.begin());
  ++I.w_version;
  I.weights_set = true;
}

void FakeQuantConv2d::set_act_range(float lo, float hi) {
  FRUGAL_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "fake-quant conv: bad activation range [", lo, ",",
               hi, "]");
  impl_->act_set = true;
  impl_->act_lo = lo, impl_->act_hi = hi;
}

QuantParams FakeQuantConv2d::act_params(const float* src, size_t count) const {
  const Impl& I = *impl_;
  float lo = I.act_lo, hi = I.act_hi;
  if (!I.act_set) std::tie(lo, hi) = range_with_zero(src, count);
  return act_quant_params(I.spec, I.is_signed, lo, hi);
}

void FakeQuantConv2d::forward(const float* src, int n, int h, int w, float* dst) {
  Impl& I = *impl_;
  FRUGAL_CHECK(I.weights_set, "fake-quant conv: set_weights() before forward");
  FRUGAL_CHECK(n > 0 && h + 2 * I.pad >= I.kh && w + 2 * I.pad >= I.kw, "fake-quant conv: input ", n, "x", h, "x", w,
               " too small for kernel ", I.kh, "x", I.kw, " with pad ", I.pad);
  const size_t count = size_t(n) * size_t(h) * size_t(w) * size_t(I.ic);
  I.x_hat.resize(count);
  I.x_mask.resize(I.act_set ? count : 0);  // only a calibrated range clips (see the header)
  fake_quant_tensor(src, count, act_params(src, count), I.x_hat.data(), I.act_set ? I.x_mask.data() : nullptr);
  Impl::Prims& p = I.prims(n, h, w);
  if (p.w_fwd_version != I.w_version) {
    memory user_w(I.weights_desc(I.groups == 1 ? tag::oihw : tag::goihw), cpu_engine(), I.w_hat.data());
    dnnl::reorder(user_w, p.w_fwd).execute(cpu_stream(), user_w, p.w_fwd);
    p.w_fwd_version = I.w_version;
  }
  memory src_m(I.src_desc(n, h, w), cpu_engine(), I.x_hat.data());
  memory dst_m(I.dst_desc(n, h, w), cpu_engine(), dst);
  memory bias_m(memory::desc({I.oc}, dt::f32, tag::a), cpu_engine(), I.bias.data());
  p.fwd.execute(cpu_stream(),
                {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, p.w_fwd}, {DNNL_ARG_BIAS, bias_m}, {DNNL_ARG_DST, dst_m}});
  cpu_stream().wait();
  I.last_n = n, I.last_h = h, I.last_w = w;
}

void FakeQuantConv2d::backward(const float* diff_dst, int n, int h, int w, float* diff_src, float* w_grad) {
  Impl& I = *impl_;
  FRUGAL_CHECK(I.last_n == n && I.last_h == h && I.last_w == w, "fake-quant conv: backward of a ", n, "x", h, "x", w,
               " batch, but the last forward was ", I.last_n, "x", I.last_h, "x", I.last_w);
  Impl::Prims& p = I.prims(n, h, w);
  I.prepare_backward(p, n, h, w);
  const memory::desc plain_w = I.weights_desc(I.groups == 1 ? tag::oihw : tag::goihw);
  memory src_m(I.src_desc(n, h, w), cpu_engine(), I.x_hat.data());
  memory diff_dst_m(I.dst_desc(n, h, w), cpu_engine(), const_cast<float*>(diff_dst));
  // weights: conv_backward_weights(x_hat, diff_dst), unmasked
  memory user_grad(plain_w, cpu_engine(), w_grad);
  const bool direct = p.bw_pd.diff_weights_desc() == plain_w;
  p.bw.execute(cpu_stream(),
               {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_DIFF_DST, diff_dst_m}, {DNNL_ARG_DIFF_WEIGHTS, direct ? user_grad : p.diff_w}});
  if (!direct) dnnl::reorder(p.diff_w, user_grad).execute(cpu_stream(), p.diff_w, user_grad);
  if (diff_src) {
    if (p.w_bd.get() != p.w_fwd.get() && p.w_bd_version != I.w_version) {
      memory user_w(plain_w, cpu_engine(), I.w_hat.data());
      dnnl::reorder(user_w, p.w_bd).execute(cpu_stream(), user_w, p.w_bd);
      p.w_bd_version = I.w_version;
    }
    memory diff_src_m(I.src_desc(n, h, w), cpu_engine(), diff_src);
    p.bd.execute(cpu_stream(), {{DNNL_ARG_DIFF_DST, diff_dst_m}, {DNNL_ARG_WEIGHTS, p.w_bd}, {DNNL_ARG_DIFF_SRC, diff_src_m}});
  }
  cpu_stream().wait();
  if (diff_src && !I.x_mask.empty()) {
    const size_t count = I.x_mask.size();
    tbb::parallel_for(tbb::blocked_range<size_t>(0, count, size_t(1) << 14), [&](const tbb::blocked_range<size_t>& r) {
      fake_quant_backward(diff_src + r.begin(), I.x_mask.data() + r.begin(), r.size(), diff_src + r.begin());
    });
  }
}

const QuantParams& FakeQuantConv2d::weight_params() const { return impl_->wq; }
const std::vector<float>& FakeQuantConv2d::weights_dequantized() const { return impl_->w_hat; }
const std::vector<float>& FakeQuantConv2d::src_dequantized() const { return impl_->x_hat; }
int FakeQuantConv2d::out_h(int h) const { return impl_->out_h(h); }
int FakeQuantConv2d::out_w(int w) const { return impl_->out_w(w); }

FakeQuantLinear::FakeQuantLinear(const ApproxSpec& spec, int in, int out) : conv_(spec, in, out, 1, 1, 1, 0, 1) {}

}  // namespace frugal::approx
