#include "util/omp_env.h"

#include <unistd.h>

#include <cstdlib>

namespace frugal::util {

void ensure_omp_spin_limit(char** argv) {
  if (std::getenv("GOMP_SPINCOUNT") || std::getenv("OMP_WAIT_POLICY")) return;
  if (setenv("GOMP_SPINCOUNT", kGompSpinCount, 1) != 0) return;
  execv("/proc/self/exe", argv);
  unsetenv("GOMP_SPINCOUNT");  // exec failed: run on as started
}

}  // namespace frugal::util
