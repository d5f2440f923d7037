// Choosing among oneDNN's implementations of one primitive descriptor by measurement.
//
// oneDNN takes the first implementation on its list that supports a descriptor. On some CPUs a later one is much
// faster: on AMD Zen 3 (AVX2, no AVX-512) jit:avx2 max-pool forward_training writes its workspace with per-byte
// vpextrb and its channel tail with vmaskmovps stores (microcoded there) and runs 10-20x slower than jit:sse41
// on the same descriptor; on AMD Zen 4 (AVX-512) jit:avx512_core max-pool backward with lenet5's 6 channels runs
// 2.7x slower than jit:avx2 (`make -f Makefile.bench pool`). fastest_impl() times every non-reference
// implementation once per process and descriptor and keeps the quickest.
//
// Use it only where all implementations give bit-identical results (max pooling: a maximum and the index of its
// first occurrence; its backward with disjoint windows: one gradient per input element; tests/nn/impl_select_test.cpp
// checks this, ties included), so that a timing-dependent choice
// never changes a number and resumed or repeated runs stay exact. FRUGAL_IMPL_SELECT=0 keeps oneDNN's first choice.
#pragma once
#include <functional>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <vector>

namespace frugal::nn {

/// Turns oneDNN's primitive cache off for its lifetime (emptying it) and restores the capacity after. oneDNN 2.6's
/// implementation iterator looks each candidate up in that cache by its ordinal; a hit part-way through
/// next_impl() leaves the iterator out of step and it hands back the first implementation again.
class PrimitiveCacheOff {
 public:
  PrimitiveCacheOff();
  ~PrimitiveCacheOff();
  PrimitiveCacheOff(const PrimitiveCacheOff&) = delete;
  PrimitiveCacheOff& operator=(const PrimitiveCacheOff&) = delete;

 private:
  int saved_;
};

/// The names of the implementations oneDNN offers for `make()`'s descriptor, in its order.
/// `make` must build its primitive descriptor from an op descriptor that outlives these calls: oneDNN's
/// implementation iterator keeps a pointer to it, and next_impl() on a temporary's iterator reads freed memory.
std::vector<std::string> impl_names(const std::function<dnnl::primitive_desc()>& make);

/// `make()`'s descriptor on its n-th implementation (0 = oneDNN's first choice).
dnnl::primitive_desc nth_impl(const std::function<dnnl::primitive_desc()>& make, int n);

/// Which of the candidates timed at `seconds` (their best runs; 0 = oneDNN's first choice) to use: the fastest,
/// if it beats the first by the factor `margin` (< 1), else the first. On a loaded machine every time is noise,
/// and the first choice, the same in every process, is the one to keep.
int pick_by_time(const std::vector<double>& seconds, double margin);

/// The fastest non-reference implementation of `make()`'s descriptor, timed on scratch buffers for the execution
/// arguments `args` (7 round-robin rounds, best run each, pick_by_time with `margin`); a candidate whose first
/// timed run takes over twice the quickest first run is dropped after it. The measurement is done once per `key`
/// in the process (thread-safe).
dnnl::primitive_desc fastest_impl(const std::string& key, const std::function<dnnl::primitive_desc()>& make,
                                  const std::vector<int>& args, double margin = 0.8);

/// The best of 7 runs of `pd`'s primitive in seconds, on scratch buffers for the execution arguments `args`: for
/// choosing between two descriptors of the same computation.
double best_run_seconds(const dnnl::primitive_desc& pd, const std::vector<int>& args);

/// Same, as the primitive's own descriptor type (e.g. pooling_forward::primitive_desc).
template <class PD>
PD fastest_impl(const std::string& key, const std::function<PD()>& make, const std::vector<int>& args,
                double margin = 0.8) {
  dnnl::primitive_desc pd = fastest_impl(
      key, [&] { return dnnl::primitive_desc(make()); }, args, margin);
  return PD(pd.get());  // clones the C descriptor
}

}  // namespace frugal::nn
