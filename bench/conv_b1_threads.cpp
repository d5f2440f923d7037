// Batch-1 convolution time against the thread count, on resnet20's conv shapes before and after halving each
// block's inner channels (the Taylor channel-pruning recipe): what bounds the pruned net's batch-1 latency on a
// small machine (results/compress/README.md, "Batch 1 on two threads").
//   conv_b1_threads [RUNS]   (default 2000 runs per variant and shape; OMP_NUM_THREADS caps the team)
// For each 3x3 stride-1 f32 conv (NHWC, fused ReLU, oneDNN's first implementation) prints one JSON line with the
// median microseconds of
//   one_thread:  the conv created and run with one OpenMP thread;
//   all_threads: the conv on every thread (oneDNN splits it);
//   row_halves:  two one-thread convs over the top and bottom halves of the output rows, run side by side in one
//                OpenMP region (each reads its rows plus a one-row halo): a split without oneDNN's own scheduling;
//   row_halves_team: the row halves 10 times in a row inside ONE OpenMP region, the two threads meeting at a spin
//                barrier after each conv (as a net run by a persistent two-thread team would), time / 10;
// and, first, the cost of an empty OpenMP parallel region on every thread (the fork / join every split pays).
// The variants run in alternating blocks of 10 calls, so machine noise hits them alike.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/environment.h"
#include "timing.h"

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

struct Shape {
  const char* what;
  int hw, ic, oc;
};

// Output rows [o0, o1) of a 3x3 stride-1 pad-1 conv over an hw x hw input: input rows [o0 - 1, o1 + 1) clipped
// to the image, zero padding only where the image ends.
convolution_forward::primitive_desc rows_conv(const engine& eng, const Shape& s, int o0, int o1) {
  const int i0 = std::max(0, o0 - 1), i1 = std::min(s.hw, o1 + 1);
  const int pad_top = o0 == 0 ? 1 : 0, pad_bottom = o1 == s.hw ? 1 : 0;
  memory::desc src({1, s.ic, i1 - i0, s.hw}, dt::f32, tag::nhwc);
  memory::desc wei({s.oc, s.ic, 3, 3}, dt::f32, tag::any);
  memory::desc bias({s.oc}, dt::f32, tag::x);
  memory::desc dst({1, s.oc, o1 - o0, s.hw}, dt::f32, tag::nhwc);
  convolution_forward::desc d(prop_kind::forward_inference, algorithm::convolution_direct, src, wei, bias, dst, {1, 1},
                              {pad_top, 1}, {pad_bottom, 1});
  post_ops po;
  po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
  primitive_attr attr;
  attr.set_post_ops(po);
  return convolution_forward::primitive_desc(d, attr, eng);
}

// One conv over output rows [o0, o1), created for `threads` OpenMP threads (oneDNN fixes the count at creation),
// with its own weights and views of the shared input and output.
struct RowsConv {
  primitive prim;
  std::unordered_map<int, memory> args;
  std::string impl;
};
RowsConv make_rows_conv(const engine& eng, const Shape& s, int o0, int o1, int threads, std::vector<float>& in,
                        std::vector<float>& out, std::vector<float>& bias) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  auto pd = rows_conv(eng, s, o0, o1);
  RowsConv c{convolution_forward(pd), {}, pd.impl_info_str()};
  omp_set_num_threads(saved);
  memory w(pd.weights_desc(), eng);
  std::fill_n(static_cast<float*>(w.get_data_handle()), pd.weights_desc().get_size() / sizeof(float), 0.01f);
  const int i0 = std::max(0, o0 - 1);
  c.args = {{DNNL_ARG_SRC, memory(pd.src_desc(), eng, in.data() + size_t(i0) * s.hw * s.ic)},
            {DNNL_ARG_WEIGHTS, w},
            {DNNL_ARG_BIAS, memory(pd.bias_desc(), eng, bias.data())},
            {DNNL_ARG_DST, memory(pd.dst_desc(), eng, out.data() + size_t(o0) * s.hw * s.oc)}};
  return c;
}

// Two threads meet here: the last to arrive flips the phase, the other spins on it (about 0.25 us a meeting on the
// 2-vCPU KVM guest, against 3.5-3.8 us for an OpenMP fork / join).
struct alignas(64) SpinBarrier {
  std::atomic<int> arrived{0};
  std::atomic<int> phase{0};
  void wait(int& local_phase) {
    local_phase ^= 1;
    if (arrived.fetch_add(1, std::memory_order_acq_rel) == 1) {
      arrived.store(0, std::memory_order_relaxed);
      phase.store(local_phase, std::memory_order_release);
    } else {
      while (phase.load(std::memory_order_acquire) != local_phase) __builtin_ia32_pause();
    }
  }
};

