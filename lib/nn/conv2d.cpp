#include <cmath>

#include "nn/layers.h"
#include "util/check.h"

namespace frugal::nn {

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

struct Conv2d::Prims {
  convolution_forward::primitive_desc fwd_pd;
  convolution_forward fwd;
  memory w_fwd;  // weights in the forward primitive's preferred (blocked) layout
  uint64_t w_fwd_version = UINT64_MAX;
  bool bwd_ready = false;
  convolution_backward_data::primitive_desc bd_pd;
  convolution_backward_data bd;
  memory w_bd;
  uint64_t w_bd_version = UINT64_MAX;
  convolution_backward_weights::primitive_desc bw_pd;
  convolution_backward_weights bw;
  memory diff_w;  // in the backward-weights primitive's layout
};

Conv2d::Conv2d(const Conv2dOptions& o, std::mt19937_64& rng) : o_(o) {
  FRUGAL_CHECK(o.in > 0 && o.out > 0 && o.kh() > 0 && o.kw() > 0 && o.sh() > 0 && o.sw() > 0 && o.ph() >= 0 &&
                   o.pw() >= 0 && o.groups > 0,
               "conv2d: invalid options in=", o.in, " out=", o.out, " kernel=", o.kh(), "x", o.kw(), " stride=", o.sh(),
               "x", o.sw(), " pad=", o.ph(), "x", o.pw(), " groups=", o.groups);
  FRUGAL_CHECK(o.in % o.groups == 0 && o.out % o.groups == 0, "conv2d: channels ", o.in, "->", o.out,
               " not divisible by groups=", o.groups);
  w_.value.resize({o.out, o.in / o.groups, o.kh(), o.kw()});
  w_.grad.resize(w_.value.dims());
  // Kaiming-normal init (He et al. 2015), fan-in, ReLU gain.
  float fan_in = static_cast<float>(o.in / o.groups * o.kh() * o.kw());
  std::normal_distribution<float> nd(0.f, std::sqrt(2.f / fan_in));
  for (int64_t i = 0; i < w_.value.size(); ++i) w_.value.data()[i] = nd(rng);
  if (o.bias) {
    b_.value.resize({o.out});
    b_.value.zero();
    b_.grad.resize({o.out});
  }
  set_prefix("");
}

Conv2d::~Conv2d() = default;

void Conv2d::set_prefix(const std::string& p) {
  prefix_ = p;
  w_.name = p + "weight";
  b_.name = p + "bias";
}

std::string Conv2d::name() const {
  auto hw = [](int h, int w) { return h == w ? std::to_string(h) : std::to_string(h) + "x" + std::to_string(w); };
  std::string s = "conv2d(" + std::to_string(o_.in) + "->" + std::to_string(o_.out) + ",k" + hw(o_.kh(), o_.kw()) +
                  ",s" + hw(o_.sh(), o_.sw()) + ",p" + hw(o_.ph(), o_.pw());
  if (o_.groups > 1) s += ",g" + std::to_string(o_.groups);
  if (approx_) s += "," + approx_->describe();
  return s + ")";
}

Dims Conv2d::dst_dims(const Dims& s) const {
  FRUGAL_CHECK(s.size() == 4 && s[1] == o_.in, name(), ": expected input (N, ", o_.in, ", H, W), got ", dims_str(s));
  int64_t oh = (s[2] + 2 * o_.ph() - o_.kh()) / o_.sh() + 1;
  int64_t ow = (s[3] + 2 * o_.pw() - o_.kw()) / o_.sw() + 1;
  FRUGAL_CHECK(oh > 0 && ow > 0, name(), ": input ", dims_str(s), " too small for the kernel");
  return {s[0], o_.out, oh, ow};
}

int64_t Conv2d::macs(const Dims& s) const {
  Dims d = dst_dims(s);
  return numel(d) * (o_.in / o_.groups) * o_.kh() * o_.kw();
}

std::vector<Param*> Conv2d::params() {
  if (o_.bias) return {&w_, &b_};
  return {&w_};
}

static memory::desc conv_weights_plain(const Conv2dOptions& o) {
  if (o.groups == 1) return memory::desc({o.out, o.in, o.kh(), o.kw()}, dt::f32, tag::oihw);
  return memory::desc({o.groups, o.out / o.groups, o.in / o.groups, o.kh(), o.kw()}, dt::f32, tag::goihw);
}

static memory::desc conv_weights_any(const Conv2dOptions& o) {
  if (o.groups == 1) return memory::desc({o.out, o.in, o.kh(), o.kw()}, dt::f32, tag::any);
  return memory::desc({o.groups, o.out / o.groups, o.in / o.groups, o.kh(), o.kw()}, dt::f32, tag::any);
}

Conv2d::Prims& Conv2d::prims(const Dims& s) {
  auto it = cache_.find(s);
  if (it != cache_.end()) return *it->second;
  auto p = std::make_unique<Prims>();
  Dims d = dst_dims(s);
  memory::desc src_md(to_dnnl(s), dt::f32, tag::acdb);
  memory::desc dst_md(to_dnnl(d), dt::f32, tag::acdb);
  memory::desc bias_md = o_.bias ? memory::desc({o_.out}, dt::f32, tag::a) : memory::desc();
  memory::dims strides{o_.sh(), o_.sw()}, pad{o_.ph(), o_.pw()};
  auto desc = convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct, src_md,
                                        conv_weights_any(o_), bias_md, dst_md, strides, pad, pad);
  p->fwd_pd = convolution_forward::primitive_desc(desc, cpu_engine());
  p->fwd = convolution_forward(p->fwd_pd);
  p->w_fwd = memory(p->fwd_pd.weights_desc(), cpu_engine());
  auto& ref = *p;
  cache_[s] = std::move(p);
  return ref;
}

