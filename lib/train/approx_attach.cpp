#include "train/approx_attach.h"

#include <sstream>

#include "approx/fake_quant.h"
#include "approx/kernels.h"
#include "approx/quantizer.h"
#include "train/evaluate.h"
#include "util/check.h"
#include "util/spec_string.h"

namespace frugal::train {

using json = nlohmann::json;

namespace {

/// Adapter: a conv or linear layer's forward through approx::ApproxConv2d (the integer kernels, up to 8 bits) or,
/// for the exact multiplier above 8 bits, approx::FakeQuantConv2d (quantize-dequantize in fp32). A linear layer
/// is a 1x1 convolution over a 1 x N image (as approx::ApproxLinear). Re-quantizes the weights whenever the
/// parameter's version changes (every optimizer step during approximate-aware training). Every adapter of a model
/// holds the same multiplier (built once by attach_approx, with its table).
class ApproxAdapter : public nn::ApproxForward {
 public:
  ApproxAdapter(const approx::ApproxSpec& spec, std::shared_ptr<const approx::Multiplier> mult, nn::ApproxHost& host,
                bool table_grad, bool fake_quant)
      : spec_(spec), mult_(std::move(mult)), weight_(&host.approx_weight()), table_grad_(table_grad) {
    const nn::ApproxHost::Geometry g = host.approx_geometry();
    is_conv_ = g.conv;
    FRUGAL_CHECK(g.square_stride_pad, "approximate arithmetic (", spec.multiplier,
                 ") takes convolutions with the same stride and padding along H and W; this model has a conv with a "
                 "non-square stride or padding (e.g. a k x 1 / 1 x k low-rank split): compress it with "
                 "lowrank_conv_split=kxk_1x1, or run it in fp32 / int8");
    const int kw = g.kernel_w >= 0 ? g.kernel_w : g.kernel;
    if (fake_quant)
      fq_ = std::make_unique<approx::FakeQuantConv2d>(spec, *mult_, g.in, g.out, g.kernel, kw, g.stride, g.pad,
                                                      g.groups);
    else
      int_ = std::make_unique<approx::ApproxConv2d>(spec, mult_, g.in, g.out, g.kernel, kw, g.stride, g.pad,
                                                    g.groups);
  }
  std::string describe() const override {
    return spec_.multiplier + "/w" + std::to_string(spec_.weight_bits) + "a" + std::to_string(spec_.act_bits) + "/" +
           (fq_ ? std::string("fakequant") : spec_.mode);
  }
  std::pair<int, int> bits() const override { return {spec_.weight_bits, spec_.act_bits}; }
  double relative_power() const override { return mult_->relative_power; }
  /// The kernels the forward takes on this CPU (approx::ApproxConv2d::kernel_path; fake quantization: oneDNN fp32).
  std::string kernel_path() const { return fq_ ? std::string("fakequant-onednn-fp32") : int_->kernel_path(); }
  void forward(const Tensor& src, const Tensor& weights, const float* bias, Tensor& dst) override {
    if (version_ != weight_->version) {
      if (fq_)
        fq_->set_weights(weights.data(), bias);
      else
        int_->set_weights(weights.data(), bias);
      version_ = weight_->version;
    }
    if (calib_) calib_->observe(src.data(), static_cast<size_t>(src.size()));
    // conv: (N, H, W) of the NHWC input; linear: a 1 x N image
    n_ = is_conv_ ? static_cast<int>(src.dim(0)) : 1;
    in_h_ = is_conv_ ? static_cast<int>(src.dim(2)) : 1;
    in_w_ = is_conv_ ? static_cast<int>(src.dim(3)) : static_cast<int>(src.dim(0));
    if (fq_)
      fq_->forward(src.data(), n_, in_h_, in_w_, dst.data());
    else
      int_->forward(src.data(), n_, in_h_, in_w_, dst.data());
  }
  /// Calibration: while on, forward() also records its input's range.
  void begin_calibration(approx::QuantConfig qc) {
    qc.bits = spec_.act_bits;
    calib_ = std::make_unique<approx::Calibrator>(qc, 1, 1);
  }
  /// Ends calibration and fixes the activation range to the recorded one; returns it.
  std::pair<float, float> finish_calibration() {
    FRUGAL_CHECK(calib_ && calib_->batches() > 0, "approx calibration saw no batch");
    approx::QuantParams p = calib_->params();
    const float lo = float(p.qmin - p.zero_point[0]) * p.scale[0], hi = float(p.qmax - p.zero_point[0]) * p.scale[0];
    if (fq_)
      fq_->set_act_range(lo, hi);
    else
      int_->set_act_range(lo, hi);
    calib_.reset();
    return {lo, hi};
  }
  /// Fake quantization: always its clipped straight-through estimator (for the exact multiplier that is also
  /// what approx_grad=lut means: the table gradient of a*b is the other operand). Integer kernels: the table
  /// gradient with approx_grad=lut, else the layer's own fp32 backward (the plain STE).
  bool backward(const Tensor& diff_dst, float* w_grad, Tensor* diff_src) override {
    float* ds = diff_src ? diff_src->data() : nullptr;
    if (fq_) {
      fq_->backward(diff_dst.data(), n_, in_h_, in_w_, ds, w_grad);
      return true;
    }
    if (!table_grad_) return false;
    int_->backward_table(diff_dst.data(), n_, in_h_, in_w_, ds, w_grad);
    return true;
  }

