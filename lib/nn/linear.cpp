#include <cmath>

#include "nn/layers.h"
#include "util/check.h"

namespace frugal::nn {

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

struct Linear::Prims {
  inner_product_forward::primitive_desc fwd_pd;
  inner_product_forward fwd;
  bool bwd_ready = false;
  inner_product_backward_data bd;
  inner_product_backward_weights bw;
};

Linear::Linear(const LinearOptions& o, std::mt19937_64& rng) : o_(o) {
  FRUGAL_CHECK(o.in > 0 && o.out > 0, "linear: invalid sizes in=", o.in, " out=", o.out);
  w_.value.resize({o.out, o.in});
  w_.grad.resize({o.out, o.in});
  // PyTorch's default nn.Linear init: U(-1/sqrt(in), 1/sqrt(in)) for weights and bias.
  float bound = 1.f / std::sqrt(static_cast<float>(o.in));
  std::uniform_real_distribution<float> ud(-bound, bound);
  for (int64_t i = 0; i < w_.value.size(); ++i) w_.value.data()[i] = ud(rng);
  if (o.bias) {
    b_.value.resize({o.out});
    b_.grad.resize({o.out});
    for (int64_t i = 0; i < o.out; ++i) b_.value.data()[i] = ud(rng);
  }
  set_prefix("");
}

Linear::~Linear() = default;

void Linear::set_prefix(const std::string& p) {
  prefix_ = p;
  w_.name = p + "weight";
  b_.name = p + "bias";
}

std::string Linear::name() const {
  std::string s = "linear(" + std::to_string(o_.in) + "->" + std::to_string(o_.out);
  if (approx_) s += "," + approx_->describe();
  return s + ")";
}

Dims Linear::dst_dims(const Dims& s) const {
  FRUGAL_CHECK(s.size() == 2 && s[1] == o_.in, name(), ": expected input (N, ", o_.in, "), got ", dims_str(s));
  return {s[0], o_.out};
}

int64_t Linear::macs(const Dims& s) const { return s[0] * int64_t(o_.in) * o_.out; }

std::vector<Param*> Linear::params() {
  if (o_.bias) return {&w_, &b_};
  return {&w_};
}

Linear::Prims& Linear::prims(const Dims& s) {
  auto it = cache_.find(s);
  if (it != cache_.end()) return *it->second;
  auto p = std::make_unique<Prims>();
  memory::desc src_md(to_dnnl(s), dt::f32, tag::ab);
  memory::desc w_md({o_.out, o_.in}, dt::f32, tag::ab);
  memory::desc dst_md({s[0], o_.out}, dt::f32, tag::ab);
  memory::desc bias_md = o_.bias ? memory::desc({o_.out}, dt::f32, tag::a) : memory::desc();
  p->fwd_pd = inner_product_forward::primitive_desc(
      inner_product_forward::desc(prop_kind::forward_training, src_md, w_md, bias_md, dst_md), cpu_engine());
  p->fwd = inner_product_forward(p->fwd_pd);
  auto& ref = *p;
  cache_[s] = std::move(p);
  return ref;
}

void Linear::forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) {
  dst.resize(dst_dims(src.dims()));
  src_ = &src;
  if (approx_forward(src, w_.value, o_.bias ? &b_ : nullptr, dst)) return;
  Prims& p = prims(src.dims());
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, src.mem()}, {DNNL_ARG_WEIGHTS, w_.value.mem()}, {DNNL_ARG_DST, dst.mem()}};
  if (o_.bias) args[DNNL_ARG_BIAS] = b_.value.mem();
  p.fwd.execute(cpu_stream(), args);
  cpu_stream().wait();
}

void Linear::backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) {
  assert(src_ != nullptr);
  const Dims& s = src_->dims();
  if (approx_backward(diff_dst, s, need_diff_src, diff_src, w_, o_.bias ? &b_ : nullptr, o_.out)) return;
  Prims& p = prims(s);
  if (!p.bwd_ready) {
    memory::desc src_md(to_dnnl(s), dt::f32, tag::ab);
    memory::desc w_md({o_.out, o_.in}, dt::f32, tag::ab);
    memory::desc dst_md({s[0], o_.out}, dt::f32, tag::ab);
    memory::desc bias_md = o_.bias ? memory::desc({o_.out}, dt::f32, tag::a) : memory::desc();
    p.bd = inner_product_backward_data(inner_product_backward_data::primitive_desc(
        inner_product_backward_data::desc(src_md, w_md, dst_md), cpu_engine(), p.fwd_pd));
    p.bw = inner_product_backward_weights(inner_product_backward_weights::primitive_desc(
        inner_product_backward_weights::desc(src_md, w_md, bias_md, dst_md), cpu_engine(), p.fwd_pd));
    p.bwd_ready = true;
  }
  std::unordered_map<int, memory> wargs{
      {DNNL_ARG_SRC, src_->mem()}, {DNNL_ARG_DIFF_DST, diff_dst.mem()}, {DNNL_ARG_DIFF_WEIGHTS, w_.grad.mem()}};
  if (o_.bias) wargs[DNNL_ARG_DIFF_BIAS] = b_.grad.mem();
  p.bw.execute(cpu_stream(), wargs);
  if (need_diff_src) {
    diff_src.resize(s);
    p.bd.execute(
        cpu_stream(),
        {{DNNL_ARG_DIFF_DST, diff_dst.mem()}, {DNNL_ARG_WEIGHTS, w_.value.mem()}, {DNNL_ARG_DIFF_SRC, diff_src.mem()}});
  }
  cpu_stream().wait();
}

}  // namespace frugal::nn
