#include "modelcomp/deploy_net.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>

#include <omp.h>
#include <tbb/parallel_for.h>

#include <array>
#include <atomic>
#include <chrono>
#include <sched.h>
#include <immintrin.h>

#include "io/files.h"
#include "nn/containers.h"
#include "nn/impl_select.h"
#include "nn/layers.h"
#include "util/check.h"

namespace frugal::modelcomp {

using json = nlohmann::json;
using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

// ---------------------------------------------------------------- batch-norm folding

namespace {
bool is_type(const json& l, const char* t) { return l.is_object() && l.value("type", "") == t; }

json fold_layers(const json& layers) {
  json out = json::array();
  for (size_t i = 0; i < layers.size(); ++i) {
    json l = layers[i];
    if (is_type(l, "conv") && i + 1 < layers.size() && is_type(layers[i + 1], "bn")) {
      l["bias"] = true;
      ++i;  // the batch norm goes into the conv
    } else if (is_type(l, "residual")) {
      l["main"] = fold_layers(l.value("main", json::array()));
      l["shortcut"] = fold_layers(l.value("shortcut", json::array()));
    }
    out.push_back(l);
  }
  return out;
}

void copy_params(nn::Layer& from, nn::Layer& to) {
  auto a = from.params(), b = to.params();
  FRUGAL_CHECK(a.size() == b.size(), "fold_batchnorm: ", from.name(), " and ", to.name(), " differ in parameters");
  for (size_t k = 0; k < a.size(); ++k) {
    b[k]->value.copy_from(a[k]->value);
    ++b[k]->version;
  }
  auto ba = from.buffers(), bb = to.buffers();
  for (size_t k = 0; k < ba.size() && k < bb.size(); ++k) bb[k].value->copy_from(*ba[k].value);
}

/// dst conv (with bias) <- src conv followed by bn: w' = w g, b' = (b - mean) g + beta, g = gamma / sqrt(var + eps).
void fold_conv_bn(nn::Conv2d& conv, nn::BatchNorm& bn, nn::Conv2d& dst) {
  auto cp = conv.params(), bp = bn.params(), dp = dst.params();
  auto bb = bn.buffers();
  FRUGAL_CHECK(dp.size() == 2, "fold_batchnorm: the folded ", dst.name(), " has no bias");
  const int64_t oc = conv.options().out, per = cp[0]->value.size() / oc;
  const float *gamma = bp[0]->value.data(), *beta = bp[1]->value.data();
  const float *mean = bb[0].value->data(), *var = bb[1].value->data();
  const float* w = cp[0]->value.data();
  const float* b = cp.size() > 1 ? cp[1]->value.data() : nullptr;
  float *wd = dp[0]->value.data(), *bd = dp[1]->value.data();
  for (int64_t c = 0; c < oc; ++c) {
    const float g = gamma[c] / std::sqrt(var[c] + bn.eps());
    for (int64_t i = 0; i < per; ++i) wd[c * per + i] = w[c * per + i] * g;
    bd[c] = ((b ? b[c] : 0.f) - mean[c]) * g + beta[c];
  }
  ++dp[0]->version;
  ++dp[1]->version;
}

void fold_into(nn::Sequential& src, nn::Sequential& dst) {
  size_t j = 0;
  for (size_t i = 0; i < src.size(); ++i, ++j) {
    FRUGAL_CHECK(j < dst.size(), "fold_batchnorm: the folded model has fewer layers");
    nn::Layer& l = src.at(i);
    auto* conv = dynamic_cast<nn::Conv2d*>(&l);
    auto* bn = i + 1 < src.size() ? dynamic_cast<nn::BatchNorm*>(&src.at(i + 1)) : nullptr;
    if (conv && bn) {
      fold_conv_bn(*conv, *bn, dynamic_cast<nn::Conv2d&>(dst.at(j)));
      ++i;
    } else if (auto* r = dynamic_cast<nn::Residual*>(&l)) {
      auto& d = dynamic_cast<nn::Residual&>(dst.at(j));
      fold_into(r->main(), d.main());
      fold_into(r->shortcut(), d.shortcut());
    } else {
      copy_params(l, dst.at(j));
    }
  }
}
}  // namespace

std::unique_ptr<nn::Model> fold_batchnorm(nn::Model& m) {
  json spec = m.spec();
  spec["layers"] = fold_layers(spec["layers"]);
  auto out = std::make_unique<nn::Model>(spec, 0);
  fold_into(m.net(), out->net());
  return out;
}

// ---------------------------------------------------------------- the layer graph (f32 and int8)

/// One step of the fused net (shape independent): a conv / linear with its fused ReLU, a pooling, a flatten or a
/// residual block. Activation "points" number the tensors the net materializes (0: the input image).
struct DeployOp {
  enum Kind { conv, linear, pool, flatten, residual } kind = conv;
  nn::Layer* fp32 = nullptr;  ///< the folded model's layer (shapes, calibration)
  std::string weight;         ///< conv / linear: the weight tensor's name
  std::string bias;           ///< its bias tensor's name ("" without)
  bool relu = false;  ///< conv / linear: a ReLU fused after it; residual: true (nn::Residual ends in a ReLU)
  int src_point = 0, dst_point = 0;  ///< dst -1: f32 logits
  algorithm pool_alg = algorithm::pooling_max;
  int k = 0, s = 1, p = 0;  ///< pool kernel (0: global), stride, padding
  std::vector<std::unique_ptr<DeployOp>> main;  ///< residual: main path (its last conv adds the shortcut)
  nn::Layer* shortcut = nullptr;                 ///< residual: option-A shortcut, nullptr for the identity
  Int8Weights w;                                 ///< int8 conv / linear, once loaded (f32: its folded weights)
  std::vector<float> bias_values;
  float sum_scale = 0.f;  ///< the last conv of a residual main path: shortcut codes -> output codes
};

namespace {
using Ops = std::vector<std::unique_ptr<DeployOp>>;

struct Graph {
  Ops ops;
  std::vector<bool> point_unsigned{false};  // point 0: the input image, signed
  int new_point(bool u) {
    point_unsigned.push_back(u);
    return int(point_unsigned.size()) - 1;
  }
};

void compile(nn::Sequential& seq, const json& layers, int& cur, Ops& out, Graph& g, const std::string& where) {
  FRUGAL_CHECK(layers.is_array() && layers.size() == seq.size(), where, ": spec and layers differ");
  for (size_t i = 0; i < seq.size(); ++i) {
    nn::Layer& l = seq.at(i);
    const std::string t = layers[i].value("type", "");
    const std::string at = where + "[" + std::to_string(i) + "] (" + l.name() + ")";
    const bool next_relu = i + 1 < seq.size() && dynamic_cast<nn::ReLU*>(&seq.at(i + 1));
    auto op = std::make_unique<DeployOp>();
    op->fp32 = &l;
    op->src_point = cur;
    if (t == "conv" || t == "linear") {
      op->kind = t == "conv" ? DeployOp::conv : DeployOp::linear;
      auto ps = l.params();
      op->weight = ps[0]->name;
      op->bias = ps.size() > 1 ? ps[1]->name : "";
      op->relu = next_relu;
      if (next_relu) ++i;
      op->dst_point = cur = g.new_point(op->relu);
    } else if (t == "maxpool" || t == "avgpool" || t == "gap") {
      op->kind = DeployOp::pool;
      op->pool_alg = t == "maxpool" ? algorithm::pooling_max : algorithm::pooling_avg_exclude_padding;
      op->k = t == "gap" ? 0 : layers[i].value("k", 2);
      op->s = t == "gap" ? 1 : layers[i].value("s", op->k);
      op->p = t == "gap" ? 0 : layers[i].value("p", 0);
      op->dst_point = cur;
    } else if (t == "flatten") {
      op->kind = DeployOp::flatten;
      op->dst_point = cur;
    } else if (t == "dropout") {
      continue;  // identity at inference
    } else if (t == "relu") {
      FRUGAL_CHECK(g.point_unsigned[size_t(cur)], at,
                   ": a ReLU on signed activations that no conv / linear precedes; the fused net fuses ReLUs into "
                   "the conv or linear before them");
      continue;  // its input is already non-negative
    } else if (t == "residual") {
      auto& r = dynamic_cast<nn::Residual&>(l);
      FRUGAL_CHECK(g.point_unsigned[size_t(cur)], at, ": fused residual blocks need a non-negative (post-ReLU) input");
      op->kind = DeployOp::residual;
      int m = cur;
      compile(r.main(), layers[i]["main"], m, op->main, g, at + ".main");
      FRUGAL_CHECK(!op->main.empty() && op->main.back()->kind == DeployOp::conv && !op->main.back()->relu, at,
                   ": fused residual blocks need a main path ending in a conv (+ batch norm), without a ReLU");
      const json& sc = layers[i]["shortcut"];
      if (r.shortcut().size() == 1 && is_type(sc[0], "shortcut_a"))
        op->shortcut = &r.shortcut().at(0);
      else
        FRUGAL_CHECK(r.shortcut().size() == 0, at, ": fused residual blocks need an identity or option-A shortcut");
      op->relu = true;  // nn::Residual's ReLU after the add
      op->dst_point = cur = g.new_point(true);
      op->main.back()->dst_point = cur;  // the add and the ReLU are the last conv's post-ops
    } else {
      FRUGAL_FAIL(at, ": layer type '", t, "' has no fused deployment (a batch norm not directly after a conv, or ",
                  "a layer deploy_net.h does not list)");
    }
    out.push_back(std::move(op));
  }
}

Graph compile_model(nn::Model& m) {
  Graph g;
  int cur = 0;
  compile(m.net(), m.spec()["layers"], cur, g.ops, g, "layers");
  size_t last = g.ops.size();
  while (last > 0 && g.ops[last - 1]->kind == DeployOp::flatten) --last;
  FRUGAL_CHECK(last > 0 && (g.ops[last - 1]->kind == DeployOp::linear || g.ops[last - 1]->kind == DeployOp::conv) &&
                   !g.ops[last - 1]->relu,
               "fused deployment: the model must end in a linear (or conv) layer without a ReLU (the logits)");
  g.ops[last - 1]->dst_point = -1;
  return g;
}

template <typename F>
void each_weighted(Ops& ops, F&& f) {
  for (auto& op : ops) {
    if (op->kind == DeployOp::conv || op->kind == DeployOp::linear) f(*op);
    if (op->kind == DeployOp::residual) each_weighted(op->main, f);
  }
}

float max_abs(const Tensor& t) {
  float m = 0.f;
  for (int64_t i = 0; i < t.size(); ++i) m = std::max(m, std::fabs(t.data()[i]));
  return m;
}

/// fp32 forward of the graph's ops, recording the largest magnitude at every activation point (not for the last op
/// of a residual main path, whose point is the block's output after the add and ReLU).
Tensor observe(Ops& ops, const Tensor& x, std::vector<float>& pmax, bool record_last = true) {
  nn::ForwardContext ctx;
  Tensor cur = x;
  for (size_t i = 0; i < ops.size(); ++i) {
    DeployOp& op = *ops[i];
    Tensor y;
    if (op.kind == DeployOp::residual) {
      Tensor a = observe(op.main, cur, pmax, false), b = cur;
      if (op.shortcut) {
        b = Tensor();
        op.shortcut->forward(cur, b, ctx);
      }
      nn::add_tensors(a, b, y, true);
    } else {
      op.fp32->forward(cur, y, ctx);
      if (op.relu)
        for (int64_t k = 0; k < y.size(); ++k) y.data()[k] = std::max(y.data()[k], 0.f);
    }
    const bool skip = !record_last && i + 1 == ops.size();
    if (!skip && op.dst_point >= 0 && op.kind != DeployOp::pool && op.kind != DeployOp::flatten)
      pmax[size_t(op.dst_point)] = std::max(pmax[size_t(op.dst_point)], max_abs(y));
    cur = y;
  }
  return cur;
}

nn::Param* find_param(nn::Model& m, const std::string& name) {
  for (nn::Param* p : m.params())
    if (p->name == name) return p;
  return nullptr;
}
}  // namespace

std::vector<PackedTensor> quantize_int8(nn::Model& folded, const std::vector<Tensor>& calib) {
  FRUGAL_CHECK(!calib.empty(), "int8 calibration needs at least one batch of images");
  Graph g = compile_model(folded);
  std::vector<float> pmax(g.point_unsigned.size(), 0.f);
  for (const Tensor& x : calib) {
    pmax[0] = std::max(pmax[0], max_abs(x));
    observe(g.ops, x, pmax);
  }
  std::vector<float> scale(pmax.size());
  for (size_t p = 0; p < pmax.size(); ++p)
    scale[p] = pmax[p] > 0.f ? pmax[p] / (g.point_unsigned[p] ? 255.f : 127.f) : 1.f;
  std::vector<PackedTensor> out;
  each_weighted(g.ops, [&](DeployOp& op) {
    nn::Param* w = find_param(folded, op.weight);
    FRUGAL_CHECK(w, "int8: weight '", op.weight, "' not found");
    PackedTensor t;
    t.name = op.weight;
    t.dims = w->value.dims();
    t.encoding = Encoding::int8;
    Int8Weights& q = t.int8;
    const int64_t oc = t.dims[0], per = w->value.size() / oc;
    q.codes.resize(size_t(w->value.size()));
    for (int64_t c = 0; c < oc; ++c) {
      const float* src = w->value.data() + c * per;
      float m = 0.f;
      for (int64_t i = 0; i < per; ++i) m = std::max(m, std::fabs(src[i]));
      const float s = m > 0.f ? m / 127.f : 1.f;
      q.scales.push_back(s);
      for (int64_t i = 0; i < per; ++i)
        q.codes[size_t(c * per + i)] = int8_t(std::clamp(std::nearbyint(src[i] / s), -127.f, 127.f));
    }
    q.src_scale = scale[size_t(op.src_point)];
    q.src_unsigned = g.point_unsigned[size_t(op.src_point)];
    if (op.dst_point >= 0) {
      q.dst_scale = scale[size_t(op.dst_point)];
      q.dst_unsigned = g.point_unsigned[size_t(op.dst_point)];
    }
    out.push_back(std::move(t));
  });
  return out;
}

// ---------------------------------------------------------------- execution

/// The primitives and buffers of one input shape. Each step is one part per team thread (kTeam of them); a
/// plan without a team (team == false) runs part 0 of every step on oneDNN's own threads, one step after the
/// other. A team plan (batch 1: see DeployNet::set_row_bands) runs all steps inside one OpenMP region of kTeam
/// threads: thread t runs part t of each step (an empty part: nothing) on its own stream, then waits at a spin
/// barrier until every thread has finished the step.
struct DeployNet::Plan {
  static constexpr int kTeam = 2;
  using Part = std::function<void(stream&)>;
  memory in_f32, out_f32;
  Dims out_dims;
  std::vector<std::array<Part, kTeam>> steps;
  bool team = false;
  std::vector<stream> streams;  ///< team plans: one per thread (part)
  std::vector<std::string> impls;
  std::vector<memory> keep;  // weights, biases, buffers the steps use
};

namespace {
struct Act {
  memory mem;
  Dims dims;
  dt type;
};

memory::desc act_md(const Dims& d, dt type) { return memory::desc(to_dnnl(d), type, d.size() == 4 ? tag::nhwc : tag::nc); }

std::string err_at(const std::string& path, const DeployOp& op) {
  return "packed model '" + path + "', int8 tensor '" + op.weight + "' (record at byte offset " +
         std::to_string(op.w.offset) + ")";
}

// ConvChoice::fastest takes another implementation only when it beats oneDNN's first choice by this factor: best
// of 7 runs each is repeatable to a few percent on a quiet machine, and a smaller gain is not worth the
// process-to-process variation in kernels.
constexpr double kConvMargin = 0.9;

/// Names a conv's geometry, types and fusions: the per-process key of its implementation choice.
std::string conv_key(const Act& in, const memory::desc& dst, const memory::dims& wd, const nn::Conv2dOptions& o,
                     bool sum, bool relu, dt w_t) {
  std::ostringstream k;
  k << "deploy conv src";
  for (int64_t d : in.dims) k << ' ' << d;
  k << " t" << int(in.type) << " w";
  for (int64_t d : wd) k << ' ' << d;
  k << " t" << int(w_t) << " dst";
  for (int64_t d : dst.dims()) k << ' ' << d;
  k << " t" << int(dst.data_type()) << " s" << o.sh() << 'x' << o.sw() << " p" << o.ph() << 'x' << o.pw()
    << (sum ? " sum" : "") << (relu ? " relu" : "");
  return k.str();
}

/// Column pairing, for a stride-1 f32 conv with at most 8 output channels: AVX-512 kernels block output channels
/// by 16 and pad 8 to 16, so such a conv costs what one with 16 outputs does (resnet20's 16 -> 8 convs after
/// channel pruning). The same conv written with 2 x OC outputs over pairs of output columns,
///   out'[n, h, w2, p * OC + o] = out[n, h, 2 w2 + p, o]   (p = 0, 1),
/// is a conv of kernel KH x (KW + 1) and horizontal stride 2 whose weights are the original's, shifted one column
/// for p = 1, with zeros in the column each half does not use. In NHWC its output is the original's bytes, so the
/// next layer reads it unchanged; it does 2 (KW + 1) / (2 KW) of the useful MACs (4/3 for 3 x 3) against 2x.
bool can_pair_columns(const nn::Conv2dOptions& o, const Dims& in, const Dims& od) {
  return o.groups == 1 && o.sh() == 1 && o.sw() == 1 && od[1] <= 8 && od[3] % 2 == 0 && od[3] >= 2 &&
         od[3] == in[3] + 2 * o.pw() - o.kw() + 1;
}

/// The paired form's weights (2 OC, IC, KH, KW + 1), OIHW, from the conv's (OC, IC, KH, KW).
std::vector<float> paired_weights(const float* w, int64_t oc, int64_t ic, int64_t kh, int64_t kw) {
  std::vector<float> out(size_t(2 * oc * ic * kh * (kw + 1)), 0.f);
  for (int64_t p = 0; p < 2; ++p)
    for (int64_t o = 0; o < oc; ++o)
      for (int64_t i = 0; i < ic; ++i)
        for (int64_t y = 0; y < kh; ++y)
          for (int64_t x = 0; x < kw; ++x)
            out[size_t((((p * oc + o) * ic + i) * kh + y) * (kw + 1) + x + p)] = w[((o * ic + i) * kh + y) * kw + x];
  return out;
}

/// Per process and conv key: whether the paired form was the faster (ConvChoice::fastest).
bool paired_is_faster(const std::string& key, const std::function<double()>& plain_s,
                      const std::function<double()>& paired_s) {
  static std::mutex mu;
  static std::map<std::string, bool> chosen;
  std::lock_guard<std::mutex> lock(mu);
  auto it = chosen.find(key);
  if (it == chosen.end()) it = chosen.emplace(key, paired_s() < kConvMargin * plain_s()).first;
  return it->second;
}

/// Sets OpenMP's thread count for this thread to 1 for its lifetime, and restores it (also on an exception).
struct OneThread {
  int saved = omp_get_max_threads();
  OneThread() { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(saved); }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;
};

std::string& forced_band_impl() {
  static std::string name;
  return name;
}

/// The first of make()'s implementations whose name contains `name` (detail::force_band_impl); oneDNN's first
/// choice when none does.
convolution_forward::primitive_desc band_impl_named(const std::function<convolution_forward::primitive_desc()>& make,
                                                    const std::string& name) {
  convolution_forward::primitive_desc pd = make();
  do
    if (std::string(pd.impl_info_str()).find(name) != std::string::npos) return pd;
  while (pd.next_impl());
  return make();
}

struct Builder {
  DeployNet::Plan& plan;
  bool f32 = false;  ///< f32 activations and the folded f32 weights; else int8 codes
  ConvChoice conv_choice = ConvChoice::first;
  /// Team plans: host work split over the team (its parts: the option-A shortcut fill) that the next row-band step
  /// runs first, in the same step, when that step neither reads what the fill writes nor writes it (row_bands'
  /// merge_pending: not a conv that sums into the shortcut); flushed as a step of its own otherwise.
  std::array<DeployNet::Plan::Part, DeployNet::Plan::kTeam> pending{};

