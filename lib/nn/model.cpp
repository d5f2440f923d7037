#include "nn/model.h"

#include <cmath>
#include <sstream>

#include "util/check.h"

namespace frugal::nn {

using json = nlohmann::json;

const std::vector<std::string>& preset_names() {
  static const std::vector<std::string> names{"mlp",      "lenet5",   "lenet5-caffe", "cnn",
                                              "resnet",   "resnet20", "resnet32",     "resnet56", "vgg"};
  return names;
}

static int scaled(double base, double width) { return std::max(1, static_cast<int>(std::lround(base * width))); }

static json conv(int out, int k, int s, int p, bool bias = true) {
  return {{"type", "conv"}, {"out", out}, {"k", k}, {"s", s}, {"p", p}, {"bias", bias}};
}
static json layer(const std::string& t) { return {{"type", t}}; }
static json pool(const std::string& t, int k, int s) { return {{"type", t}, {"k", k}, {"s", s}}; }
static json linear(json out) { return {{"type", "linear"}, {"out", out}}; }

json preset_spec(const std::string& name_in, double width, int depth, const Dims& chw, int classes) {
  FRUGAL_CHECK(width > 0, "width must be positive, got ", width);
  FRUGAL_CHECK(chw.size() == 3, "input must be (C, H, W)");
  std::string name = name_in;
  if (name == "resnet20" || name == "resnet32" || name == "resnet56") {
    if (depth < 0) depth = std::stoi(name.substr(6));
    name = "resnet";
  }
  json L = json::array();
  if (name == "mlp") {  // LeNet-300-100 (LeCun et al. 1998)
    int hidden = depth < 0 ? 2 : depth;
    FRUGAL_CHECK(hidden >= 1, "mlp depth (hidden layers) must be >= 1, got ", hidden);
    L.push_back(layer("flatten"));
    for (int i = 0; i < hidden; ++i) {
      L.push_back(linear(scaled(i == 0 ? 300 : 100, width)));
      L.push_back(layer("relu"));
    }
    L.push_back(linear("classes"));
  } else if (name == "lenet5") {  // LeCun et al. 1998 (ReLU, max-pool)
    int stages = depth < 0 ? 2 : depth;
    FRUGAL_CHECK(stages >= 1, "lenet5 depth (conv stages) must be >= 1, got ", stages);
    L.push_back(conv(scaled(6, width), 5, 1, 2));
    L.push_back(layer("relu"));
    L.push_back(pool("maxpool", 2, 2));
    L.push_back(conv(scaled(16, width), 5, 1, 0));
    L.push_back(layer("relu"));
    L.push_back(pool("maxpool", 2, 2));
    for (int i = 2; i < stages; ++i) {  // extra 3x3 stages keep the spatial size
      L.push_back(conv(scaled(16, width), 3, 1, 1));
      L.push_back(layer("relu"));
    }
    L.push_back(layer("flatten"));
    L.push_back(linear(scaled(120, width)));
    L.push_back(layer("relu"));
    L.push_back(linear(scaled(84, width)));
    L.push_back(layer("relu"));
    L.push_back(linear("classes"));
  } else if (name == "lenet5-caffe") {  // Caffe's LeNet as in Deep Compression (Han et al. 2016): 431K weights
    int stages = depth < 0 ? 2 : depth;
    L.push_back(conv(scaled(20, width), 5, 1, 0));
    L.push_back(pool("maxpool", 2, 2));
    L.push_back(conv(scaled(50, width), 5, 1, 0));
    L.push_back(pool("maxpool", 2, 2));
    for (int i = 2; i < stages; ++i) L.push_back(conv(scaled(50, width), 3, 1, 1));
    L.push_back(layer("flatten"));
    L.push_back(linear(scaled(500, width)));
    L.push_back(layer("relu"));
    L.push_back(linear("classes"));
  } else if (name == "cnn") {  // [conv3x3-BN-ReLU] x d, pool, [conv3x3-BN-ReLU] x d, pool, fc128, fc
    int per_stage = depth < 0 ? 2 : depth;
    FRUGAL_CHECK(per_stage >= 1, "cnn depth (convs per stage) must be >= 1, got ", per_stage);
    for (int base : {32, 64}) {
      for (int i = 0; i < per_stage; ++i) {
        L.push_back(conv(scaled(base, width), 3, 1, 1, false));
        L.push_back(layer("bn"));
        L.push_back(layer("relu"));
      }
      L.push_back(pool("maxpool", 2, 2));
    }
    L.push_back(layer("flatten"));
    L.push_back(linear(scaled(128, width)));
    L.push_back(layer("relu"));
    L.push_back(linear("classes"));
  } else if (name == "resnet") {  // CIFAR ResNet-(6n+2), He et al. CVPR 2016 Sec. 4.2, option-A shortcuts
    if (depth < 0) depth = 20;
    FRUGAL_CHECK(depth >= 8 && (depth - 2) % 6 == 0, "resnet depth must be 6n+2 (20, 32, 44, 56, ...), got ", depth);
    int n = (depth - 2) / 6;
    int c = scaled(16, width);
    L.push_back(conv(c, 3, 1, 1, false));
    L.push_back(layer("bn"));
    L.push_back(layer("relu"));
    int cin = c;
    for (int stage = 0; stage < 3; ++stage) {
      int cout = scaled(16 << stage, width);
      for (int b = 0; b < n; ++b) {
        int stride = (stage > 0 && b == 0) ? 2 : 1;
        json main = json::array({conv(cout, 3, stride, 1, false), layer("bn"), layer("relu"),
                                 conv(cout, 3, 1, 1, false), layer("bn")});
        json sc = json::array();
        if (stride != 1 || cin != cout) sc.push_back({{"type", "shortcut_a"}, {"out", cout}, {"s", stride}});
        L.push_back({{"type", "residual"}, {"main", main}, {"shortcut", sc}});
        cin = cout;
      }
    }
    L.push_back(layer("gap"));
    L.push_back(layer("flatten"));
    L.push_back(linear("classes"));
  } else if (name == "vgg") {  // VGG-style (Simonyan & Zisserman 2015): conv-BN-ReLU stages, max-pool between
    if (depth < 0) depth = 8;
    FRUGAL_CHECK(depth >= 3, "vgg depth (conv layers) must be >= 3, got ", depth);
    int stages = std::min(4, depth);
    int base[4] = {64, 128, 256, 512};
    int64_t hw = std::min(chw[1], chw[2]);
    for (int s = 0; s < stages; ++s) {
      int convs = depth / stages + (s < depth % stages ? 1 : 0);
      for (int i = 0; i < convs; ++i) {
        L.push_back(conv(scaled(base[s], width), 3, 1, 1, false));
        L.push_back(layer("bn"));
        L.push_back(layer("relu"));
      }
      if (hw >= 2) {
        L.push_back(pool("maxpool", 2, 2));
        hw /= 2;
      }
    }
    L.push_back(layer("gap"));
    L.push_back(layer("flatten"));
    L.push_back(linear("classes"));
  } else {
    std::string known;
    for (auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
    FRUGAL_FAIL("unknown model '", name_in, "'; known presets: ", known, " (or a path to a JSON model spec)");
  }
  return {{"name", name_in}, {"width", width}, {"depth", depth}, {"input", chw}, {"classes", classes}, {"layers", L}};
}

namespace {

int get_int(const json& j, const char* key, int def, const std::string& where) {
  if (!j.contains(key)) return def;
  FRUGAL_CHECK(j[key].is_number_integer(), where, ": key '", key, "' must be an integer, got ", j[key].dump());
  return j[key].get<int>();
}

void build(Sequential& seq, const json& layers, Dims& cur, int classes, std::mt19937_64& rng, const std::string& path) {
  FRUGAL_CHECK(layers.is_array(), path, ": 'layers' must be an array");
  for (size_t i = 0; i < layers.size(); ++i) {
    const json& l = layers[i];
    std::string where = path + "[" + std::to_string(i) + "]";
    FRUGAL_CHECK(l.is_object() && l.contains("type") && l["type"].is_string(), where,
                 ": each layer must be an object with a string 'type'");
    std::string t = l["type"];
    LayerPtr layer;
    if (t == "conv") {
      FRUGAL_CHECK(cur.size() == 4, where, ": conv needs a (N, C, H, W) input, got ", dims_str(cur));
      Conv2dOptions o;
      o.in = static_cast<int>(cur[1]);
      o.out = get_int(l, "out", 0, where);
      // square: k, s, p; non-square: kh + kw (and sh + sw, ph + pw), each pair both or neither, not with k / s / p
      auto pair = [&](const char* one, const char* h, const char* w, int dflt_h, int dflt_w, int& vh, int& vw) {
        const bool has_h = l.contains(h), has_w = l.contains(w);
        FRUGAL_CHECK(has_h == has_w, where, ": give both '", h, "' and '", w, "' (or '", one, "' for both)");
        FRUGAL_CHECK(!(has_h && l.contains(one)), where, ": '", one, "' and '", h, "' / '", w, "' together");
        if (has_h) {
          vh = get_int(l, h, 0, where);
          vw = get_int(l, w, 0, where);
        } else {
          vh = get_int(l, one, dflt_h, where);
          vw = l.contains(one) ? vh : dflt_w;
        }
      };
      int kh = 3, kw = 3, sh = 1, sw = 1, ph = 1, pw = 1;
      pair("k", "kh", "kw", 3, 3, kh, kw);
      pair("s", "sh", "sw", 1, 1, sh, sw);
      pair("p", "ph", "pw", kh / 2, kw / 2, ph, pw);
      o.kernel = kh, o.stride = sh, o.pad = ph;
      if (kw != kh) o.kernel_w = kw;
      if (sw != sh) o.stride_w = sw;
      if (pw != ph) o.pad_w = pw;
      o.groups = get_int(l, "groups", 1, where);
      o.bias = l.value("bias", true);
      layer = std::make_unique<Conv2d>(o, rng);
    } else if (t == "linear") {
      FRUGAL_CHECK(cur.size() == 2, where, ": linear needs a (N, F) input (add a flatten), got ", dims_str(cur));
      LinearOptions o;
      o.in = static_cast<int>(cur[1]);
      o.out = (l.contains("out") && l["out"].is_string() && l["out"] == "classes") ? classes : get_int(l, "out", 0, where);
      o.bias = l.value("bias", true);
      layer = std::make_unique<Linear>(o, rng);
    } else if (t == "bn") {
      layer = std::make_unique<BatchNorm>(static_cast<int>(cur[1]));
    } else if (t == "relu") {
      layer = std::make_unique<ReLU>();
    } else if (t == "flatten") {
      layer = std::make_unique<Flatten>();
    } else if (t == "dropout") {
      float p = l.value("p", 0.5f);
      FRUGAL_CHECK(p >= 0.f && p < 1.f, where, ": dropout p must be in [0, 1), got ", p);
      layer = std::make_unique<Dropout>(p);
    } else if (t == "maxpool" || t == "avgpool") {
      int k = get_int(l, "k", 2, where);
      layer = std::make_unique<Pool>(t == "maxpool" ? PoolKind::max : PoolKind::avg, k, get_int(l, "s", k, where),
                                     get_int(l, "p", 0, where));
    } else if (t == "gap") {
      layer = std::make_unique<Pool>(PoolKind::avg, 0, 1);
    } else if (t == "shortcut_a") {
      layer = std::make_unique<ShortcutA>(static_cast<int>(cur[1]), get_int(l, "out", 0, where), get_int(l, "s", 1, where));
    } else if (t == "residual") {
      auto main = std::make_unique<Sequential>();
      auto sc = std::make_unique<Sequential>();
      Dims a = cur, b = cur;
      build(*main, l.value("main", json::array()), a, classes, rng, where + ".main");
      build(*sc, l.value("shortcut", json::array()), b, classes, rng, where + ".shortcut");
      layer = std::make_unique<Residual>(std::move(main), std::move(sc));
    } else {
      FRUGAL_FAIL(where, ": unknown layer type '", t,
                  "'; known: conv, linear, bn, relu, flatten, dropout, maxpool, avgpool, gap, shortcut_a, residual");
    }
    cur = layer->dst_dims(cur);
    seq.add(std::move(layer));
  }
  // A batch-norm directly followed by a ReLU runs as one oneDNN primitive forward and backward; the ReLU stays
  // in the chain as a pass-through so that layer indices and parameter names are those of the spec.
  for (size_t i = 0; i + 1 < seq.size(); ++i) {
    auto* bn = dynamic_cast<BatchNorm*>(&seq.at(i));
    auto* relu = dynamic_cast<ReLU*>(&seq.at(i + 1));
    if (bn && relu) {
      bn->set_fused_relu(true);
      relu->set_fused(true);
    }
  }
}

}  // namespace

Model::Model(const json& spec, uint64_t seed) : spec_(spec) {
  FRUGAL_CHECK(spec.is_object() && spec.contains("input") && spec.contains("classes") && spec.contains("layers"),
               "model spec needs keys 'input' [C, H, W], 'classes' and 'layers'");
  input_chw_ = spec["input"].get<Dims>();
  FRUGAL_CHECK(input_chw_.size() == 3, "model spec 'input' must be [C, H, W]");
  classes_ = spec["classes"].get<int>();
  FRUGAL_CHECK(classes_ >= 2, "model spec 'classes' must be >= 2");
  std::mt19937_64 rng(seed);
  Dims cur{1, input_chw_[0], input_chw_[1], input_chw_[2]};
  build(net_, spec["layers"], cur, classes_, rng, "layers");
  FRUGAL_CHECK(cur.size() == 2 && cur[1] == classes_, "model output must be (N, ", classes_, "), got ", dims_str(cur));
  net_.set_prefix("");
}

const Tensor& Model::forward(const Tensor& x, const ForwardContext& ctx) {
  if (inference_net_) {
    FRUGAL_CHECK(!ctx.train, "model: training forward on a model deployed for inference (",
                 inference_net_->name(), "); train the fp32 model instead");
    inference_net_->forward(x, logits_, ctx);
    return logits_;
  }
  net_.forward(x, logits_, ctx);
  return logits_;
}

void Model::backward(const Tensor& diff_logits) { net_.backward(diff_logits, diff_in_, false); }

int64_t Model::num_params() {
  int64_t n = 0;
  for (auto* p : params()) n += p->value.size();
  return n;
}

int64_t Model::macs_per_image() { return net_.macs({1, input_chw_[0], input_chw_[1], input_chw_[2]}); }

std::string Model::summary() {
  std::ostringstream os;
  net_.visit({1, input_chw_[0], input_chw_[1], input_chw_[2]}, [&](Layer& l, const Dims& src) {
    int64_t np = 0;
    for (auto* p : l.params()) np += p->value.size();
    Dims d = l.dst_dims(src);
    d.erase(d.begin());
    os << "  " << l.name() << " -> " << dims_str(d) << (np ? "  params " + std::to_string(np) : "") << "\n";
  });
  os << "  total params " << num_params() << ", MACs/image " << macs_per_image() << "\n";
  return os.str();
}

}  // namespace frugal::nn
