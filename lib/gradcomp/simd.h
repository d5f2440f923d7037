// Internal to lib/gradcomp: what the hand-written SIMD kernels share. The fast paths are compiled with
// function target attributes (not -march), so a portable build carries them all; each public kernel picks
// one per call with util::kernel_isa() (FRUGAL_ISA caps it; tests force each in turn with set_kernel_isa).
//
// The AVX2 target leaves out BMI2: util::isa_available(avx2) does not require it, and with it the compiler
// may emit shlx/shrx anywhere in these functions. Stream compaction uses a lookup table instead of pext.
#pragma once
#include <immintrin.h>

// GCC 12 reports the AVX-512 intrinsics' own _mm512_undefined_*() (self-initialized on purpose) as "may be used
// uninitialized" once they are inlined into a target("avx512f") function of a baseline build: a false positive
// (GCC bug 105593), silenced for the files that include this header.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <array>
#include <cstdint>

#define FRUGAL_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define FRUGAL_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

namespace frugal::gradcomp::simd {

/// For an 8-bit lane mask m: the lanes set in m, in ascending order, as 3-bit fields of a 32-bit word (field
/// j = the j-th set lane), and how many there are. Left-packs 8 lanes with one permutevar8x32.
struct Compact8 {
  std::array<uint32_t, 256> lanes{};
  std::array<uint8_t, 256> count{};
  constexpr Compact8() {
    for (uint32_t m = 0; m < 256; ++m) {
      uint32_t packed = 0, c = 0;
      for (uint32_t b = 0; b < 8; ++b)
        if (m >> b & 1u) packed |= b << (3 * c++);
      lanes[m] = packed;
      count[m] = uint8_t(c);
    }
  }
};
inline constexpr Compact8 kCompact8{};

/// The permutation that moves the lanes set in m (8 bits) to the front, ascending.
FRUGAL_TARGET_AVX2 inline __m256i compact_perm8(uint32_t m) {
  const __m256i shifts = _mm256_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21);
  return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(kCompact8.lanes[m])), shifts), _mm256_set1_epi32(7));
}

}  // namespace frugal::gradcomp::simd
