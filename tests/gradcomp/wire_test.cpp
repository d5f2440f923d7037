// Wire-format kernels against their scalar twins, and malformed input.
#include "gradcomp/wire.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "isa_paths.h"
#include "util/check.h"

using namespace frugal::gradcomp;
using frugal::testing::for_each_isa;
using frugal::util::Isa;

namespace {
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
}  // namespace

TEST_CASE("varint round trip and rejection of overlong / truncated encodings") {
  std::vector<uint8_t> b;
  ByteWriter w(b);
  const uint64_t vals[] = {0, 1, 127, 128, 300, 1ull << 32, ~0ull};
  for (uint64_t v : vals) w.varint(v);
  ByteReader r(b.data(), b.size(), "test");
  for (uint64_t v : vals) CHECK(r.varint() == v);
  r.expect_end();
  for (uint64_t v : vals) CHECK(varint_size(v) >= 1);
  const uint8_t overlong[] = {0x80, 0x00};
  ByteReader r2(overlong, 2, "test");
  CHECK_THROWS_AS(r2.varint(), frugal::Error);
  const uint8_t trunc[] = {0x80, 0x80};
  ByteReader r3(trunc, 2, "test");
  CHECK_THROWS_AS(r3.varint(), frugal::Error);
  ByteReader r4(trunc, 0, "test");
  CHECK_THROWS_AS(r4.u32(), frugal::Error);
}

TEST_CASE("pack_codes / unpack_codes match the bit-by-bit twin for every width") {
  Rng rng(7);
  for (int width = 1; width <= 32; ++width) {
    for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(33), size_t(1001)}) {
      std::vector<uint32_t> codes(n);
      const uint64_t lim = width == 32 ? (1ull << 32) : (1ull << width);
      for (auto& c : codes) c = uint32_t(rng.below(lim));
      std::vector<uint8_t> a(packed_bytes(n, width) + 1, 0xAB), b(packed_bytes(n, width) + 1, 0xAB);
      pack_codes(codes.data(), n, width, a.data());
      pack_codes_ref(codes.data(), n, width, b.data());
      REQUIRE(a == b);  // including the untouched guard byte
      std::vector<uint32_t> u1(n), u2(n);
      unpack_codes(a.data(), n, width, u1.data());
      unpack_codes_ref(a.data(), n, width, u2.data());
      CHECK(u1 == codes);
      CHECK(u2 == codes);
    }
  }
}

TEST_CASE("sign packing: every SIMD path equals the scalar twin, -0.0 counts as non-negative") {
  for_each_isa([](Isa) {
    Rng rng(3);
    for (size_t n :
         {size_t(1), size_t(7), size_t(8), size_t(9), size_t(15), size_t(16), size_t(17), size_t(100), size_t(4099)}) {
      std::vector<float> x(n);
      for (auto& v : x) v = rng.normal();
      x[0] = -0.0f;
      if (n > 5) x[5] = std::nanf("");  // NaN is not < 0
      std::vector<uint8_t> a((n + 7) / 8), b((n + 7) / 8);
      pack_signs(x.data(), n, a.data());
      pack_signs_ref(x.data(), n, b.data());
      REQUIRE(a == b);
      CHECK(tail_bits_clear(a.data(), n));
      std::vector<float> d1(n), d2(n);
      unpack_signs(a.data(), n, 2.0f, -3.0f, d1.data());
      unpack_signs_ref(a.data(), n, 2.0f, -3.0f, d2.data());
      CHECK(d1 == d2);
      for (size_t i = 0; i < n; ++i) CHECK(d1[i] == (x[i] < 0 ? -3.0f : 2.0f));
    }
  });
}

