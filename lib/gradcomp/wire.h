// Wire-format building blocks for gradient messages: bounds-checked byte reader/writer, LEB128 varints,
// LSB-first bit packing, fp16/bf16 conversion, sparse index blocks (delta-varint or bitmap, whichever is
// smaller) and a small deterministic RNG. Every fast path here has a plain scalar twin (`*_ref`) that the
// tests compare it against bit for bit.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace frugal::gradcomp {

/// Appends little-endian scalars to a byte vector.
class ByteWriter {
 public:
  explicit ByteWriter(std::vector<uint8_t>& out) : out_(out) {}
  void u8(uint8_t v) { out_.push_back(v); }
  void u32(uint32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void f32(float v) { raw(&v, 4); }
  void varint(uint64_t v);
  void raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  /// Reserves n bytes at the end and returns a pointer to them (valid until the next append).
  uint8_t* grow(size_t n) {
    size_t at = out_.size();
    out_.resize(at + n);
    return out_.data() + at;
  }
  size_t size() const { return out_.size(); }

 private:
  std::vector<uint8_t>& out_;
};

/// Reads what ByteWriter wrote. Every read is bounds-checked; a short or malformed message throws
/// frugal::Error naming the message kind (`what`) and the byte offset.
class ByteReader {
 public:
  ByteReader(const uint8_t* p, size_t n, std::string what) : p_(p), n_(n), what_(std::move(what)) {}
  uint8_t u8();
  uint32_t u32();
  uint64_t u64();
  float f32();
  uint64_t varint();
  /// Returns a pointer to the next n bytes and advances past them.
  const uint8_t* take(size_t n);
  size_t pos() const { return pos_; }
  size_t remaining() const { return n_ - pos_; }
  /// Throws unless every byte was consumed (decode reads exactly what encode wrote).
  void expect_end() const;
  [[noreturn]] void fail(const std::string& msg) const;
  const std::string& what() const { return what_; }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  std::string what_;
};

/// Size in bytes of the LEB128 encoding of v.
inline size_t varint_size(uint64_t v) {
  size_t s = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++s;
  }
  return s;
}

// ---- bit packing (LSB first: element i occupies bits [i*w, (i+1)*w) of the little-endian bit stream)

/// Bytes needed to hold n codes of `width` bits.
inline size_t packed_bytes(size_t n, int width) { return (n * size_t(width) + 7) / 8; }

/// out (packed_bytes(n, width) bytes) <- codes[i] (each < 2^width), width in 1..32.
void pack_codes(const uint32_t* codes, size_t n, int width, uint8_t* out);
void pack_codes_ref(const uint32_t* codes, size_t n, int width, uint8_t* out);
/// codes (n) <- in (packed_bytes(n, width) bytes). Bits past n*width must be zero (else throws via r).
void unpack_codes(const uint8_t* in, size_t n, int width, uint32_t* codes);
void unpack_codes_ref(const uint8_t* in, size_t n, int width, uint32_t* codes);

/// out (ceil(n/8) bytes) <- bit i set iff x[i] < 0 (so -0.0 and +0.0 count as non-negative).
void pack_signs(const float* x, size_t n, uint8_t* out);
void pack_signs_ref(const float* x, size_t n, uint8_t* out);
/// pack_signs, and in the same pass the sum of |x[i]|: 16 double partial sums (x[i] goes to sum i % 16, in index
/// order), added pairwise in a fixed tree, so every ISA gives the same bits. signsgd's scale (mean |g|) in one read
/// of the gradient.
double pack_signs_sum_abs(const float* x, size_t n, uint8_t* out);
double pack_signs_sum_abs_ref(const float* x, size_t n, uint8_t* out);
/// dst[i] = bit i ? neg : pos.
void unpack_signs(const uint8_t* in, size_t n, float pos, float neg, float* dst);
void unpack_signs_ref(const uint8_t* in, size_t n, float pos, float neg, float* dst);

