// Network cost model: turns counted bytes into communication seconds per step.
#pragma once
#include <cstdint>
#include <string>

namespace frugal::comm {

enum class Pattern {
  ring_allreduce,    ///< 2(W-1)/W * B*8/bw + 2(W-1) * lat (reduce-scatter + allgather; Patarasuk & Yuan 2009)
  allgather,         ///< ring allgather of each worker's B bytes: (W-1) * B*8/bw + (W-1) * lat
  parameter_server,  ///< one server, same link: W workers push B, pull B back: 2 W * B*8/bw + 2 lat
};
const char* pattern_name(Pattern p);
Pattern parse_pattern(const std::string& s);  // "allreduce" | "ring_allreduce" | "allgather" | "ps" | "parameter_server"

struct Network {
  double bandwidth_bps = 1e9;  ///< link bandwidth, bit/s
  double latency_s = 50e-6;    ///< per-message latency, s
};

/// Seconds for one step's exchange of `bytes_per_worker` bytes by each of `world` workers.
/// world == 1 costs 0 (nothing crosses a network).
double comm_seconds(Pattern p, double bytes_per_worker, int world, const Network& net);

}  // namespace frugal::comm