void Conv2d::forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) {
  dst.resize(dst_dims(src.dims()));
  src_ = &src;
  if (approx_forward(src, w_.value, o_.bias ? &b_ : nullptr, dst)) return;
  Prims& p = prims(src.dims());
  if (p.w_fwd_version != w_.version) {
    memory user_w(conv_weights_plain(o_), cpu_engine(), w_.value.data());
    reorder(user_w, p.w_fwd);
    p.w_fwd_version = w_.version;
  }
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, src.mem()}, {DNNL_ARG_WEIGHTS, p.w_fwd}, {DNNL_ARG_DST, dst.mem()}};
  if (o_.bias) args[DNNL_ARG_BIAS] = b_.value.mem();
  p.fwd.execute(cpu_stream(), args);
  cpu_stream().wait();
}

void bias_grad_channels_last(const Tensor& diff_dst, int channels, Tensor& grad) {
  const float* d = diff_dst.data();
  const size_t rows = size_t(diff_dst.size()) / size_t(channels);
  std::vector<double> acc(size_t(channels), 0.0);
  for (size_t r = 0; r < rows; ++r)
    for (int c = 0; c < channels; ++c) acc[size_t(c)] += d[r * size_t(channels) + size_t(c)];
  for (int c = 0; c < channels; ++c) grad.data()[c] = float(acc[size_t(c)]);
}

bool ApproxHost::approx_forward(const Tensor& src, const Tensor& weights, const Param* bias, Tensor& dst) {
  if (!approx_) return false;
  approx_->forward(src, weights, bias ? bias->value.data() : nullptr, dst);
  return true;
}

bool ApproxHost::approx_backward(const Tensor& diff_dst, const Dims& src_dims, bool need_diff_src, Tensor& diff_src,
                                 Param& w, Param* bias, int channels) {
  if (!approx_) return false;
  if (need_diff_src) diff_src.resize(src_dims);
  if (!approx_->backward(diff_dst, w.grad.data(), need_diff_src ? &diff_src : nullptr)) return false;
  if (bias) bias_grad_channels_last(diff_dst, channels, bias->grad);
  return true;
}

void Conv2d::backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) {
  assert(src_ != nullptr);
  const Dims& s = src_->dims();
  if (approx_backward(diff_dst, s, need_diff_src, diff_src, w_, o_.bias ? &b_ : nullptr, o_.out)) return;
  Prims& p = prims(s);
  if (!p.bwd_ready) {
    memory::desc src_md(to_dnnl(s), dt::f32, tag::acdb);
    memory::desc dst_md(to_dnnl(dst_dims(s)), dt::f32, tag::acdb);
    memory::desc bias_md = o_.bias ? memory::desc({o_.out}, dt::f32, tag::a) : memory::desc();
    memory::dims strides{o_.sh(), o_.sw()}, pad{o_.ph(), o_.pw()};
    auto bd = convolution_backward_data::desc(algorithm::convolution_direct, src_md, conv_weights_any(o_), dst_md,
                                              strides, pad, pad);
    p.bd_pd = convolution_backward_data::primitive_desc(bd, cpu_engine(), p.fwd_pd);
    p.bd = convolution_backward_data(p.bd_pd);
    p.w_bd = p.bd_pd.weights_desc() == p.fwd_pd.weights_desc() ? p.w_fwd : memory(p.bd_pd.weights_desc(), cpu_engine());
    auto bw = convolution_backward_weights::desc(algorithm::convolution_direct, src_md, conv_weights_any(o_), bias_md,
                                                 dst_md, strides, pad, pad);
    p.bw_pd = convolution_backward_weights::primitive_desc(bw, cpu_engine(), p.fwd_pd);
    p.bw = convolution_backward_weights(p.bw_pd);
    p.diff_w = memory(p.bw_pd.diff_weights_desc(), cpu_engine());
    p.bwd_ready = true;
  }
  memory user_grad(conv_weights_plain(o_), cpu_engine(), w_.grad.data());
  bool direct_grad = p.bw_pd.diff_weights_desc() == conv_weights_plain(o_);
  std::unordered_map<int, memory> wargs{{DNNL_ARG_SRC, src_->mem()},
                                        {DNNL_ARG_DIFF_DST, diff_dst.mem()},
                                        {DNNL_ARG_DIFF_WEIGHTS, direct_grad ? user_grad : p.diff_w}};
  if (o_.bias) wargs[DNNL_ARG_DIFF_BIAS] = b_.grad.mem();
  p.bw.execute(cpu_stream(), wargs);
  if (!direct_grad) dnnl::reorder(p.diff_w, user_grad).execute(cpu_stream(), p.diff_w, user_grad);
  if (need_diff_src) {
    if (p.w_bd.get() == p.w_fwd.get()) {
      if (p.w_fwd_version != w_.version) {  // weights changed since forward (not in normal training)
        memory user_w(conv_weights_plain(o_), cpu_engine(), w_.value.data());
        dnnl::reorder(user_w, p.w_fwd).execute(cpu_stream(), user_w, p.w_fwd);
        p.w_fwd_version = w_.version;
      }
    } else if (p.w_bd_version != w_.version || approx_) {
      memory user_w(conv_weights_plain(o_), cpu_engine(), w_.value.data());
      dnnl::reorder(user_w, p.w_bd).execute(cpu_stream(), user_w, p.w_bd);
      p.w_bd_version = w_.version;
    }
    diff_src.resize(s);
    p.bd.execute(
        cpu_stream(),
        {{DNNL_ARG_DIFF_DST, diff_dst.mem()}, {DNNL_ARG_WEIGHTS, p.w_bd}, {DNNL_ARG_DIFF_SRC, diff_src.mem()}});
  }
  cpu_stream().wait();
}

}  // namespace frugal::nn
