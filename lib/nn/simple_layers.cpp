// ReLU, pooling, dropout and flatten.

#include "nn/impl_select.h"
#include "nn/layers.h"
#include "util/check.h"
#include "util/random.h"

namespace frugal::nn {

using namespace dnnl;
using dt = memory::data_type;
using tag = memory::format_tag;

// ---------------------------------------------------------------- ReLU
struct ReLU::Prims {
  eltwise_forward::primitive_desc fwd_pd;
  eltwise_forward fwd;
  bool bwd_ready = false, bwd_dst_ready = false;
  eltwise_backward bwd, bwd_dst;  // from src; from dst (relu_use_dst_for_bwd)
};

ReLU::ReLU() = default;
ReLU::~ReLU() = default;

ReLU::Prims& ReLU::prims(const Dims& s) {
  auto it = cache_.find(s);
  if (it != cache_.end()) return *it->second;
  auto p = std::make_unique<Prims>();
  memory::desc md(to_dnnl(s), dt::f32, layout_tag(static_cast<int>(s.size())));
  p->fwd_pd = eltwise_forward::primitive_desc(
      eltwise_forward::desc(prop_kind::forward_training, algorithm::eltwise_relu, md, 0.f), cpu_engine());
  p->fwd = eltwise_forward(p->fwd_pd);
  auto& ref = *p;
  cache_[s] = std::move(p);
  return ref;
}

void ReLU::forward(const Tensor& src, Tensor& dst, const ForwardContext&) {
  if (fused_) {
    dst = src;
    return;
  }
  dst.resize(src.dims());
  src_ = &src;
  prims(src.dims()).fwd.execute(cpu_stream(), {{DNNL_ARG_SRC, src.mem()}, {DNNL_ARG_DST, dst.mem()}});
  cpu_stream().wait();
}

void ReLU::backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) {
  if (!need_diff_src) return;
  if (fused_) {
    diff_src = diff_dst;
    return;
  }
  Prims& p = prims(src_->dims());
  if (!p.bwd_ready) {
    memory::desc md(to_dnnl(src_->dims()), dt::f32, layout_tag(src_->ndim()));
    p.bwd = eltwise_backward(eltwise_backward::primitive_desc(
        eltwise_backward::desc(algorithm::eltwise_relu, md, md, 0.f), cpu_engine(), p.fwd_pd));
    p.bwd_ready = true;
  }
  diff_src.resize(src_->dims());
  p.bwd.execute(cpu_stream(),
                {{DNNL_ARG_SRC, src_->mem()}, {DNNL_ARG_DIFF_DST, diff_dst.mem()}, {DNNL_ARG_DIFF_SRC, diff_src.mem()}});
  cpu_stream().wait();
}

void ReLU::backward_from_dst(const Tensor& dst, const Tensor& diff_dst, Tensor& diff_src) {
  Prims& p = prims(dst.dims());
  if (!p.bwd_dst_ready) {
    memory::desc md(to_dnnl(dst.dims()), dt::f32, layout_tag(dst.ndim()));
    auto hint = eltwise_forward::primitive_desc(
        eltwise_forward::desc(prop_kind::forward_training, algorithm::eltwise_relu_use_dst_for_bwd, md, 0.f),
        cpu_engine());
    p.bwd_dst = eltwise_backward(eltwise_backward::primitive_desc(
        eltwise_backward::desc(algorithm::eltwise_relu_use_dst_for_bwd, md, md, 0.f), cpu_engine(), hint));
    p.bwd_dst_ready = true;
  }
  diff_src.resize(dst.dims());
  p.bwd_dst.execute(cpu_stream(),
                    {{DNNL_ARG_DST, dst.mem()}, {DNNL_ARG_DIFF_DST, diff_dst.mem()}, {DNNL_ARG_DIFF_SRC, diff_src.mem()}});
  cpu_stream().wait();
}

