// The fp32 conv ceiling of this machine, as DESIGN.md defines it: oneDNN's forward 3x3 conv, 64 -> 64 channels,
// 32x32, batch 128, layouts of its own choice, median of 30 runs after a warm-up. Prints one JSON line with
// GFLOP/s counted as 2 FLOP per multiply-accumulate, the unit bench/run_bench.py uses for the networks' rates.
// (DESIGN.md's "fp32 ≈ 214 GFLOP/s" is this measurement counted as 1 FLOP per MAC; 408 counted as 2 on Zen 4.)
#include <cstdio>

#include <oneapi/dnnl/dnnl.hpp>

#include "timing.h"

#include "tensor/tensor.h"

using namespace dnnl;

int main() {
  memory::dims src{128, 64, 32, 32}, wei{64, 64, 3, 3}, dst{128, 64, 32, 32};
  auto any = memory::format_tag::any;
  convolution_forward::desc d(prop_kind::forward_training, algorithm::convolution_direct,
                              memory::desc(src, memory::data_type::f32, any),
                              memory::desc(wei, memory::data_type::f32, any),
                              memory::desc(dst, memory::data_type::f32, any), {1, 1}, {1, 1}, {1, 1});
  convolution_forward::primitive_desc pd(d, frugal::cpu_engine());
  memory x(pd.src_desc(), frugal::cpu_engine()), w(pd.weights_desc(), frugal::cpu_engine()),
      y(pd.dst_desc(), frugal::cpu_engine());
  float* p = static_cast<float*>(x.get_data_handle());
  for (size_t i = 0; i < pd.src_desc().get_size() / 4; ++i) p[i] = float(i % 13) * 0.1f;
  float* q = static_cast<float*>(w.get_data_handle());
  for (size_t i = 0; i < pd.weights_desc().get_size() / 4; ++i) q[i] = float(i % 7) * 0.01f;
  convolution_forward conv(pd);
  double ms = frugal::bench::median_ms([&] {
    conv.execute(frugal::cpu_stream(), {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, y}});
    frugal::cpu_stream().wait();
  }, 30);
  const double macs = 128.0 * 64 * 64 * 9 * 32 * 32;
  std::printf("{\"shape\": \"3x3 conv 64->64 32x32 n128 fp32 forward\", \"impl\": \"%s\", \"median_ms\": %.3f, "
              "\"gflops\": %.1f, \"flop_per_mac\": 2}\n",
              pd.impl_info_str(), ms, 2 * macs / (ms * 1e-3) / 1e9);
  return 0;
}
