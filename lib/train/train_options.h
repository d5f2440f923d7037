// The training experiment as typed options: the flat io::Config (experiments/*.json, --set) parsed and checked
// once, at the edge, before any data is read. A bad key value or spec string fails here, naming the key.
//
//   io::Config cfg;  cfg.load_file("experiments/quickstart.json");
//   TrainSpec spec = parse_train_spec(cfg);   // throws frugal::Error naming the key and what to do
//   Trainer t(spec, opts);                    // trainer.h
#pragma once
#include <cstdint>
#include <string>

#include "comm/cost_model.h"
#include "data/transforms.h"
#include "gradcomp/exchange.h"
#include "io/config.h"
#include "optim/optimizer.h"
#include "train/approx_attach.h"

namespace frugal::train {

struct DataOptions {
  std::string dataset = "mnist";  ///< mnist | fashion-mnist | cifar10 | cifar100 | synthetic...
  std::string data_dir;           ///< extra root searched first (data::data_roots)
  int64_t val_split = -1;         ///< images held out of the training set; -1: auto (5000 for plateau on
                                  ///< the standard sets, else 0)
  int input_jpeg_quality = 0;     ///< 0: off; 1..100: test images pass through JPEG at this quality
  bool input_jpeg_train = false;  ///< ...and the training (and validation) images too
  data::Augment augment;
  int batch = 128;       ///< global batch, split evenly over the workers
  int eval_batch = 500;  ///< batch of evaluation passes
};

struct ModelOptions {
  std::string model = "lenet5";  ///< a preset name (nn::preset_spec) or a model spec .json file
  double width = 1.0;            ///< preset width multiplier
  int depth = -1;                ///< preset depth (-1: the preset's own)
  std::string init;              ///< a model file to start from (fine-tuning); empty: random init
};

struct LoopOptions {
  int epochs = 1;
  int64_t max_steps = -1;          ///< > 0: stop after this many steps in all
  int workers = 1;                 ///< data-parallel workers (MPI: must equal the ranks)
  int threads = 0;                 ///< compute threads per worker; 0: automatic (util/threads.h)
  uint64_t seed = 0;
  float label_smoothing = 0.f;
  std::string distill_from;        ///< teacher model file for knowledge distillation (empty: off)
  float distill_temperature = 4.f;
  float distill_weight = 0.5f;
  int swa_epochs = 0;              ///< average the weights of the last swa_epochs epochs (0: off)
  double progress_s = 3;           ///< seconds between progress lines
  double target_accuracy = 0;      ///< time_to_accuracy's target (<= 0: not reported)
};

/// Everything one training run needs, parsed from a Config. `config` is kept for provenance (results.json and
/// checkpoints record it).
struct TrainSpec {
  DataOptions data;
  ModelOptions model;
  LoopOptions loop;
  optim::OptimizerOptions optimizer;
  optim::ScheduleOptions schedule;     ///< swa_steps is filled in by the trainer (it needs steps per epoch)
  gradcomp::ExchangeOptions exchange;  ///< used when workers > 1 or the compressor is not "none"
  ApproxOptions approx;                ///< quantized / approximate-multiplier arithmetic (train/approx_attach.h)
  comm::Network network;               ///< the cost model's network (bandwidth_gbps, latency_us)
  double bandwidth_gbps = 1;           ///< the configured bandwidth as given (results name it "<g>Gbps")
  bool uses_exchange = false;
  io::Config config;
};

/// Parses and checks every key a training run reads (spec strings included: compressor, multiplier,
/// comm_pattern, augment, schedule). Throws frugal::Error naming the key on the first bad value.
TrainSpec parse_train_spec(const io::Config& cfg);

/// "none" | "flip" | "crop" | "crop+flip" with the crop padding and cutout side.
data::Augment parse_augment(const std::string& a, int pad, int cutout);

}  // namespace frugal::train
