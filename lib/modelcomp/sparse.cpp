#include "modelcomp/sparse.h"

#include "util/check.h"

namespace frugal::modelcomp {

RelativeIndices relative_indices(const std::vector<uint32_t>& positions, int bits) {
  FRUGAL_CHECK(bits >= 1 && bits <= 16, "relative indices: field width ", bits, " not in [1, 16]");
  const uint64_t span = uint64_t(1) << bits;  // largest distance a field holds
  RelativeIndices r;
  int64_t prev = -1;
  for (uint32_t p : positions) {
    FRUGAL_CHECK(int64_t(p) > prev, "relative indices: positions must be ascending and distinct (", p, " after ",
                 prev, ")");
    uint64_t gap = uint64_t(int64_t(p) - prev);
    while (gap > span) {  // filler at the farthest reachable position
      r.codes.push_back(uint32_t(span - 1));
      r.filler.push_back(1);
      ++r.fillers;
      prev += int64_t(span);
      gap -= span;
    }
    r.codes.push_back(uint32_t(gap - 1));
    r.filler.push_back(0);
    prev = p;
  }
  return r;
}

std::vector<uint32_t> positions_from_codes(const std::vector<uint32_t>& codes, uint32_t size) {
  std::vector<uint32_t> out;
  out.reserve(codes.size());
  int64_t prev = -1;
  for (size_t i = 0; i < codes.size(); ++i) {
    prev += int64_t(codes[i]) + 1;
    FRUGAL_CHECK(prev < int64_t(size), "sparse entry ", i, " lands at position ", prev, ", past the tensor's ", size,
                 " elements (corrupt index stream)");
    out.push_back(uint32_t(prev));
  }
  return out;
}

}  // namespace frugal::modelcomp
