// Compressor micro-benchmark, same cases and JSON field names as ../shared/peers/torch_compressors.py:
// compress (encode) + decompress (decode) of N(0,1) float32 input, median of --reps (20) after --warmup (3).
// Build: mpicxx -std=c++20 -O2 -march=native -I lib bench/compressors_bench.cpp lib/gradcomp/*.cpp
//        lib/dist/*.cpp -ltbb -lz -o compressors_bench
// Usage: compressors_bench [--sizes 1e5,1e6,1e7] [--methods topk,dgc,...] [--matrix 256x2304] [--reps 20]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <emmintrin.h>
#include <tbb/task_arena.h>

#include "gradcomp/blocks.h"
#include "gradcomp/compressors.h"
#include "gradcomp/simd.h"
#include "util/build_info.h"
#include "util/cpu_features.h"

using namespace frugal::gradcomp;

static std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t a = 0;
  while (a <= s.size()) {
    size_t c = s.find(',', a);
    if (c == std::string::npos) c = s.size();
    if (c > a) out.push_back(s.substr(a, c - a));
    a = c + 1;
  }
  return out;
}

static double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t k = v.size();
  return k % 2 ? v[k / 2] : 0.5 * (v[k / 2 - 1] + v[k / 2]);
}

static void add_scaled(float* v, const float* g, size_t n) {
  for (size_t i = 0; i < n; ++i) v[i] += 0.5f * g[i];
}
FRUGAL_TARGET_AVX2 static void add_scaled_avx2(float* v, const float* g, size_t n) {
  for (size_t i = 0; i < n; ++i) v[i] += 0.5f * g[i];
}

