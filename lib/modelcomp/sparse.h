// Sparse weights as Deep Compression stores them (Han et al. 2016, sec. 2): the positions of the nonzeros as
// relative indices, each the distance from the previous one in a fixed number of bits; a distance too large for
// the field inserts a filler entry (a zero weight) at the largest distance the field holds.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace frugal::modelcomp {

struct RelativeIndices {
  std::vector<uint32_t> codes;       ///< per stored entry: distance - 1, in [0, 2^bits - 1]
  std::vector<uint8_t> filler;       ///< per stored entry: 1 for a filler (its weight is zero), 0 for a real nonzero
  size_t fillers = 0;
};

/// Relative indices of ascending, distinct `positions` (the first distance counts from position -1), with
/// `bits`-bit fields (1..16).
RelativeIndices relative_indices(const std::vector<uint32_t>& positions, int bits);

/// The positions of every stored entry (fillers included) from the codes: p_i = p_{i-1} + code_i + 1, p_{-1} = -1.
/// Throws frugal::Error when a position would reach `size` (the tensor's element count).
std::vector<uint32_t> positions_from_codes(const std::vector<uint32_t>& codes, uint32_t size);

}  // namespace frugal::modelcomp
