#include "util/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "util/check.h"

namespace frugal::util {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    __builtin_cpu_init();
    CpuFeatures c;
    c.avx2 = __builtin_cpu_supports("avx2");
    c.fma = __builtin_cpu_supports("fma");
    c.f16c = __builtin_cpu_supports("f16c");
    c.bmi2 = __builtin_cpu_supports("bmi2");
    c.avx512f = __builtin_cpu_supports("avx512f");
    c.avx512bw = __builtin_cpu_supports("avx512bw");
    c.avx512vl = __builtin_cpu_supports("avx512vl");
    c.avx512dq = __builtin_cpu_supports("avx512dq");
    c.avx512vnni = __builtin_cpu_supports("avx512vnni");
    c.avx512vbmi = __builtin_cpu_supports("avx512vbmi");
    c.avx512bf16 = __builtin_cpu_supports("avx512bf16");
    c.avxvnni = __builtin_cpu_supports("avxvnni");
    c.amd = __builtin_cpu_is("amd");
    return c;
  }();
  return f;
}

bool isa_available(Isa isa) {
  const CpuFeatures& c = cpu_features();
  switch (isa) {
    case Isa::scalar: return true;
    case Isa::avx2: return c.avx2 && c.fma && c.f16c;
    case Isa::avx512: return isa_available(Isa::avx2) && c.avx512f && c.avx512bw && c.avx512vl && c.avx512dq;
  }
  return false;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "?";
}

namespace {
Isa best_available() {
  for (Isa i : {Isa::avx512, Isa::avx2})
    if (isa_available(i)) return i;
  return Isa::scalar;
}

Isa from_env() {
  const char* e = std::getenv("FRUGAL_ISA");
  if (!e || !*e) return best_available();
  const std::string s = e;
  Isa want = Isa::scalar;
  if (s == "scalar") want = Isa::scalar;
  else if (s == "avx2") want = Isa::avx2;
  else if (s == "avx512") want = Isa::avx512;
  else FRUGAL_FAIL("FRUGAL_ISA='", s, "': expected scalar, avx2 or avx512 (this CPU's best: ", isa_name(best_available()), ")");
  FRUGAL_CHECK(isa_available(want), "FRUGAL_ISA=", s, ": this CPU lacks it (best available: ",
               isa_name(best_available()), "); unset FRUGAL_ISA or choose a narrower path");
  return want;
}

std::atomic<int>& current() {
  static std::atomic<int> isa{static_cast<int>(from_env())};
  return isa;
}
}  // namespace

Isa kernel_isa() { return static_cast<Isa>(current().load(std::memory_order_relaxed)); }

Isa set_kernel_isa(Isa isa) {
  FRUGAL_CHECK(isa_available(isa), "set_kernel_isa(", isa_name(isa), "): this CPU lacks it");
  return static_cast<Isa>(current().exchange(static_cast<int>(isa)));
}

}  // namespace frugal::util
