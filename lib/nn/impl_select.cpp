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

// One candidate, ready to run on scratch buffers for the execution arguments `args`.
struct Candidate {
  int index;
  dnnl::primitive prim;
  std::unordered_map<int, dnnl::memory> mems;
  double best_s = 1e30;
};

// Each argument's buffer is shared between candidates whose descriptor for it agrees (they normally all do), so
// that timing five implementations of a large layer does not hold five copies of its tensors.
Candidate make_candidate(int index, const dnnl::primitive_desc& pd, const std::vector<int>& args,
                         std::unordered_map<int, dnnl::memory>& shared) {
  std::unordered_map<int, dnnl::memory> mems;
  for (int a : args) {
    dnnl::memory::desc md = pd.query_md(dnnl::query::exec_arg_md, a);
    if (md.get_size() == 0) continue;
    auto same = shared.find(a);
    if (same != shared.end() && same->second.get_desc() == md) {
      mems.emplace(a, same->second);
      continue;
    }
    dnnl::memory m(md, cpu_engine());
    shared[a] = m;
    // Distinct, repeatable values (with ties) so that data-dependent kernels see realistic branches.
    size_t n = md.get_size() / sizeof(float);
    float* p = static_cast<float*>(m.get_data_handle());
    if (md.data_type() == dnnl::memory::data_type::f32)
      for (size_t i = 0; i < n; ++i) p[i] = static_cast<float>((i * 7919u) % 61u) * 0.03125f - 0.5f;
    else
      std::fill_n(static_cast<uint8_t*>(m.get_data_handle()), md.get_size(), uint8_t{0});
    mems.emplace(a, m);
  }
  Candidate c{index, dnnl::primitive(pd), std::move(mems)};
  c.prim.execute(cpu_stream(), c.mems);  // warm-up: first touch of the buffers
  cpu_stream().wait();
  return c;
}

// Rounds of timing; in each, every candidate runs once, so a burst of other work on the machine hits all of them.
constexpr int kRounds = 7;
// A candidate whose first timed run is this many times the quickest first run is not timed further: it cannot
// win, and on a large layer a slow implementation (jit:sse41, gemm) would take seconds over all rounds.
constexpr double kDropSlower = 2.0;

double run_once(Candidate& c) {
  auto t0 = std::chrono::steady_clock::now();
  c.prim.execute(cpu_stream(), c.mems);
  cpu_stream().wait();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  c.best_s = std::min(c.best_s, s);
  return s;
}

}  // namespace

int pick_by_time(const std::vector<double>& seconds, double margin) {
  if (seconds.empty()) throw std::invalid_argument("pick_by_time: no candidates");
  size_t fastest = 0;
  for (size_t i = 1; i < seconds.size(); ++i)
    if (seconds[i] < seconds[fastest]) fastest = i;
  return seconds[fastest] < margin * seconds[0] ? static_cast<int>(fastest) : 0;
}

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
    if (!pd.next_impl())
      throw std::out_of_range("nth_impl: oneDNN offers fewer than " + std::to_string(n + 1) + " implementations");
  return pd;
}

double best_run_seconds(const dnnl::primitive_desc& pd, const std::vector<int>& args) {
  std::unordered_map<int, dnnl::memory> buffers;
  Candidate c = make_candidate(0, pd, args, buffers);
  for (int r = 0; r < kRounds; ++r) run_once(c);
  return c.best_s;
}

dnnl::primitive_desc fastest_impl(const std::string& key, const std::function<dnnl::primitive_desc()>& make,
                                  const std::vector<int>& args, double margin) {
  static std::mutex mu;
  static std::map<std::string, int> chosen;
  std::lock_guard<std::mutex> lock(mu);  // one measurement at a time: concurrent timing would be noise
  if (!selection_enabled()) return nth_impl(make, 0);
  auto it = chosen.find(key);
  if (it == chosen.end()) {
    std::vector<std::string> names = impl_names(make);
    std::vector<Candidate> cands;
    std::unordered_map<int, dnnl::memory> buffers;
    {
      PrimitiveCacheOff off;  // candidates' primitives must not enter the cache (see PrimitiveCacheOff)
      for (int i = 0; i < static_cast<int>(names.size()); ++i)
        if (names[static_cast<size_t>(i)].rfind("ref", 0) != 0)  // reference loops: never the fastest
          cands.push_back(make_candidate(i, nth_impl(make, i), args, buffers));
      std::vector<bool> timed(cands.size(), true);
      double quickest_first = 1e30;
      for (Candidate& c : cands) quickest_first = std::min(quickest_first, run_once(c));
      for (size_t i = 1; i < cands.size(); ++i)  // oneDNN's first choice stays: pick_by_time compares with it
        timed[i] = cands[i].best_s <= kDropSlower * quickest_first;
      for (int r = 1; r < kRounds; ++r)
        for (size_t i = 0; i < cands.size(); ++i)
          if (timed[i]) run_once(cands[i]);
    }
    int best = 0;
    if (!cands.empty()) {
      std::vector<double> times;
      for (const Candidate& c : cands) times.push_back(c.best_s);
      best = cands[static_cast<size_t>(pick_by_time(times, margin))].index;
    }
    it = chosen.emplace(key, best).first;
  }
  return nth_impl(make, it->second);
}

}  // namespace frugal::nn
