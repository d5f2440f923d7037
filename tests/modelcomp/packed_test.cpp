#include "modelcomp/packed.h"

#include <doctest/doctest.h>

#include <zlib.h>

#include <cstring>
#include <random>

#include "util/check.h"

using namespace frugal;
using namespace frugal::modelcomp;

namespace {
PackedModel sample_model() {
  std::mt19937 rng(9);
  std::normal_distribution<float> g(0.f, 0.1f);
  PackedModel m;
  m.meta = {{"kind", "packed-model"}, {"spec", {{"layers", 3}}}};
  PackedTensor dense{"fc.bias", {10}, Encoding::dense, {}, {}, {}, 4};
  for (int i = 0; i < 10; ++i) dense.dense.push_back(g(rng));
  PackedTensor shared{"conv1.weight", {6, 1, 5, 5}, Encoding::shared, {}, {-0.2f, -0.05f, 0.05f, 0.2f}, {}, 4};
  for (int i = 0; i < 150; ++i) shared.codes.push_back(uint32_t(rng() % 4));
  PackedTensor sparse{"fc.weight", {10, 300}, Encoding::sparse, {}, {0.0f, -0.3f, -0.1f, 0.1f, 0.3f}, {}, 4};
  for (int i = 0; i < 3000; ++i) sparse.codes.push_back(rng() % 10 == 0 ? 1 + uint32_t(rng() % 4) : 0);
  sparse.codes[2999] = 2;  // a nonzero at the very end, after a long gap run
  m.tensors = {dense, shared, sparse};
  return m;
}

void refresh_crc(std::string& b) {
  const uint32_t crc = uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(b.data()), uInt(b.size() - 4)));
  std::memcpy(b.data() + b.size() - 4, &crc, 4);
}
}  // namespace

TEST_CASE("packed model: every encoding round-trips bit for bit and sparse + shared is small") {
  PackedModel m = sample_model();
  PackedBytes pb = encode_packed(m);
  CHECK(is_packed(pb.file));
  REQUIRE(pb.record_bytes.size() == 3);
  UnpackedModel u = decode_packed(pb.file, "mem");
  CHECK(u.meta == m.meta);
  REQUIRE(u.tensors.size() == 3);
  CHECK(u.tensors[0].first == "fc.bias");
  CHECK(std::memcmp(u.tensors[0].second.data(), m.tensors[0].dense.data(), 40) == 0);
  for (size_t t = 1; t < 3; ++t) {
    const PackedTensor& p = m.tensors[t];
    CHECK(u.tensors[t].second.dims() == p.dims);
    for (size_t i = 0; i < p.codes.size(); ++i) REQUIRE(u.tensors[t].second.data()[i] == p.centroids[p.codes[i]]);
  }
  CHECK(u.encodings == std::vector<Encoding>{Encoding::dense, Encoding::shared, Encoding::sparse});
  // 3000 fp32 weights are 12000 bytes; ~10 % nonzero at 4-bit gaps and 2-bit values take a small fraction
  CHECK(pb.record_bytes[2] < 12000 / 10);
  CHECK(pb.record_bytes[1] < 150);  // 2-bit codes of 150 weights (38 bytes) + name, codebook, table; fp32: 600
}

TEST_CASE("packed model: corrupted, truncated, wrong-magic and wrong-version files are refused") {
  const std::string good = encode_packed(sample_model()).file;
  std::string flip = good;
  flip[good.size() / 2] ^= 0x10;
  CHECK_THROWS_WITH_AS(decode_packed(flip, "m.pk"), doctest::Contains("checksum"), frugal::Error);
  for (size_t cut : {size_t(3), size_t(12), good.size() / 2, good.size() - 1}) {
    CHECK_THROWS_WITH_AS(decode_packed(good.substr(0, cut), "m.pk"), doctest::Contains("m.pk"), frugal::Error);
  }
  std::string magic = good;
  magic[0] = 'X';
  CHECK_THROWS_WITH_AS(decode_packed(magic, "m.pk"), doctest::Contains("not a packed model"), frugal::Error);
  std::string version = good;
  version[8] = 7;
  refresh_crc(version);
  CHECK_THROWS_WITH_AS(decode_packed(version, "m.pk"), doctest::Contains("format version 7"), frugal::Error);
  // a well-formed checksum over an inconsistent record: the unknown encoding is named with its offset
  PackedModel m = sample_model();
  m.tensors.resize(1);
  std::string one = encode_packed(m).file;
  const size_t enc_at = one.size() - 4 - 40 - 1;  // the u8 before the 10 dense floats
  REQUIRE(uint8_t(one[enc_at]) == 0);
  one[enc_at] = 9;
  refresh_crc(one);
  CHECK_THROWS_WITH_AS(decode_packed(one, "m.pk"), doctest::Contains("unknown encoding 9"), frugal::Error);
  CHECK_THROWS_WITH_AS(decode_packed(one, "m.pk"), doctest::Contains("offset"), frugal::Error);
  PackedModel bad = sample_model();
  bad.tensors[2].centroids[0] = 0.5f;
  CHECK_THROWS_WITH_AS(encode_packed(bad), doctest::Contains("starts with 0.0"), frugal::Error);
}

