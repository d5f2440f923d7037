// One-shot Deep Compression of a model's tensors (Han et al. 2016 without the fine-tuning between stages):
// magnitude pruning per layer, weight sharing by k-means on the kept weights, relative sparse indices, Huffman
// coding, into a packed model (packed.h). Tensors with fewer than min_numel elements or of rank 1 (biases,
// batch norm) stay dense fp32. Fine-tuning the pruned and shared weights needs the trainer (issue: compress);
// this is the encoding half.
#pragma once
#include <string>
#include <vector>

#include "io/tensor_file.h"
#include "modelcomp/packed.h"

namespace frugal::modelcomp {

struct DeepCompressionOptions {
  double sparsity = 0.9;     ///< fraction of each compressed tensor's weights set to zero (by magnitude)
  int conv_bits = 8;         ///< shared-weight index bits of conv weights (rank 4): 2^bits - 1 centroids + zero
  int fc_bits = 5;           ///< ... of linear weights (rank 2)
  int conv_index_bits = 8;   ///< relative-index field width of conv weights
  int fc_index_bits = 5;     ///< ... of linear weights
  size_t min_numel = 1024;   ///< smaller tensors stay dense
};

struct LayerReport {
  std::string name;
  std::vector<int64_t> dims;
  std::string encoding;
  double sparsity = 0;     ///< fraction of zeros after pruning
  int bits = 32;           ///< value bits (32 for dense)
  size_t fp32_bytes = 0;   ///< 4 x numel
  size_t packed_bytes = 0; ///< the tensor's record in the packed file
};

struct DeepCompressionResult {
  PackedModel packed;
  PackedBytes bytes;
  std::vector<LayerReport> layers;
  size_t fp32_bytes = 0;  ///< 4 x every tensor's numel
};

/// True for the tensors deep_compress compresses: conv (rank 4) and linear (rank 2) weights of at least min_numel.
bool compressible(const Tensor& t, const DeepCompressionOptions& o);

/// Compresses every tensor of `model` (a model file's tensors and metadata). Deterministic.
DeepCompressionResult deep_compress(const io::TensorFile& model, const DeepCompressionOptions& o);

/// A model file of either kind (frugal's tensor container or a packed model) as a TensorFile: packed tensors come
/// back dense (decoded), so the same loader builds and runs both.
io::TensorFile read_model_file(const std::string& path);

}  // namespace frugal::modelcomp

namespace frugal::modelcomp {

/// A constraint on one tensor while a compressed model is fine-tuned (the trainer's after_update hook): pruned
/// weights stay 0, and with shared weights each cluster's weights are set to their mean after every update, so
/// every step moves each shared value by the mean of its members' updates (Deep Compression fine-tunes the
/// centroids with their members' summed gradients; the mean is the same direction, scaled per cluster).
struct WeightConstraint {
  std::vector<uint8_t> keep;       ///< (n) 0 = pruned; empty: no pruning
  std::vector<uint32_t> cluster;   ///< (n) shared-value cluster of each weight, 0 = pruned; empty: not shared
  uint32_t clusters = 0;           ///< number of cluster ids (including 0)
};
void apply_constraint(const WeightConstraint& c, float* w, size_t n);

/// The pruning masks deep_compress would apply: one per tensor it compresses (by name), others absent.
std::vector<std::pair<std::string, WeightConstraint>> pruning_constraints(const io::TensorFile& model,
                                                                          const DeepCompressionOptions& o);
/// The shared-weight clusters of a compression result: one per sparse tensor (codes as clusters).
std::vector<std::pair<std::string, WeightConstraint>> sharing_constraints(const DeepCompressionResult& r);

}  // namespace frugal::modelcomp
