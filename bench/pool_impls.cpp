// Every oneDNN implementation of max pooling (2x2, stride 2, NHWC, batch 128) on the shapes of frugal's presets:
// forward_training (with workspace) and the backward that consumes its workspace, median ms of RUNS runs.
// This is the measurement behind nn/impl_select.h: which implementation oneDNN lists first is not always the
// fastest on a given CPU. Prints a Markdown table; `make -f Makefile.bench pool` writes it to the bench folder.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "timing.h"

#include "nn/impl_select.h"
#include "tensor/tensor.h"
#include "io/environment.h"

using namespace dnnl;
using namespace frugal;
using frugal::bench::median_ms;

int main(int argc, char** argv) {
  int runs = argc > 1 ? std::atoi(argv[1]) : 20;
  struct Shape { const char* model; int c, h; };
  const std::vector<Shape> shapes{{"lenet5 pool 1", 6, 28}, {"lenet5 pool 2", 16, 10}, {"cnn pool 1", 32, 28},
                                  {"cnn pool 2", 64, 14}, {"vgg pool 1", 64, 32}};
  std::printf("| shape (N=128, NHWC) | pass | implementation | median ms |\n|---|---|---|---|\n");
  for (const Shape& s : shapes) {
    memory::desc src({128, s.c, s.h, s.h}, memory::data_type::f32, memory::format_tag::acdb);
    memory::desc dst({128, s.c, s.h / 2, s.h / 2}, memory::data_type::f32, memory::format_tag::acdb);
    pooling_forward::desc fd(prop_kind::forward_training, algorithm::pooling_max, src, dst, {2, 2}, {2, 2}, {0, 0},
                             {0, 0});
    pooling_backward::desc bd(algorithm::pooling_max, src, dst, {2, 2}, {2, 2}, {0, 0}, {0, 0});
    auto make = [&] { return primitive_desc(pooling_forward::primitive_desc(fd, cpu_engine())); };
    memory x(src, cpu_engine()), y(dst, cpu_engine()), dy(dst, cpu_engine()), dx(src, cpu_engine());
    float* p = static_cast<float*>(x.get_data_handle());
    for (size_t i = 0; i < src.get_size() / 4; ++i) p[i] = std::max(0.f, float((i * 7919u) % 61u) / 30.f - 0.5f);
    float* g = static_cast<float*>(dy.get_data_handle());
    for (size_t i = 0; i < dst.get_size() / 4; ++i) g[i] = float((i * 31u) % 17u) - 8.f;
    std::string label = std::string(s.model) + " " + std::to_string(s.c) + "x" + std::to_string(s.h) + "x" +
                        std::to_string(s.h);
    std::vector<std::string> names = nn::impl_names(make);
    memory ws;
    for (int i = 0; i < static_cast<int>(names.size()); ++i) {
      pooling_forward::primitive_desc pd(nn::nth_impl(make, i).get());
      memory w(pd.workspace_desc(), cpu_engine());
      if (i == 0) ws = w;
      pooling_forward prim(pd);
      double ms = median_ms([&] {
        prim.execute(cpu_stream(), {{DNNL_ARG_SRC, x}, {DNNL_ARG_DST, y}, {DNNL_ARG_WORKSPACE, w}});
        cpu_stream().wait();
      }, names[static_cast<size_t>(i)].rfind("ref", 0) == 0 ? 3 : runs);
      std::printf("| %s | forward_training | %s | %.3f |\n", label.c_str(), names[static_cast<size_t>(i)].c_str(), ms);
    }
    pooling_forward::primitive_desc hint(nn::nth_impl(make, 0).get());
    auto make_b = [&] { return primitive_desc(pooling_backward::primitive_desc(bd, cpu_engine(), hint)); };
    std::vector<std::string> bnames = nn::impl_names(make_b);
    for (int i = 0; i < static_cast<int>(bnames.size()); ++i) {
      pooling_backward prim(pooling_backward::primitive_desc(nn::nth_impl(make_b, i).get()));
      double ms = median_ms([&] {
        prim.execute(cpu_stream(), {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_DIFF_SRC, dx}, {DNNL_ARG_WORKSPACE, ws}});
        cpu_stream().wait();
      }, bnames[static_cast<size_t>(i)].rfind("ref", 0) == 0 ? 3 : runs);
      std::printf("| %s | backward | %s | %.3f |\n", label.c_str(), bnames[static_cast<size_t>(i)].c_str(), ms);
    }
  }
  nlohmann::json env = frugal::io::environment_info();
  std::printf("\n%s, oneDNN %s, CPU ISA %s.\n", env.value("cpu", "").c_str(), env.value("onednn_version", "").c_str(),
              env.value("onednn_cpu_isa", "").c_str());
  return 0;
}
