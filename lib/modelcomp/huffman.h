// Canonical Huffman coding of symbol streams (Deep Compression's last stage: quantized weight indices and sparse
// index gaps). Codes are length-limited to kMaxCodeBits; the stream carries its own code table.
//
// Stream (huffman_encode): varint alphabet, varint used-symbol count U, U x (varint symbol delta, u8 code length),
// varint symbol count n, varint payload bytes, payload: each symbol's code, most significant code bit first, in
// the LSB-first bit stream of gradcomp::BitWriter, zero-padded to a byte. A stream whose symbols are all one
// symbol codes it with 1 bit. huffman_decode checks everything (lengths, Kraft sum, symbol range, payload size,
// padding) and names the offset of what is wrong.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gradcomp/wire.h"

namespace frugal::modelcomp {

inline constexpr int kMaxCodeBits = 24;

/// Code lengths (0 = unused) of a canonical Huffman code for these symbol counts, none longer than max_bits: the
/// optimal code when it fits, else counts halved (kept >= 1) until it does.
std::vector<uint8_t> huffman_code_lengths(const std::vector<uint64_t>& counts, int max_bits = kMaxCodeBits);

/// Bits the code with these lengths spends on these counts (payload only).
uint64_t huffman_payload_bits(const std::vector<uint64_t>& counts, const std::vector<uint8_t>& lengths);

/// Appends the self-describing stream of symbols (each < alphabet) to w.
void huffman_encode(const std::vector<uint32_t>& symbols, uint32_t alphabet, gradcomp::ByteWriter& w);
/// Reads one stream written by huffman_encode; throws frugal::Error naming r's source and offset when malformed.
std::vector<uint32_t> huffman_decode(gradcomp::ByteReader& r);

}  // namespace frugal::modelcomp
