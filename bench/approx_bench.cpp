// Approximate-conv speed against oneDNN fp32 conv on resnet20 shapes, batch 128.
// Build: g++ -std=c++20 -O2 -march=native -I lib -isystem /usr/include/opencv4 bench/approx_bench.cpp lib/approx/*.cpp
//        -ldnnl -ltbb -lopencv_core -lopencv_imgproc -lopencv_imgcodecs -o approx_bench
// Prints one JSON line per (shape, path): median ms of RUNS runs and the ratio to the median of the oneDNN fp32 conv
// timed in alternating blocks with it; once with the activation range found per call (act_calibration=batch, ms /
// ratio) and once with it fixed by calibration (ms_calibrated / ratio_calibrated).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <utility>
#include <random>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "timing.h"

#include "approx/kernels.h"
#include "util/omp_env.h"

using namespace frugal::approx;
using frugal::bench::interleaved_median_ms;
using frugal::bench::median_ms;

int main(int argc, char** argv) {
  frugal::util::remember_argv(argv);
  frugal::util::prefer_short_omp_spin();  // the OpenMP setting frugal runs approximate layers with
  // approx_bench [RUNS [FILTER [CHANNELS]]]: FILTER keeps the paths whose "multiplier mode" name contains it,
  // CHANNELS the one shape with that many channels (profiling)
  int runs = argc > 1 ? std::atoi(argv[1]) : 10;
  const std::string filter = argc > 2 ? argv[2] : "";
  const int only_c = argc > 3 ? std::atoi(argv[3]) : 0;
  // APPROX_S16=0: the split layout stays on oneDNN's int8 conv instead of frugal's s16 engine (A/B comparisons;
  // see onednn_terms.cpp), APPROX_S16=1 forces the engine wherever the layout allows it
  if (const char* s16 = std::getenv("APPROX_S16")) detail::set_terms_s16(std::atoi(s16));
  struct Case { int c, hw; };
  const Case cases[] = {{16, 32}, {32, 16}, {64, 8}};
  const int n = 128;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 1);
  for (const Case& cs : cases) {
    const int c = cs.c, hw = cs.hw;
    if (only_c && c != only_c) continue;
    std::vector<float> src(size_t(n) * hw * hw * c), w(size_t(c) * c * 9), bias(size_t(c), 0.1f),
        dst(size_t(n) * hw * hw * c);
    for (auto& v : src) v = std::max(0.0f, nd(rng));
    for (auto& v : w) v = nd(rng) * 0.1f;
    // oneDNN fp32, NHWC activations, weights in the primitive's preferred layout
    using tag = dnnl::memory::format_tag;
    using dt = dnnl::memory::data_type;
    dnnl::memory::desc sd({n, c, hw, hw}, dt::f32, tag::nhwc), dd({n, c, hw, hw}, dt::f32, tag::nhwc),
        wd({c, c, 3, 3}, dt::f32, tag::any), bd({c}, dt::f32, tag::x);
    dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, sd, wd,
                                         bd, dd, {1, 1}, {1, 1}, {1, 1});
    // a user scratchpad, as the approximate paths use: in oneDNN's default mode a scratchpad would be allocated
    // (and page-faulted) around every call, which would slow the reference down
    dnnl::primitive_attr ref_attr;
    ref_attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::convolution_forward::primitive_desc pd(desc, ref_attr, eng);
    dnnl::memory scratch(pd.scratchpad_desc(), eng);
    dnnl::memory sm(sd, eng, src.data()), dm(dd, eng, dst.data()), bm(bd, eng, bias.data());
    dnnl::memory wuser({{c, c, 3, 3}, dt::f32, tag::oihw}, eng, w.data());
    dnnl::memory wm(pd.weights_desc(), eng);
    dnnl::reorder(wuser, wm).execute(strm, wuser, wm);
    dnnl::convolution_forward conv(pd);
    auto run_ref = [&] {
      conv.execute(strm, {{DNNL_ARG_SRC, sm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_BIAS, bm}, {DNNL_ARG_DST, dm},
                          {DNNL_ARG_SCRATCHPAD, scratch}});
      strm.wait();
    };
    double t_ref = median_ms(run_ref, runs);
    std::vector<float> ref = dst;
    std::printf("{\"shape\":\"3x3 %d->%d %dx%d n%d\",\"path\":\"onednn_fp32\",\"ms\":%.3f,\"ratio\":1.0,"
                "\"scratchpad_bytes\":%zu,\"impl\":\"%s\"}\n", c, c, hw, hw, n, t_ref, pd.scratchpad_desc().get_size(),
                pd.impl_info_str());
    std::vector<int32_t> bitexact;
    struct P { const char* mult; const char* mode; };
    const P paths[] = {{"mitchell", "lut"},      {"drum:4", "lut"},        {"drum:4", "functional"},
                       {"mitchell", "functional"}, {"mitchell:signed", "functional"}, {"bam:0,6", "functional"},
                       {"bam:0,6:signed", "functional"},
                       {"mitchell", "lowrank:2"}, {"mitchell", "lowrank:4"}, {"mitchell", "lowrank:6"},
                       {"mitchell", "lowrank:8"}};
    for (const P& p : paths) {
      if (!filter.empty() && (std::string(p.mult) + " " + p.mode).find(filter) == std::string::npos) continue;
      ApproxSpec as;
      as.multiplier = p.mult, as.mode = p.mode;
      ApproxConv2d ac(as, c, c, 3, 3, 1, 1, 1);
      ac.set_weights(w.data(), bias.data());
      // the same layer with its activation range fixed beforehand (act_calibration=minmax:N in frugal), here to this
      // batch's range so the output is the same; the per-call min/max pass over the input is then skipped
      ApproxConv2d cal(as, c, c, 3, 3, 1, 1, 1);
      cal.set_weights(w.data(), bias.data());
      float lo = 0, hi = 0;
      for (float v : src) lo = std::min(lo, v), hi = std::max(hi, v);
      cal.set_act_range(lo, hi);
      std::vector<float> out(dst.size()), out_cal(dst.size());
      // both variants and the fp32 conv timed in the same loop: the ratios are of those medians
      const std::vector<double> med = interleaved_median_ms(
          {run_ref, [&] { ac.forward(src.data(), n, hw, hw, out.data()); },
           [&] { cal.forward(src.data(), n, hw, hw, out_cal.data()); }},
          runs);
      const double t_ref_here = med[0], t = med[1], t_cal = med[2];
      double err = 0, mag = 0;
      for (size_t i = 0; i < out.size(); ++i) err += std::abs(out[i] - ref[i]), mag += std::abs(ref[i]);
      std::string extra;
      if (std::string(p.mode).rfind("lowrank", 0) == 0) {
        // emulation error against the bit-exact LUT path on the same quantized codes
        ApproxSpec es = as;
        es.mode = "lut";
        ApproxConv2d ec(es, c, c, 3, 3, 1, 1, 1);
        ec.set_weights(w.data(), bias.data());
        QuantParams aq = ac.act_params(src.data(), src.size());
        std::vector<int32_t> q(src.size());
        quantize(src.data(), src.size(), aq, q.data());
        std::vector<uint8_t> codes(q.size());
        for (size_t i = 0; i < q.size(); ++i) codes[i] = code(q[i]);
        std::vector<int32_t> exact(dst.size());
        std::vector<float> approx(dst.size());
        ec.products(codes.data(), n, hw, hw, code(aq.zero_point[0]), exact.data());
        ac.products_float(codes.data(), n, hw, hw, code(aq.zero_point[0]), approx.data());
        double e = 0, m = 0, el = 0;
        for (size_t i = 0; i < exact.size(); ++i) {
          e += std::abs(double(approx[i]) - exact[i]);
          m += std::abs(double(exact[i]));
          el += std::abs(double(exact[i]) - 0);
        }
        char buf[200];
        std::snprintf(buf, sizeof buf, ",\"emulation_mae\":%.3f,\"emulation_rel\":%.3g", e / double(exact.size()), e / m);
        extra = buf;
      }
      const bool same = out_cal == out;
      std::printf("{\"shape\":\"3x3 %d->%d %dx%d n%d\",\"path\":\"%s %s\",\"ms\":%.3f,\"ratio\":%.2f,"
                  "\"ms_calibrated\":%.3f,\"ratio_calibrated\":%.2f,\"calibrated_output_identical\":%s,"
                  "\"rel_err_vs_fp32\":%.4f%s,\"kernel_path\":\"%s\"}\n",
                  c, c, hw, hw, n, p.mult, p.mode, t, t / t_ref_here, t_cal, t_cal / t_ref_here,
                  same ? "true" : "false", err / mag, extra.c_str(), ac.kernel_path().c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}
