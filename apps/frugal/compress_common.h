// What frugal compress's modes share (compress_cmd.cpp, compress_lowrank.cpp): the parsed options, the fp32 record,
// the dataset lookup, the interleaved speed measurement and the fine-tuning run.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/tensor_file.h"
#include "modelcomp/deep_compression.h"
#include "modelcomp/lowrank_model.h"
#include "modelcomp/packed.h"
#include "modelcomp/prune.h"
#include "nn/model.h"
#include "train/evaluate.h"

namespace frugal::app {

struct CompressArgs {
  std::string model, out = "runs/compress", dataset, data_dir;
  modelcomp::DeepCompressionOptions o;
  int batch = 500;
  bool no_eval = false;
  int finetune_epochs = 0;
  double finetune_lr = 0.01;
  bool int8 = false;
  int calib_images = 2048;
  double channels = 0;                ///< > 0: structured pruning, this fraction of each prunable layer's channels
  std::string criterion = "magnitude";  ///< magnitude | taylor
  int saliency_batches = 20;          ///< taylor: training batches of 128 the saliency is summed over
  double lowrank = 0;                 ///< > 0: low-rank factorization keeping this energy per layer (lowrank.energy)
  modelcomp::LowRankOptions lowrank_options;  ///< its layers, max rank fraction, min size
};

/// A tensor kept as plain fp32 in the packed file.
modelcomp::PackedTensor dense_record(const std::string& name, const Tensor& t);

/// --dataset, else the dataset named by the model file's training config.
std::string dataset_of(const CompressArgs& a, const nlohmann::json& meta);

/// Median of three interleaved speed measurements of each model (other processes share the machine).
std::pair<train::SpeedMetrics, train::SpeedMetrics> interleaved_speed(nn::Model& a, nn::Model& b);

/// Fine-tunes the model in `init` for a.finetune_epochs under the constraints (pruning masks or shared weights),
/// with the model's own training config (lr, schedule and run length replaced; its val_split kept, so the
/// validation images stay out of the fine-tuning); spec_json: a changed model's own spec file. Returns the
/// fine-tuned tensors.
io::TensorFile finetune(const CompressArgs& a, const io::TensorFile& model, const std::string& init,
                        const std::vector<std::pair<std::string, modelcomp::WeightConstraint>>& constraints,
                        const std::string& out_dir, const std::string& spec_json = "");

/// --lowrank: factorize the model's layers by truncated SVD (modelcomp::factorize_model), fine-tune, pack, and
/// report accuracy (test, and validation when the model was trained with val_split), params, MACs and speed.
void run_lowrank(const CompressArgs& a);

}  // namespace frugal::app
