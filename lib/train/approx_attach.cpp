#include "train/approx_attach.h"

#include <sstream>

#include "approx/kernels.h"
#include "util/check.h"

namespace frugal::train {

using json = nlohmann::json;

namespace {

/// Adapter: a conv or linear layer's forward through approx::ApproxConv2d; re-quantizes the weights
/// whenever the parameter's version changes (every optimizer step during approximate-aware training).
class ApproxAdapter : public nn::ApproxForward {
 public:
  ApproxAdapter(const approx::ApproxSpec& spec, const nn::Conv2dOptions* c, const nn::LinearOptions* l, nn::Param* w,
                bool table_grad)
      : spec_(spec), weight_(w), table_grad_(table_grad) {
    if (c) {
      conv_ = std::make_unique<approx::ApproxConv2d>(spec, c->in, c->out, c->kernel, c->kernel, c->stride, c->pad,
                                                     c->groups);
    } else {
      lin_ = std::make_unique<approx::ApproxLinear>(spec, l->in, l->out);
    }
  }
  std::string describe() const override {
    return spec_.multiplier + "/w" + std::to_string(spec_.weight_bits) + "a" + std::to_string(spec_.act_bits) + "/" +
           spec_.mode;
  }
  void forward(const Tensor& src, const Tensor& weights, const float* bias, Tensor& dst) override {
    if (version_ != weight_->version) {
      if (conv_)
        conv_->set_weights(weights.data(), bias);
      else
        lin_->set_weights(weights.data(), bias);
      version_ = weight_->version;
    }
    if (conv_)
      conv_->forward(src.data(), static_cast<int>(src.dim(0)), static_cast<int>(src.dim(2)),
                     static_cast<int>(src.dim(3)), dst.data());
    else
      lin_->forward(src.data(), static_cast<int>(src.dim(0)), dst.data());
    n_ = static_cast<int>(src.dim(0));
    if (conv_) in_h_ = static_cast<int>(src.dim(2)), in_w_ = static_cast<int>(src.dim(3));
  }
  bool backward(const Tensor& diff_dst, float* w_grad, Tensor* diff_src) override {
    if (!table_grad_) return false;
    float* ds = diff_src ? diff_src->data() : nullptr;
    if (conv_)
      conv_->backward_table(diff_dst.data(), n_, in_h_, in_w_, ds, w_grad);
    else
      lin_->backward_table(diff_dst.data(), n_, ds, w_grad);
    return true;
  }

 private:
  approx::ApproxSpec spec_;
  nn::Param* weight_;
  bool table_grad_;
  uint64_t version_ = UINT64_MAX;
  int n_ = 0, in_h_ = 0, in_w_ = 0;
  std::unique_ptr<approx::ApproxConv2d> conv_;
  std::unique_ptr<approx::ApproxLinear> lin_;
};

}  // namespace

json attach_approx(nn::Model& model, const io::Config& cfg) {
  const std::string mult = cfg.s("multiplier");
  if (mult.empty()) return nullptr;
  const std::string grad = cfg.s("approx_grad");
  FRUGAL_CHECK(grad == "ste" || grad == "lut", "config key 'approx_grad' = '", grad,
               "': use ste (straight-through estimator) or lut (the multiplier's table gradient)");
  approx::ApproxSpec spec;
  spec.multiplier = mult;
  spec.weight_bits = static_cast<int>(cfg.i("bits"));
  spec.act_bits = static_cast<int>(cfg.i("act_bits"));
  spec.mode = cfg.s("approx_mode");
  // which layers
  std::vector<nn::Layer*> layers;
  const Dims& chw = model.input_chw();
  model.net().visit({1, chw[0], chw[1], chw[2]}, [&](nn::Layer& l, const Dims&) {
    if (dynamic_cast<nn::Conv2d*>(&l) || dynamic_cast<nn::Linear*>(&l)) layers.push_back(&l);
  });
  const std::string sel = cfg.s("approx_layers");
  std::vector<bool> use(layers.size(), false);
  if (sel == "all") {
    use.assign(layers.size(), true);
  } else if (sel == "inner") {
    for (size_t i = 1; i + 1 < layers.size(); ++i) use[i] = true;
  } else {
    std::stringstream ss(sel);
    for (std::string tok; std::getline(ss, tok, ',');) {
      size_t idx = 0;
      try {
        idx = std::stoul(tok);
      } catch (...) {
        FRUGAL_FAIL("config key 'approx_layers': '", tok, "' is not a layer index; use all, inner or e.g. 1,2,3");
      }
      FRUGAL_CHECK(idx < layers.size(), "config key 'approx_layers': index ", idx, " out of range (model has ",
                   layers.size(), " conv/linear layers, 0..", layers.size() - 1, ")");
      use[idx] = true;
    }
  }
  json out{{"multiplier", mult},        {"mode", spec.mode}, {"weight_bits", spec.weight_bits},
           {"act_bits", spec.act_bits}, {"gradient", grad},  {"layers", json::array()}};
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string arith = "fp32";
    if (use[i]) {
      if (auto* c = dynamic_cast<nn::Conv2d*>(layers[i])) {
        c->set_approx(std::make_shared<ApproxAdapter>(spec, &c->options(), nullptr, &c->weight(), grad == "lut"));
      } else if (auto* l = dynamic_cast<nn::Linear*>(layers[i])) {
        l->set_approx(std::make_shared<ApproxAdapter>(spec, nullptr, &l->options(), &l->weight(), grad == "lut"));
      }
      arith = mult + "/w" + std::to_string(spec.weight_bits) + "a" + std::to_string(spec.act_bits);
    }
    out["layers"].push_back({{"index", i}, {"layer", layers[i]->name()}, {"arithmetic", arith}});
  }
  return out;
}

}  // namespace frugal::train
