#include "optim/optimizer.h"


#include <cmath>

#include "util/check.h"

namespace frugal::optim {

Optimizer::Optimizer(const OptimizerOptions& o, std::vector<nn::Param*> params) : o_(o), params_(std::move(params)) {
  FRUGAL_CHECK(o.kind == "sgd" || o.kind == "adam" || o.kind == "adamw", "unknown optimizer '", o.kind,
               "'; known: sgd, adam, adamw");
  FRUGAL_CHECK(o.momentum >= 0 && o.momentum < 1, "momentum must be in [0, 1), got ", o.momentum);
  FRUGAL_CHECK(o.weight_decay >= 0, "weight_decay must be >= 0, got ", o.weight_decay);
  m_.resize(params_.size());
  v_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    m_[i].resize(params_[i]->value.dims());
    m_[i].zero();
    if (o.kind != "sgd") {
      v_[i].resize(params_[i]->value.dims());
      v_[i].zero();
    }
  }
}

std::vector<std::pair<std::string, Tensor*>> Optimizer::state() {
  std::vector<std::pair<std::string, Tensor*>> s;
  for (size_t i = 0; i < params_.size(); ++i) {
    s.emplace_back(params_[i]->name + (o_.kind == "sgd" ? ".momentum" : ".adam_m"), &m_[i]);
    if (o_.kind != "sgd") s.emplace_back(params_[i]->name + ".adam_v", &v_[i]);
  }
  return s;
}

static double norm2(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
  return std::sqrt(s);
}

void Optimizer::step(float lr) {
  ++t_;
  const float mom = o_.momentum;
  const bool sgd = o_.kind == "sgd", adamw = o_.kind == "adamw";
  const float bc1 = 1.f - std::pow(o_.beta1, static_cast<float>(t_)), bc2 = 1.f - std::pow(o_.beta2, static_cast<float>(t_));
  // Serial: a memory-bound pass over the weights; TBB workers woken here kept spinning into the next
  // forward pass and competed with oneDNN's OpenMP threads on 2 cores.
  for (size_t k = 0; k < params_.size(); ++k) {
    nn::Param& p = *params_[k];
    float* w = p.value.data();
    const float* g = p.grad.data();
    float* m = m_[k].data();
    const int64_t n = p.value.size();
    const float wd = o_.decay_1d || p.value.ndim() > 1 ? o_.weight_decay : 0.f;
    // LARS trust ratio on weight tensors, not on biases / BN: eta |w| / (|g| + wd |w|).
    float trust = 1.f;
    if (o_.lars && p.value.ndim() > 1) {
      double wn = norm2(w, n), gn = norm2(g, n);
      if (wn > 0 && gn > 0) trust = static_cast<float>(o_.lars_eta * wn / (gn + wd * wn));
    }
    if (sgd) {
      // PyTorch semantics: d = g + wd*w; buf = mom*buf + d (buf = d at the first step); nesterov: d + mom*buf.
      // LARS scales d before it enters the momentum buffer (You et al. 2017, Algorithm 1; apex LARC, TF
      // LARSOptimizer), so each step's gradient keeps the trust ratio of its own step.
      if (o_.momentum_decay_only && mom > 0) {  // g is already momentum-corrected; the buffer holds decay
        for (int64_t i = 0; i < n; ++i) {
          const float dw = trust * wd * w[i];
          m[i] = t_ == 1 ? dw : mom * m[i] + dw;
          w[i] -= lr * (trust * g[i] + (o_.nesterov ? dw + mom * m[i] : m[i]));
        }
      } else {
        for (int64_t i = 0; i < n; ++i) {
          float d = trust * (g[i] + wd * w[i]);
          if (mom > 0) {
            m[i] = t_ == 1 ? d : mom * m[i] + d;
            d = o_.nesterov ? d + mom * m[i] : m[i];
          }
          w[i] -= lr * d;
        }
      }
    } else {
      // Adam / AdamW are invariant to the gradient's scale: LARS scales the step (lr) instead.
      const float local_lr = lr * trust;
      float* v = v_[k].data();
      for (int64_t i = 0; i < n; ++i) {
        float d = g[i] + (adamw ? 0.f : wd * w[i]);
        m[i] = o_.beta1 * m[i] + (1 - o_.beta1) * d;
        v[i] = o_.beta2 * v[i] + (1 - o_.beta2) * d * d;
        float upd = (m[i] / bc1) / (std::sqrt(v[i] / bc2) + o_.eps);
        if (adamw) upd += wd * w[i];
        w[i] -= local_lr * upd;
      }
    }
    ++p.version;
  }
}

Schedule::Schedule(const ScheduleOptions& o, int64_t spe, int64_t total) : o_(o), spe_(std::max<int64_t>(1, spe)), total_(std::max<int64_t>(1, total)) {
  const std::vector<std::string> kinds{"constant", "step", "cosine", "onecycle", "plateau"};
  FRUGAL_CHECK(std::find(kinds.begin(), kinds.end(), o.kind) != kinds.end(), "unknown schedule '", o.kind,
               "'; known: constant, step, cosine, onecycle, plateau");
  FRUGAL_CHECK(o.lr > 0, "lr must be positive, got ", o.lr);
  FRUGAL_CHECK(o.swa_steps >= 0 && o.swa_steps < total_, "swa_epochs must leave at least one step of the schedule before it");
  FRUGAL_CHECK(o.swa_steps == 0 || (o.swa_lr > 0 && o.swa_lr <= o.lr), "swa_lr must be in (0, lr = ", o.lr, "], got ", o.swa_lr);
  total_ -= o.swa_steps;
}

float Schedule::lr(int64_t step) const {
  if (o_.swa_steps > 0) {
    if (step >= total_) return o_.swa_lr;
    return o_.swa_lr + base_lr(step) * (1.f - o_.swa_lr / o_.lr);
  }
  return base_lr(step);
}

float Schedule::base_lr(int64_t step) const {
  const double pi = 3.14159265358979323846;
  double t = static_cast<double>(step) / static_cast<double>(total_);  // progress in [0, 1)
  double epoch = static_cast<double>(step) / static_cast<double>(spe_);
  double lr = o_.lr;
  if (o_.kind == "step") {
    lr *= std::pow(o_.gamma, std::floor(epoch / o_.step_epochs));
  } else if (o_.kind == "cosine") {
    lr = o_.min_lr + (o_.lr - o_.min_lr) * 0.5 * (1 + std::cos(pi * t));
  } else if (o_.kind == "onecycle") {  // Smith & Topin 2019: 25% linear warm-up from lr/25, cosine anneal
    const double up = 0.25;
    if (t < up) lr = o_.lr / 25 + (o_.lr - o_.lr / 25) * t / up;
    else lr = o_.min_lr + (o_.lr - o_.min_lr) * 0.5 * (1 + std::cos(pi * (t - up) / (1 - up)));
  } else if (o_.kind == "plateau") {
    lr *= scale_;
  }
  if (o_.warmup_epochs > 0 && epoch < o_.warmup_epochs) {
    double f = 0.1 + 0.9 * epoch / o_.warmup_epochs;
    lr *= f;
  }
  return static_cast<float>(lr);
}

bool Schedule::end_epoch(double loss) {
  if (o_.kind != "plateau") return false;
  if (loss < best_ * (1 - 1e-4)) {
    best_ = loss;
    bad_ = 0;
    return false;
  }
  if (++bad_ > o_.plateau_patience) {
    scale_ *= o_.plateau_factor;
    bad_ = 0;
    return true;
  }
  return false;
}

}  // namespace frugal::optim
