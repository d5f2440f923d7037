// The engine of `frugal compress`: runs a recipe (stages.h) on a trained model, measures the model after every
// stage (accuracy on the validation split, which is what recipes are chosen on, and on the test set, which only
// reports; parameters, MACs, nonzero weights, bytes), writes the packed model (packed.h) and compress.json.
//
// The validation split is the one the model was trained with (its config's val_split, drawn with the same fixed
// seed as frugal train, so the images were never trained on); a model trained without one gets 10 % of the training
// images (at most 5000) held out here, and compress.json says that the model has seen them. Fine-tuning,
// Taylor saliency and int8 calibration use the remaining training images only.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "modelcomp/stages.h"

namespace frugal::modelcomp {

struct PipelineOptions {
  std::string model_path;   ///< a model.bin from frugal train (fp32)
  std::string out_dir = "runs/compress";
  std::vector<Stage> stages;
  std::string dataset;      ///< default: the model's
  std::string data_dir;     ///< extra data root (FRUGAL_DATA also works)
  int64_t val_split = -1;   ///< -1: the model's own, else this many training images held out (0: none)
  size_t min_numel = 1024;  ///< prune / share touch conv and linear weights of at least this many elements
  int conv_index_bits = 8;  ///< relative-index field width of pruned conv weights (Deep Compression: 8)
  int fc_index_bits = 5;    ///< ... of pruned linear weights (Deep Compression: 5)
  int saliency_batches = 20;  ///< taylor: training batches of 128 the saliency is summed over
  double finetune_lr = 0.01;  ///< peak learning rate of finetune / gradual stages without their own
  int prune_every = 50;       ///< gradual: optimizer steps between mask updates
  int calib_images = 2048;    ///< int8: training images for the activation ranges
  double lowrank_max_rank_fraction = 1.0;  ///< lowrank: rank <= max(1, floor(fraction min(rows, cols)))
  std::string lowrank_layers = "all";      ///< lowrank: which layers: linear | conv | all
  int64_t lowrank_min_numel = 0;           ///< lowrank: layers with fewer weights stay as they are
  std::string lowrank_conv_split = "kxk_1x1";  ///< lowrank: kxk_1x1 | kx1_1xk (lowrank_model.h)
  /// Training config overrides ("key=value", as frugal train --set) for every finetune / gradual run, applied after
  /// the model's own training config, e.g. {"weight_decay=5e-4", "batch=64", "augment=crop"}.
  std::vector<std::string> finetune_set;
  /// finetune / gradual stages also learn the source model's softened outputs (knowledge distillation: the training
  /// key distill_from set to model_path; distill_temperature and distill_weight through finetune_set).
  bool distill = false;
  bool eval = true;           ///< accuracy after every stage (else only bytes)
  bool speed = true;          ///< batch-1 latency and batch-256 throughput of the source and the packed model
  std::string conv_impl = "first";  ///< fused nets' conv implementations: first | pairs | fastest (deploy_net.h ConvChoice)
  int eval_batch = 500;
  nlohmann::json recipe;      ///< the recipe as given (config file and overrides), recorded in compress.json
  std::function<void(const std::string&)> progress;  ///< progress lines (default: stderr)
};

/// Runs the recipe; writes out_dir/model.packed and out_dir/compress.json (both via a temporary file and a
/// rename) and returns compress.json's content. Fine-tuning runs leave their logs under out_dir/stageN_*.
nlohmann::json run_compress_pipeline(const PipelineOptions& o);

}  // namespace frugal::modelcomp