// Medians (microseconds) of each function, timed in alternating blocks of 10 calls after 20 warm-up calls each.
std::vector<double> interleaved_us(const std::vector<std::function<void()>>& fs, int runs) {
  std::vector<double> us = frugal::bench::interleaved_median_ms(fs, runs, 10, 20);
  for (double& v : us) v *= 1000.0;
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::atoi(argv[1]) : 2000;
  const int threads = omp_get_max_threads();
  engine eng(engine::kind::cpu, 0);
  stream s0(eng), s1(eng);  // one stream per OpenMP thread of the row halves
  std::atomic<int> sink{0};
  const double fork_join =
      interleaved_us({[&] {
#pragma omp parallel num_threads(threads)
                       sink.store(omp_get_thread_num(), std::memory_order_relaxed);
                     }},
                     runs)[0];
  const auto env = frugal::io::environment_info();  // commit, oneDNN's ISA, CPU
  std::printf("{\"kind\": \"fork_join\", \"threads\": %d, \"us\": %.2f, \"environment\": %s}\n", threads,
              fork_join, env.dump().c_str());
  const Shape shapes[] = {{"stage 1 fp32", 32, 16, 16}, {"stage 1 pruned, first conv", 32, 16, 8},
                          {"stage 1 pruned, second conv", 32, 8, 16}, {"stage 2 fp32", 16, 32, 32},
                          {"stage 2 pruned, first conv", 16, 32, 16}, {"stage 2 pruned, second conv", 16, 16, 32},
                          {"stage 3 fp32", 8, 64, 64}, {"stage 3 pruned, first conv", 8, 64, 32},
                          {"stage 3 pruned, second conv", 8, 32, 64}};
  for (const Shape& s : shapes) {
    std::vector<float> in(size_t(s.hw) * s.hw * s.ic, 0.5f), out(size_t(s.hw) * s.hw * s.oc), bias(size_t(s.oc), 0.1f);
    RowsConv one = make_rows_conv(eng, s, 0, s.hw, 1, in, out, bias);
    RowsConv all = make_rows_conv(eng, s, 0, s.hw, threads, in, out, bias);
    RowsConv top = make_rows_conv(eng, s, 0, s.hw / 2, 1, in, out, bias);
    RowsConv bottom = make_rows_conv(eng, s, s.hw / 2, s.hw, 1, in, out, bias);
    constexpr int kTeamConvs = 10;
    SpinBarrier barrier;
    std::vector<double> us = interleaved_us(
        {[&] {  // one thread at execution too: an implementation that reads the count when it runs stays on one
           omp_set_num_threads(1);
           one.prim.execute(s0, one.args);
           omp_set_num_threads(threads);
         },
         [&] { all.prim.execute(s0, all.args); },
         [&] {
           int team = 0;
#pragma omp parallel num_threads(2)
           {
             if (omp_get_thread_num() == 0) {
               team = omp_get_num_threads();
               top.prim.execute(s0, top.args);
             } else {
               bottom.prim.execute(s1, bottom.args);
             }
           }
           if (team != 2) {
             std::fprintf(stderr, "conv_b1_threads: OpenMP gave the row halves %d thread(s), not 2\n", team);
             std::exit(1);
           }
         },
         [&] {
#pragma omp parallel num_threads(2)
           {
             int local_phase = barrier.phase.load();
             const bool first = omp_get_thread_num() == 0;
             for (int k = 0; k < kTeamConvs; ++k) {
               if (first)
                 top.prim.execute(s0, top.args);
               else
                 bottom.prim.execute(s1, bottom.args);
               barrier.wait(local_phase);
             }
           }
         }},
        runs);
    us[3] /= kTeamConvs;
    const double mflop = 2e-6 * s.hw * s.hw * s.oc * s.ic * 9;
    std::printf(
        "{\"kind\": \"conv_b1\", \"shape\": \"%s\", \"hw\": %d, \"ic\": %d, \"oc\": %d, \"mflop\": %.2f, \"impl\": "
        "\"%s\", \"threads\": %d, \"one_thread_us\": %.1f, \"all_threads_us\": %.1f, \"row_halves_us\": %.1f, \"row_halves_team_us\": %.1f}\n",
        s.what, s.hw, s.ic, s.oc, mflop, one.impl.c_str(), threads, us[0], us[1], us[2], us[3]);
    std::fflush(stdout);
  }
  return 0;
}
