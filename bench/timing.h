// Timing helper shared by the bench programs.
#pragma once
#include <algorithm>
#include <chrono>
#include <vector>

namespace frugal::bench {

/// Median wall milliseconds of `runs` calls of f, after one warm-up call.
template <class F>
double median_ms(F&& f, int runs) {
  f();  // warm-up
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace frugal::bench
