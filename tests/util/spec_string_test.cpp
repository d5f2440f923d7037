#include "util/spec_string.h"

#include <doctest/doctest.h>

#include "util/check.h"

using namespace frugal::util;

TEST_CASE("spec strings: one tokenizer splits name and fields, refuses empty ones naming the spec") {
  SpecFields f = split_spec("dgc:0.001:clip=5:nomask", "compressor spec");
  CHECK(f.name == "dgc");
  CHECK(f.fields == std::vector<std::string>{"0.001", "clip=5", "nomask"});
  CHECK(split_spec("mitchell", "multiplier spec").fields.empty());
  CHECK(split("0,6", ',') == std::vector<std::string>{"0", "6"});
  CHECK(split("", ',') == std::vector<std::string>{""});
  CHECK_THROWS_WITH_AS(split_spec("drum::4", "multiplier spec"), doctest::Contains("multiplier spec 'drum::4': empty field 2"),
                       frugal::Error);
  CHECK_THROWS_WITH_AS(split_spec("topk:", "compressor spec"), doctest::Contains("empty field 2"), frugal::Error);
  CHECK_THROWS_WITH_AS(split_spec("", "config key 'act_calibration'"), doctest::Contains("act_calibration"),
                       frugal::Error);
  double v = 0;
  CHECK(parse_number("1e-3", v));
  CHECK(v == 1e-3);
  CHECK_FALSE(parse_number("1e-3x", v));
  CHECK_FALSE(parse_number("inf", v));
  CHECK_FALSE(parse_number("", v));
}
