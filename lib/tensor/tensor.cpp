#include "tensor/tensor.h"

#include <cassert>
#include <cstdlib>
#include <sstream>

#include "util/check.h"

namespace frugal {

int64_t numel(const Dims& d) {
  int64_t n = 1;
  for (auto x : d) n *= x;
  return n;
}

std::string dims_str(const Dims& d) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < d.size(); ++i) os << (i ? ", " : "") << d[i];
  os << ")";
  return os.str();
}

dnnl::engine& cpu_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& cpu_stream() {
  static dnnl::stream s(cpu_engine());
  return s;
}

void Tensor::resize(const Dims& dims) {
  int64_t n = numel(dims);
  FRUGAL_CHECK(n >= 0, "negative tensor size ", dims_str(dims));
  if (n > capacity_) {
    // 64-byte aligned storage for the AVX-512 kernels.
    size_t bytes = ((static_cast<size_t>(n) * sizeof(float) + 63) / 64) * 64;
    float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
    FRUGAL_CHECK(p != nullptr, "out of memory allocating ", bytes, " bytes for tensor ", dims_str(dims));
    data_ = std::shared_ptr<float[]>(p, [](float* q) { std::free(q); });
    capacity_ = n;
  }
  dims_ = dims;
  numel_ = n;
}

void Tensor::zero() {
  if (numel_) std::memset(data_.get(), 0, static_cast<size_t>(numel_) * sizeof(float));
}

void Tensor::reshape(const Dims& dims) {
  assert(numel(dims) == numel_);
  dims_ = dims;
}

void Tensor::copy_from(const Tensor& other) {
  resize(other.dims());
  if (numel_) std::memcpy(data_.get(), other.data(), static_cast<size_t>(numel_) * sizeof(float));
}

dnnl::memory::dims to_dnnl(const Dims& d) { return dnnl::memory::dims(d.begin(), d.end()); }

dnnl::memory::format_tag layout_tag(int ndim) {
  using tag = dnnl::memory::format_tag;
  switch (ndim) {
    case 1: return tag::a;
    case 2: return tag::ab;
    case 3: return tag::abc;
    case 4: return tag::acdb;  // NHWC
    case 5: return tag::abcde;
    default: FRUGAL_FAIL("unsupported tensor rank ", ndim);
  }
}

dnnl::memory::desc plain_md(const Dims& dims) {
  using tag = dnnl::memory::format_tag;
  static const tag tags[] = {tag::a, tag::a, tag::ab, tag::abc, tag::abcd, tag::abcde};
  FRUGAL_CHECK(!dims.empty() && dims.size() <= 5, "unsupported rank ", dims.size());
  return dnnl::memory::desc(to_dnnl(dims), dnnl::memory::data_type::f32, tags[dims.size()]);
}

dnnl::memory::desc Tensor::md() const {
  return dnnl::memory::desc(to_dnnl(dims_), dnnl::memory::data_type::f32, layout_tag(ndim()));
}

dnnl::memory Tensor::mem() const {
  return dnnl::memory(md(), cpu_engine(), const_cast<float*>(data_.get()));
}

void reorder(const dnnl::memory& src, const dnnl::memory& dst) {
  dnnl::reorder(src, dst).execute(cpu_stream(), const_cast<dnnl::memory&>(src), const_cast<dnnl::memory&>(dst));
  cpu_stream().wait();
}

}  // namespace frugal
