#include "modelcomp/channel_prune.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "nn/containers.h"
#include "nn/loss.h"
#include "train/evaluate.h"
#include "util/check.h"

namespace frugal::modelcomp {

using json = nlohmann::json;

namespace {
bool weighted(nn::Layer& l) { return dynamic_cast<nn::Conv2d*>(&l) || dynamic_cast<nn::Linear*>(&l); }
bool passes_channels(nn::Layer& l) {  // keeps channel identity: the pruned channels simply disappear through it
  return dynamic_cast<nn::BatchNorm*>(&l) || dynamic_cast<nn::ReLU*>(&l) || dynamic_cast<nn::Pool*>(&l) ||
         dynamic_cast<nn::Dropout*>(&l) || dynamic_cast<nn::Flatten*>(&l);
}

/// The index of the conv / linear that layer i's output reaches through channel-preserving layers, or -1.
int consumer(nn::Sequential& s, size_t i) {
  bool flattened = false;
  for (size_t j = i + 1; j < s.size(); ++j) {
    nn::Layer& l = s.at(j);
    if (auto* c = dynamic_cast<nn::Conv2d*>(&l)) return !flattened && c->options().groups == 1 ? int(j) : -1;
    if (dynamic_cast<nn::Linear*>(&l)) return int(j);
    if (!passes_channels(l)) return -1;
    flattened |= dynamic_cast<nn::Flatten*>(&l) != nullptr;
  }
  return -1;
}

bool prunable_at(nn::Sequential& s, size_t i) {
  if (!weighted(s.at(i))) return false;
  if (auto* c = dynamic_cast<nn::Conv2d*>(&s.at(i)); c && c->options().groups != 1) return false;
  return consumer(s, i) >= 0;
}

void collect(nn::Sequential& s, std::vector<std::pair<nn::Sequential*, size_t>>& out) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (auto* r = dynamic_cast<nn::Residual*>(&s.at(i))) {
      collect(r->main(), out);
      collect(r->shortcut(), out);
    } else if (prunable_at(s, i)) {
      out.emplace_back(&s, i);
    }
  }
}

nn::Param& weight_of(nn::Layer& l) { return *l.params()[0]; }

