// The packed model file `frugal compress` writes and `frugal evaluate` reads: per tensor the smallest of a few
// encodings, a checksum, data only (loading parses numbers and names, never executes anything).
//
//   offset  field
//   0       magic "FRUGALPK" (8 bytes)
//   8       u32 format version (1)
//   12      varint length L, then L bytes of metadata JSON (kind "packed-model", model spec, config, compression log)
//   ..      varint tensor count T, then T records:
//             varint name length, name; varint rank R, R varint dims; u8 encoding; the encoding's body
//   last    u32 CRC-32 (zlib) of every byte before it
//
// Encodings (the body after the u8):
//   dense   (0)  numel f32
//   shared  (1)  varint k, k f32 centroids; Huffman stream (huffman.h) of numel centroid indices
//   sparse  (2)  u8 index bits b; varint k, k f32 centroids (index 0 is 0.0: fillers and pruned weights);
//                Huffman stream of the relative-index codes (sparse.h) and one of the entries' centroid indices
//   sparse_f32 (4)  u8 index bits b; Huffman stream of the relative-index codes (sparse.h); varint E, then E f32
//                values, one per stored entry (0 for fillers): pruned but not shared weights
//   int8    (3)  u8 activation flags (bit 0: input codes unsigned, bit 1: output codes unsigned, bit 2: output f32);
//                f32 input scale, f32 output scale (0 with an f32 output); varint C (= dims[0]) then C f32 per-output-
//                channel weight scales; numel s8 weights (value = code x its channel's scale). The layer runs on
//                oneDNN's int8 convolution / inner product (deploy_net.h); the activation scales were calibrated.
// Low-rank factors (compress --lowrank, lowrank_model.h) need no encoding of their own: the factorized model's spec
// (in the metadata) has two layers where the source had one, and the factors are those layers' weights, stored as
// ordinary records (dense today; any encoding above applies) at their real shapes, e.g. a linear (300, 784) at rank
// 40 (layer 1 of mlp) as "1.weight" (40, 784), then "2.weight" (300, 40) and "2.bias" (300).
// Every count, index and length is checked against the tensor's size; a wrong magic, version, checksum, a
// truncation or an inconsistent field is an error naming the file and the byte offset.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace frugal::modelcomp {

enum class Encoding : uint8_t { dense = 0, shared = 1, sparse = 2, int8 = 3, sparse_f32 = 4 };
const char* encoding_name(Encoding e);

/// An int8 layer's weights and activation scales (real value = code x scale; codes symmetric, zero point 0).
struct Int8Weights {
  std::vector<int8_t> codes;     ///< numel, in the tensor's plain layout
  std::vector<float> scales;     ///< dims[0]: one per output channel, > 0
  float src_scale = 0.f;         ///< input activation scale, > 0
  float dst_scale = 0.f;         ///< output activation scale, > 0; 0 when the output stays f32 (logits)
  bool src_unsigned = false;     ///< input codes u8 (after a ReLU) rather than s8
  bool dst_unsigned = false;     ///< output codes u8
  size_t offset = 0;             ///< decoding: byte offset of the record in its file (for errors)
};

/// One tensor to pack. shared / sparse: `codes` (numel) index `centroids`; for sparse, centroid 0 must be 0.0 and
/// entries with code 0 are the pruned ones. dense: `dense` holds the values. sparse_f32: `dense` holds the values,
/// zeros are the pruned weights (only the nonzeros and their relative indices are stored).
struct PackedTensor {
  std::string name;
  std::vector<int64_t> dims;
  Encoding encoding = Encoding::dense;
  std::vector<float> dense;
  std::vector<float> centroids;
  std::vector<uint32_t> codes;
  int index_bits = 4;  ///< sparse: relative-index field width
  Int8Weights int8;    ///< int8: codes, scales and activation scales
};

struct PackedModel {
  nlohmann::json meta;
  std::vector<PackedTensor> tensors;
};

/// Bytes of the file and, per tensor, the bytes of its record (name, dims, encoding and body).
struct PackedBytes {
  std::string file;
  std::vector<size_t> record_bytes;
};
PackedBytes encode_packed(const PackedModel& m);

/// Decodes a packed file into dense tensors (in file order) and its metadata. int8 tensors come back dequantized
/// in `tensors` and as they are stored in `int8` (by tensor name).
struct UnpackedModel {
  nlohmann::json meta;
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::vector<Encoding> encodings;
  std::vector<std::pair<std::string, Int8Weights>> int8;
};
UnpackedModel decode_packed(const std::string& bytes, const std::string& path);

/// True when bytes start with the packed magic (evaluate decides which loader to use).
bool is_packed(const std::string& bytes);

}  // namespace frugal::modelcomp
