#include "modelcomp/lowrank_model.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "modelcomp/lowrank.h"
#include "util/check.h"

namespace frugal::modelcomp {

using json = nlohmann::json;

namespace {

int64_t numel_of(const std::vector<nn::Param*>& ps) {
  int64_t n = 0;
  for (auto* p : ps) n += p->value.size();
  return n;
}

/// The weights of a factorized layer's two new layers, in their own layouts, by the source weight's name.
struct FactorWeights {
  std::vector<float> first, second;
};

struct Plan {
  std::vector<LowRankLayer> layers;
  std::map<std::string, FactorWeights> factors;
};

/// The spatial split's matrix of a conv weight W (OC, IC, K, K): M (IC*K, K*OC), M[c*K + y][x*OC + o] = W[o][c][y][x],
/// so that a rank-r M = A B is a K x 1 conv IC -> r (A) followed by a 1 x K conv r -> OC (B) (Jaderberg et al. 2014).
std::vector<float> spatial_matrix(const Tensor& w) {
  const int64_t oc = w.dim(0), ic = w.dim(1), kh = w.dim(2), kw = w.dim(3);
  std::vector<float> m(size_t(oc * ic * kh * kw));
  const float* W = w.data();
  for (int64_t o = 0; o < oc; ++o)
    for (int64_t c = 0; c < ic; ++c)
      for (int64_t y = 0; y < kh; ++y)
        for (int64_t x = 0; x < kw; ++x)
          m[size_t((c * kh + y) * (kw * oc) + x * oc + o)] = W[((o * ic + c) * kh + y) * kw + x];
  return m;
}

/// The spatial split's layer weights from the factors of spatial_matrix: vertical (r, IC, K, 1), horizontal (OC, r, 1, K).
FactorWeights spatial_weights(const LowRank& f, int64_t oc, int64_t ic, int64_t k) {
  FactorWeights w;
  const int64_t r = f.rank, cols = k * oc;
  w.first.resize(size_t(r * ic * k));
  w.second.resize(size_t(oc * r * k));
  for (int64_t q = 0; q < r; ++q)
    for (int64_t c = 0; c < ic; ++c)
      for (int64_t y = 0; y < k; ++y) w.first[size_t((q * ic + c) * k + y)] = f.a[size_t((c * k + y) * r + q)];
  for (int64_t o = 0; o < oc; ++o)
    for (int64_t q = 0; q < r; ++q)
      for (int64_t x = 0; x < k; ++x) w.second[size_t((o * r + q) * k + x)] = f.b[size_t(q * cols + x * oc + o)];
  return w;
}

/// Decides every conv / linear of s (recursing into residual blocks) and returns the new spec layers.
json plan_layers(nn::Sequential& s, const json& layers, Dims cur, const LowRankOptions& o, Plan& plan) {
  json out = json::array();
  for (size_t i = 0; i < s.size(); ++i) {
    nn::Layer& L = s.at(i);
    const json& spec = layers.at(i);
    auto* conv = dynamic_cast<nn::Conv2d*>(&L);
    auto* lin = dynamic_cast<nn::Linear*>(&L);
    if (auto* r = dynamic_cast<nn::Residual*>(&L)) {
      json block = spec;
      block["main"] = plan_layers(r->main(), spec.value("main", json::array()), cur, o, plan);
      block["shortcut"] = plan_layers(r->shortcut(), spec.value("shortcut", json::array()), cur, o, plan);
      out.push_back(block);
    } else if (conv || lin) {
      const nn::Param& w = *L.params()[0];
      LowRankLayer rep;
      rep.name = w.name;
      rep.kind = conv ? "conv" : "linear";
      rep.dims = w.value.dims();
      // the spatial split applies to square k x k convs with k > 1 (a 1 x 1 conv has nothing to split)
      const bool spatial = conv && o.conv_split == "kx1_1xk" && conv->options().square() && conv->options().kh() > 1;
      rep.split = !conv ? "" : spatial ? "kx1_1xk" : "kxk_1x1";
      rep.rows = spatial ? int(w.value.dim(1) * w.value.dim(2)) : int(w.value.dim(0));
      rep.cols = spatial ? int(w.value.dim(3) * w.value.dim(0)) : int(w.value.size() / w.value.dim(0));
      rep.rank_max = std::min(rep.rows, rep.cols);
      rep.params_before = rep.params_after = numel_of(L.params());
      rep.macs_before = rep.macs_after = L.macs(cur);
      const bool selected = o.layers == "all" || o.layers == rep.kind;
      if (!selected) {
        rep.reason = "not selected";
      } else if (w.value.size() < o.min_numel) {
        rep.reason = "smaller than min_numel";
      } else if (conv && conv->options().groups != 1) {
        rep.reason = "grouped conv";
      } else {
        const int cap = std::max(1, int(std::floor(o.max_rank_fraction * rep.rank_max + 1e-9)));
        const std::vector<float> m = spatial ? spatial_matrix(w.value) : std::vector<float>();
        LowRank f = truncated_svd(spatial ? m.data() : w.value.data(), rep.rows, rep.cols, o.energy, cap);
        rep.rank = f.rank;
        rep.energy_kept = f.energy_kept;
        const int64_t r = f.rank, factor_weights = r * (int64_t(rep.rows) + rep.cols);
        if (o.only_if_smaller && factor_weights >= int64_t(rep.rows) * rep.cols) {
          rep.reason = "no saving at this rank";
        } else {
          rep.factorized = true;
          json first, second;
          FactorWeights fw;
          if (spatial) {
            const nn::Conv2dOptions& c = conv->options();
            first = {{"type", "conv"}, {"out", f.rank}, {"kh", c.kh()}, {"kw", 1}, {"sh", c.sh()}, {"sw", 1},
                     {"ph", c.ph()},   {"pw", 0},       {"groups", 1},  {"bias", false}};
            second = {{"type", "conv"}, {"out", c.out}, {"kh", 1}, {"kw", c.kw()}, {"sh", 1}, {"sw", c.sw()},
                      {"ph", 0},        {"pw", c.pw()}, {"bias", c.bias}};
            fw = spatial_weights(f, c.out, c.in, c.kh());
          } else if (conv) {
            const nn::Conv2dOptions& c = conv->options();
            first = {{"type", "conv"}, {"out", f.rank}, {"k", c.kernel}, {"s", c.stride}, {"p", c.pad},
                     {"groups", 1},    {"bias", false}};
            second = {{"type", "conv"}, {"out", c.out}, {"k", 1}, {"s", 1}, {"p", 0}, {"bias", c.bias}};
          } else {
            first = {{"type", "linear"}, {"out", f.rank}, {"bias", false}};
            second = {{"type", "linear"}, {"out", spec.contains("out") ? spec["out"] : json(lin->options().out)},
                      {"bias", lin->options().bias}};
          }
          first["lowrank"] = "B";  // documentation only: the spec builder ignores keys it does not read
          second["lowrank"] = "A";
          out.push_back(first);
          out.push_back(second);
          if (!spatial) fw = {std::move(f.b), std::move(f.a)};  // B (r, cols) first, A (rows, r) second
          plan.factors.emplace(rep.name, std::move(fw));
          plan.layers.push_back(rep);
          cur = L.dst_dims(cur);
          continue;
        }
      }
      plan.layers.push_back(rep);
      out.push_back(spec);
    } else {
      out.push_back(spec);
    }
    cur = L.dst_dims(cur);
  }
  return out;
}

void copy_values(const Tensor& src, Tensor& dst, const std::string& what) {
  FRUGAL_CHECK(src.size() == dst.size(), "factorize_model: size mismatch copying ", what);
  dst.copy_from(src);
}

void set_values(const std::vector<float>& v, nn::Param& p) {
  FRUGAL_CHECK(int64_t(v.size()) == p.value.size(), "factorize_model: factor size mismatch for ", p.name);
  std::copy(v.begin(), v.end(), p.value.data());
  ++p.version;
}

/// Copies the source tensors into the new model: factors where planned, everything else as it was.
void copy_layers(nn::Sequential& s, nn::Sequential& d, Dims cur, Plan& plan) {
  size_t j = 0;
  for (size_t i = 0; i < s.size(); ++i, ++j) {
    nn::Layer& L = s.at(i);
    if (auto* r = dynamic_cast<nn::Residual*>(&L)) {
      auto& rd = dynamic_cast<nn::Residual&>(d.at(j));
      copy_layers(r->main(), rd.main(), cur, plan);
      copy_layers(r->shortcut(), rd.shortcut(), cur, plan);
      cur = L.dst_dims(cur);
      continue;
    }
    auto ps = L.params();
    auto it = ps.empty() ? plan.factors.end() : plan.factors.find(ps[0]->name);
    if (it != plan.factors.end()) {
      nn::Layer &B = d.at(j), &A = d.at(j + 1);
      auto pb = B.params(), pa = A.params();
      set_values(it->second.first, *pb[0]);
      set_values(it->second.second, *pa[0]);
      if (ps.size() > 1) {
        copy_values(ps[1]->value, pa[1]->value, ps[1]->name);
        ++pa[1]->version;
      }
      auto rep = std::find_if(plan.layers.begin(), plan.layers.end(), [&](auto& l) { return l.name == it->first; });
      rep->params_after = numel_of(pb) + numel_of(pa);
      rep->macs_after = B.macs(cur) + A.macs(B.dst_dims(cur));
      rep->factor_names = {pb[0]->name, pa[0]->name};
      ++j;
    } else {
      auto pd = d.at(j).params();
      auto bs = L.buffers(), bd = d.at(j).buffers();
      FRUGAL_CHECK(pd.size() == ps.size() && bd.size() == bs.size(), "factorize_model: layer ", j, " differs");
      for (size_t k = 0; k < ps.size(); ++k) {
        copy_values(ps[k]->value, pd[k]->value, ps[k]->name);
        ++pd[k]->version;
      }
      for (size_t k = 0; k < bs.size(); ++k) copy_values(*bs[k].value, *bd[k].value, bs[k].name);
    }
    cur = L.dst_dims(cur);
  }
  FRUGAL_CHECK(j == d.size(), "factorize_model: the new model has ", d.size(), " layers, expected ", j);
}

}  // namespace

void check_lowrank_options(const LowRankOptions& o) {
  FRUGAL_CHECK(o.energy > 0 && o.energy <= 1, "low-rank: energy must be in (0, 1], got ", o.energy);
  FRUGAL_CHECK(o.max_rank_fraction > 0 && o.max_rank_fraction <= 1,
               "low-rank: max_rank_fraction must be in (0, 1], got ", o.max_rank_fraction);
  FRUGAL_CHECK(o.min_numel >= 0, "low-rank: min_numel must be >= 0, got ", o.min_numel);
  FRUGAL_CHECK(o.layers == "linear" || o.layers == "conv" || o.layers == "all",
               "low-rank: layers must be linear, conv or all, got '", o.layers, "'");
  FRUGAL_CHECK(o.conv_split == "kxk_1x1" || o.conv_split == "kx1_1xk",
               "low-rank: conv_split must be kxk_1x1 (k x k conv to r channels, then 1 x 1) or kx1_1xk (k x 1 conv to "
               "r channels, then 1 x k), got '", o.conv_split, "'");
}

FactorizedModel factorize_model(nn::Model& m, const LowRankOptions& o) {
  check_lowrank_options(o);
  FRUGAL_CHECK(!m.inference_net(), "factorize_model: the model is an int8 deployment; factorize its fp32 source");
  const Dims& chw = m.input_chw();
  const Dims input{1, chw[0], chw[1], chw[2]};
  Plan plan;
  json spec = m.spec();
  spec["layers"] = plan_layers(m.net(), spec["layers"], input, o, plan);
  FactorizedModel out;
  out.model = std::make_unique<nn::Model>(spec, 0);
  copy_layers(m.net(), out.model->net(), input, plan);
  out.layers = std::move(plan.layers);
  return out;
}

}  // namespace frugal::modelcomp
