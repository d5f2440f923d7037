#include "util/cpu_features.h"

#include <doctest/doctest.h>

#include "util/check.h"

using namespace frugal::util;

TEST_CASE("cpu features: paths are ordered, the chosen one is available, overrides are checked") {
  CHECK(isa_available(Isa::scalar));
  if (isa_available(Isa::avx512)) CHECK(isa_available(Isa::avx2));
  CHECK(isa_available(kernel_isa()));
  const Isa before = kernel_isa();
  CHECK(set_kernel_isa(Isa::scalar) == before);
  CHECK(kernel_isa() == Isa::scalar);
  set_kernel_isa(before);
  if (!isa_available(Isa::avx512)) {
    MESSAGE("this CPU has no AVX-512: the refusal of an unavailable path is checked");
    CHECK_THROWS_AS(set_kernel_isa(Isa::avx512), frugal::Error);
  }
  CHECK(std::string(isa_name(Isa::avx2)) == "avx2");
}
