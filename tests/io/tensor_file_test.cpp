#include <doctest/doctest.h>

#include "io/tensor_file.h"
#include "util/check.h"

using namespace frugal;

TEST_CASE("tensor file: round trip and every corruption rejected with an offset") {
  io::TensorFile f;
  f.meta = {{"kind", "model"}, {"x", 1}};
  Tensor a({2, 3});
  for (int i = 0; i < 6; ++i) a.data()[i] = 0.5f * i;
  f.tensors.emplace_back("w", a);
  std::string bytes = io::encode_tensor_file(f);
  io::TensorFile g = io::decode_tensor_file(bytes, "t.bin");
  CHECK(g.meta == f.meta);
  REQUIRE(g.find("w"));
  CHECK(g.find("w")->dims() == Dims{2, 3});
  CHECK(g.find("w")->data()[5] == 2.5f);

  std::string bad = bytes;
  bad[0] = 'X';
  CHECK_THROWS_WITH_AS(io::decode_tensor_file(bad, "t.bin"), doctest::Contains("wrong magic"), Error);
  CHECK_THROWS_WITH_AS(io::decode_tensor_file(bytes.substr(0, bytes.size() - 7), "t.bin"), doctest::Contains("t.bin"), Error);
  bad = bytes;
  bad[bytes.size() - 10] ^= 1;
  CHECK_THROWS_WITH_AS(io::decode_tensor_file(bad, "t.bin"), doctest::Contains("checksum mismatch"), Error);
  CHECK_THROWS_AS(io::decode_tensor_file("short", "t.bin"), Error);
  CHECK_THROWS_WITH_AS(io::load_tensor_file("/nonexistent/x.bin"), doctest::Contains("/nonexistent/x.bin"), Error);
}
