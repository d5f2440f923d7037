// Implementation selection by timing (nn/impl_select.h) is only sound if every implementation it may pick gives
// the same bits. These tests check that for max pooling, forward and backward (every backward implementation on
// every forward implementation's workspace), ties included, against oneDNN's reference loops.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <vector>

#include "nn/impl_select.h"
#include "nn/layers.h"
#include "tensor/tensor.h"

using namespace frugal;
using namespace frugal::nn;
using namespace dnnl;

namespace {

struct PoolCase {
  memory::dims src, kernel, strides, pad;
};

std::vector<float> as_vector(const memory& m) {
  const float* p = static_cast<const float*>(m.get_data_handle());
  return std::vector<float>(p, p + m.get_desc().get_size() / sizeof(float));
}

}  // namespace

TEST_CASE("max pooling: every oneDNN implementation gives the reference's bits, ties included") {
  const std::vector<PoolCase> cases{
      {{8, 6, 28, 28}, {2, 2}, {2, 2}, {0, 0}},   // lenet5's first pool: a 6-channel tail on AVX2
      {{4, 16, 10, 10}, {2, 2}, {2, 2}, {0, 0}},  // no tail
      {{4, 3, 9, 9}, {3, 3}, {2, 2}, {1, 1}},     // overlapping windows and padding
  };
  for (const PoolCase& c : cases) {
    for (bool train : {true, false}) {
      memory::dims od{c.src[0], c.src[1], (c.src[2] + 2 * c.pad[0] - c.kernel[0]) / c.strides[0] + 1,
                      (c.src[3] + 2 * c.pad[1] - c.kernel[1]) / c.strides[1] + 1};
      memory::desc src_md(c.src, memory::data_type::f32, memory::format_tag::acdb);
      memory::desc dst_md(od, memory::data_type::f32, memory::format_tag::acdb);
      pooling_forward::desc desc(train ? prop_kind::forward_training : prop_kind::forward_inference,
                                 algorithm::pooling_max, src_md, dst_md, c.strides, c.kernel, c.pad, c.pad);
      auto make = [&] { return pooling_forward::primitive_desc(desc, cpu_engine()); };
      memory src(src_md, cpu_engine()), diff_dst(dst_md, cpu_engine());
      float* s = static_cast<float*>(src.get_data_handle());
      // ReLU-like input: ~40 % zeros and few distinct positive values, so most windows hold ties.
      for (size_t i = 0; i < src_md.get_size() / 4; ++i) s[i] = std::max(0.f, float((i * 7919u) % 7u) - 3.f);
      float* g = static_cast<float*>(diff_dst.get_data_handle());
      for (size_t i = 0; i < dst_md.get_size() / 4; ++i) g[i] = float((i * 31u) % 17u) - 8.f;

      std::vector<std::string> names = impl_names([&] { return primitive_desc(make()); });
      REQUIRE(names.size() >= 2);  // at least one jit kernel and the reference
      std::vector<float> ref_dst, ref_diff_src;
      // The reference implementation is the last one on oneDNN's list; compare everything else to it.
      for (int i = static_cast<int>(names.size()) - 1; i >= 0; --i) {
        CAPTURE(names[static_cast<size_t>(i)]);
        CAPTURE(train);
        pooling_forward::primitive_desc pd(nth_impl([&] { return primitive_desc(make()); }, i).get());
        REQUIRE(std::string(pd.impl_info_str()) == names[static_cast<size_t>(i)]);
        memory dst(dst_md, cpu_engine()), ws;
        std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
        if (train) args[DNNL_ARG_WORKSPACE] = ws = memory(pd.workspace_desc(), cpu_engine());
        pooling_forward(pd).execute(cpu_stream(), args);
        cpu_stream().wait();
        std::vector<float> out = as_vector(dst);
        // Every backward implementation on this forward's workspace (Pool::backward picks one by speed).
        std::vector<std::vector<float>> diffs;
        if (train) {
          pooling_backward::desc bdesc(algorithm::pooling_max, src_md, dst_md, c.strides, c.kernel, c.pad, c.pad);
          auto make_b = [&] { return primitive_desc(pooling_backward::primitive_desc(bdesc, cpu_engine(), pd)); };
          std::vector<std::string> bnames = impl_names(make_b);
          REQUIRE(bnames.size() >= 2);
          for (int b = static_cast<int>(bnames.size()) - 1; b >= 0; --b) {
            CAPTURE(bnames[static_cast<size_t>(b)]);
            memory diff_src(src_md, cpu_engine());
            std::memset(diff_src.get_data_handle(), 0x7f, src_md.get_size());  // every element must be written
            pooling_backward(pooling_backward::primitive_desc(nth_impl(make_b, b).get()))
                .execute(cpu_stream(),
                         {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_DIFF_SRC, diff_src}, {DNNL_ARG_WORKSPACE, ws}});
            cpu_stream().wait();
            diffs.push_back(as_vector(diff_src));
          }
        }
        if (ref_dst.empty()) {
          CHECK(names[static_cast<size_t>(i)].rfind("ref", 0) == 0);
          ref_dst = out;
          if (train) ref_diff_src = diffs.front();  // the reference backward, last on its list
        } else {
          CHECK(std::memcmp(out.data(), ref_dst.data(), out.size() * sizeof(float)) == 0);
        }
        for (const std::vector<float>& diff : diffs)
          CHECK(std::memcmp(diff.data(), ref_diff_src.data(), diff.size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST_CASE("fastest_impl: never the reference loop, the same choice per key, off with FRUGAL_IMPL_SELECT=0") {
  memory::desc src_md({8, 6, 28, 28}, memory::data_type::f32, memory::format_tag::acdb);
  memory::desc dst_md({8, 6, 14, 14}, memory::data_type::f32, memory::format_tag::acdb);
  pooling_forward::desc desc(prop_kind::forward_training, algorithm::pooling_max, src_md, dst_md, {2, 2}, {2, 2},
                             {0, 0}, {0, 0});
  std::function<pooling_forward::primitive_desc()> make = [&] {
    return pooling_forward::primitive_desc(desc, cpu_engine());
  };
  std::vector<int> args{DNNL_ARG_SRC, DNNL_ARG_DST, DNNL_ARG_WORKSPACE};
  // A primitive of oneDNN's first choice sits in the primitive cache, as it would after earlier training steps.
  pooling_forward first(make());
  std::string chosen = fastest_impl("test maxpool 8x6x28x28", make, args).impl_info_str();
  CHECK(chosen.rfind("ref", 0) != 0);
  CHECK(std::string(fastest_impl("test maxpool 8x6x28x28", make, args).impl_info_str()) == chosen);
  setenv("FRUGAL_IMPL_SELECT", "0", 1);
  CHECK(std::string(fastest_impl("test maxpool (off)", make, args).impl_info_str()) == make().impl_info_str());
  unsetenv("FRUGAL_IMPL_SELECT");
}

TEST_CASE("nth_impl walks oneDNN's list even when the primitive cache holds earlier candidates") {
  memory::desc src_md({8, 6, 28, 28}, memory::data_type::f32, memory::format_tag::acdb);
  memory::desc dst_md({8, 6, 14, 14}, memory::data_type::f32, memory::format_tag::acdb);
  pooling_forward::desc desc(prop_kind::forward_training, algorithm::pooling_max, src_md, dst_md, {2, 2}, {2, 2},
                             {0, 0}, {0, 0});
  auto make = [&] { return primitive_desc(pooling_forward::primitive_desc(desc, cpu_engine())); };
  std::vector<std::string> names = impl_names(make);
  for (int i = 0; i < static_cast<int>(names.size()); ++i) {
    primitive_desc pd = nth_impl(make, i);
    CHECK(std::string(pd.impl_info_str()) == names[static_cast<size_t>(i)]);
    primitive created(pd);  // enters the cache
  }
  CHECK_THROWS_AS(nth_impl(make, static_cast<int>(names.size())), std::out_of_range);
}

TEST_CASE("pick_by_time: the fastest only when it beats oneDNN's first choice by the margin") {
  CHECK(pick_by_time({1.0, 0.5, 0.7}, 0.8) == 1);
  CHECK(pick_by_time({1.0, 0.85, 0.9}, 0.8) == 0);  // within the margin: noise, keep the first
  CHECK(pick_by_time({8.0, 7.9, 7.95, 8.1}, 0.8) == 0);  // a loaded machine: everything waits alike
  CHECK(pick_by_time({0.3}, 0.8) == 0);
  CHECK_THROWS_AS(pick_by_time({}, 0.8), std::invalid_argument);
}