  void push_pending() {
    if (pending[0]) plan.steps.push_back(pending);
    pending = {};
  }

  void push(std::array<DeployNet::Plan::Part, DeployNet::Plan::kTeam> parts) {
    push_pending();
    plan.steps.push_back(std::move(parts));
  }

  void run(primitive prim, std::unordered_map<int, memory> args) {
    push({[prim, args](stream& s) { prim.execute(s, args); }, {}});
  }

  /// Team plans (plan.team): the conv from `src` to `dst` (batch-1 NHWC; user weights `user_w`, `bias`, strides,
  /// paddings and `attr` as its descriptor has them; `key` its conv_key) as one step of kTeam one-thread convs, each over a band of
  /// the output rows, reading the input rows its band needs and padding only where the image ends: each thread of
  /// the team runs one. The same sums as the whole conv per output (each band is a whole conv of its rows), and
  /// no OpenMP fork / join per conv (3.5-3.8 us on a 2-vCPU VM, more than a pruned conv's own work there:
  /// results/compress/README.md). Returns false, adding nothing, when the conv has fewer output rows than bands.
  bool row_bands(const memory& src, const memory& dst, const memory& user_w, const memory& bias,
                 const memory::dims& strides, const memory::dims& pad_l, const memory::dims& pad_r,
                 const primitive_attr& attr, const std::string& key, const std::string& note, bool merge_pending) {
    constexpr int kBands = DeployNet::Plan::kTeam;
    const memory::desc sd = src.get_desc(), dd = dst.get_desc();
    const memory::dims si = sd.dims(), di = dd.dims(), wd = user_w.get_desc().dims();
    const int64_t kh = wd[wd.size() - 2], rows = di[2];
    if (si.size() != 4 || si[0] != 1 || rows < kBands) return false;
    const size_t src_row = size_t(si[1] * si[3]) * memory::data_type_size(sd.data_type());
    const size_t dst_row = size_t(di[1] * di[3]) * memory::data_type_size(dd.data_type());
    // Each band's own scratchpad: by default some implementations (gemm, winograd) keep theirs per thread,
    // allocated by the thread that creates the primitive, which is not the team thread that runs band 1.
    dnnl_primitive_attr_t cloned = nullptr;
    FRUGAL_CHECK(dnnl_primitive_attr_clone(&cloned, attr.get()) == dnnl_success, "deploy net: cannot copy a conv's attributes");
    primitive_attr band_attr(cloned);
    band_attr.set_scratchpad_mode(scratchpad_mode::user);
    std::array<DeployNet::Plan::Part, kBands> parts;
    std::string impl;
    for (int b = 0; b < kBands; ++b) {
      const int64_t o0 = rows * b / kBands, o1 = rows * (b + 1) / kBands;
      const int64_t first = o0 * strides[0] - pad_l[0], last = (o1 - 1) * strides[0] - pad_l[0] + kh;  // input rows
      const int64_t i0 = std::max<int64_t>(0, first), i1 = std::min<int64_t>(si[2], last);
      memory::desc bsd({1, si[1], i1 - i0, si[3]}, sd.data_type(), tag::nhwc);
      memory::desc bdd({1, di[1], o1 - o0, di[3]}, dd.data_type(), tag::nhwc);
      convolution_forward::desc cd(prop_kind::forward_inference, algorithm::convolution_direct, bsd,
                                   memory::desc(wd, user_w.get_desc().data_type(), tag::any), bias.get_desc(), bdd,
                                   strides, {i0 - first, pad_l[1]}, {last - i1, pad_r[1]});
      std::function<convolution_forward::primitive_desc()> make = [&] {
        return convolution_forward::primitive_desc(cd, band_attr, cpu_engine());
      };
      std::ostringstream band_key;  // under ConvChoice::fastest, timed on one thread per band geometry
      band_key << key << " band " << i1 - i0 << '/' << o1 - o0 << " pad " << i0 - first << ',' << last - i1;
      OneThread one;  // oneDNN sizes its work split when it creates the primitive
      convolution_forward::primitive_desc pd =
          !forced_band_impl().empty()
              ? band_impl_named(make, forced_band_impl())
              : conv_choice == ConvChoice::fastest
                    ? nn::fastest_impl(band_key.str(), make,
                                       {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST, DNNL_ARG_SCRATCHPAD},
                                       kConvMargin)
                    : make();
      primitive prim = convolution_forward(pd);
      memory wq(pd.weights_desc(), cpu_engine());
      frugal::reorder(user_w, wq);
      memory bs(bsd, cpu_engine(), static_cast<uint8_t*>(src.get_data_handle()) + size_t(i0) * src_row);
      memory bd(bdd, cpu_engine(), static_cast<uint8_t*>(dst.get_data_handle()) + size_t(o0) * dst_row);
      plan.keep.insert(plan.keep.end(), {wq, bias, src, dst});  // the bands' memories only view src and dst
      std::unordered_map<int, memory> args{{DNNL_ARG_SRC, bs},
                                           {DNNL_ARG_WEIGHTS, wq},
                                           {DNNL_ARG_BIAS, bias},
                                           {DNNL_ARG_DST, bd},
                                           {DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), cpu_engine())}};
      parts[size_t(b)] = [prim, args](stream& s) { prim.execute(s, args); };
      if (b == 0) impl = pd.impl_info_str();
    }
    if (pending[0] && !merge_pending) push_pending();
    if (pending[0]) {
      for (size_t t = 0; t < parts.size(); ++t)
        parts[t] = [first = pending[t], band = parts[t]](stream& s) {
          if (first) first(s);
          band(s);
        };
      pending = {};
    }
    plan.steps.push_back(parts);
    plan.impls.push_back(impl + note + " (" + std::to_string(kBands) + " row bands)");
    return true;
  }

