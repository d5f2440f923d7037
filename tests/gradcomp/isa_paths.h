// Runs a test body once per kernel path (scalar, avx2, avx512) with that path forced through
// util::set_kernel_isa, so every SIMD path is compared with its scalar twin whatever FRUGAL_ISA or the build
// flags say. A path this CPU lacks is skipped with a doctest MESSAGE; the previous path is restored after.
#pragma once
#include <doctest/doctest.h>

#include <string>

#include "util/cpu_features.h"

namespace frugal::testing {

class IsaGuard {
 public:
  explicit IsaGuard(util::Isa isa) : before_(util::set_kernel_isa(isa)) {}
  ~IsaGuard() { util::set_kernel_isa(before_); }
  IsaGuard(const IsaGuard&) = delete;
  IsaGuard& operator=(const IsaGuard&) = delete;

 private:
  util::Isa before_;
};

template <class F>
void for_each_isa(F&& body) {
  for (util::Isa isa : {util::Isa::scalar, util::Isa::avx2, util::Isa::avx512}) {
    if (!util::isa_available(isa)) {
      MESSAGE("skipping the " << util::isa_name(isa) << " kernel path: this CPU lacks it");
      continue;
    }
    IsaGuard guard(isa);
    INFO("kernel path: " << std::string(util::isa_name(isa)));
    body(isa);
  }
}

}  // namespace frugal::testing
