// frugal's binary tensor container, used for checkpoints and model files. Data only: loading parses
// numbers and names, it never executes anything.
//
//   offset  size  field
//   0       8     magic "FRUGALTF"
//   8       4     u32 format version (1)
//   12      8     u64 length L of the metadata JSON
//   20      L     metadata JSON (UTF-8): kind ("model" | "checkpoint"), model spec, config, state ...
//   ..      4     u32 number of tensors T
//   then T records: u32 name length, name bytes, u32 rank R, R x i64 dims, u64 byte count (= 4 x numel), f32 data
//   last    4     u32 CRC-32 (zlib) of every byte before it
// All integers little-endian.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace frugal::io {

struct TensorFile {
  nlohmann::json meta;
  std::vector<std::pair<std::string, Tensor>> tensors;  // in file order
  const Tensor* find(const std::string& name) const;
};

std::string encode_tensor_file(const TensorFile& f);
/// Throws frugal::Error naming `path` and the byte offset for a wrong magic, version, truncation,
/// implausible sizes or a checksum mismatch.
TensorFile decode_tensor_file(const std::string& bytes, const std::string& path);
void save_tensor_file(const std::string& path, const TensorFile& f);  // atomic
TensorFile load_tensor_file(const std::string& path);

}  // namespace frugal::io