  /// Runs `op`'s f32 conv in its column-pair form (can_pair_columns) writing into `dst`, and returns true; under
  /// ConvChoice::fastest only if that form times faster than `plain` (the conv as it is), else returns false.
  bool column_pairs(DeployOp& op, const Act& in, const Dims& od, const convolution_forward::primitive_desc& plain,
                    const primitive_attr& attr, const memory& bias, const memory& dst, int64_t pr_h) {
    const auto& o = dynamic_cast<nn::Conv2d&>(*op.fp32).options();
    const int64_t oc = od[1];
    const memory::dims pwd{2 * o.out, o.in, o.kh(), o.kw() + 1};
    const memory::desc pb_md({2 * oc}, dt::f32, tag::x);
    const memory::desc pdst_md(memory::dims{od[0], 2 * oc, od[2], od[3] / 2}, dt::f32, tag::nhwc);
    convolution_forward::desc pcd(prop_kind::forward_inference, algorithm::convolution_direct, in.mem.get_desc(),
                                  memory::desc(pwd, dt::f32, tag::any), pb_md, pdst_md, {1, 2}, {o.ph(), o.pw()},
                                  {pr_h, o.pw()});
    std::function<convolution_forward::primitive_desc()> make = [&] {
      return convolution_forward::primitive_desc(pcd, attr, cpu_engine());
    };
    const std::vector<int> args{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST};
    const memory::dims wd{o.out, o.in, o.kh(), o.kw()};
    const std::string key = conv_key(in, dst.get_desc(), wd, o, false, op.relu, dt::f32);
    const bool timed = conv_choice == ConvChoice::fastest;
    convolution_forward::primitive_desc pd = timed ? nn::fastest_impl(key + " paired", make, args, kConvMargin) : make();
    if (timed && !paired_is_faster(
                     key, [&] { return nn::best_run_seconds(plain, args); },
                     [&] { return nn::best_run_seconds(pd, args); }))
      return false;
    const std::vector<float> pw = paired_weights(op.fp32->params()[0]->value.data(), o.out, o.in, o.kh(), o.kw());
    memory user_pw(memory::desc(pwd, dt::f32, tag::oihw), cpu_engine(), const_cast<float*>(pw.data()));
    memory pbias(pb_md, cpu_engine());
    for (int64_t c = 0; c < 2 * oc; ++c)
      static_cast<float*>(pbias.get_data_handle())[c] = static_cast<const float*>(bias.get_data_handle())[c % oc];
    memory pdst(pdst_md, cpu_engine(), dst.get_data_handle());  // the same bytes as dst (NHWC)
    if (plan.team &&
        row_bands(in.mem, pdst, user_pw, pbias, {1, 2}, {o.ph(), o.pw()}, {pr_h, o.pw()}, attr, key + " paired",
                  " (column pairs)", true)) {
      plan.keep.push_back(dst);
      return true;
    }
    memory wq(pd.weights_desc(), cpu_engine());
    frugal::reorder(user_pw, wq);
    plan.impls.push_back(pd.impl_info_str() + std::string(" (column pairs)"));
    plan.keep.insert(plan.keep.end(), {wq, pbias, dst, pdst});
    run(convolution_forward(pd),
        {{DNNL_ARG_SRC, in.mem}, {DNNL_ARG_WEIGHTS, wq}, {DNNL_ARG_BIAS, pbias}, {DNNL_ARG_DST, pdst}});
    return true;
  }