#include "modelcomp/deep_compression.h"

TEST_CASE("deep compression: constraints keep pruned weights at 0 and each cluster at its mean, packing is lossless") {
  WeightConstraint c;
  c.keep = {1, 0, 1, 1, 0, 1};
  std::vector<float> w = {0.5f, 0.3f, -0.2f, 0.1f, -0.7f, 0.4f};
  apply_constraint(c, w.data(), w.size());
  CHECK(w == std::vector<float>{0.5f, 0.f, -0.2f, 0.1f, 0.f, 0.4f});
  WeightConstraint s;
  s.cluster = {1, 0, 2, 2, 0, 1};
  s.clusters = 3;
  apply_constraint(s, w.data(), w.size());
  CHECK(w[0] == doctest::Approx(0.45f));
  CHECK(w[5] == w[0]);
  CHECK(w[2] == doctest::Approx(-0.05f));
  CHECK(w[1] == 0.f);
  // a model whose weights already take a few shared values compresses losslessly
  io::TensorFile f;
  f.meta = {{"spec", "x"}};
  Tensor t({32, 64});
  for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = i % 3 == 0 ? 0.0f : (i % 3 == 1 ? 0.25f : -0.5f);
  f.tensors.emplace_back("fc.weight", t);
  DeepCompressionOptions o;
  o.sparsity = 1.0 / 3;
  DeepCompressionResult r = deep_compress(f, o);
  UnpackedModel u = decode_packed(r.bytes.file, "mem");
  for (int64_t i = 0; i < t.size(); ++i) REQUIRE(u.tensors[0].second.data()[i] == t.data()[i]);
  CHECK(r.layers[0].encoding == "sparse");
  CHECK(r.layers[0].sparsity == doctest::Approx(1.0 / 3).epsilon(0.01));
}

TEST_CASE("packed model: sparse_f32 stores the nonzeros and their relative indices, bit for bit") {
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.f, 0.1f);
  PackedModel m;
  m.meta = {{"kind", "packed-model"}};
  PackedTensor t{"fc.weight", {20, 300}, Encoding::sparse_f32, {}, {}, {}, 5};
  for (int i = 0; i < 6000; ++i) t.dense.push_back(rng() % 10 == 0 ? g(rng) : 0.0f);
  t.dense[5999] = 0.25f;  // the very end, after gaps longer than a 5-bit field (fillers)
  for (int i = 100; i < 200; ++i) t.dense[i] = 0.0f;
  m.tensors = {t};
  const PackedBytes pb = encode_packed(m);
  const UnpackedModel u = decode_packed(pb.file, "mem");
  REQUIRE(u.tensors.size() == 1);
  CHECK(u.encodings[0] == Encoding::sparse_f32);
  CHECK(std::memcmp(u.tensors[0].second.data(), t.dense.data(), 4 * t.dense.size()) == 0);
  // ~10 % of 6000 values at 4 bytes each plus Huffman-coded gaps: well under the 24000 dense bytes / 7
  CHECK(pb.record_bytes[0] < 24000 / 7);
  // a truncated value array is refused with the offset
  std::string cut = pb.file.substr(0, pb.file.size() - 40);
  cut += std::string(4, '\0');
  refresh_crc(cut);
  CHECK_THROWS_WITH_AS(decode_packed(cut, "cut.packed"), doctest::Contains("cut.packed"), Error);
}