std::vector<int> all_of(int64_t n) {
  std::vector<int> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

/// dst (rows kept x cols kept x inner) <- src (rows x cols x inner) at the kept rows and columns.
void gather(const Tensor& src, const std::vector<int>& rows, const std::vector<int>& cols, Tensor& dst) {
  const int64_t R = src.dim(0), C = src.dim(1), inner = src.size() / (R * C);
  FRUGAL_CHECK(dst.size() == int64_t(rows.size() * cols.size()) * inner, "prune_channels: shape mismatch");
  float* d = dst.data();
  for (int r : rows)
    for (int c : cols) {
      const float* s = src.data() + (int64_t(r) * C + c) * inner;
      d = std::copy(s, s + inner, d);
    }
}

void gather1(const Tensor& src, const std::vector<int>& keep, Tensor& dst) {
  for (size_t k = 0; k < keep.size(); ++k) dst.data()[k] = src.data()[keep[k]];
}

void copy_pruned(nn::Sequential& s, nn::Sequential& d, Dims cur, const ChannelKeep& keep) {
  std::vector<int> pending;  // kept channels (or features after a flatten) of the current activation; empty: all
  for (size_t i = 0; i < s.size(); ++i) {
    nn::Layer &L = s.at(i), &N = d.at(i);
    if (weighted(L)) {
      auto ps = L.params(), pd = N.params();
      auto it = keep.find(ps[0]->name);
      const std::vector<int> rows = it != keep.end() ? it->second : all_of(ps[0]->value.dim(0));
      const std::vector<int> cols = pending.empty() ? all_of(ps[0]->value.dim(1)) : pending;
      gather(ps[0]->value, rows, cols, pd[0]->value);
      if (ps.size() > 1) gather1(ps[1]->value, rows, pd[1]->value);
      for (auto* p : pd) ++p->version;
      pending = it != keep.end() ? rows : std::vector<int>{};
    } else if (auto* r = dynamic_cast<nn::Residual*>(&L)) {
      FRUGAL_CHECK(pending.empty(), "prune_channels: a pruned layer feeds a residual block");
      auto& rn = dynamic_cast<nn::Residual&>(N);
      copy_pruned(r->main(), rn.main(), cur, keep);
      copy_pruned(r->shortcut(), rn.shortcut(), cur, keep);
    } else if (dynamic_cast<nn::Flatten*>(&L) && !pending.empty()) {
      const int64_t C = cur[1], spatial = cur[2] * cur[3];  // features are (H, W, C) in storage order
      std::vector<int> features;
      for (int64_t p = 0; p < spatial; ++p)
        for (int c : pending) features.push_back(int(p * C + c));
      pending = features;
    } else {
      auto ps = L.params(), pd = N.params();
      auto bs = L.buffers(), bd = N.buffers();
      for (size_t k = 0; k < ps.size(); ++k) {
        if (pending.empty()) pd[k]->value.copy_from(ps[k]->value); else gather1(ps[k]->value, pending, pd[k]->value);
        ++pd[k]->version;
      }
      for (size_t k = 0; k < bs.size(); ++k)
        if (pending.empty()) bd[k].value->copy_from(*bs[k].value); else gather1(*bs[k].value, pending, *bd[k].value);
    }
    cur = L.dst_dims(cur);
  }
  FRUGAL_CHECK(pending.empty(), "prune_channels: the last layer of a chain was pruned");
}

json pruned_layers(nn::Sequential& s, const json& layers, const ChannelKeep& keep) {
  json out = layers;
  for (size_t i = 0; i < s.size(); ++i) {
    if (auto* r = dynamic_cast<nn::Residual*>(&s.at(i))) {
      out[i]["main"] = pruned_layers(r->main(), layers[i].value("main", json::array()), keep);
      out[i]["shortcut"] = pruned_layers(r->shortcut(), layers[i].value("shortcut", json::array()), keep);
    } else if (weighted(s.at(i))) {
      auto it = keep.find(weight_of(s.at(i)).name);
      if (it == keep.end()) continue;
      FRUGAL_CHECK(prunable_at(s, i), "prune_channels: '", it->first, "' is not prunable (prunable_layers lists them)");
      FRUGAL_CHECK(!it->second.empty() && std::is_sorted(it->second.begin(), it->second.end()) &&
                       it->second.front() >= 0 && it->second.back() < weight_of(s.at(i)).value.dim(0),
                   "prune_channels: kept channels of '", it->first, "' must be ascending, in range, at least one");
      out[i]["out"] = int(it->second.size());
    }
  }
  return out;
}
}  // namespace

std::vector<std::string> prunable_layers(nn::Model& m) {
  std::vector<std::pair<nn::Sequential*, size_t>> at;
  collect(m.net(), at);
  std::vector<std::string> names;
  for (auto [s, i] : at) names.push_back(weight_of(s->at(i)).name);
  return names;
}

ChannelScores magnitude_channel_scores(nn::Model& m) {
  std::vector<std::pair<nn::Sequential*, size_t>> at;
  collect(m.net(), at);
  ChannelScores out;
  for (auto [s, i] : at) {
    const Tensor& w = weight_of(s->at(i)).value;
    const int64_t oc = w.dim(0), per = w.size() / oc;
    std::vector<double> score(static_cast<size_t>(oc), 0.0);
    for (int64_t c = 0; c < oc; ++c)
      for (int64_t k = 0; k < per; ++k) score[size_t(c)] += std::fabs(w.data()[c * per + k]);
    if (i + 1 < s->size())
      if (auto* bn = dynamic_cast<nn::BatchNorm*>(&s->at(i + 1))) {
        const float* gamma = bn->params()[0]->value.data();
        const float* var = bn->buffers()[1].value->data();
        for (int64_t c = 0; c < oc; ++c) score[size_t(c)] *= std::fabs(gamma[c]) / std::sqrt(var[c] + bn->eps());
      }
    out[weight_of(s->at(i)).name] = std::move(score);
  }
  return out;
}