  /// The weights as the model holds them: f32 (O, I, KH, KW), or the int8 record's s8 codes in the same order.
  void* weight_data(DeployOp& op) const {
    return f32 ? static_cast<void*>(op.fp32->params()[0]->value.data())
               : static_cast<void*>(const_cast<int8_t*>(op.w.codes.data()));
  }

  /// into: the residual block's output, which holds the shortcut: added (sum post-op), then a ReLU.
  Act conv_or_linear(DeployOp& op, const Act& in, const memory* into) {
    const Dims od = op.fp32->dst_dims(in.dims);
    const int64_t oc = od[1];
    const bool f32_out = f32 || op.dst_point < 0;
    const dt out_t = f32_out ? dt::f32 : (op.w.dst_unsigned ? dt::u8 : dt::s8);
    const dt w_t = f32 ? dt::f32 : dt::s8;
    primitive_attr attr;
    if (!f32) {  // codes: accumulator * src scale * weight scale (/ dst scale) is the output
      std::vector<float> os(static_cast<size_t>(oc));
      for (int64_t c = 0; c < oc; ++c)
        os[size_t(c)] = op.w.src_scale * op.w.scales[size_t(c)] / (f32_out ? 1.f : op.w.dst_scale);
      attr.set_output_scales(1 << 1, os);
    }
    post_ops po;
    if (into) po.append_sum(f32 ? 1.f : op.sum_scale);
    if (op.relu || into) po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
    memory::desc b_md({oc}, dt::f32, tag::x);
    memory bias(b_md, cpu_engine());  // int8: in accumulator units (oneDNN 2.x adds the bias before the output scale)
    for (int64_t c = 0; c < oc; ++c) {
      const float b = op.bias_values.empty() ? 0.f : op.bias_values[size_t(c)];
      static_cast<float*>(bias.get_data_handle())[c] = f32 ? b : b / (op.w.src_scale * op.w.scales[size_t(c)]);
    }
    memory dst = into ? *into : memory(act_md(od, out_t), cpu_engine());
    memory::desc user_w_md;
    primitive prim;
    memory::desc w_desc;
    if (op.kind == DeployOp::conv) {
      const auto& o = dynamic_cast<nn::Conv2d&>(*op.fp32).options();
      memory::dims wd = o.groups > 1 ? memory::dims{o.groups, o.out / o.groups, o.in / o.groups, o.kh(), o.kw()}
                                     : memory::dims{o.out, o.in, o.kh(), o.kw()};
      user_w_md = memory::desc(wd, w_t, o.groups > 1 ? tag::goihw : tag::oihw);
      const int64_t pr_h = (od[2] - 1) * o.sh() + o.kh() - in.dims[2] - o.ph();
      const int64_t pr_w = (od[3] - 1) * o.sw() + o.kw() - in.dims[3] - o.pw();
      convolution_forward::desc cd(prop_kind::forward_inference, algorithm::convolution_direct, in.mem.get_desc(),
                                   memory::desc(wd, w_t, tag::any), b_md, dst.get_desc(), {o.sh(), o.sw()},
                                   {o.ph(), o.pw()}, {pr_h, pr_w});
      std::function<convolution_forward::primitive_desc()> make = [&] {
        return convolution_forward::primitive_desc(cd, attr, cpu_engine());
      };
      convolution_forward::primitive_desc pd =
          conv_choice == ConvChoice::fastest
              ? nn::fastest_impl(conv_key(in, dst.get_desc(), wd, o, into != nullptr, op.relu, w_t), make,
                                 {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST}, kConvMargin)
              : make();
      if (conv_choice != ConvChoice::first && f32 && !into && can_pair_columns(o, in.dims, od) &&
          column_pairs(op, in, od, pd, attr, bias, dst, pr_h))
        return {dst, od, out_t};
      if (plan.team) {
        memory user_w(memory::desc(wd, w_t, o.groups > 1 ? tag::goihw : tag::oihw), cpu_engine(), weight_data(op));
        if (row_bands(in.mem, dst, user_w, bias, {o.sh(), o.sw()}, {o.ph(), o.pw()}, {pr_h, pr_w}, attr,
                      conv_key(in, dst.get_desc(), wd, o, into != nullptr, op.relu, w_t), "", into == nullptr))
          return {dst, od, out_t};
      }
      prim = convolution_forward(pd);
      w_desc = pd.weights_desc();
      plan.impls.push_back(pd.impl_info_str());
    } else {
      FRUGAL_CHECK(in.dims.size() == 2, op.fp32->name(), ": the fused inner product needs a (N, F) input");
      memory::dims wd{oc, in.dims[1]};
      user_w_md = memory::desc(wd, w_t, tag::oi);
      inner_product_forward::desc id(prop_kind::forward_inference, in.mem.get_desc(),
                                     memory::desc(wd, w_t, tag::any), b_md, dst.get_desc());
      inner_product_forward::primitive_desc pd(id, attr, cpu_engine());
      prim = inner_product_forward(pd);
      w_desc = pd.weights_desc();
      plan.impls.push_back(pd.impl_info_str());
    }
    memory user_w(user_w_md, cpu_engine(), weight_data(op));
    memory wq(w_desc, cpu_engine());
    frugal::reorder(user_w, wq);  // int8: computes the s8-input compensation where the primitive's layout asks for it
    plan.keep.insert(plan.keep.end(), {wq, bias, dst});
    run(prim, {{DNNL_ARG_SRC, in.mem}, {DNNL_ARG_WEIGHTS, wq}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}});
    return {dst, od, out_t};
  }

  Act pool(DeployOp& op, const Act& in) {
    const Dims od = op.fp32->dst_dims(in.dims);
    const int64_t kh = op.k ? op.k : in.dims[2], kw = op.k ? op.k : in.dims[3];
    const int64_t pr_h = (od[2] - 1) * op.s + kh - in.dims[2] - op.p, pr_w = (od[3] - 1) * op.s + kw - in.dims[3] - op.p;
    memory dst(act_md(od, in.type), cpu_engine());
    pooling_forward::desc d(prop_kind::forward_inference, op.pool_alg, in.mem.get_desc(), dst.get_desc(),
                            {op.s, op.s}, {kh, kw}, {op.p, op.p}, {pr_h, pr_w});
    pooling_forward::primitive_desc pd(d, cpu_engine());
    plan.impls.push_back(pd.impl_info_str());
    plan.keep.push_back(dst);
    run(pooling_forward(pd), {{DNNL_ARG_SRC, in.mem}, {DNNL_ARG_DST, dst}});
    return {dst, od, in.type};
  }

  Act residual(DeployOp& op, const Act& in) {
    const Dims od = op.fp32->dst_dims(in.dims);
    const dt out_t = f32 ? dt::f32 : dt::u8;
    const int64_t es = f32 ? int64_t(sizeof(float)) : 1;  // bytes per element
    memory out;
    if (!op.shortcut) {  // identity: the last conv adds into the block input's own buffer (in place, no copy;
      // the main path's first op has read it by then, and nothing after the block reads the input)
      FRUGAL_CHECK(od == in.dims && in.type == out_t, op.fp32->name(), ": identity shortcut with a shape change");
      out = in.mem;
    } else {  // option A: subsample by the stride, zero channels split before and after
      out = memory(act_md(od, out_t), cpu_engine());
      plan.keep.push_back(out);
      const auto* src = static_cast<const uint8_t*>(in.mem.get_data_handle());
      auto* dst = static_cast<uint8_t*>(out.get_data_handle());
      const int64_t N = od[0], C = in.dims[1], H = in.dims[2], W = in.dims[3], OC = od[1], OH = od[2], OW = od[3];
      const int64_t stride = (H + OH - 1) / OH, lo = (OC - C) / 2;
      auto fill_row = [=](int64_t nh) {
        const int64_t n = nh / OH, h = nh % OH;
        for (int64_t w = 0; w < OW; ++w) {
          uint8_t* o = dst + ((n * OH + h) * OW + w) * OC * es;
          const uint8_t* s = src + ((n * H + h * stride) * W + w * stride) * C * es;
          std::memset(o, 0, size_t(OC * es));  // all-zero bytes are 0.f as well
          std::memcpy(o + lo * es, s, size_t(C * es));
        }
      };
      // rows in parallel (TBB) only for large outputs: for a small batch the TBB workers would still be spinning
      // when the next oneDNN primitive wants the cores
      const bool parallel = N * OH * OW * OC * es >= (int64_t(1) << 20);
      if (plan.team) {  // rows split over the team, run with the main path's first conv
        constexpr int kTeam = DeployNet::Plan::kTeam;
        for (int t = 0; t < kTeam; ++t)
          pending[size_t(t)] = [=](stream&) {
            for (int64_t nh = N * OH * t / kTeam; nh < N * OH * (t + 1) / kTeam; ++nh) fill_row(nh);
          };
      } else {
        push({[=](stream&) {
                if (parallel)
                  tbb::parallel_for(int64_t(0), N * OH, fill_row);
                else
                  for (int64_t nh = 0; nh < N * OH; ++nh) fill_row(nh);
              },
              {}});
      }
    }
    Act cur = in;
    for (size_t i = 0; i + 1 < op.main.size(); ++i) cur = layer(*op.main[i], cur);
    conv_or_linear(*op.main.back(), cur, &out);
    return {out, od, out_t};
  }

  Act layer(DeployOp& op, const Act& in) {
    switch (op.kind) {
      case DeployOp::conv:
      case DeployOp::linear: return conv_or_linear(op, in, nullptr);
      case DeployOp::pool: return pool(op, in);
      case DeployOp::flatten: {
        const Dims od{in.dims[0], numel(in.dims) / in.dims[0]};  // NHWC storage order is the feature order
        return {memory(act_md(od, in.type), cpu_engine(), in.mem.get_data_handle()), od, in.type};
      }
      case DeployOp::residual: return residual(op, in);
    }
    FRUGAL_FAIL("deploy net: unknown layer kind");
  }
};
}  // namespace

