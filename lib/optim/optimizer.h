// Optimizers (SGD with momentum / Nesterov, Adam, AdamW, optional LARS trust ratio) and learning-rate
// schedules (constant, step, cosine, one-cycle, linear warm-up, reduce-on-plateau).
#pragma once
#include <string>
#include <vector>

#include "nn/layer.h"

namespace frugal::optim {

struct OptimizerOptions {
  std::string kind = "sgd";  // sgd | adam | adamw
  float momentum = 0.9f;
  bool nesterov = true;
  float weight_decay = 5e-4f;
  /// false: no weight decay on 1-D parameters (biases, batch-norm scale and shift), only on weight tensors.
  bool decay_1d = true;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  /// Momentum (and Nesterov) act on the weight-decay term only; the gradient arrives momentum-corrected
  /// (DGC: the compressor accumulates momentum; the authors' DGCSGD). Keeps the effective decay of a
  /// momentum run, lr wd / (1 - m), which plain SGD at momentum 0 would cut tenfold.
  bool momentum_decay_only = false;
  bool lars = false;   // layer-wise trust ratio (You, Gitman & Ginsburg 2017, "Large Batch Training of CNNs")
  float lars_eta = 0.001f;
};

/// One optimizer over a fixed list of parameters; state tensors are registered by name for checkpoints.
class Optimizer {
 public:
  Optimizer(const OptimizerOptions& o, std::vector<nn::Param*> params);
  /// w <- update(w, grad) at learning rate lr; increments each param's version.
  void step(float lr);
  /// Named state tensors ("<param>.momentum", "<param>.adam_m", ...) for checkpoints.
  std::vector<std::pair<std::string, Tensor*>> state();
  int64_t steps() const { return t_; }
  void set_steps(int64_t t) { t_ = t; }
  const OptimizerOptions& options() const { return o_; }
  void set_momentum(float m) { o_.momentum = m; }

 private:
  OptimizerOptions o_;
  std::vector<nn::Param*> params_;
  std::vector<Tensor> m_, v_;
  int64_t t_ = 0;
};

struct ScheduleOptions {
  std::string kind = "cosine";  // constant | step | cosine | onecycle | plateau
  float lr = 0.05f;
  float warmup_epochs = 0.f;    // linear warm-up from lr/10 (any schedule)
  float step_epochs = 30.f;     // step: multiply by gamma every step_epochs
  float gamma = 0.1f;
  int plateau_patience = 2;     // plateau: epochs without validation-loss improvement before lr *= plateau_factor
  float plateau_factor = 0.5f;
  float min_lr = 0.f;
  int64_t swa_steps = 0;         // > 0: the last swa_steps run at swa_lr; the schedule above covers the rest,
  float swa_lr = 0.f;            // rescaled from [0, lr] to [swa_lr, lr] so that it ends at swa_lr
};

/// Learning rate as a function of progress; reduce-on-plateau keeps state fed by end_epoch().
class Schedule {
 public:
  Schedule(const ScheduleOptions& o, int64_t steps_per_epoch, int64_t total_steps);
  float lr(int64_t step) const;
  /// Called after each epoch with the monitored loss (the validation loss; never the test set). Returns true if
  /// the lr was reduced.
  bool end_epoch(double monitored_loss);
  /// State for checkpoints.
  double plateau_scale() const { return scale_; }
  double plateau_best() const { return best_; }
  int plateau_bad() const { return bad_; }
  void restore(double scale, double best, int bad) { scale_ = scale; best_ = best; bad_ = bad; }

 private:
  float base_lr(int64_t step) const;
  ScheduleOptions o_;
  int64_t spe_, total_;
  double scale_ = 1.0, best_ = 1e300;
  int bad_ = 0;
};

}  // namespace frugal::optim