std::map<std::string, std::vector<float>> taylor_saliency(nn::Model& m, const data::Dataset& train,
                                                          const data::Normalization& norm, int batches,
                                                          int batch_size) {
  FRUGAL_CHECK(batches >= 1 && batch_size >= 1, "taylor saliency: need at least one batch");
  std::vector<std::pair<Tensor*, Tensor>> saved;  // batch-norm running statistics change in training forwards
  for (auto b : m.buffers()) {
    Tensor copy;
    copy.copy_from(*b.value);
    saved.emplace_back(b.value, std::move(copy));
  }
  std::map<std::string, std::vector<float>> sal;
  for (nn::Param* p : m.params())
    if (p->value.ndim() == 2 || p->value.ndim() == 4) sal[p->name].assign(size_t(p->value.size()), 0.f);
  nn::SoftmaxCrossEntropy loss;
  Tensor x, diff;
  std::vector<int32_t> y;
  const size_t n = std::min(train.size(), size_t(batches) * size_t(batch_size));
  int step = 0;
  for (size_t b = 0; b < n; b += size_t(batch_size), ++step) {
    train::make_batch(train, norm, b, std::min(size_t(batch_size), n - b), x, y);
    const Tensor& logits = m.forward(x, nn::ForwardContext{true, uint64_t(step)});
    loss.forward(logits, y.data());
    loss.backward(diff);
    m.backward(diff);
    for (nn::Param* p : m.params()) {
      auto it = sal.find(p->name);
      if (it == sal.end()) continue;
      const float *w = p->value.data(), *g = p->grad.data();
      for (size_t k = 0; k < it->second.size(); ++k) it->second[k] += std::fabs(w[k] * g[k]);
    }
  }
  for (auto& [t, copy] : saved) t->copy_from(copy);
  return sal;
}

ChannelScores taylor_channel_scores(nn::Model& m, const std::map<std::string, std::vector<float>>& saliency) {
  ChannelScores out;
  for (const std::string& name : prunable_layers(m)) {
    auto it = saliency.find(name);
    FRUGAL_CHECK(it != saliency.end(), "taylor channel scores: no saliency for '", name, "'");
    nn::Param* w = nullptr;
    for (nn::Param* p : m.params())
      if (p->name == name) w = p;
    const int64_t oc = w->value.dim(0), per = w->value.size() / oc;
    std::vector<double> score(static_cast<size_t>(oc), 0.0);
    for (int64_t c = 0; c < oc; ++c)
      for (int64_t k = 0; k < per; ++k) score[size_t(c)] += it->second[size_t(c * per + k)];
    out[name] = std::move(score);
  }
  return out;
}

ChannelKeep select_channels(const ChannelScores& scores, double fraction) {
  FRUGAL_CHECK(fraction >= 0 && fraction < 1, "channel pruning: fraction removed must be in [0, 1), got ", fraction);
  ChannelKeep keep;
  for (const auto& [name, s] : scores) {
    const size_t c = s.size(), k = std::max<size_t>(1, c - size_t(std::llround(double(c) * fraction)));
    std::vector<int> order = all_of(int64_t(c));
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return s[size_t(a)] > s[size_t(b)]; });
    order.resize(k);
    std::sort(order.begin(), order.end());
    keep[name] = order;
  }
  return keep;
}

std::unique_ptr<nn::Model> prune_channels(nn::Model& m, const ChannelKeep& keep) {
  const std::vector<std::string> names = prunable_layers(m);
  for (const auto& [name, k] : keep)
    FRUGAL_CHECK(std::find(names.begin(), names.end(), name) != names.end(), "prune_channels: '", name,
                 "' is not a prunable layer");
  json spec = m.spec();
  spec["layers"] = pruned_layers(m.net(), spec["layers"], keep);
  auto out = std::make_unique<nn::Model>(spec, 0);
  const Dims& chw = m.input_chw();
  copy_pruned(m.net(), out->net(), {1, chw[0], chw[1], chw[2]}, keep);
  return out;
}

}  // namespace frugal::modelcomp