DeployNet::DeployNet(nn::Model& folded, const std::vector<std::pair<std::string, Int8Weights>>& int8,
                 const std::string& path)
    : classes_(folded.classes()) {
  Graph g = compile_model(folded);
  std::vector<float> scale(g.point_unsigned.size(), 0.f);
  std::vector<std::string> set_by(scale.size());
  auto agree = [&](const DeployOp& op, int point, float s, bool u, const char* which) {
    const std::string at = err_at(path, op);
    FRUGAL_CHECK(u == g.point_unsigned[size_t(point)], at, ": its ", which, " codes are marked ",
                 u ? "unsigned" : "signed", " but the model's activation there is ",
                 g.point_unsigned[size_t(point)] ? "non-negative (u8)" : "signed (s8)", "; the file is inconsistent");
    if (scale[size_t(point)] == 0.f) {
      scale[size_t(point)] = s;
      set_by[size_t(point)] = op.weight;
    }
    FRUGAL_CHECK(scale[size_t(point)] == s, at, ": its ", which, " scale ", s, " differs from the scale ",
                 scale[size_t(point)], " that '", set_by[size_t(point)], "' gives the same activation");
  };
  std::map<std::string, const Int8Weights*> by_name;
  for (const auto& [name, w] : int8) by_name[name] = &w;
  each_weighted(g.ops, [&](DeployOp& op) {
    auto it = by_name.find(op.weight);
    FRUGAL_CHECK(it != by_name.end(), "packed model '", path, "': no int8 record for '", op.weight,
                 "' (every conv / linear weight of an int8 model is one)");
    op.w = *it->second;
    nn::Param* w = find_param(folded, op.weight);
    FRUGAL_CHECK(w && op.w.codes.size() == size_t(w->value.size()), err_at(path, op), ": size does not match the model");
    if (nn::Param* b = op.bias.empty() ? nullptr : find_param(folded, op.bias))
      op.bias_values.assign(b->value.data(), b->value.data() + b->value.size());
    agree(op, op.src_point, op.w.src_scale, op.w.src_unsigned, "input");
    FRUGAL_CHECK((op.dst_point < 0) == (op.w.dst_scale == 0.f), err_at(path, op), ": output scale ", op.w.dst_scale,
                 op.dst_point < 0 ? " on the logits layer (must be 0: f32 output)" : " (must be > 0)");
    if (op.dst_point >= 0) agree(op, op.dst_point, op.w.dst_scale, op.w.dst_unsigned, "output");
  });
  for (auto& op : g.ops)  // the block input's codes, added by the last conv of each residual main path
    if (op->kind == DeployOp::residual) op->main.back()->sum_scale = scale[size_t(op->src_point)] / op->main.back()->w.dst_scale;
  input_scale_ = scale[0];
  FRUGAL_CHECK(input_scale_ > 0.f, "packed model '", path, "': no int8 layer reads the input image");
  ops_ = std::move(g.ops);
}

