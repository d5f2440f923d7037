#include <doctest/doctest.h>

#include <string>

#include "data/dataset.h"
#include "fixtures.h"
#include "util/check.h"

using namespace frugal::data;

TEST_CASE("sha256: FIPS 180-4 test vectors") {
  CHECK(sha256_bytes("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_bytes("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  CHECK(m448.size() * 8 == 448);
  CHECK(sha256_bytes(m448.data(), m448.size()) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  CHECK(sha256_bytes(million.data(), million.size()) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("sha256_file equals sha256_bytes around block and padding boundaries") {
  testing::TempDir dir;
  for (size_t n : {0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, (1 << 20) + 3}) {
    std::vector<uint8_t> bytes(n);
    for (size_t i = 0; i < n; ++i) bytes[i] = uint8_t(i * 31 + 7);
    testing::write_file(dir / "f.bin", bytes);
    CAPTURE(n);
    CHECK(sha256_file(dir / "f.bin") == sha256_bytes(bytes.data(), bytes.size()));
  }
  CHECK_THROWS_WITH_AS(sha256_file(dir / "nope.bin"), doctest::Contains("nope.bin"), frugal::Error);
}
