// Layer containers: a chain (Sequential), a residual block, and the option-A shortcut of CIFAR ResNets.
#pragma once
#include "nn/layers.h"

namespace frugal::nn {

/// Runs layers in order. Keeps every intermediate activation and gradient buffer across steps.
class Sequential : public Layer {
 public:
  void add(LayerPtr layer);
  std::string name() const override;
  Dims dst_dims(const Dims& src) const override;
  /// dst shares storage with the last activation (or with src when empty).
  void forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) override;
  void backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) override;
  std::vector<Param*> params() override;
  std::vector<Buffer> buffers() override;
  int64_t macs(const Dims& src) const override;
  void set_prefix(const std::string& p) override;
  size_t size() const { return layers_.size(); }
  Layer& at(size_t i) { return *layers_.at(i); }
  const Layer& at(size_t i) const { return *layers_.at(i); }
  /// Visits every leaf layer (descending into containers), with its source dims.
  template <typename F>
  void visit(const Dims& src, F&& f);

 private:
  std::vector<LayerPtr> layers_;
  std::vector<Tensor> acts_, diffs_;
};

/// Option-A shortcut (He et al., CVPR 2016, Sec. 4.2): spatial subsampling by `stride` and zero padding
/// of channels, split evenly before and after; no parameters.
class ShortcutA : public Layer {
 public:
  ShortcutA(int in, int out, int stride) : in_(in), out_(out), stride_(stride) {}
  std::string name() const override;
  Dims dst_dims(const Dims& src) const override;
  void forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) override;
  void backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) override;

 private:
  int in_, out_, stride_;
  Dims src_dims_;
};

/// dst = relu(main(src) + shortcut(src)); an empty shortcut is the identity.
class Residual : public Layer {
 public:
  Residual(std::unique_ptr<Sequential> main, std::unique_ptr<Sequential> shortcut);
  std::string name() const override;
  Dims dst_dims(const Dims& src) const override;
  void forward(const Tensor& src, Tensor& dst, const ForwardContext& ctx) override;
  void backward(const Tensor& diff_dst, Tensor& diff_src, bool need_diff_src) override;
  std::vector<Param*> params() override;
  std::vector<Buffer> buffers() override;
  int64_t macs(const Dims& src) const override;
  void set_prefix(const std::string& p) override;
  Sequential& main() { return *main_; }
  Sequential& shortcut() { return *shortcut_; }

 private:
  std::unique_ptr<Sequential> main_, shortcut_;
  ReLU relu_;  // backward only: the forward applies it as the add's post-op
  Tensor a_, b_, out_, dsum_, d1_, d2_, dsrc_;
};

/// dst = a + b (relu: max(a + b, 0)) through a oneDNN binary primitive (cached per shape).
void add_tensors(const Tensor& a, const Tensor& b, Tensor& dst, bool relu = false);

template <typename F>
void Sequential::visit(const Dims& src, F&& f) {
  Dims cur = src;
  for (auto& l : layers_) {
    if (auto* s = dynamic_cast<Sequential*>(l.get())) {
      s->visit(cur, f);
    } else if (auto* r = dynamic_cast<Residual*>(l.get())) {
      r->main().visit(cur, f);
      r->shortcut().visit(cur, f);
    } else {
      f(*l, cur);
    }
    cur = l->dst_dims(cur);
  }
}

}  // namespace frugal::nn