// ---------------------------------------------------------------- Pool
struct Pool::Prims {
  // The pooling geometry for this input shape, shared by the forward and backward descriptors.
  memory::desc src_md, dst_md;
  memory::dims kernel, strides, pad;
  algorithm alg;
  std::string shape_key;  // names the geometry in impl_select's per-process choices
  pooling_forward::primitive_desc fwd_pd;
  pooling_forward fwd;
  memory workspace;
  bool bwd_ready = false;
  pooling_backward bwd;
};

Pool::Pool(PoolKind kind, int kernel, int stride, int pad) : kind_(kind), kernel_(kernel), stride_(stride), pad_(pad) {
  FRUGAL_CHECK(kernel >= 0 && stride >= 0 && pad >= 0, "pool: invalid kernel/stride/pad ", kernel, "/", stride, "/", pad);
}

Pool::~Pool() = default;

std::string Pool::name() const {
  std::string k = kind_ == PoolKind::max ? "maxpool" : "avgpool";
  if (kernel_ == 0) return "global_" + k;
  return k + "(k" + std::to_string(kernel_) + ",s" + std::to_string(stride_) + ")";
}

Dims Pool::dst_dims(const Dims& s) const {
  FRUGAL_CHECK(s.size() == 4, name(), ": expected input (N, C, H, W), got ", dims_str(s));
  if (kernel_ == 0) return {s[0], s[1], 1, 1};
  int64_t oh = (s[2] + 2 * pad_ - kernel_) / stride_ + 1, ow = (s[3] + 2 * pad_ - kernel_) / stride_ + 1;
  FRUGAL_CHECK(oh > 0 && ow > 0, name(), ": input ", dims_str(s), " too small");
  return {s[0], s[1], oh, ow};
}

Pool::Prims& Pool::prims(const Dims& s, bool train) {
  auto key = std::make_pair(s, train);
  auto it = cache_.find(key);
  if (it != cache_.end()) return *it->second;
  auto p = std::make_unique<Prims>();
  p->src_md = memory::desc(to_dnnl(s), dt::f32, tag::acdb);
  p->dst_md = memory::desc(to_dnnl(dst_dims(s)), dt::f32, tag::acdb);
  p->kernel = kernel_ == 0 ? memory::dims{s[2], s[3]} : memory::dims{kernel_, kernel_};
  p->strides = kernel_ == 0 ? memory::dims{1, 1} : memory::dims{stride_, stride_};
  p->pad = {pad_, pad_};
  p->alg = kind_ == PoolKind::max ? algorithm::pooling_max : algorithm::pooling_avg_exclude_padding;
  p->shape_key = dims_str(s) + " k" + std::to_string(p->kernel[0]) + "x" + std::to_string(p->kernel[1]) + " s" +
                 std::to_string(p->strides[0]) + " p" + std::to_string(pad_);
  pooling_forward::desc desc(train ? prop_kind::forward_training : prop_kind::forward_inference, p->alg, p->src_md,
                             p->dst_md, p->strides, p->kernel, p->pad, p->pad);
  auto make = [&] { return pooling_forward::primitive_desc(desc, cpu_engine()); };
  if (kind_ == PoolKind::max) {
    // Every implementation returns the same maxima and first-occurrence indices, so pick by speed (impl_select.h).
    p->fwd_pd = fastest_impl<pooling_forward::primitive_desc>(
        std::string("maxpool ") + (train ? "train " : "infer ") + p->shape_key, make,
        {DNNL_ARG_SRC, DNNL_ARG_DST, DNNL_ARG_WORKSPACE});
  } else {
    p->fwd_pd = make();
  }
  p->fwd = pooling_forward(p->fwd_pd);
  if (train && kind_ == PoolKind::max) p->workspace = memory(p->fwd_pd.workspace_desc(), cpu_engine());
  auto& ref = *p;
  cache_[key] = std::move(p);
  return ref;
}

void Pool::forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) {
  dst.resize(dst_dims(src.dims()));
  src_dims_ = src.dims();
  Prims& p = prims(src.dims(), ctx.train);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src.mem()}, {DNNL_ARG_DST, dst.mem()}};
  if (ctx.train && kind_ == PoolKind::max) args[DNNL_ARG_WORKSPACE] = p.workspace;
  p.fwd.execute(cpu_stream(), args);
  cpu_stream().wait();
}

