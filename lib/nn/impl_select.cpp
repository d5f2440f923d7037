#include "nn/impl_select.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "tensor/tensor.h"

namespace frugal::nn {

namespace {

bool selection_enabled() {
  const char* v = std::getenv("FRUGAL_IMPL_SELECT");
  return !(v && std::string(v) == "0");
}

// Seconds for one execution: the minimum of three after a warm-up, the run least disturbed by other work.
double time_impl(const dnnl::primitive_desc& pd, const std::vector<int>& args) {
  std::unordered_map<int, dnnl::memory> mems;
  for (int a : args) {
    dnnl::memory::desc md = pd.query_md(dnnl::query::exec_arg_md, a);
    if (md.get_size() == 0) continue;
    dnnl::memory m(md, cpu_engine());
    // Distinct, repeatable values (with ties) so that data-dependent kernels see realistic branches.
    size_t n = md.get_size() / sizeof(float);
    float* p = static_cast<float*>(m.get_data_handle());
    if (md.data_type() == dnnl::memory::data_type::f32)
      for (size_t i = 0; i < n; ++i) p[i] = static_cast<float>((i * 7919u) % 61u) * 0.03125f - 0.5f;
    else
      std::fill_n(static_cast<uint8_t*>(m.get_data_handle()), md.get_size(), uint8_t{0});
    mems.emplace(a, m);
  }
  dnnl::primitive prim(pd);
  prim.execute(cpu_stream(), mems);  // warm-up: first touch of the buffers
  cpu_stream().wait();
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    prim.execute(cpu_stream(), mems);
    cpu_stream().wait();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

PrimitiveCacheOff::PrimitiveCacheOff() : saved_(dnnl::get_primitive_cache_capacity()) {
  dnnl::set_primitive_cache_capacity(0);
}

PrimitiveCacheOff::~PrimitiveCacheOff() { dnnl::set_primitive_cache_capacity(saved_); }

std::vector<std::string> impl_names(const std::function<dnnl::primitive_desc()>& make) {
  PrimitiveCacheOff off;
  std::vector<std::string> names;
  dnnl::primitive_desc pd = make();
  do names.emplace_back(pd.impl_info_str());
  while (pd.next_impl());
  return names;
}

dnnl::primitive_desc nth_impl(const std::function<dnnl::primitive_desc()>& make, int n) {
  PrimitiveCacheOff off;
  dnnl::primitive_desc pd = make();
  for (int k = 0; k < n; ++k)
    if (!pd.next_impl()) throw std::out_of_range("nth_impl: oneDNN offers fewer than " + std::to_string(n + 1) + " implementations");
  return pd;
}

dnnl::primitive_desc fastest_impl(const std::string& key, const std::function<dnnl::primitive_desc()>& make,
                                  const std::vector<int>& args) {
  static std::mutex mu;
  static std::map<std::string, int> chosen;
  std::lock_guard<std::mutex> lock(mu);  // one measurement at a time: concurrent timing would be noise
  if (!selection_enabled()) return nth_impl(make, 0);
  auto it = chosen.find(key);
  if (it == chosen.end()) {
    std::vector<std::string> names = impl_names(make);
    int best = 0;
    double best_s = 1e30;
    for (int i = 0; i < static_cast<int>(names.size()); ++i) {
      if (names[static_cast<size_t>(i)].rfind("ref", 0) == 0) continue;  // reference loops: never the fastest
      PrimitiveCacheOff off;  // candidates' primitives must not enter the cache (see PrimitiveCacheOff)
      double s = time_impl(nth_impl(make, i), args);
      if (s < best_s) best_s = s, best = i;
    }
    it = chosen.emplace(key, best).first;
  }
  return nth_impl(make, it->second);
}

}  // namespace frugal::nn