 private:
  approx::ApproxSpec spec_;
  std::shared_ptr<const approx::Multiplier> mult_;
  nn::Param* weight_;
  bool table_grad_, is_conv_ = false;
  uint64_t version_ = UINT64_MAX;
  int n_ = 0, in_h_ = 0, in_w_ = 0;
  std::unique_ptr<approx::Calibrator> calib_;
  std::unique_ptr<approx::ApproxConv2d> int_;      // integer kernels (<= 8 bits)
  std::unique_ptr<approx::FakeQuantConv2d> fq_;   // exact multiplier above 8 bits
};

// The model's conv and linear layers in model order (the indices of approx_layers and layer_bits).
std::vector<nn::Layer*> conv_linear_layers(nn::Model& model) {
  std::vector<nn::Layer*> layers;
  const Dims& chw = model.input_chw();
  model.net().visit({1, chw[0], chw[1], chw[2]}, [&](nn::Layer& l, const Dims&) {
    if (l.approx_host()) layers.push_back(&l);
  });
  return layers;
}

// The adapter attach_approx put on a conv/linear layer, or nullptr.
ApproxAdapter* adapter_of(nn::Layer* l) { return dynamic_cast<ApproxAdapter*>(l->approx_host()->approx()); }

// approx_layers: all, inner (not the first and last) or comma-separated indices of the model's count conv/linear
// layers.
std::vector<bool> selected_layers(const std::string& sel, size_t count) {
  std::vector<bool> use(count, false);
  if (sel == "all") {
    use.assign(count, true);
  } else if (sel == "inner") {
    for (size_t i = 1; i + 1 < count; ++i) use[i] = true;
  } else {
    std::stringstream ss(sel);
    for (std::string tok; std::getline(ss, tok, ',');) {
      size_t idx = 0;
      try {
        idx = std::stoul(tok);
      } catch (...) {
        FRUGAL_FAIL("config key 'approx_layers': '", tok, "' is not a layer index; use all, inner or e.g. 1,2,3");
      }
      FRUGAL_CHECK(idx < count, "config key 'approx_layers': index ", idx, " out of range (model has ",
                   count, " conv/linear layers, 0..", count - 1, ")");
      use[idx] = true;
    }
  }
  return use;
}

// layer_bits: "W/A,W/A,..." one per conv/linear layer (count), or empty: every layer at {wb, ab}.
std::vector<std::pair<int, int>> layer_bit_widths(const std::string& lb, size_t count, int wb, int ab) {
  std::vector<std::pair<int, int>> lbits(count, {wb, ab});
  if (!lb.empty()) {
    std::stringstream ss(lb);
    size_t i = 0;
    for (std::string tok; std::getline(ss, tok, ','); ++i) {
      FRUGAL_CHECK(i < count, "config key 'layer_bits' = '", lb, "' has more entries than the model's ",
                   count, " conv/linear layers");
      const size_t slash = tok.find('/');
      int w = 0, a = 0;
      try {
        w = std::stoi(tok.substr(0, slash));
        a = slash == std::string::npos ? w : std::stoi(tok.substr(slash + 1));
      } catch (...) {
        FRUGAL_FAIL("config key 'layer_bits': entry ", i, " = '", tok, "' is not W/A (e.g. 8/8 or 4/6)");
      }
      FRUGAL_CHECK(w >= 2 && w <= 16 && a >= 2 && a <= 16, "config key 'layer_bits': entry ", i, " = '", tok,
                   "': bit-widths of approximate layers are 2..16 (9-16 with multiplier=exact only)");
      lbits[i] = {w, a};
    }
    FRUGAL_CHECK(i == count, "config key 'layer_bits' = '", lb, "' has ", i, " entries; the model has ",
                 count, " conv/linear layers (give one W/A per layer, in model order)");
  }
  return lbits;
}

}  // namespace

ApproxOptions approx_options(const io::Config& cfg) {
  ApproxOptions o;
  o.multiplier = cfg.s("multiplier");
  o.bits = static_cast<int>(cfg.i("bits"));
  o.act_bits = static_cast<int>(cfg.i("act_bits"));
  o.mode = cfg.s("approx_mode");
  o.layers = cfg.s("approx_layers");
  o.layer_bits = cfg.s("layer_bits");
  o.gradient = cfg.s("approx_grad");
  o.per_channel = cfg.b("per_channel");
  o.act_quant = cfg.s("act_quant");
  o.calibration = cfg.s("act_calibration");
  FRUGAL_CHECK(o.gradient == "ste" || o.gradient == "lut", "config key 'approx_grad' = '", o.gradient,
               "': use ste (straight-through estimator) or lut (the multiplier's table gradient)");
  FRUGAL_CHECK(o.act_quant == "affine" || o.act_quant == "symmetric", "config key 'act_quant' = '", o.act_quant,
               "': use affine (zero point from [min, max]) or symmetric (zero point 0)");
  if (!o.multiplier.empty()) approx::make_multiplier(o.multiplier);  // a bad spec fails here, naming itself
  return o;
}

json attach_approx(nn::Model& model, const ApproxOptions& o) {
  const std::string& mult = o.multiplier;
  if (mult.empty()) return nullptr;
  const std::string& grad = o.gradient;
  FRUGAL_CHECK(grad == "ste" || grad == "lut", "config key 'approx_grad' = '", grad,
               "': use ste (straight-through estimator) or lut (the multiplier's table gradient)");
  approx::ApproxSpec spec;
  spec.multiplier = mult;
  spec.weight_bits = o.bits;
  spec.act_bits = o.act_bits;
  spec.mode = o.mode;
  spec.per_channel = o.per_channel;
  const std::string& aq = o.act_quant;
  FRUGAL_CHECK(aq == "affine" || aq == "symmetric", "config key 'act_quant' = '", aq,
               "': use affine (zero point from [min, max]) or symmetric (zero point 0)");
  spec.act_symmetric = aq == "symmetric";
  const std::vector<nn::Layer*> layers = conv_linear_layers(model);
  const std::vector<bool> use = selected_layers(o.layers, layers.size());
  const std::vector<std::pair<int, int>> lbits =
      layer_bit_widths(o.layer_bits, layers.size(), spec.weight_bits, spec.act_bits);
  // every chosen layer's widths must suit the multiplier: approximate ones have 8-bit operands
  const std::shared_ptr<const approx::Multiplier> m = approx::make_multiplier(mult);  // one for every layer
  const bool per_layer = !o.layer_bits.empty();
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!use[i]) continue;
    approx::ApproxSpec ls = spec;
    ls.weight_bits = lbits[i].first;
    ls.act_bits = lbits[i].second;
    const std::string err = approx::bits_error(ls, *m);
    if (err.empty()) continue;
    if (per_layer)
      FRUGAL_FAIL("config key 'layer_bits': entry ", i, " = '", ls.weight_bits, "/", ls.act_bits, "': ", err);
    FRUGAL_FAIL("config keys 'bits' = ", ls.weight_bits, " and 'act_bits' = ", ls.act_bits, ": ", err);
  }
  json out{{"multiplier", mult},        {"mode", spec.mode}, {"weight_bits", spec.weight_bits},
           {"act_bits", spec.act_bits}, {"gradient", grad},  {"per_channel", spec.per_channel}, {"act_quant", aq},
           {"layers", json::array()}};
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string arith = "fp32", kpath;
    if (use[i]) {
      approx::ApproxSpec ls = spec;
      ls.weight_bits = lbits[i].first;
      ls.act_bits = lbits[i].second;
      const bool fq = approx::runs_as_fake_quant(ls, *m);
      nn::ApproxHost& host = *layers[i]->approx_host();
      auto ad = std::make_shared<ApproxAdapter>(ls, m, host, grad == "lut", fq);
      kpath = ad->kernel_path();
      host.set_approx(ad);
      arith = mult + "/w" + std::to_string(ls.weight_bits) + "a" + std::to_string(ls.act_bits) + (fq ? "/fakequant" : "");
    }
    out["layers"].push_back({{"index", i}, {"layer", layers[i]->name()}, {"arithmetic", arith}});
    if (!kpath.empty()) out["layers"].back()["kernel_path"] = kpath;
  }
  return out;
}

