// oneDNN (Debian's build) runs its primitives on OpenMP; frugal's own parallel loops run on TBB. How long
// libgomp's idle threads spin after a primitive (GOMP_SPINCOUNT; 300,000 by default) trades two things:
//  - fp32 training is a chain of oneDNN primitives; the default spin keeps the threads awake between them.
//    Against GOMP_SPINCOUNT=20000 it is as fast or faster on every preset (resnet20 360 vs 378 ms a step,
//    cnn 165 vs 172, lenet5 9.8 vs 10.1, mlp 2.1 vs 2.3; medians of 5 interleaved runs on a 2-core Zen 3,
//    `bench/omp_spin.py`, results/bench/avx2/omp_spin.md).
//  - quantized / approximate-multiplier layers follow each oneDNN conv with TBB passes; spinning OpenMP threads
//    take the cores from them and an approximate conv ran 1.3-1.6x slower. A short spin (20000) keeps those fast;
//    sleeping at once (OMP_WAIT_POLICY=passive) slows everything (lenet5 3.2 -> 4.4 ms a step).
// libgomp reads its environment when it loads, so the setting has to be in place before the process starts:
// prefer_short_omp_spin() re-executes the program once with it set.
#pragma once

namespace frugal::util {

/// The spin count frugal restarts libgomp with for quantized / approximate arithmetic.
inline constexpr const char* kGompSpinCount = "20000";

/// Call first thing in main(): remembers argv for prefer_short_omp_spin().
void remember_argv(char** argv);

/// When neither GOMP_SPINCOUNT nor OMP_WAIT_POLICY is set, sets GOMP_SPINCOUNT=kGompSpinCount and re-executes
/// /proc/self/exe with the remembered arguments. Returns only if it does not re-execute (already set, no argv, or
/// exec failed), with nothing changed. Call before any output or file is written.
void prefer_short_omp_spin();

}  // namespace frugal::util