DeployNet::DeployNet(std::unique_ptr<nn::Model> folded)
    : precision_(Precision::f32), folded_(std::move(folded)), classes_(folded_->classes()) {
  Graph g = compile_model(*folded_);
  each_weighted(g.ops, [&](DeployOp& op) {
    if (nn::Param* b = op.bias.empty() ? nullptr : find_param(*folded_, op.bias))
      op.bias_values.assign(b->value.data(), b->value.data() + b->value.size());
  });
  ops_ = std::move(g.ops);
}

std::shared_ptr<DeployNet> DeployNet::fused_f32(nn::Model& m) {
  return std::shared_ptr<DeployNet>(new DeployNet(fold_batchnorm(m)));
}

DeployNet::~DeployNet() = default;

Dims DeployNet::dst_dims(const Dims& src) const { return {src.at(0), classes_}; }

void DeployNet::backward(const Tensor&, Tensor&, bool) {
  FRUGAL_FAIL(name(), ": inference only (train the fp32 model)");
}

std::unique_ptr<DeployNet::Plan> DeployNet::build_plan(const Dims& src, bool team) {
  auto p = std::make_unique<Plan>();
  p->team = team;
  if (team)
    for (int t = 0; t < Plan::kTeam; ++t) p->streams.emplace_back(cpu_engine());
  const bool f32 = precision_ == Precision::f32;
  const dt in_t = f32 ? dt::f32 : dt::s8;
  memory::desc f32_md(to_dnnl(src), dt::f32, layout_tag(int(src.size())));
  p->in_f32 = memory(f32_md, cpu_engine(), DNNL_MEMORY_NONE);
  memory q(act_md(src, in_t), cpu_engine());  // the net's own copy (f32) or codes (int8) of the input
  primitive_attr qa;
  if (!f32) qa.set_output_scales(0, {1.f / input_scale_});
  dnnl::reorder::primitive_desc rpd(cpu_engine(), f32_md, cpu_engine(), q.get_desc(), qa);
  p->keep.push_back(q);
  Builder b{*p, f32, conv_choice_};
  memory in = p->in_f32;
  const size_t in_bytes = f32_md.get_size();
  if (f32 && q.get_desc() == f32_md && in_bytes <= (size_t(1) << 20))  // a small image: a plain copy (oneDNN's
    // reorder of a 3x32x32 image takes 3-4 us, a third of a pruned conv at batch 1)
    b.push({[in, q, in_bytes](stream&) { std::memcpy(q.get_data_handle(), in.get_data_handle(), in_bytes); }, {}});
  else
    b.run(dnnl::reorder(rpd), {{DNNL_ARG_FROM, in}, {DNNL_ARG_TO, q}});
  Act cur{q, src, in_t};
  for (auto& op : ops_) cur = b.layer(*op, cur);
  FRUGAL_CHECK(cur.type == dt::f32, name(), ": the last layer must give f32 logits");
  p->out_f32 = cur.mem;
  p->out_dims = cur.dims;
  return p;
}

