// Timing helper shared by the bench programs.
#pragma once
#include <algorithm>
#include <chrono>
#include <functional>
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

/// Median wall milliseconds of each function, timed in alternating blocks of `block` calls (f0 x block, f1 x block,
/// ..., f0 x block, ...) until each has `runs` times, after `warmup` calls of each: machine noise hits all alike,
/// and within a block each runs warm, as when timed alone (call by call alternation would let one's memory traffic
/// evict the other's data).
inline std::vector<double> interleaved_median_ms(const std::vector<std::function<void()>>& fs, int runs, int block = 5,
                                                 int warmup = 1) {
  for (const auto& f : fs)
    for (int k = 0; k < warmup; ++k) f();
  std::vector<std::vector<double>> t(fs.size());
  while (int(t[0].size()) < runs)
    for (size_t i = 0; i < fs.size(); ++i)
      for (int k = 0; k < block; ++k) {
        auto a = std::chrono::steady_clock::now();
        fs[i]();
        t[i].push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
      }
  std::vector<double> med;
  for (auto& v : t) {
    std::sort(v.begin(), v.end());
    med.push_back(v[v.size() / 2]);
  }
  return med;
}

}  // namespace frugal::bench
