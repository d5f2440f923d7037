#include "nn/containers.h"

#include "util/check.h"

namespace frugal::nn {

using namespace dnnl;

void add_tensors(const Tensor& a, const Tensor& b, Tensor& dst, bool relu) {
  FRUGAL_CHECK(a.dims() == b.dims(), "add: shape mismatch ", dims_str(a.dims()), " vs ", dims_str(b.dims()));
  dst.resize(a.dims());
  thread_local std::map<std::pair<Dims, bool>, binary> cache;
  auto key = std::make_pair(a.dims(), relu);
  auto it = cache.find(key);
  if (it == cache.end()) {
    auto md = a.md();
    primitive_attr attr;
    if (relu) {
      post_ops po;
      po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(po);
    }
    it = cache.emplace(key, binary(binary::primitive_desc(binary::desc(algorithm::binary_add, md, md, md), attr,
                                                          cpu_engine())))
             .first;
  }
  it->second.execute(cpu_stream(), {{DNNL_ARG_SRC_0, a.mem()}, {DNNL_ARG_SRC_1, b.mem()}, {DNNL_ARG_DST, dst.mem()}});
  cpu_stream().wait();
}

// ---------------------------------------------------------------- Sequential
void Sequential::add(LayerPtr layer) {
  layers_.push_back(std::move(layer));
  acts_.resize(layers_.size());
  diffs_.resize(layers_.size());
}

std::string Sequential::name() const {
  std::string s = "sequential[";
  for (size_t i = 0; i < layers_.size(); ++i) s += (i ? ", " : "") + layers_[i]->name();
  return s + "]";
}

Dims Sequential::dst_dims(const Dims& src) const {
  Dims d = src;
  for (auto& l : layers_) d = l->dst_dims(d);
  return d;
}

void Sequential::forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) {
  const Tensor* cur = &src;
  for (size_t i = 0; i < layers_.size(); ++i) {
    layers_[i]->forward(*cur, acts_[i], ctx);
    cur = &acts_[i];
  }
  dst = *cur;
}

void Sequential::backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) {
  const Tensor* cur = &diff_dst;
  for (size_t i = layers_.size(); i-- > 0;) {
    bool need = i > 0 || need_diff_src;
    layers_[i]->backward(*cur, diffs_[i], need);
    cur = &diffs_[i];
  }
  if (need_diff_src) diff_src = *cur;
}

std::vector<Param*> Sequential::params() {
  std::vector<Param*> out;
  for (auto& l : layers_)
    for (auto* p : l->params()) out.push_back(p);
  return out;
}

std::vector<Buffer> Sequential::buffers() {
  std::vector<Buffer> out;
  for (auto& l : layers_)
    for (auto b : l->buffers()) out.push_back(b);
  return out;
}

int64_t Sequential::macs(const Dims& src) const {
  int64_t m = 0;
  Dims d = src;
  for (auto& l : layers_) {
    m += l->macs(d);
    d = l->dst_dims(d);
  }
  return m;
}

void Sequential::set_prefix(const std::string& p) {
  prefix_ = p;
  for (size_t i = 0; i < layers_.size(); ++i) layers_[i]->set_prefix(p + std::to_string(i) + ".");
}

// ---------------------------------------------------------------- ShortcutA
std::string ShortcutA::name() const {
  return "shortcut_a(" + std::to_string(in_) + "->" + std::to_string(out_) + ",s" + std::to_string(stride_) + ")";
}

Dims ShortcutA::dst_dims(const Dims& s) const {
  FRUGAL_CHECK(s.size() == 4 && s[1] == in_, name(), ": expected (N, ", in_, ", H, W), got ", dims_str(s));
  return {s[0], out_, (s[2] + stride_ - 1) / stride_, (s[3] + stride_ - 1) / stride_};
}

void ShortcutA::forward(const Tensor& src, Tensor& dst, const ForwardContext&) {
  src_dims_ = src.dims();
  Dims d = dst_dims(src.dims());
  dst.resize(d);
  const int64_t H = src_dims_[2], W = src_dims_[3], OH = d[2], OW = d[3];
  const int lo = (out_ - in_) / 2;
  const float* s = src.data();
  float* o = dst.data();
  for (int64_t nh = 0; nh < d[0] * OH; ++nh) {  // serial: see Optimizer::step
    int64_t n = nh / OH, h = nh % OH;
    for (int64_t w = 0; w < OW; ++w) {
      float* op = o + ((n * OH + h) * OW + w) * out_;
      const float* sp = s + ((n * H + h * stride_) * W + w * stride_) * in_;
      std::fill(op, op + out_, 0.f);
      std::copy(sp, sp + in_, op + lo);
    }
  }
}

void ShortcutA::backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) {
  if (!need_diff_src) return;
  diff_src.resize(src_dims_);
  diff_src.zero();
  const int64_t H = src_dims_[2], W = src_dims_[3], OH = diff_dst.dim(2), OW = diff_dst.dim(3);
  const int lo = (out_ - in_) / 2;
  const float* g = diff_dst.data();
  float* ds = diff_src.data();
  for (int64_t nh = 0; nh < src_dims_[0] * OH; ++nh) {  // serial: see Optimizer::step
    int64_t n = nh / OH, h = nh % OH;
    for (int64_t w = 0; w < OW; ++w) {
      const float* gp = g + ((n * OH + h) * OW + w) * out_ + lo;
      std::copy(gp, gp + in_, ds + ((n * H + h * stride_) * W + w * stride_) * in_);
    }
  }
}

// ---------------------------------------------------------------- Residual
Residual::Residual(std::unique_ptr<Sequential> main, std::unique_ptr<Sequential> shortcut)
    : main_(std::move(main)), shortcut_(std::move(shortcut)) {}

std::string Residual::name() const { return "residual(" + main_->name() + " + " + shortcut_->name() + ")"; }

Dims Residual::dst_dims(const Dims& src) const {
  Dims a = main_->dst_dims(src), b = shortcut_->dst_dims(src);
  FRUGAL_CHECK(a == b, "residual: branch shapes differ ", dims_str(a), " vs ", dims_str(b));
  return a;
}

void Residual::forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) {
  main_->forward(src, a_, ctx);
  shortcut_->forward(src, b_, ctx);
  add_tensors(a_, b_, dst, /*relu=*/true);  // the ReLU as the add's post-op: one pass over the activations
  out_ = dst;                               // shares storage; backward masks with out_ > 0
}

void Residual::backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) {
  relu_.backward_from_dst(out_, diff_dst, dsum_);
  main_->backward(dsum_, d1_, need_diff_src);
  shortcut_->backward(dsum_, d2_, need_diff_src);
  if (need_diff_src) {
    add_tensors(d1_, d2_, dsrc_);
    diff_src = dsrc_;
  }
}

std::vector<Param*> Residual::params() {
  auto p = main_->params();
  for (auto* q : shortcut_->params()) p.push_back(q);
  return p;
}

std::vector<Buffer> Residual::buffers() {
  auto b = main_->buffers();
  for (auto q : shortcut_->buffers()) b.push_back(q);
  return b;
}

int64_t Residual::macs(const Dims& src) const { return main_->macs(src) + shortcut_->macs(src); }

void Residual::set_prefix(const std::string& p) {
  prefix_ = p;
  main_->set_prefix(p + "main.");
  shortcut_->set_prefix(p + "shortcut.");
}

}  // namespace frugal::nn
