// Runtime CPU dispatch: which SIMD path a hand-written kernel may take on the CPU it runs on. The binary is
// built for baseline x86-64 (FRUGAL_NATIVE=OFF) or for the build machine; fast paths are compiled with
// __attribute__((target(...))) and chosen here at run time, as oneDNN chooses its kernels.
//
// FRUGAL_ISA=scalar|avx2|avx512 caps the choice (tests force every path in turn; a path the CPU lacks is
// refused by isa_available(), so a test can skip it with a message). Unset: the best the CPU has.
#pragma once

namespace frugal::util {

/// Kernel paths, in increasing order of width.
///  avx2:   AVX2 + FMA + F16C (every x86-64 CPU since Haswell / Zen 1)
///  avx512: AVX-512 F/BW/VL/DQ (+ VNNI, VBMI, BF16 where present; see CpuFeatures)
enum class Isa { scalar = 0, avx2 = 1, avx512 = 2 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false, bmi2 = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512vbmi = false, avx512bf16 = false, avxvnni = false;
  bool amd = false;  ///< an AMD CPU: its vector gathers are microcoded (slow; see approx/lut_engine.cpp)
};

/// What this CPU supports (cpuid, read once).
const CpuFeatures& cpu_features();
/// True when this CPU can run kernels of `isa`.
bool isa_available(Isa isa);
/// The path kernels take: the best available, capped by FRUGAL_ISA (read once; an unknown value or a path the
/// CPU lacks is an error that says what the CPU has).
Isa kernel_isa();
const char* isa_name(Isa isa);
/// For tests: override the path kernels take from now on (must be available); returns the previous one.
Isa set_kernel_isa(Isa isa);

}  // namespace frugal::util
