#include "modelcomp/packed.h"

#include <zlib.h>

#include <cmath>
#include <cstring>

#include "gradcomp/wire.h"
#include "modelcomp/huffman.h"
#include "modelcomp/sparse.h"
#include "util/check.h"

namespace frugal::modelcomp {

namespace {
constexpr char kMagic[8] = {'F', 'R', 'U', 'G', 'A', 'L', 'P', 'K'};
constexpr uint32_t kVersion = 1;

size_t numel_of(const std::vector<int64_t>& dims) {
  size_t n = 1;
  for (int64_t d : dims) {
    FRUGAL_CHECK(d > 0, "packed tensor: dimension ", d, " must be positive");
    n *= size_t(d);
  }
  return n;
}

void put_floats(gradcomp::ByteWriter& w, const std::vector<float>& v) { w.raw(v.data(), 4 * v.size()); }

bool positive_finite(float v) { return std::isfinite(v) && v > 0.f; }

void write_int8(const PackedTensor& t, size_t n, gradcomp::ByteWriter& w) {
  const Int8Weights& q = t.int8;
  FRUGAL_CHECK(q.codes.size() == n, "packed tensor '", t.name, "': ", q.codes.size(), " int8 codes for ", n);
  FRUGAL_CHECK(q.scales.size() == size_t(t.dims[0]), "packed tensor '", t.name, "': ", q.scales.size(),
               " weight scales for ", t.dims[0], " output channels");
  for (float s : q.scales) FRUGAL_CHECK(positive_finite(s), "packed tensor '", t.name, "': weight scale ", s);
  FRUGAL_CHECK(positive_finite(q.src_scale) && (q.dst_scale == 0.f || positive_finite(q.dst_scale)),
               "packed tensor '", t.name, "': activation scales ", q.src_scale, " / ", q.dst_scale);
  w.u8(uint8_t((q.src_unsigned ? 1 : 0) | (q.dst_unsigned ? 2 : 0) | (q.dst_scale == 0.f ? 4 : 0)));
  w.f32(q.src_scale);
  w.f32(q.dst_scale);
  w.varint(q.scales.size());
  put_floats(w, q.scales);
  w.raw(q.codes.data(), n);
}

void write_record(const PackedTensor& t, gradcomp::ByteWriter& w) {
  const size_t n = numel_of(t.dims);
  w.varint(t.name.size());
  w.raw(t.name.data(), t.name.size());
  w.varint(t.dims.size());
  for (int64_t d : t.dims) w.varint(uint64_t(d));
  w.u8(uint8_t(t.encoding));
  switch (t.encoding) {
    case Encoding::dense:
      FRUGAL_CHECK(t.dense.size() == n, "packed tensor '", t.name, "': ", t.dense.size(), " values for ", n);
      put_floats(w, t.dense);
      break;
    case Encoding::shared:
    case Encoding::sparse: {
      FRUGAL_CHECK(t.codes.size() == n, "packed tensor '", t.name, "': ", t.codes.size(), " codes for ", n);
      FRUGAL_CHECK(!t.centroids.empty(), "packed tensor '", t.name, "': empty codebook");
      for (uint32_t c : t.codes) FRUGAL_CHECK(c < t.centroids.size(), "packed tensor '", t.name, "': code ", c,
                                              " outside its codebook of ", t.centroids.size());
      if (t.encoding == Encoding::shared) {
        w.varint(t.centroids.size());
        put_floats(w, t.centroids);
        huffman_encode(t.codes, uint32_t(t.centroids.size()), w);
        break;
      }
      FRUGAL_CHECK(t.centroids[0] == 0.0f, "packed tensor '", t.name, "': a sparse codebook starts with 0.0");
      std::vector<uint32_t> positions;
      for (size_t i = 0; i < n; ++i)
        if (t.codes[i] != 0) positions.push_back(uint32_t(i));
      const RelativeIndices ri = relative_indices(positions, t.index_bits);
      std::vector<uint32_t> values;
      size_t k = 0;
      for (size_t e = 0; e < ri.codes.size(); ++e) values.push_back(ri.filler[e] ? 0 : t.codes[positions[k++]]);
      w.u8(uint8_t(t.index_bits));
      w.varint(t.centroids.size());
      put_floats(w, t.centroids);
      huffman_encode(ri.codes, 1u << t.index_bits, w);
      huffman_encode(values, uint32_t(t.centroids.size()), w);
      break;
    }
    case Encoding::sparse_f32: {
      FRUGAL_CHECK(t.dense.size() == n, "packed tensor '", t.name, "': ", t.dense.size(), " values for ", n);
      std::vector<uint32_t> positions;
      for (size_t i = 0; i < n; ++i)
        if (t.dense[i] != 0.0f) positions.push_back(uint32_t(i));
      const RelativeIndices ri = relative_indices(positions, t.index_bits);
      w.u8(uint8_t(t.index_bits));
      huffman_encode(ri.codes, 1u << t.index_bits, w);
      w.varint(ri.codes.size());
      size_t k = 0;
      for (size_t e = 0; e < ri.codes.size(); ++e) w.f32(ri.filler[e] ? 0.0f : t.dense[positions[k++]]);
      break;
    }
    case Encoding::int8:
      write_int8(t, n, w);
      break;
  }
}

std::vector<float> read_floats(gradcomp::ByteReader& r, uint64_t n) {
  if (n > r.remaining() / 4) r.fail("float array of " + std::to_string(n) + " values runs past the end");
  std::vector<float> v(static_cast<size_t>(n));
  std::memcpy(v.data(), r.take(size_t(4 * n)), size_t(4 * n));
  return v;
}
Int8Weights read_int8(gradcomp::ByteReader& r, const std::string& name, const std::vector<int64_t>& dims,
                      size_t record_at) {
  Int8Weights q;
  q.offset = record_at;
  const uint8_t flags = r.u8();
  if (flags > 7 || ((flags & 4) && (flags & 2)))
    r.fail("int8 tensor '" + name + "': activation flags " + std::to_string(flags));
  q.src_unsigned = flags & 1;
  q.dst_unsigned = flags & 2;
  q.src_scale = r.f32();
  if (!positive_finite(q.src_scale)) r.fail("int8 tensor '" + name + "': input scale " + std::to_string(q.src_scale));
  q.dst_scale = r.f32();
  if ((flags & 4) ? q.dst_scale != 0.f : !positive_finite(q.dst_scale))
    r.fail("int8 tensor '" + name + "': output scale " + std::to_string(q.dst_scale) + " with flags " +
           std::to_string(flags));
  const uint64_t c = r.varint();
  if (c != uint64_t(dims[0]))
    r.fail("int8 tensor '" + name + "': " + std::to_string(c) + " weight scales for " + std::to_string(dims[0]) +
           " output channels");
  q.scales = read_floats(r, c);
  for (float s : q.scales)
    if (!positive_finite(s)) r.fail("int8 tensor '" + name + "': weight scale " + std::to_string(s));
  size_t n = 1;
  for (int64_t d : dims) n *= size_t(d);
  if (n > r.remaining()) r.fail("int8 tensor '" + name + "': weights run past the end");
  const uint8_t* p = r.take(n);
  q.codes.resize(n);
  std::memcpy(q.codes.data(), p, n);
  for (int8_t v : q.codes)
    if (v == -128) r.fail("int8 tensor '" + name + "': weight code -128 (codes are symmetric, -127..127)");
  return q;
}
}  // namespace

const char* encoding_name(Encoding e) {
  switch (e) {
    case Encoding::dense: return "dense";
    case Encoding::shared: return "shared";
    case Encoding::sparse: return "sparse";
    case Encoding::int8: return "int8";
    case Encoding::sparse_f32: return "sparse_f32";
  }
  return "?";
}

bool is_packed(const std::string& bytes) {
  return bytes.size() >= sizeof kMagic && std::memcmp(bytes.data(), kMagic, sizeof kMagic) == 0;
}

PackedBytes encode_packed(const PackedModel& m) {
  std::vector<uint8_t> out;
  gradcomp::ByteWriter w(out);
  w.raw(kMagic, sizeof kMagic);
  w.u32(kVersion);
  const std::string meta = m.meta.dump();
  w.varint(meta.size());
  w.raw(meta.data(), meta.size());
  w.varint(m.tensors.size());
  PackedBytes pb;
  for (const PackedTensor& t : m.tensors) {
    const size_t before = out.size();
    write_record(t, w);
    pb.record_bytes.push_back(out.size() - before);
  }
  const uint32_t crc = uint32_t(crc32(0L, out.data(), uInt(out.size())));
  w.u32(crc);
  pb.file.assign(out.begin(), out.end());
  return pb;
}

UnpackedModel decode_packed(const std::string& bytes, const std::string& path) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  gradcomp::ByteReader r(p, bytes.size(), "packed model '" + path + "'");
  if (bytes.size() < sizeof kMagic + 8 || !is_packed(bytes))
    r.fail("not a packed model (wrong magic or too short); frugal compress writes them");
  const uint32_t stored = [&] {
    uint32_t c;
    std::memcpy(&c, p + bytes.size() - 4, 4);
    return c;
  }();
  if (uint32_t(crc32(0L, p, uInt(bytes.size() - 4))) != stored)
    r.fail("checksum mismatch: the file is corrupted or truncated");
  gradcomp::ByteReader body(p, bytes.size() - 4, "packed model '" + path + "'");
  body.take(sizeof kMagic);
  if (const uint32_t v = body.u32(); v != kVersion)
    body.fail("format version " + std::to_string(v) + ", this frugal reads version " + std::to_string(kVersion));
  UnpackedModel um;
  const uint64_t mlen = body.varint();
  if (mlen > body.remaining()) body.fail("metadata runs past the end");
  const uint8_t* mp = body.take(size_t(mlen));
  try {
    um.meta = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(mp), size_t(mlen)));
  } catch (const nlohmann::json::exception& e) {
    body.fail(std::string("metadata is not JSON: ") + e.what());
  }
  const uint64_t count = body.varint();
  if (count > body.remaining()) body.fail("tensor count " + std::to_string(count) + " is implausible");
  for (uint64_t t = 0; t < count; ++t) {
    const size_t record_at = body.pos();
    const uint64_t nlen = body.varint();
    if (nlen > body.remaining()) body.fail("tensor name runs past the end");
    const uint8_t* np = body.take(size_t(nlen));
    std::string name(reinterpret_cast<const char*>(np), size_t(nlen));
    const uint64_t rank = body.varint();
    if (rank == 0 || rank > 8) body.fail("tensor '" + name + "' has rank " + std::to_string(rank));
    std::vector<int64_t> dims;
    uint64_t n = 1;
    for (uint64_t i = 0; i < rank; ++i) {
      const uint64_t d = body.varint();
      if (d == 0 || d > (uint64_t(1) << 31) || n * d > (uint64_t(1) << 32))
        body.fail("tensor '" + name + "' has an implausible dimension " + std::to_string(d));
      n *= d;
      dims.push_back(int64_t(d));
    }
    const uint8_t enc = body.u8();
    Tensor out(dims);
    float* dst = out.data();
    if (enc == uint8_t(Encoding::dense)) {
      std::vector<float> v = read_floats(body, n);
      std::memcpy(dst, v.data(), 4 * v.size());
    } else if (enc == uint8_t(Encoding::shared) || enc == uint8_t(Encoding::sparse)) {
      uint32_t bits = 0;
      if (enc == uint8_t(Encoding::sparse)) {
        bits = body.u8();
        if (bits < 1 || bits > 16) body.fail("tensor '" + name + "': index field width " + std::to_string(bits));
      }
      const uint64_t k = body.varint();
      if (k == 0 || k > (uint64_t(1) << 16)) body.fail("tensor '" + name + "': codebook of " + std::to_string(k));
      const std::vector<float> cb = read_floats(body, k);
      if (enc == uint8_t(Encoding::shared)) {
        const std::vector<uint32_t> codes = huffman_decode(body);
        if (codes.size() != n) body.fail("tensor '" + name + "': " + std::to_string(codes.size()) + " codes for " +
                                         std::to_string(n) + " weights");
        for (size_t i = 0; i < codes.size(); ++i) {
          if (codes[i] >= k) body.fail("tensor '" + name + "': code outside the codebook");
          dst[i] = cb[codes[i]];
        }
      } else {
        if (cb[0] != 0.0f) body.fail("tensor '" + name + "': a sparse codebook must start with 0.0");
        const std::vector<uint32_t> gaps = huffman_decode(body);
        const std::vector<uint32_t> values = huffman_decode(body);
        if (values.size() != gaps.size()) body.fail("tensor '" + name + "': index and value counts differ");
        for (uint32_t g : gaps)
          if (g >= (1u << bits)) body.fail("tensor '" + name + "': relative index wider than its field");
        std::vector<uint32_t> pos;
        try {
          pos = positions_from_codes(gaps, uint32_t(n));
        } catch (const Error& e) {
          body.fail("tensor '" + name + "': " + e.what());
        }
        std::fill(dst, dst + n, 0.0f);
        for (size_t e = 0; e < pos.size(); ++e) {
          if (values[e] >= k) body.fail("tensor '" + name + "': code outside the codebook");
          dst[pos[e]] = cb[values[e]];
        }
      }
    } else if (enc == uint8_t(Encoding::sparse_f32)) {
      const uint32_t bits = body.u8();
      if (bits < 1 || bits > 16) body.fail("tensor '" + name + "': index field width " + std::to_string(bits));
      const std::vector<uint32_t> gaps = huffman_decode(body);
      for (uint32_t g : gaps)
        if (g >= (1u << bits)) body.fail("tensor '" + name + "': relative index wider than its field");
      if (body.varint() != gaps.size()) body.fail("tensor '" + name + "': index and value counts differ");
      const std::vector<float> values = read_floats(body, gaps.size());
      std::vector<uint32_t> pos;
      try {
        pos = positions_from_codes(gaps, uint32_t(n));
      } catch (const Error& e) {
        body.fail("tensor '" + name + "': " + e.what());
      }
      std::fill(dst, dst + n, 0.0f);
      for (size_t e = 0; e < pos.size(); ++e) dst[pos[e]] = values[e];
    } else if (enc == uint8_t(Encoding::int8)) {
      um.int8.emplace_back(name, read_int8(body, name, dims, record_at));
      const Int8Weights& q = um.int8.back().second;
      const size_t per_channel = n / size_t(dims[0]);
      for (size_t i = 0; i < n; ++i) dst[i] = float(q.codes[i]) * q.scales[i / per_channel];
    } else {
      body.fail("tensor '" + name + "' has unknown encoding " + std::to_string(enc));
    }
    um.tensors.emplace_back(name, std::move(out));
    um.encodings.push_back(Encoding(enc));
  }
  body.expect_end();
  return um;
}

}  // namespace frugal::modelcomp
