// Memory-bound passes over large tensors (DGC's fused update, the sparse decode's zero fill, the fp16 / bf16
// conversions), which one core cannot run at memory speed: [0, n) is cut into blocks run in parallel with TBB.
#pragma once
#include <algorithm>
#include <cstddef>

#include <tbb/parallel_for.h>

namespace frugal::gradcomp {

/// How many blocks of `block` elements for_each_block cuts n into: 1 (the whole range, serially) below two blocks.
inline size_t block_count(size_t n, size_t block) { return n < 2 * block ? 1 : (n + block - 1) / block; }

/// Calls f(b, begin, length) for each of the block_count(n, block) blocks b: one serial call for [0, n) below two
/// blocks, else the blocks in parallel (TBB), the last one partial.
template <class F>
void for_each_block(size_t n, size_t block, F&& f) {
  const size_t blocks = block_count(n, block);
  if (blocks == 1) return f(size_t(0), size_t(0), n);
  tbb::parallel_for(size_t(0), blocks, [&](size_t b) {
    const size_t lo = b * block;
    f(b, lo, std::min(block, n - lo));
  });
}

}  // namespace frugal::gradcomp
