// Dense float tensors. Activations are 4-D (N, C, H, W) logical dims stored channels-last (NHWC), which
// every oneDNN primitive frugal uses consumes natively on AVX-512/AVX2, so no reorders happen between
// layers; 2-D tensors are (N, C) row-major; parameters keep their plain layouts ((OC, IC, KH, KW), (OUT, IN), (C)).
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

namespace frugal {

using Dims = std::vector<int64_t>;

int64_t numel(const Dims& d);
std::string dims_str(const Dims& d);  // "(128, 3, 32, 32)"

/// Process-wide oneDNN engine and stream (CPU).
dnnl::engine& cpu_engine();
dnnl::stream& cpu_stream();

/// A float buffer with logical dims. Layout rule: 4-D = NHWC in memory, 1/2/5-D = plain row-major.
class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(const Dims& dims) { resize(dims); }
  void resize(const Dims& dims);           // keeps storage when big enough; contents unspecified
  void zero();
  const Dims& dims() const { return dims_; }
  int64_t dim(int i) const { return dims_.at(static_cast<size_t>(i)); }
  int ndim() const { return static_cast<int>(dims_.size()); }
  int64_t size() const { return numel_; }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  /// Memory descriptor of this tensor's layout (nhwc for 4-D, row-major otherwise).
  dnnl::memory::desc md() const;
  /// A oneDNN memory object viewing this tensor's storage (no copy).
  dnnl::memory mem() const;
  /// Same storage seen with other dims of equal numel (e.g. flatten (N,C,1,1) -> (N,C) for NHWC data).
  void reshape(const Dims& dims);
  void copy_from(const Tensor& other);

 private:
  Dims dims_;
  int64_t numel_ = 0;
  int64_t capacity_ = 0;
  std::shared_ptr<float[]> data_;
};

/// Layout tag used for a tensor of the given rank.
dnnl::memory::format_tag layout_tag(int ndim);
dnnl::memory::desc plain_md(const Dims& dims);  // row-major, any rank 1..5
dnnl::memory::dims to_dnnl(const Dims& d);

/// Copies src memory into dst memory through a oneDNN reorder (layouts may differ).
void reorder(const dnnl::memory& src, const dnnl::memory& dst);

}  // namespace frugal
