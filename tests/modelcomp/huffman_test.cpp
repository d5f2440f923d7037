#include "modelcomp/huffman.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "util/check.h"

using namespace frugal;
using namespace frugal::modelcomp;

namespace {
std::vector<uint8_t> encode(const std::vector<uint32_t>& s, uint32_t alphabet) {
  std::vector<uint8_t> out;
  gradcomp::ByteWriter w(out);
  huffman_encode(s, alphabet, w);
  return out;
}
std::vector<uint32_t> decode(const std::vector<uint8_t>& b) {
  gradcomp::ByteReader r(b.data(), b.size(), "test stream");
  auto s = huffman_decode(r);
  r.expect_end();
  return s;
}
double entropy_bits(const std::vector<uint32_t>& s, uint32_t alphabet) {
  std::vector<double> c(alphabet, 0);
  for (uint32_t v : s) c[v] += 1;
  double h = 0;
  for (double v : c)
    if (v > 0) h -= v * std::log2(v / double(s.size()));
  return h;
}
}  // namespace

TEST_CASE("huffman: round trip of uniform, skewed, single-symbol, empty and sparse large-alphabet streams") {
  std::mt19937 rng(7);
  std::vector<std::pair<std::vector<uint32_t>, uint32_t>> cases;
  {
    std::vector<uint32_t> u(20000);
    for (auto& v : u) v = rng() % 32;
    cases.push_back({u, 32});
  }
  {
    std::geometric_distribution<uint32_t> g(0.3);
    std::vector<uint32_t> s(50000);
    for (auto& v : s) v = std::min<uint32_t>(g(rng), 255);
    cases.push_back({s, 256});
  }
  cases.push_back({std::vector<uint32_t>(1000, 5), 16});
  cases.push_back({{}, 4});
  {
    std::vector<uint32_t> s(3000);
    for (auto& v : s) v = (rng() % 7) * 9000;
    cases.push_back({s, 65536});
  }
  for (auto& [s, a] : cases) {
    CAPTURE(a);
    CAPTURE(s.size());
    auto bytes = encode(s, a);
    CHECK(decode(bytes) == s);
    if (s.size() > 100 && a <= 256) {  // within one bit per symbol of the entropy, never below it
      std::vector<uint64_t> counts(a, 0);
      for (uint32_t v : s) ++counts[v];
      const double payload = double(huffman_payload_bits(counts, huffman_code_lengths(counts)));
      const double h = entropy_bits(s, a);
      CHECK(payload >= h - 1e-6);
      CHECK(payload <= h + double(s.size()));
    }
  }
}

TEST_CASE("huffman: skewed streams compress, code lengths respect the limit") {
  // Fibonacci counts give the deepest unrestricted tree: lengths must be capped
  std::vector<uint64_t> fib(40);
  fib[0] = fib[1] = 1;
  for (size_t i = 2; i < fib.size(); ++i) fib[i] = fib[i - 1] + fib[i - 2];
  auto len = huffman_code_lengths(fib, 12);
  CHECK(*std::max_element(len.begin(), len.end()) <= 12);
  uint64_t kraft = 0;
  for (auto l : len) kraft += uint64_t(1) << (12 - l);
  CHECK(kraft == (uint64_t(1) << 12));  // still a complete code
  std::vector<uint32_t> s;
  for (uint32_t i = 0; i < 9000; ++i) s.push_back(i % 10 == 0 ? 1 + i % 3 : 0);  // 90 % zeros
  auto bytes = encode(s, 4);
  CHECK(bytes.size() < s.size() / 6);  // ~1.2 bits a symbol, not 8
  CHECK(decode(bytes) == s);
}

TEST_CASE("huffman: corrupted and truncated streams are refused with the offset") {
  std::vector<uint32_t> s;
  for (uint32_t i = 0; i < 500; ++i) s.push_back((i * 7) % 13);
  auto good = encode(s, 13);
  for (size_t cut : {size_t(0), size_t(1), size_t(5), good.size() / 2, good.size() - 1}) {
    std::vector<uint8_t> b(good.begin(), good.begin() + long(cut));
    CHECK_THROWS_AS(decode(b), frugal::Error);
  }
  auto bad_len = good;
  bad_len[3] = 30;  // first code length (after alphabet, used count, delta) beyond 24
  CHECK_THROWS_WITH_AS(decode(bad_len), doctest::Contains("test stream"), frugal::Error);
  auto incomplete = good;
  incomplete[3] = 1;  // lengths no longer a complete prefix code
  CHECK_THROWS_WITH_AS(decode(incomplete), doctest::Contains("prefix code"), frugal::Error);
  auto more = good;
  more.push_back(0);  // a trailing byte
  gradcomp::ByteReader r(more.data(), more.size(), "test stream");
  huffman_decode(r);
  CHECK_THROWS_AS(r.expect_end(), frugal::Error);
  CHECK_THROWS_AS(encode({3, 20}, 8), frugal::Error);  // symbol outside the alphabet
}