namespace {
// The team's meeting point after each step: the last thread to arrive flips the phase, the others spin on it
// (about 0.25 us a meeting for two threads on a 2-vCPU KVM guest, against 3.5-3.8 us for an OpenMP fork / join;
// bench/conv_b1_threads.cpp). After a while a waiter yields its core, so a team on fewer cores than threads still
// moves on. The locked add orders each thread's stores before its arrival; the sfence its streaming stores.
struct alignas(64) SpinBarrier {
  std::atomic<int> arrived{0};
  std::atomic<int> phase{0};
  void wait(int& local_phase, int threads) {
    local_phase ^= 1;
    _mm_sfence();  // streaming stores (some kernels' outputs) before the arrival, whatever the CPU
    if (arrived.fetch_add(1, std::memory_order_acq_rel) == threads - 1) {
      arrived.store(0, std::memory_order_relaxed);
      phase.store(local_phase, std::memory_order_release);
      return;
    }
    for (int spins = 0; phase.load(std::memory_order_acquire) != local_phase; ++spins) {
      if (spins < 20000)
        __builtin_ia32_pause();
      else
        sched_yield();
    }
  }
};

/// Runs a plan's steps once (its input handle set): without a team, part 0 of each step in turn on oneDNN's
/// threads; with one, every step's parts side by side in one OpenMP region (see Plan). An exception in a part
/// (oneDNN's) is rethrown after the region, the team still meeting at every barrier.
void run_steps(DeployNet::Plan& p) {
  if (!p.team) {
    for (auto& step : p.steps) {
      step[0](cpu_stream());
      cpu_stream().wait();  // host steps (shortcut copies) read what the primitive before them wrote
    }
    return;
  }
  constexpr int kTeam = DeployNet::Plan::kTeam;
  SpinBarrier barrier;
  std::exception_ptr error;
  std::mutex error_mu;
#pragma omp parallel num_threads(kTeam)
  {
    // OpenMP may give fewer threads (nested, OMP_THREAD_LIMIT): thread t then runs parts t, t + team, ...
    const int t = omp_get_thread_num(), team = omp_get_num_threads();
    int local_phase = 0;
    for (auto& step : p.steps) {
      for (int part = t; part < kTeam; part += team) {
        if (!step[size_t(part)]) continue;
        try {
          step[size_t(part)](p.streams[size_t(part)]);
          p.streams[size_t(part)].wait();
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mu);
          if (!error) error = std::current_exception();
        }
      }
      if (team > 1) barrier.wait(local_phase, team);
    }
  }
  if (error) std::rethrow_exception(error);
}