json calibrate_approx(nn::Model& model, const ApproxOptions& o, const data::Dataset& ds, const data::Normalization& norm,
                      int batch) {
  const std::string& how = o.calibration;
  if (how == "batch" || o.multiplier.empty()) return nullptr;
  approx::QuantConfig qc;
  qc.symmetric = false;
  int batches = 0;
  const util::SpecFields f = util::split_spec(how, "config key 'act_calibration'");
  std::vector<std::string> parts{f.name};
  parts.insert(parts.end(), f.fields.begin(), f.fields.end());
  bool ok = parts.size() >= 2 && (parts[0] == "minmax" || parts[0] == "percentile") &&
            (parts.size() == 2 || (parts[0] == "percentile" && parts.size() == 3));
  try {
    if (ok) batches = std::stoi(parts[1]);
    if (ok && parts.size() == 3) qc.percentile = std::stod(parts[2]);
  } catch (...) {
    ok = false;
  }
  FRUGAL_CHECK(ok && batches >= 1 && qc.percentile > 50 && qc.percentile <= 100, "config key 'act_calibration' = '",
               how, "': use batch, minmax:N or percentile:N[:P] with N >= 1 batches and 50 < P <= 100");
  const std::string method = parts[0];
  qc.calibration = method == "minmax" ? approx::Calibration::minmax : approx::Calibration::percentile;
  std::vector<ApproxAdapter*> adapters;
  std::vector<size_t> index;
  const std::vector<nn::Layer*> layers = conv_linear_layers(model);
  for (size_t i = 0; i < layers.size(); ++i)
    if (ApproxAdapter* ad = adapter_of(layers[i])) {
      adapters.push_back(ad);
      index.push_back(i);
    }
  for (auto* a : adapters) a->begin_calibration(qc);
  Tensor x;
  std::vector<int32_t> y;
  int seen = 0;
  for (size_t b = 0; b < ds.size() && seen < batches; b += size_t(batch), ++seen) {
    const size_t n = std::min(ds.size() - b, size_t(batch));
    make_batch(ds, norm, b, n, x, y);
    model.forward(x, {false, 0});
  }
  json out{{"method", method}, {"batches", seen}, {"layers", json::array()}};
  if (method == "percentile") out["percentile"] = qc.percentile;
  for (size_t i = 0; i < adapters.size(); ++i) {
    auto [lo, hi] = adapters[i]->finish_calibration();
    out["layers"].push_back({{"index", index[i]}, {"lo", lo}, {"hi", hi}});
  }
  return out;
}

}  // namespace frugal::train
