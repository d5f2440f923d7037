#include "io/tensor_file.h"

#include <zlib.h>

#include <cstring>

#include "io/files.h"
#include "util/check.h"

namespace frugal::io {

namespace {
constexpr char kMagic[8] = {'F', 'R', 'U', 'G', 'A', 'L', 'T', 'F'};
constexpr uint32_t kVersion = 1;

template <typename T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

struct Reader {
  const std::string& b;
  const std::string& path;
  size_t off = 0;
  size_t end;
  void need(size_t n, const char* what) {
    FRUGAL_CHECK(off + n <= end && off + n >= off, "'", path, "' is truncated or corrupt: reading ", what,
                 " needs ", n, " bytes at byte offset ", off, " but only ", end - std::min(off, end),
                 " remain (re-create the file)");
  }
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, b.data() + off, sizeof(T));
    off += sizeof(T);
    return v;
  }
};
}  // namespace

const Tensor* TensorFile::find(const std::string& name) const {
  for (auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

std::string encode_tensor_file(const TensorFile& f) {
  std::string s(kMagic, 8);
  put<uint32_t>(s, kVersion);
  std::string meta = f.meta.dump();
  put<uint64_t>(s, meta.size());
  s += meta;
  put<uint32_t>(s, static_cast<uint32_t>(f.tensors.size()));
  for (auto& [name, t] : f.tensors) {
    put<uint32_t>(s, static_cast<uint32_t>(name.size()));
    s += name;
    put<uint32_t>(s, static_cast<uint32_t>(t.ndim()));
    for (auto d : t.dims()) put<int64_t>(s, d);
    uint64_t nb = static_cast<uint64_t>(t.size()) * 4;
    put<uint64_t>(s, nb);
    s.append(reinterpret_cast<const char*>(t.data()), nb);
  }
  uint32_t crc = static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size())));
  put<uint32_t>(s, crc);
  return s;
}

TensorFile decode_tensor_file(const std::string& b, const std::string& path) {
  FRUGAL_CHECK(b.size() >= 8 + 4 + 8 + 4 + 4, "'", path, "' is too short (", b.size(),
               " bytes) to be a frugal model or checkpoint file");
  FRUGAL_CHECK(std::memcmp(b.data(), kMagic, 8) == 0, "'", path,
               "' is not a frugal model/checkpoint file: wrong magic at byte offset 0 (expected \"FRUGALTF\")");
  Reader r{b, path, 8, b.size() - 4};
  uint32_t version = r.get<uint32_t>("version");
  FRUGAL_CHECK(version == kVersion, "'", path, "': unsupported format version ", version, " at byte offset 8 (this frugal reads version ", kVersion, ")");
  uint32_t stored_crc;
  std::memcpy(&stored_crc, b.data() + b.size() - 4, 4);
  uint32_t crc = static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(b.data()), static_cast<uInt>(b.size() - 4)));
  FRUGAL_CHECK(crc == stored_crc, "'", path, "': checksum mismatch (stored ", stored_crc, ", computed ", crc,
               "): the file is truncated or corrupt");
  TensorFile f;
  uint64_t ml = r.get<uint64_t>("metadata length");
  r.need(ml, "metadata");
  try {
    f.meta = nlohmann::json::parse(b.substr(r.off, ml));
  } catch (const std::exception& e) {
    FRUGAL_FAIL("'", path, "': metadata at byte offset ", r.off, " is not valid JSON: ", e.what());
  }
  r.off += ml;
  uint32_t nt = r.get<uint32_t>("tensor count");
  for (uint32_t i = 0; i < nt; ++i) {
    uint32_t nl = r.get<uint32_t>("tensor name length");
    FRUGAL_CHECK(nl < 4096, "'", path, "': implausible tensor name length ", nl, " at byte offset ", r.off - 4);
    r.need(nl, "tensor name");
    std::string name = b.substr(r.off, nl);
    r.off += nl;
    uint32_t rank = r.get<uint32_t>("tensor rank");
    FRUGAL_CHECK(rank >= 1 && rank <= 5, "'", path, "': tensor '", name, "' has invalid rank ", rank, " at byte offset ", r.off - 4);
    Dims dims;
    for (uint32_t k = 0; k < rank; ++k) {
      int64_t d = r.get<int64_t>("tensor dims");
      FRUGAL_CHECK(d >= 0 && d < (int64_t(1) << 32), "'", path, "': tensor '", name, "' has invalid dim ", d);
      dims.push_back(d);
    }
    uint64_t nb = r.get<uint64_t>("tensor byte count");
    FRUGAL_CHECK(nb == static_cast<uint64_t>(numel(dims)) * 4, "'", path, "': tensor '", name, "' byte count ", nb,
                 " does not match its dims ", dims_str(dims), " at byte offset ", r.off - 8);
    r.need(nb, "tensor data");
    Tensor t(dims);
    std::memcpy(t.data(), b.data() + r.off, nb);
    r.off += nb;
    f.tensors.emplace_back(name, std::move(t));
  }
  FRUGAL_CHECK(r.off == r.end, "'", path, "': ", r.end - r.off, " unexpected bytes after the last tensor at byte offset ", r.off);
  return f;
}

void save_tensor_file(const std::string& path, const TensorFile& f) { write_file_atomic(path, encode_tensor_file(f)); }

TensorFile load_tensor_file(const std::string& path) { return decode_tensor_file(read_file(path), path); }

}  // namespace frugal::io
