#include <doctest/doctest.h>

#include "comm/cost_model.h"
#include "util/check.h"

using namespace frugal::comm;

TEST_CASE("cost model: worked example") {
  // ResNet-20 (0.27M params) dense fp32: 1.08 MB per worker per step, 8 workers, 1 Gbit/s, 50 us.
  Network net{1e9, 50e-6};
  const double B = 1.08e6;
  // ring: 2*7/8 * 8.64e6 bit / 1e9 + 14 * 50e-6 = 0.01512 + 0.0007 = 0.01582 s
  CHECK(comm_seconds(Pattern::ring_allreduce, B, 8, net) == doctest::Approx(0.01582));
  // allgather of a 1080-byte DGC message (1000x smaller): 7 * 8640 / 1e9 + 7 * 50e-6 = 0.00041048 s
  CHECK(comm_seconds(Pattern::allgather, B / 1000, 8, net) == doctest::Approx(0.00041048));
  // parameter server: 2 * 8 * 8.64e6 / 1e9 + 2 * 50e-6 = 0.13834 s
  CHECK(comm_seconds(Pattern::parameter_server, B, 8, net) == doctest::Approx(0.13834));
  CHECK(comm_seconds(Pattern::ring_allreduce, B, 1, net) == 0.0);
  CHECK(parse_pattern("ps") == Pattern::parameter_server);
  CHECK_THROWS_AS(parse_pattern("mesh"), frugal::Error);
  CHECK_THROWS_AS(comm_seconds(Pattern::allgather, B, 0, net), frugal::Error);
}
