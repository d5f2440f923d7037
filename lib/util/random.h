// Counter-based seeding: splitmix64 (Steele, Lea & Flood, OOPSLA 2014). Streams derived from (seed, counters)
// only, so results do not depend on thread count, prefetching or where a run was resumed.
#pragma once
#include <cstdint>

namespace frugal {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace frugal