/// Median wall seconds of each plan's forward on a zero image, the plans alternating (21 runs each after 3).
std::pair<double, double> time_plans(DeployNet::Plan& a, DeployNet::Plan& b, const Dims& src) {
  std::vector<float> image(size_t(numel(src)), 0.f);
  a.in_f32.set_data_handle(image.data());
  b.in_f32.set_data_handle(image.data());
  std::vector<double> ta, tb;
  for (int r = 0; r < 24; ++r)
    for (int which = 0; which < 2; ++which) {
      const auto t0 = std::chrono::steady_clock::now();
      run_steps(which ? b : a);
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r >= 3) (which ? tb : ta).push_back(sec);
    }
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  return {ta[ta.size() / 2], tb[tb.size() / 2]};
}
}  // namespace

DeployNet::Plan& DeployNet::plan(const Dims& src) {
  auto it = plans_.find(src);
  if (it != plans_.end()) return *it->second;
  std::unique_ptr<Plan> p = build_plan(src, row_bands_ == RowBands::on && src.size() == 4 && src[0] == 1);
  if (row_bands_ == RowBands::timed && conv_choice_ == ConvChoice::fastest && src.size() == 4 && src[0] == 1 &&
      omp_get_max_threads() >= Plan::kTeam) {
    std::unique_ptr<Plan> team = build_plan(src, true);
    const auto [plain_s, team_s] = time_plans(*p, *team, src);
    if (team_s < kConvMargin * plain_s) p = std::move(team);
  }
  return *plans_.emplace(src, std::move(p)).first->second;
}

void DeployNet::forward(const Tensor& src, Tensor& dst, const nn::ForwardContext& ctx) {
  FRUGAL_CHECK(!ctx.train, name(), ": inference only");
  Plan& p = plan(src.dims());
  last_ = &p;
  p.in_f32.set_data_handle(const_cast<float*>(src.data()));
  run_steps(p);
  dst.resize(p.out_dims);
  std::memcpy(dst.data(), p.out_f32.get_data_handle(), sizeof(float) * size_t(dst.size()));
}

const DeployNet::Plan* DeployNet::plan_for_batch(int64_t n) const {
  for (const auto& [dims, p] : plans_)
    if (!dims.empty() && dims[0] == n) return p.get();
  return nullptr;
}

bool DeployNet::row_bands_used(int64_t n) const {
  const Plan* p = plan_for_batch(n);
  return p && p->team;
}

json DeployNet::batch1_report() const {
  if (!plan_for_batch(1)) return json::object();
  return {{"batch1_row_bands", row_bands_used(1)}, {"batch1_implementations", implementations(1)}};
}

namespace {
/// Each implementation once, in first-use order, with its count.
std::vector<std::string> counted(const std::vector<std::string>& impls) {
  std::vector<std::pair<std::string, int>> seen;
  for (const std::string& impl : impls) {
    auto it = std::find_if(seen.begin(), seen.end(), [&](const auto& e) { return e.first == impl; });
    if (it == seen.end())
      seen.emplace_back(impl, 1);
    else
      ++it->second;
  }
  std::vector<std::string> out;
  for (const auto& [impl, n] : seen) out.push_back(impl + (n > 1 ? " x" + std::to_string(n) : ""));
  return out;
}
}  // namespace

std::vector<std::string> DeployNet::implementations() const { return counted(last_ ? last_->impls : std::vector<std::string>{}); }

std::vector<std::string> DeployNet::implementations(int64_t n) const {
  const Plan* p = plan_for_batch(n);
  return counted(p ? p->impls : std::vector<std::string>{});
}

namespace detail {
void force_band_impl(const std::string& name) { forced_band_impl() = name; }
}  // namespace detail

ConvChoice parse_conv_choice(const std::string& s, const std::string& where) {
  if (s == "first") return ConvChoice::first;
  if (s == "pairs") return ConvChoice::pairs;
  if (s == "fastest") return ConvChoice::fastest;
  FRUGAL_FAIL(where, ": unknown conv implementation choice '", s, "': use first (oneDNN's first choice), pairs ",
              "(first, with column pairs for convs of at most 8 output channels) or fastest (time the candidates ",
              "once per conv shape)");
}

std::string install_fused_f32(nn::Model& m) {
  if (m.inference_net()) return "the model already runs " + m.inference_net()->name();
  std::string approx;
  const Dims& chw = m.input_chw();
  m.net().visit({1, chw[0], chw[1], chw[2]}, [&](nn::Layer& l, const Dims&) {
    if (const nn::ApproxHost* h = l.approx_host(); h && h->approx() && approx.empty()) approx = l.name();
  });
  if (!approx.empty()) return "approximate / quantized arithmetic is attached to " + approx;
  try {
    m.set_inference_net(DeployNet::fused_f32(m));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string inference_path(const nn::Model& m) {
  auto* d = dynamic_cast<const DeployNet*>(m.inference_net());
  if (!d) return "layers";
  return d->precision() == DeployNet::Precision::int8 ? "int8" : "fused-f32";
}

nn::LoadedModel load_model_file(const std::string& path) {
  const std::string bytes = io::read_file(path);
  if (!is_packed(bytes)) return nn::load_model(path);
  UnpackedModel u = decode_packed(bytes, path);
  io::TensorFile f;
  f.meta = u.meta;
  f.tensors = std::move(u.tensors);
  nn::LoadedModel lm = nn::load_model(f, path);
  if (!u.int8.empty()) lm.model->set_inference_net(std::make_shared<DeployNet>(*lm.model, u.int8, path));
  return lm;
}

}  // namespace frugal::modelcomp