TEST_CASE("sign packing with sum |x|: every SIMD path gives the scalar twin's bits and sum, exactly") {
  for_each_isa([](Isa) {
    Rng rng(5);
    for (size_t n : {size_t(0), size_t(1), size_t(15), size_t(16), size_t(17), size_t(31), size_t(33), size_t(1000),
                     size_t(4099)}) {
      std::vector<float> x(n);
      // magnitudes over 30 decades, so that double sums of them are inexact and depend on the order of the adds
      for (auto& v : x) v = rng.normal() * std::pow(10.0f, float(int(rng.below(31)) - 15));
      if (n > 0) x[0] = -0.0f;
      std::vector<uint8_t> a((n + 7) / 8 + 1, 0xCD), b((n + 7) / 8 + 1, 0xCD);
      const double sa = pack_signs_sum_abs(x.data(), n, a.data());
      const double sb = pack_signs_sum_abs_ref(x.data(), n, b.data());
      REQUIRE(a == b);  // including the untouched guard byte
      CHECK(sa == sb);
      double plain = 0;
      for (float v : x) plain += std::fabs(v);
      CHECK(sa == doctest::Approx(plain).epsilon(1e-12));
    }
  });
}

TEST_CASE("fp16 conversion: every SIMD path equals the scalar round-to-nearest-even twin") {
  Rng rng(11);
  std::vector<float> x;
  for (int i = 0; i < 5000; ++i) x.push_back(rng.normal() * std::pow(10.0f, float(int(rng.below(12)) - 8)));
  const float inf = std::numeric_limits<float>::infinity();
  for (float v : {0.0f, -0.0f, 65504.0f, 65520.0f, 1e6f, -1e6f, inf, -inf, 5.96e-8f, 2.98e-8f, 2.99e-8f,
                  6.1e-5f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048})
    x.push_back(v);
  for (uint32_t u : {0x7fc00000u, 0xffc00001u, 0x7fa12345u, 0x7f800001u, 0xff9fe000u})  // quiet / signaling NaNs
    x.push_back(from_bits(u));
  for (uint32_t i = 0; i < 2000; ++i) x.push_back(from_bits(uint32_t(rng.next())));  // every exponent, ties
  for_each_isa([&](Isa) {
    for (size_t n : {x.size(), size_t(7), size_t(23)}) {  // and short tails
      std::vector<uint16_t> fast(n);
      f32_to_f16(x.data() + x.size() - n, n, fast.data());
      for (size_t i = 0; i < n; ++i) {
        const float v = x[x.size() - n + i];
        REQUIRE_MESSAGE(fast[i] == f32_to_f16_ref(v), "x=" << v << " bits=" << to_bits(v));
      }
    }
    {  // a large tensor converts in parallel blocks: the same bits at every position (blocks of 2^17)
      const size_t big = (size_t(1) << 18) + 77;
      std::vector<float> xb(big);
      for (size_t i = 0; i < big; ++i) xb[i] = x[(i * 7919) % x.size()];
      std::vector<uint16_t> hb(big);
      f32_to_f16(xb.data(), big, hb.data());
      std::vector<float> back(big);
      f16_to_f32(hb.data(), big, back.data());
      std::vector<uint16_t> bb(big);
      f32_to_bf16(xb.data(), big, bb.data());
      for (size_t i = 0; i < big; ++i) {
        REQUIRE_MESSAGE(hb[i] == f32_to_f16_ref(xb[i]), "i=" << i);
        const float r = f16_to_f32_ref(hb[i]);
        REQUIRE((std::isnan(r) ? std::isnan(back[i]) : std::memcmp(&r, &back[i], 4) == 0));
        REQUIRE(bb[i] == f32_to_bf16(xb[i]));
      }
    }
    std::vector<uint16_t> all(65536);
    for (uint32_t h = 0; h < 65536; ++h) all[h] = uint16_t(h);
    std::vector<float> back(65536);
    f16_to_f32(all.data(), all.size(), back.data());
    for (uint32_t h = 0; h < 65536; ++h) {
      float r = f16_to_f32_ref(uint16_t(h));
      if (std::isnan(r))
        CHECK(std::isnan(back[h]));
      else
        REQUIRE(std::memcmp(&r, &back[h], 4) == 0);
      if (!std::isnan(r)) CHECK(f32_to_f16_ref(r) == h);  // exact round trip for representable values
    }
  });
}

