#include "comm/cost_model.h"

#include "util/check.h"

namespace frugal::comm {

const char* pattern_name(Pattern p) {
  switch (p) {
    case Pattern::ring_allreduce: return "ring_allreduce";
    case Pattern::allgather: return "allgather";
    case Pattern::parameter_server: return "parameter_server";
  }
  return "?";
}

Pattern parse_pattern(const std::string& s) {
  if (s == "allreduce" || s == "ring_allreduce") return Pattern::ring_allreduce;
  if (s == "allgather") return Pattern::allgather;
  if (s == "ps" || s == "parameter_server") return Pattern::parameter_server;
  FRUGAL_FAIL("unknown communication pattern '", s, "'; expected allreduce, allgather or ps");
}

double comm_seconds(Pattern p, double bytes_per_worker, int world, const Network& net) {
  FRUGAL_CHECK(world >= 1, "cost model: world must be >= 1, got ", world);
  FRUGAL_CHECK(net.bandwidth_bps > 0 && net.latency_s >= 0, "cost model: bandwidth must be > 0 and latency >= 0");
  FRUGAL_CHECK(bytes_per_worker >= 0, "cost model: negative byte count");
  if (world == 1) return 0.0;
  const double W = world, bits = 8.0 * bytes_per_worker;
  switch (p) {
    case Pattern::ring_allreduce: return 2.0 * (W - 1) / W * bits / net.bandwidth_bps + 2.0 * (W - 1) * net.latency_s;
    case Pattern::allgather: return (W - 1) * bits / net.bandwidth_bps + (W - 1) * net.latency_s;
    case Pattern::parameter_server: return 2.0 * W * bits / net.bandwidth_bps + 2.0 * net.latency_s;
  }
  return 0.0;
}

}  // namespace frugal::comm
