#include "modelcomp/huffman.h"

#include <algorithm>
#include <queue>

#include "util/check.h"

namespace frugal::modelcomp {

namespace {
/// Unrestricted Huffman code lengths (two-queue merge over sorted leaves).
std::vector<uint8_t> plain_lengths(const std::vector<uint64_t>& counts) {
  std::vector<uint8_t> len(counts.size(), 0);
  struct Node {
    uint64_t weight;
    int64_t left, right;  // children (node ids); -1 for a leaf
    uint32_t symbol;
  };
  std::vector<Node> nodes;
  using Item = std::pair<uint64_t, int64_t>;  // (weight, node id); ties broken by id for determinism
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> heap;
  for (size_t s = 0; s < counts.size(); ++s)
    if (counts[s] > 0) {
      nodes.push_back({counts[s], -1, -1, uint32_t(s)});
      heap.push({counts[s], int64_t(nodes.size() - 1)});
    }
  if (nodes.empty()) return len;
  if (nodes.size() == 1) {
    len[nodes[0].symbol] = 1;
    return len;
  }
  while (heap.size() > 1) {
    auto [wa, a] = heap.top();
    heap.pop();
    auto [wb, b] = heap.top();
    heap.pop();
    nodes.push_back({wa + wb, a, b, 0});
    heap.push({wa + wb, int64_t(nodes.size() - 1)});
  }
  // depths by walking from the root
  std::vector<std::pair<int64_t, int>> stack{{heap.top().second, 0}};
  while (!stack.empty()) {
    auto [id, depth] = stack.back();
    stack.pop_back();
    const Node& n = nodes[size_t(id)];
    if (n.left < 0) {
      len[n.symbol] = uint8_t(std::min(depth, 255));
    } else {
      stack.push_back({n.left, depth + 1});
      stack.push_back({n.right, depth + 1});
    }
  }
  return len;
}

/// Canonical codes from lengths: shorter codes first, within a length by symbol. codes[s] holds the code's bits
/// reversed, so that BitWriter (LSB first) emits the most significant code bit first.
std::vector<uint32_t> canonical_codes(const std::vector<uint8_t>& len) {
  std::vector<uint32_t> count(kMaxCodeBits + 2, 0), next(kMaxCodeBits + 2, 0);
  for (uint8_t l : len)
    if (l) ++count[l];
  uint32_t code = 0;
  for (int b = 1; b <= kMaxCodeBits; ++b) {
    code = (code + count[size_t(b - 1)]) << 1;
    next[size_t(b)] = code;
  }
  std::vector<uint32_t> codes(len.size(), 0);
  for (size_t s = 0; s < len.size(); ++s) {
    const int l = len[s];
    if (!l) continue;
    uint32_t c = next[size_t(l)]++, rev = 0;
    for (int i = 0; i < l; ++i) rev |= ((c >> i) & 1u) << (l - 1 - i);
    codes[s] = rev;
  }
  return codes;
}
}  // namespace

std::vector<uint8_t> huffman_code_lengths(const std::vector<uint64_t>& counts, int max_bits) {
  FRUGAL_CHECK(max_bits >= 1 && max_bits <= kMaxCodeBits, "huffman: max code length ", max_bits, " not in [1, ",
               kMaxCodeBits, "]");
  size_t used = 0;
  for (uint64_t c : counts) used += c > 0;
  FRUGAL_CHECK(used <= (uint64_t(1) << max_bits), "huffman: ", used, " symbols do not fit codes of ", max_bits,
               " bits");
  std::vector<uint64_t> c = counts;
  for (;;) {
    std::vector<uint8_t> len = plain_lengths(c);
    if (*std::max_element(len.begin(), len.end()) <= max_bits) return len;
    for (auto& v : c)
      if (v) v = std::max<uint64_t>(1, v >> 1);
  }
}

uint64_t huffman_payload_bits(const std::vector<uint64_t>& counts, const std::vector<uint8_t>& lengths) {
  uint64_t bits = 0;
  for (size_t s = 0; s < counts.size() && s < lengths.size(); ++s) bits += counts[s] * lengths[s];
  return bits;
}

void huffman_encode(const std::vector<uint32_t>& symbols, uint32_t alphabet, gradcomp::ByteWriter& w) {
  std::vector<uint64_t> counts(alphabet, 0);
  for (uint32_t s : symbols) {
    FRUGAL_CHECK(s < alphabet, "huffman: symbol ", s, " outside the alphabet of ", alphabet);
    ++counts[s];
  }
  const std::vector<uint8_t> len = huffman_code_lengths(counts);
  const std::vector<uint32_t> code = canonical_codes(len);
  w.varint(alphabet);
  size_t used = 0;
  for (uint8_t l : len) used += l > 0;
  w.varint(used);
  uint32_t prev = 0;
  for (uint32_t s = 0; s < alphabet; ++s)
    if (len[s]) {
      w.varint(s - prev);
      w.u8(len[s]);
      prev = s;
    }
  w.varint(symbols.size());
  std::vector<uint8_t> payload;
  gradcomp::BitWriter bw(payload);
  for (uint32_t s : symbols) bw.put(code[s], len[s]);
  bw.flush();
  w.varint(payload.size());
  w.raw(payload.data(), payload.size());
}

std::vector<uint32_t> huffman_decode(gradcomp::ByteReader& r) {
  const uint64_t alphabet = r.varint();
  if (alphabet > (uint64_t(1) << 32)) r.fail("huffman alphabet " + std::to_string(alphabet) + " too large");
  const uint64_t used = r.varint();
  if (used > alphabet) r.fail("huffman table lists more symbols than its alphabet");
  // canonical order: by length, then symbol
  std::vector<std::pair<uint8_t, uint32_t>> table;
  table.reserve(size_t(used));
  uint64_t sym = 0;
  for (uint64_t i = 0; i < used; ++i) {
    const uint64_t delta = r.varint();
    if (i > 0 && delta == 0) r.fail("huffman table repeats a symbol");
    sym += delta;
    if (sym >= alphabet) r.fail("huffman table symbol " + std::to_string(sym) + " outside the alphabet");
    const uint8_t l = r.u8();
    if (l < 1 || l > kMaxCodeBits) r.fail("huffman code length " + std::to_string(l) + " not in [1, 24]");
    table.push_back({l, uint32_t(sym)});
  }
  // Kraft sum: a complete code (sum 2^-l == 1), or one symbol of length 1
  uint64_t kraft = 0;
  for (auto& [l, s] : table) kraft += uint64_t(1) << (kMaxCodeBits - l);
  const bool single = table.size() == 1 && table[0].first == 1;
  if (!table.empty() && !single && kraft != (uint64_t(1) << kMaxCodeBits))
    r.fail("huffman code lengths are not a complete prefix code");
  std::sort(table.begin(), table.end());
  std::vector<uint32_t> count(kMaxCodeBits + 1, 0);
  for (auto& [l, s] : table) ++count[l];
  const uint64_t n = r.varint();
  const uint64_t nbytes = r.varint();
  if (nbytes > r.remaining()) r.fail("huffman payload of " + std::to_string(nbytes) + " bytes runs past the end");
  if (n > 0 && table.empty()) r.fail("huffman stream has symbols but no code table");
  if (n > nbytes * 8) r.fail("huffman stream claims more symbols than its payload has bits");
  const uint8_t* p = r.take(size_t(nbytes));
  gradcomp::BitReader br(p, size_t(nbytes), r);
  std::vector<uint32_t> out(static_cast<size_t>(n));
  for (uint64_t i = 0; i < n; ++i) {
    // canonical decoding, one bit at a time (puff.c): code of length l is compared with the first code of l
    uint32_t code = 0, first = 0;
    size_t index = 0;
    for (int l = 1;; ++l) {
      if (l > kMaxCodeBits) r.fail("huffman payload holds an invalid code");
      code |= br.get(1);
      const uint32_t c = count[size_t(l)];
      if (code - first < c) {
        out[size_t(i)] = table[index + (code - first)].second;
        break;
      }
      index += c;
      first = (first + c) << 1;
      code <<= 1;
    }
  }
  if (!gradcomp::tail_bits_clear(p, size_t(br.pos())) || (br.pos() + 7) / 8 != nbytes)
    r.fail("huffman payload has trailing bits or bytes");
  return out;
}

}  // namespace frugal::modelcomp
