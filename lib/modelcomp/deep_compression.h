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

/// Compresses every tensor of `model` (a model file's tensors and metadata). Deterministic.
DeepCompressionResult deep_compress(const io::TensorFile& model, const DeepCompressionOptions& o);

/// A model file of either kind (frugal's tensor container or a packed model) as a TensorFile: packed tensors come
/// back dense (decoded), so the same loader builds and runs both.
io::TensorFile read_model_file(const std::string& path);

}  // namespace frugal::modelcomp