// The memory traffic DGC with a residual cannot avoid, and nothing else: the residual update v += s g in place
// (read g and v, write v) and the dense decode's zero fill of the output (streaming stores), each in the same TBB
// blocks as the compressor's own passes. Any DGC that keeps a residual takes at least this long per call.
static double dgc_memory_floor_ms(const std::vector<float>& g, int reps, int warmup) {
  const size_t n = g.size();
  std::vector<float> v(n, 0.0f), y(n, 1.0f);
  std::vector<double> tm;
  for (int r = 0; r < warmup + reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for_each_block(n, size_t(1) << 18, [&](size_t, size_t lo, size_t len) {
      if (__builtin_cpu_supports("avx2"))
        add_scaled_avx2(v.data() + lo, g.data() + lo, len);
      else
        add_scaled(v.data() + lo, g.data() + lo, len);
    });
    for_each_block(n, size_t(1) << 18, [&](size_t, size_t lo, size_t len) {
      size_t i = lo;
      for (; i < lo + len && reinterpret_cast<uintptr_t>(&y[i]) % 16; ++i) y[i] = 0.0f;
      for (; i + 4 <= lo + len; i += 4) _mm_stream_ps(&y[i], _mm_setzero_ps());
      for (; i < lo + len; ++i) y[i] = 0.0f;
      _mm_sfence();
    });
    auto t1 = std::chrono::steady_clock::now();
    if (r >= warmup) tm.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  if (v[n / 2] == 12345.0f) std::puts("");  // keep the update
  return median_of(tm);
}

int main(int argc, char** argv) {
  std::string sizes = "1e5,1e6,1e7", methods = "topk,dgc,randomk,qsgd,signsgd,powersgd,fp16", matrix = "256x2304";
  int reps = 20, warmup = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--sizes")
      sizes = v;
    else if (k == "--methods")
      methods = v;
    else if (k == "--matrix")
      matrix = v;
    else if (k == "--reps")
      reps = std::stoi(v);
    else if (k == "--warmup")
      warmup = std::stoi(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  const frugal::util::BuildInfo& b = frugal::util::build_info();
  // the compressors' large passes run in TBB blocks (gradcomp/blocks.h) on every core TBB has
  const int threads = tbb::this_task_arena::max_concurrency();
  std::printf(
      "{\"kind\": \"env\", \"impl\": \"frugal\", \"threads\": %d, \"kernel_isa\": \"%s\", \"commit\": \"%s\", "
      "\"dirty\": %s, \"native\": %s}\n",
      threads, frugal::util::isa_name(frugal::util::kernel_isa()), b.git_commit, b.git_dirty ? "true" : "false",
      b.native ? "true" : "false");
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors;
  for (auto& s : split(sizes)) tensors.push_back({"flat", {int64_t(std::stod(s))}});
  if (!matrix.empty()) {
    auto x = matrix.find('x');
    tensors.push_back({"conv_grad", {std::stoll(matrix.substr(0, x)), std::stoll(matrix.substr(x + 1))}});
  }
  for (auto& [tname, shape] : tensors) {
    size_t n = shape_numel(shape);
    std::vector<float> x(n);
    Rng rng(0);
    for (auto& v : x) v = rng.normal();
    std::vector<int64_t> mshape = shape;
    if (shape.size() == 1) {  // flat vector viewed as m x n/m for powersgd, as the peer does
      int64_t m = int64_t(std::sqrt(double(n)));
      while (n % size_t(m)) --m;
      mshape = {m, int64_t(n) / m};
    }
    struct Case {
      std::string method, spec, param;
      std::vector<int64_t> shape;
    };
    std::vector<Case> cases;
    for (auto& m : split(methods)) {
      if (m == "topk" || m == "dgc" || m == "randomk")
        for (double f : {0.001, 0.01}) {
          char buf[64];
          std::snprintf(buf, sizeof buf, "\"k_frac\": %g", f);
          std::string spec = (m == "randomk" ? "randk" : m) + ":" + std::to_string(f) + (m == "topk" ? "+noef" : "");
          cases.push_back({m, spec, buf, shape});
        }
      else if (m == "qsgd")
        cases.push_back({m, "qsgd:256", "\"s\": 256", shape});
      else if (m == "signsgd")
        cases.push_back({m, "signsgd", "", shape});
      else if (m == "fp16")
        cases.push_back({m, "fp16", "", shape});
      else if (m == "powersgd")
        for (int r : {1, 2, 4})
          cases.push_back({m, "powersgd:" + std::to_string(r), "\"rank\": " + std::to_string(r), mshape});
    }
    if (methods.find("dgc") != std::string::npos && tname == "flat") {
      std::printf("{\"kind\": \"memory_floor\", \"tensor\": \"%s\", \"n\": %zu, \"method\": \"dgc\", "
                  "\"what\": \"residual update v += s g (read g, v; write v) + dense decode zero fill\", "
                  "\"ms_median\": %.4f, \"threads\": %d}\n",
                  tname.c_str(), n, dgc_memory_floor_ms(x, reps, warmup), threads);
      std::fflush(stdout);
    }
    for (auto& c : cases) {
      CompressorContext ctx;
      ctx.shape = c.shape;
      auto comp = make_compressor(c.spec, ctx);
      comp->begin_step(StepInfo{0, 0, 0.0f});  // dgc: no momentum, so every rep compresses the same input
      std::vector<float> y(n);
      std::vector<double> cm, dm, tm;
      Message msg;
      // dgc keeps its state across reps as in training (momentum 0: v accumulates the unsent residual); the
      // work per call is the same as the peer's stateless DGC plus the residual update.
      for (int r = 0; r < warmup + reps; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        comp->encode(x.data(), n, msg);
        auto t1 = std::chrono::steady_clock::now();
        comp->decode(msg, y.data(), n);
        auto t2 = std::chrono::steady_clock::now();
        if (r >= warmup) {
          cm.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
          dm.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
          tm.push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
        }
      }
      if (c.method == "dgc") {  // error and ratio of a fresh compressor's first message, as the peer measures
        comp = make_compressor(c.spec, ctx);
        comp->begin_step(StepInfo{0, 0, 0.0f});
        comp->encode(x.data(), n, msg);
        comp->decode(msg, y.data(), n);
      }
      auto med = median_of;
      double e = 0, nn = 0;
      for (size_t i = 0; i < n; ++i) {
        e += double(y[i] - x[i]) * (y[i] - x[i]);
        nn += double(x[i]) * x[i];
      }
      std::string shp;
      for (size_t i = 0; i < shape.size(); ++i) shp += (i ? ", " : "") + std::to_string(shape[i]);
      std::printf(
          "{\"kind\": \"compressor\", \"impl\": \"frugal\", \"tensor\": \"%s\", \"shape\": [%s], \"n\": %zu, "
          "\"method\": \"%s\", %s%s\"spec\": \"%s\", \"ms_median\": %.4f, \"ms_min\": %.4f, \"ms_max\": %.4f, "
          "\"compress_ms_median\": %.4f, \"decompress_ms_median\": %.4f, \"reps\": %d, \"bits_sent\": %llu, "
          "\"ratio\": %.3f, \"rel_err\": %.5f, \"threads\": %d}\n",
          tname.c_str(), shp.c_str(), n, c.method.c_str(), c.param.c_str(), c.param.empty() ? "" : ", ",
          comp->name().c_str(), med(tm), *std::min_element(tm.begin(), tm.end()),
          *std::max_element(tm.begin(), tm.end()), med(cm), med(dm), reps, (unsigned long long)msg.wire_bits,
          32.0 * double(n) / double(msg.wire_bits), std::sqrt(e / nn), threads);
      std::fflush(stdout);
    }
  }
  return 0;
}