TEST_CASE("bf16 conversion: every SIMD path equals the scalar round-to-nearest-even twin") {
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(bf16_to_f32(f32_to_bf16(3.0f)) == 3.0f);
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
  CHECK(f32_to_bf16(from_bits(0x3f808000u)) == 0x3f80);  // tie, even stays
  CHECK(f32_to_bf16(from_bits(0x3f818000u)) == 0x3f82);  // tie, odd rounds up
  CHECK(f32_to_bf16(from_bits(0x7f7fffffu)) == 0x7f80);  // max float rounds to inf
  CHECK(f32_to_bf16(from_bits(0x7f800001u)) == 0x7fc0);  // signaling NaN with a low payload stays NaN
  Rng rng(12);
  std::vector<float> x;
  for (uint32_t i = 0; i < 20000; ++i) x.push_back(from_bits(uint32_t(rng.next())));  // NaNs, infs, subnormals
  for (uint32_t i = 0; i < 2000; ++i) x.push_back(from_bits((uint32_t(rng.next()) & 0xffff0000u) | 0x8000u));  // ties
  for (uint32_t u : {0x7f800000u, 0xff800000u, 0x7f800001u, 0xffffffffu, 0x80000000u, 0x00008000u, 0x00018000u})
    x.push_back(from_bits(u));
  for_each_isa([&](Isa) {
    for (size_t n : {x.size(), size_t(5), size_t(15), size_t(31)}) {  // and short tails
      const float* src = x.data() + x.size() - n;
      std::vector<uint16_t> h(n);
      f32_to_bf16(src, n, h.data());
      for (size_t i = 0; i < n; ++i) REQUIRE_MESSAGE(h[i] == f32_to_bf16(src[i]), "bits=" << to_bits(src[i]));
      std::vector<float> back(n);
      bf16_to_f32(h.data(), n, back.data());
      for (size_t i = 0; i < n; ++i) REQUIRE(to_bits(back[i]) == uint32_t(h[i]) << 16);
    }
  });
}

TEST_CASE("index blocks pick the smaller of delta-varint and bitmap and reject bad blocks") {
  const size_t n = 1000;
  std::vector<uint32_t> sparse = {3, 17, 999}, dense;
  for (uint32_t i = 0; i < n; i += 2) dense.push_back(i);
  for (auto* idx : {&sparse, &dense}) {
    std::vector<uint8_t> b;
    ByteWriter w(b);
    write_indices(w, idx->data(), idx->size(), n);
    CHECK(b.size() == indices_bytes(idx->data(), idx->size(), n));
    CHECK(b[0] == (idx == &sparse ? 0 : 1));
    ByteReader r(b.data(), b.size(), "idx");
    std::vector<uint32_t> out;
    read_indices(r, n, out);
    r.expect_end();
    CHECK(out == *idx);
  }
  // out-of-range delta
  std::vector<uint8_t> bad = {0, 1, 0xE8, 0x07};  // varint 1000 >= n
  ByteReader r(bad.data(), bad.size(), "idx");
  std::vector<uint32_t> out;
  CHECK_THROWS_AS(read_indices(r, n, out), frugal::Error);
  // bitmap whose count disagrees
  std::vector<uint8_t> bm = {1, 2};
  bm.resize(2 + (n + 7) / 8, 0);
  bm[2] = 1;
  ByteReader r2(bm.data(), bm.size(), "idx");
  CHECK_THROWS_AS(read_indices(r2, n, out), frugal::Error);
  // unknown tag
  std::vector<uint8_t> tag = {7, 0};
  ByteReader r3(tag.data(), tag.size(), "idx");
  CHECK_THROWS_AS(read_indices(r3, n, out), frugal::Error);
}

TEST_CASE("Elias gamma codes round trip") {
  std::vector<uint8_t> b;
  BitWriter w(b);
  for (uint32_t v = 1; v < 300; ++v) elias_gamma_put(w, v);
  w.flush();
  ByteReader owner(b.data(), b.size(), "elias");
  BitReader r(b.data(), b.size(), owner);
  for (uint32_t v = 1; v < 300; ++v) REQUIRE(elias_gamma_get(r) == v);
  std::vector<uint8_t> zeros(8, 0);
  BitReader z(zeros.data(), zeros.size(), owner);
  CHECK_THROWS_AS(elias_gamma_get(z), frugal::Error);
}
