#include "nn/layers.h"
#include "util/check.h"

namespace frugal::nn {

using namespace dnnl;
using dt = memory::data_type;

struct BatchNorm::Prims {
  batch_normalization_forward::primitive_desc fwd_pd;
  batch_normalization_forward fwd;
  memory workspace;  // fused ReLU's mask (training only)
  bool bwd_ready = false;
  batch_normalization_backward bwd;
};

BatchNorm::BatchNorm(int channels, float momentum, float eps) : c_(channels), momentum_(momentum), eps_(eps) {
  FRUGAL_CHECK(channels > 0, "batchnorm: channels must be positive, got ", channels);
  scale_.value.resize({channels});
  shift_.value.resize({channels});
  scale_.grad.resize({channels});
  shift_.grad.resize({channels});
  running_mean_.resize({channels});
  running_var_.resize({channels});
  mean_.resize({channels});
  var_.resize({channels});
  for (int i = 0; i < channels; ++i) {
    scale_.value.data()[i] = 1.f;
    shift_.value.data()[i] = 0.f;
    running_mean_.data()[i] = 0.f;
    running_var_.data()[i] = 1.f;
  }
  set_prefix("");
}

BatchNorm::~BatchNorm() = default;

void BatchNorm::set_prefix(const std::string& p) {
  prefix_ = p;
  scale_.name = p + "weight";
  shift_.name = p + "bias";
}

std::string BatchNorm::name() const {
  return "batchnorm(" + std::to_string(c_) + ")" + (fused_relu_ ? "+relu" : "");
}

void BatchNorm::set_fused_relu(bool on) {
  fused_relu_ = on;
  cache_.clear();
}

std::vector<Param*> BatchNorm::params() { return {&scale_, &shift_}; }

std::vector<Buffer> BatchNorm::buffers() {
  return {{prefix_ + "running_mean", &running_mean_}, {prefix_ + "running_var", &running_var_}};
}

BatchNorm::Prims& BatchNorm::prims(const Dims& s, bool train) {
  auto key = std::make_pair(s, train);
  auto it = cache_.find(key);
  if (it != cache_.end()) return *it->second;
  FRUGAL_CHECK((s.size() == 4 || s.size() == 2) && s[1] == c_, name(), ": expected input (N, ", c_,
               ", ...), got ", dims_str(s));
  auto p = std::make_unique<Prims>();
  memory::desc md(to_dnnl(s), dt::f32, layout_tag(static_cast<int>(s.size())));
  auto flags = normalization_flags::use_scale | normalization_flags::use_shift;
  if (!train) flags = flags | normalization_flags::use_global_stats;
  if (fused_relu_) flags = flags | normalization_flags::fuse_norm_relu;
  p->fwd_pd = batch_normalization_forward::primitive_desc(
      batch_normalization_forward::desc(train ? prop_kind::forward_training : prop_kind::forward_inference, md, eps_,
                                        flags),
      cpu_engine());
  p->fwd = batch_normalization_forward(p->fwd_pd);
  if (train && fused_relu_) p->workspace = memory(p->fwd_pd.workspace_desc(), cpu_engine());
  auto& ref = *p;
  cache_[key] = std::move(p);
  return ref;
}

void BatchNorm::forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) {
  dst.resize(src.dims());
  src_ = &src;
  Prims& p = prims(src.dims(), ctx.train);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src.mem()},
                                       {DNNL_ARG_DST, dst.mem()},
                                       {DNNL_ARG_SCALE, scale_.value.mem()},
                                       {DNNL_ARG_SHIFT, shift_.value.mem()}};
  if (ctx.train) {
    args[DNNL_ARG_MEAN] = mean_.mem();
    args[DNNL_ARG_VARIANCE] = var_.mem();
    if (fused_relu_) args[DNNL_ARG_WORKSPACE] = p.workspace;
  } else {
    args[DNNL_ARG_MEAN] = running_mean_.mem();
    args[DNNL_ARG_VARIANCE] = running_var_.mem();
  }
  p.fwd.execute(cpu_stream(), args);
  cpu_stream().wait();
  if (ctx.train) {
    // Running statistics as PyTorch keeps them: unbiased variance, exponential average with `momentum`.
    int64_t n = src.size() / c_;
    float unbias = n > 1 ? static_cast<float>(n) / static_cast<float>(n - 1) : 1.f;
    const float m = ctx.bn_momentum >= 0 ? ctx.bn_momentum : momentum_;
    for (int i = 0; i < c_; ++i) {
      running_mean_.data()[i] = (1 - m) * running_mean_.data()[i] + m * mean_.data()[i];
      running_var_.data()[i] = (1 - m) * running_var_.data()[i] + m * var_.data()[i] * unbias;
    }
  }
}

void BatchNorm::backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) {
  assert(src_ != nullptr);
  const Dims& s = src_->dims();
  Prims& p = prims(s, true);
  if (!p.bwd_ready) {
    memory::desc md(to_dnnl(s), dt::f32, layout_tag(static_cast<int>(s.size())));
    auto flags = normalization_flags::use_scale | normalization_flags::use_shift;
    if (fused_relu_) flags = flags | normalization_flags::fuse_norm_relu;
    p.bwd = batch_normalization_backward(batch_normalization_backward::primitive_desc(
        batch_normalization_backward::desc(prop_kind::backward, md, md, eps_, flags), cpu_engine(), p.fwd_pd));
    p.bwd_ready = true;
  }
  diff_src.resize(s);  // batch-norm backward always produces diff_src (needed for the scale/shift path anyway)
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src_->mem()},          {DNNL_ARG_DIFF_DST, diff_dst.mem()},
                                       {DNNL_ARG_MEAN, mean_.mem()},          {DNNL_ARG_VARIANCE, var_.mem()},
                                       {DNNL_ARG_SCALE, scale_.value.mem()},  {DNNL_ARG_SHIFT, shift_.value.mem()},
                                       {DNNL_ARG_DIFF_SRC, diff_src.mem()},   {DNNL_ARG_DIFF_SCALE, scale_.grad.mem()},
                                       {DNNL_ARG_DIFF_SHIFT, shift_.grad.mem()}};
  if (fused_relu_) args[DNNL_ARG_WORKSPACE] = p.workspace;
  p.bwd.execute(cpu_stream(), args);
  cpu_stream().wait();
}

}  // namespace frugal::nn
