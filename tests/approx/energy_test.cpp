#include <doctest/doctest.h>

#include "approx/energy.h"
#include "approx/multiplier.h"
#include "util/check.h"

using namespace frugal::approx;

TEST_CASE("energy of a worked example") {
  // resnet20 stage-1 conv: 3x3, 16->16, 32x32, one image
  int64_t macs = conv_macs(1, 32, 32, 16, 16, 3, 3, 1);
  CHECK(macs == 2359296);
  auto drum = make_multiplier("drum:4:power=0.5");
  std::vector<LayerCost> layers = {{"conv_fp32", macs, "fp32", "exact", 1.0},
                                   {"conv_fp16", macs, "fp16", "exact", 1.0},
                                   {"conv_int8_drum", macs, "int8", drum->name(), drum->relative_power},
                                   {"conv_int4", macs, "int4", "exact", 1.0}};
  auto j = energy_report(layers);
  CHECK(j["layers"][0]["energy_pj"].get<double>() == doctest::Approx(2359296 * 4.6));   // 3.7 + 0.9
  CHECK(j["layers"][1]["energy_pj"].get<double>() == doctest::Approx(2359296 * 1.5));   // 1.1 + 0.4
  CHECK(j["layers"][2]["energy_pj"].get<double>() == doctest::Approx(2359296 * 0.2));   // 0.2*0.5 + 0.1
  CHECK(j["layers"][3]["energy_pj"].get<double>() == doctest::Approx(2359296 * 0.15));  // 0.2/4 + 0.1
  CHECK(j["total_pj"].get<double>() == doctest::Approx(2359296 * (4.6 + 1.5 + 0.2 + 0.15)));
  CHECK(j["total_macs"].get<int64_t>() == 4 * macs);
  // per-layer widths: 4-bit weights x 6-bit activations = a 4x6 partial-product array
  auto k = energy_report({{"w4a6", macs, "int4x6", "exact", 1.0}, {"w8a8", macs, "int8x8", "exact", 1.0}});
  CHECK(k["layers"][0]["mul_pj"].get<double>() == doctest::Approx(0.2 * 4 * 6 / 64.0));
  CHECK(k["layers"][1]["energy_pj"].get<double>() == doctest::Approx(2359296 * 0.3));
  for (const char* bad : {"bf17", "int4x", "int4x1", "intx4", "int4y6", "int4x6x2"})
    CHECK_THROWS_AS(energy_report({{"x", 1, bad, "exact", 1.0}}), frugal::Error);
  CHECK_THROWS_AS(energy_report({{"x", 1, "int1", "exact", 1.0}}), frugal::Error);
}