/// Bits past n in the last byte of a bit field must be zero: a cheap check that catches garbage.
bool tail_bits_clear(const uint8_t* in, size_t nbits);

/// Sequential bit writer/reader for variable-length codes (Elias gamma), LSB first.
class BitWriter {
 public:
  explicit BitWriter(std::vector<uint8_t>& out) : out_(out) {}
  void put(uint64_t bits, int width);  // width 0..57
  void flush();                        // pads the last byte with zeros
  uint64_t bits_written() const { return nbits_; }

 private:
  std::vector<uint8_t>& out_;
  uint64_t acc_ = 0;
  int fill_ = 0;
  uint64_t nbits_ = 0;
};
class BitReader {
 public:
  BitReader(const uint8_t* p, size_t nbytes, const ByteReader& owner) : p_(p), nbits_(nbytes * 8), owner_(owner) {}
  uint32_t get(int width);  // width 0..32, throws past the end
  uint64_t pos() const { return pos_; }
  uint64_t size() const { return nbits_; }
  const ByteReader& owner() const { return owner_; }

 private:
  const uint8_t* p_;
  uint64_t nbits_;
  uint64_t pos_ = 0;
  const ByteReader& owner_;
};
/// Elias gamma code of v >= 1: floor(log2 v) zeros, then v's bits from the top. 2*floor(log2 v)+1 bits.
void elias_gamma_put(BitWriter& w, uint32_t v);
uint32_t elias_gamma_get(BitReader& r);

// ---- half precision

uint16_t f32_to_f16_ref(float f);  // IEEE binary16, round to nearest even, inf/NaN kept
float f16_to_f32_ref(uint16_t h);
/// dst[i] = f32_to_f16_ref(src[i]) (and back), by the path util::kernel_isa() names (F16C / AVX-512).
void f32_to_f16(const float* src, size_t n, uint16_t* dst);
void f16_to_f32(const uint16_t* src, size_t n, float* dst);
uint16_t f32_to_bf16(float f);  // round to nearest even, NaN stays NaN; the twin of the array form
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
/// dst[i] = f32_to_bf16(src[i]) / bf16_to_f32(src[i]), by the path util::kernel_isa() names.
void f32_to_bf16(const float* src, size_t n, uint16_t* dst);
void bf16_to_f32(const uint16_t* src, size_t n, float* dst);
/// The same conversions (fp16, or bf16 when bf16) with the 16-bit side as unaligned little-endian bytes: a
/// message body, converted in place without a staging copy.
void f32_to_half_bytes(bool bf16, const float* src, size_t n, uint8_t* dst);
void half_bytes_to_f32(bool bf16, const uint8_t* src, size_t n, float* dst);

// ---- sparse index block: tag u8 (0 = delta varint, 1 = bitmap), varint count, then the payload.

/// idx: k strictly increasing indices < n. Writes whichever of delta-varint / bitmap is smaller.
void write_indices(ByteWriter& w, const uint32_t* idx, size_t k, size_t n);
/// Reads an index block for a tensor of n elements; validates order, range and count.
void read_indices(ByteReader& r, size_t n, std::vector<uint32_t>& idx);
/// Bytes write_indices would produce.
size_t indices_bytes(const uint32_t* idx, size_t k, size_t n);

// ---- deterministic RNG (splitmix64-seeded xoshiro256**), identical on every platform

uint64_t mix_seed(uint64_t a, uint64_t b);
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed);
  uint64_t next() {  // inline: QSGD and TernGrad draw one per element
    auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  float uniform() { return float(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1), 24 bits
  uint64_t below(uint64_t n) { return uint64_t((unsigned __int128)next() * n >> 64); }
  float normal();  // Box-Muller
  void save(ByteWriter& w) const {
    for (uint64_t s : s_) w.u64(s);
  }
  void load(ByteReader& r) {
    for (uint64_t& s : s_) s = r.u64();
  }

 private:
  uint64_t s_[4];
};

}  // namespace frugal::gradcomp