void Pool::backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) {
  if (!need_diff_src) return;
  const Dims& s = src_dims_;
  Prims& p = prims(s, true);
  if (!p.bwd_ready) {
    pooling_backward::desc desc(p.alg, p.src_md, p.dst_md, p.strides, p.kernel, p.pad, p.pad);
    auto make = [&] { return pooling_backward::primitive_desc(desc, cpu_engine(), p.fwd_pd); };
    // Without overlapping windows every input element receives at most one gradient, so every implementation
    // writes the same bits and the fastest may be taken (impl_select.h); overlapping windows sum in an order that
    // may differ between implementations, so they keep oneDNN's first choice.
    const bool disjoint = kernel_ == 0 || stride_ >= kernel_;
    if (kind_ == PoolKind::max && disjoint) {
      p.bwd = pooling_backward(fastest_impl<pooling_backward::primitive_desc>(
          "maxpool backward " + p.shape_key + " after " + p.fwd_pd.impl_info_str(), make,
          {DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_SRC, DNNL_ARG_WORKSPACE}));
    } else {
      p.bwd = pooling_backward(make());
    }
    p.bwd_ready = true;
  }
  diff_src.resize(s);
  std::unordered_map<int, memory> args{{DNNL_ARG_DIFF_DST, diff_dst.mem()}, {DNNL_ARG_DIFF_SRC, diff_src.mem()}};
  if (kind_ == PoolKind::max) args[DNNL_ARG_WORKSPACE] = p.workspace;
  p.bwd.execute(cpu_stream(), args);
  cpu_stream().wait();
}

// ---------------------------------------------------------------- Dropout
std::string Dropout::name() const { return "dropout(" + std::to_string(p_).substr(0, 4) + ")"; }

void Dropout::forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) {
  dst.resize(src.dims());
  int64_t n = src.size();
  if (!ctx.train || p_ <= 0.f) {
    std::memcpy(dst.data(), src.data(), sizeof(float) * static_cast<size_t>(n));
    mask_.assign(static_cast<size_t>(n), 1);
    return;
  }
  mask_.resize(static_cast<size_t>(n));
  const float scale = 1.f / (1.f - p_);
  const uint32_t threshold = static_cast<uint32_t>(p_ * 4294967296.0);
  const int64_t block = 4096;
  const float* s = src.data();
  float* d = dst.data();
  uint8_t* m = mask_.data();
    for (int64_t b = 0; b < (n + block - 1) / block; ++b) {  // serial: see Optimizer::step
    for (int64_t i = b * block; i < std::min(n, (b + 1) * block); ++i) {
      uint64_t z = splitmix64(ctx.seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(i));
      bool keep = static_cast<uint32_t>(z) >= threshold;
      m[i] = keep;
      d[i] = keep ? s[i] * scale : 0.f;
    }
  }
}

void Dropout::backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) {
  if (!need_diff_src) return;
  diff_src.resize(diff_dst.dims());
  const float scale = p_ > 0.f ? 1.f / (1.f - p_) : 1.f;
  for (int64_t i = 0; i < diff_dst.size(); ++i) diff_src.data()[i] = mask_[static_cast<size_t>(i)] ? diff_dst.data()[i] * scale : 0.f;
}

// ---------------------------------------------------------------- Flatten
Dims Flatten::dst_dims(const Dims& s) const {
  FRUGAL_CHECK(s.size() >= 2, "flatten: expected at least 2-D input, got ", dims_str(s));
  return {s[0], numel(s) / s[0]};
}

void Flatten::forward(const Tensor& src, Tensor& dst, const ForwardContext&) {
  src_dims_ = src.dims();
  dst = src;  // shares storage: NHWC storage read as (N, H*W*C)
  dst.reshape(dst_dims(src.dims()));
}

void Flatten::backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) {
  if (!need_diff_src) return;
  diff_src = diff_dst;
  diff_src.reshape(src_dims_);
}

}  // namespace frugal::nn
