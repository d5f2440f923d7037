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
// Every count, index and length is checked against the tensor's size; a wrong magic, version, checksum, a
// truncation or an inconsistent field is an error naming the file and the byte offset.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace frugal::modelcomp {

enum class Encoding : uint8_t { dense = 0, shared = 1, sparse = 2 };
const char* encoding_name(Encoding e);

/// One tensor to pack. shared / sparse: `codes` (numel) index `centroids`; for sparse, centroid 0 must be 0.0 and
/// entries with code 0 are the pruned ones. dense: `dense` holds the values.
struct PackedTensor {
  std::string name;
  std::vector<int64_t> dims;
  Encoding encoding = Encoding::dense;
  std::vector<float> dense;
  std::vector<float> centroids;
  std::vector<uint32_t> codes;
  int index_bits = 4;  ///< sparse: relative-index field width
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

/// Decodes a packed file into dense tensors (in file order) and its metadata.
struct UnpackedModel {
  nlohmann::json meta;
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::vector<Encoding> encodings;
};
UnpackedModel decode_packed(const std::string& bytes, const std::string& path);

/// True when bytes start with the packed magic (evaluate decides which loader to use).
bool is_packed(const std::string& bytes);

}  // namespace frugal::modelcomp
