#include "util/omp_env.h"

#include <unistd.h>

#include <cstdlib>

namespace frugal::util {

namespace {
char** g_argv = nullptr;
}

void remember_argv(char** argv) { g_argv = argv; }

void prefer_short_omp_spin() {
  if (!g_argv || std::getenv("GOMP_SPINCOUNT") || std::getenv("OMP_WAIT_POLICY")) return;
  if (setenv("GOMP_SPINCOUNT", kGompSpinCount, 1) != 0) return;
  execv("/proc/self/exe", g_argv);
  unsetenv("GOMP_SPINCOUNT");  // exec failed: run on as started
}

}  // namespace frugal::util
