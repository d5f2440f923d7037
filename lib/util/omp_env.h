// oneDNN (Debian's build) runs its primitives on OpenMP; frugal's own parallel loops run on TBB. After each
// primitive libgomp's idle threads spin (GOMP_SPINCOUNT, 300,000 by default) and take the cores from the TBB
// loop that follows: on 2 cores an approximate conv (oneDNN conv + TBB pre/post passes) ran 1.3-1.6x slower.
// Sleeping at once (OMP_WAIT_POLICY=passive) instead slows the small models' training (lenet5: 3.2 -> 4.4 ms
// a step). A short spin keeps both. libgomp reads its environment when it loads, so the setting has to be in
// place before the process starts: ensure_omp_spin_limit() re-executes the program once with it set.
#pragma once

namespace frugal::util {

/// The spin count frugal starts libgomp with, unless the user set GOMP_SPINCOUNT or OMP_WAIT_POLICY.
inline constexpr const char* kGompSpinCount = "20000";

/// Call first thing in main(). When neither GOMP_SPINCOUNT nor OMP_WAIT_POLICY is set, sets GOMP_SPINCOUNT and
/// re-executes /proc/self/exe with the same arguments (returns only if that fails, with nothing changed).
void ensure_omp_spin_limit(char** argv);

}  // namespace frugal::util
