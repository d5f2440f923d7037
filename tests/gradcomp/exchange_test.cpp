// GradientExchange: in-process W workers vs W ranks over a ThreadGroup (the MPI twin), dense rule, stats.
#include "gradcomp/exchange.h"

#include <doctest/doctest.h>

#include <cstring>
#include <thread>

#include "gradcomp/compressors.h"
#include "util/check.h"

using namespace frugal;
using namespace frugal::gradcomp;

namespace {
const std::vector<std::vector<int64_t>> kShapes = {{16, 3, 5, 5}, {16}, {32, 16, 3, 3}, {10, 512}, {10}, {8, 8}};

// Gradient of global worker g at step s for parameter p: deterministic, different per worker.
std::vector<float> grad_of(int g, int64_t s, size_t p) {
  size_t n = shape_numel(kShapes[p]);
  Rng r(mix_seed(uint64_t(g) * 1000 + uint64_t(s), p));
  std::vector<float> v(n);
  for (auto& x : v) x = r.normal() * (1.0f + float(p));
  return v;
}

// Runs `steps` steps; returns worker 0's result of every step (flattened).
std::vector<float> run_in_process(const ExchangeOptions& o, int W, int steps) {
  GradientExchange ex(o, kShapes, W, nullptr);
  std::vector<float> out;
  for (int s = 0; s < steps; ++s) {
    std::vector<std::vector<std::vector<float>>> store(static_cast<size_t>(W));
    std::vector<std::vector<float*>> ptr(static_cast<size_t>(W));
    for (int w = 0; w < W; ++w)
      for (size_t p = 0; p < kShapes.size(); ++p) {
        store[size_t(w)].push_back(grad_of(w, s, p));
        ptr[size_t(w)].push_back(store[size_t(w)].back().data());
      }
    ex.exchange(ptr, s, s / 2);
    for (int w = 1; w < W; ++w)
      for (size_t p = 0; p < kShapes.size(); ++p) REQUIRE(store[size_t(w)][p] == store[0][p]);
    for (auto& v : store[0]) out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

std::vector<float> run_ranks(const ExchangeOptions& o, int W, int steps) {
  comm::ThreadGroup group(W);
  std::vector<std::vector<float>> outs(static_cast<size_t>(W));
  std::vector<std::string> errors(static_cast<size_t>(W));
  std::vector<std::thread> th;
  for (int r = 0; r < W; ++r)
    th.emplace_back([&, r] {
      try {
        GradientExchange ex(o, kShapes, 1, &group.rank(r));
        for (int s = 0; s < steps; ++s) {
          std::vector<std::vector<float>> store;
          std::vector<std::vector<float*>> ptr(1);
          for (size_t p = 0; p < kShapes.size(); ++p) store.push_back(grad_of(r, s, p));
          for (auto& v : store) ptr[0].push_back(v.data());
          ex.exchange(ptr, s, s / 2);
          for (auto& v : store) outs[size_t(r)].insert(outs[size_t(r)].end(), v.begin(), v.end());
        }
      } catch (const std::exception& e) {
        errors[size_t(r)] = e.what();
        group.fail(e.what());
      }
    });
  for (auto& t : th) t.join();
  for (int r = 0; r < W; ++r) REQUIRE_MESSAGE(errors[size_t(r)].empty(), errors[size_t(r)]);
  for (int r = 1; r < W; ++r) REQUIRE(outs[size_t(r)] == outs[0]);
  return outs[0];
}
}  // namespace

TEST_CASE("in-process W=4 equals 4 ranks over a ThreadGroup, bit for bit, for every compressor") {
  for (std::string spec : {"none", "fp16", "bf16", "topk:0.05", "randk:0.1", "threshold:2", "dgc:0.01", "qsgd:16",
                           "terngrad", "signsgd", "efsign", "onebit", "powersgd:2", "adaptive:0.02"}) {
    INFO(spec);
    ExchangeOptions o;
    o.compressor = spec;
    o.dense_below = 100;
    o.seed = 5;
    o.warmup_epochs = 1;
    o.powersgd_dense_steps = 1;
    o.sample_every = 2;
    auto a = run_in_process(o, 4, 4);
    o.parallel = false;
    auto b = run_ranks(o, 4, 4);
    REQUIRE(a.size() == b.size());
    CHECK(std::memcmp(a.data(), b.data(), 4 * a.size()) == 0);
  }
}

TEST_CASE("dense exchange is the exact mean, dense rule is configurable and reported") {
  ExchangeOptions o;
  o.compressor = "topk:0.01";
  o.sample_every = 1;
  GradientExchange ex(o, kShapes, 3, nullptr);
  auto d = ex.describe();
  CHECK(d.at("tensors").at(1).at("dense_reason") != "");  // (16): 1-D
  CHECK(d.at("tensors").at(5).at("dense_reason") != "");  // (8, 8): 64 < 1024
  CHECK(d.at("tensors").at(3).at("dense_reason") == "");  // (10, 512) compressed
  CHECK(d.at("tensors").at(3).at("collective") == "allgather");
  CHECK(d.at("tensors").at(1).at("codec") == "none");

  ExchangeOptions dense;
  dense.sample_every = 1;
  GradientExchange dx(dense, kShapes, 3, nullptr);
  std::vector<std::vector<std::vector<float>>> store(3);
  std::vector<std::vector<float*>> ptr(3);
  for (int w = 0; w < 3; ++w)
    for (size_t p = 0; p < kShapes.size(); ++p) {
      store[size_t(w)].push_back(grad_of(w, 0, p));
      ptr[size_t(w)].push_back(store[size_t(w)].back().data());
    }
  dx.exchange(ptr, 0, 0);
  for (size_t p = 0; p < kShapes.size(); ++p) {
    auto g0 = grad_of(0, 0, p), g1 = grad_of(1, 0, p), g2 = grad_of(2, 0, p);
    for (size_t i = 0; i < g0.size(); ++i) REQUIRE(store[0][p][i] == ((g0[i] + g1[i]) + g2[i]) / 3.0f);
  }
  auto s = dx.take_stats();
  CHECK(s.total.steps == 1);
  CHECK(s.total.rel_l2_err() == 0.0);
  CHECK(s.total.cosine() == doctest::Approx(1.0));
  CHECK(s.total.ratio_fp32() == doctest::Approx(1.0).epsilon(0.01));
  CHECK(dx.take_stats().period.steps == 0);
}

TEST_CASE("topk exchange sends far fewer bytes and reports sampled error") {
  ExchangeOptions o;
  o.compressor = "topk:0.01";
  o.dense_below = 100;
  o.sample_every = 1;
  run_in_process(o, 2, 1);
  GradientExchange ex(o, {{100, 1000}}, 2, nullptr);
  auto g0 = grad_of(0, 0, 3), g1 = grad_of(1, 0, 3);
  std::vector<float> a(100000), b(100000);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = g0[i % g0.size()] * float(i % 7);
    b[i] = -a[i] * 0.5f;
  }
  std::vector<std::vector<float*>> ptr = {{a.data()}, {b.data()}};
  ex.exchange(ptr, 0, 0);
  auto s = ex.take_stats().total;
  CHECK(s.ratio_fp32() > 20);
  CHECK(s.bytes_allgather > 0);
  CHECK(s.error_samples == 1);
  CHECK(s.cosine() > 0.1);
  CHECK(s.simulated_comm_s({1e9, 50e-6}) > 0);
}

TEST_CASE("exchange rejects wrong shapes, non-finite gradients and mismatched rank configs") {
  ExchangeOptions o;
  GradientExchange ex(o, {{4, 4}}, 2, nullptr);
  std::vector<float> a(16, 1.0f), b(16, 1.0f);
  std::vector<std::vector<float*>> one = {{a.data()}};
  CHECK_THROWS_AS(ex.exchange(one, 0, 0), Error);
  b[3] = NAN;
  std::vector<std::vector<float*>> two = {{a.data()}, {b.data()}};
  CHECK_THROWS_AS(ex.exchange(two, 0, 0), Error);
  CHECK_THROWS_AS(GradientExchange(ExchangeOptions{"nope"}, {{4, 4}}, 1, nullptr), Error);

  comm::ThreadGroup group(2);
  std::string err[2];
  std::thread t0([&] {
    try {
      ExchangeOptions x;
      x.compressor = "topk:0.1";
      GradientExchange e(x, {{64, 64}}, 1, &group.rank(0));
    } catch (const std::exception& e) {
      err[0] = e.what();
    }
  });
  std::thread t1([&] {
    try {
      ExchangeOptions x;
      x.compressor = "topk:0.2";
      GradientExchange e(x, {{64, 64}}, 1, &group.rank(1));
    } catch (const std::exception& e) {
      err[1] = e.what();
    }
  });
  t0.join();
  t1.join();
  CHECK(err[0].find("differs between ranks") != std::string::npos);
  CHECK(err[1].find("differs between ranks") != std::string::npos);
}

TEST_CASE("a failed rank makes the others throw instead of hanging") {
  comm::ThreadGroup group(3);
  std::string err[3];
  std::vector<std::thread> th;
  for (int r = 0; r < 3; ++r)
    th.emplace_back([&, r] {
      try {
        if (r == 2) group.rank(2).abort_all("simulated crash");
        std::vector<float> v(8, 1.0f);
        group.rank(r).allreduce_sum(v.data(), v.size());
      } catch (const std::exception& e) {
        err[r] = e.what();
      }
    });
  for (auto& t : th) t.join();
  for (int r = 0; r < 3; ++r) CHECK(err[r].find("simulated crash") != std::string::npos);
}

TEST_CASE("dgc exchange handles momentum, powersgd dense steps are exact") {
  ExchangeOptions o;
  o.compressor = "dgc:0.01";
  GradientExchange ex(o, kShapes, 2, nullptr);
  CHECK(ex.handles_momentum());
  ExchangeOptions p;
  p.compressor = "powersgd:1";
  p.powersgd_dense_steps = 1;
  p.dense_below = 0;
  GradientExchange px(p, {{8, 8}}, 2, nullptr);
  CHECK(!px.handles_momentum());
  std::vector<float> a(64), b(64);
  for (int i = 0; i < 64; ++i) {
    a[size_t(i)] = float(i);
    b[size_t(i)] = float(i % 5);
  }
  auto ea = a, eb = b;
  std::vector<std::vector<float*>> ptr = {{a.data()}, {b.data()}};
  px.exchange(ptr, 0, 0);
  for (int i = 0; i < 64; ++i) CHECK(a[size_t(i)] == (ea[size_t(i)] + eb[size_t(i)]) / 2.0f);
  a = ea;
  b = eb;
  px.exchange(ptr, 1, 0);  // rank-1 approximation now
  CHECK(px.take_stats().total.bytes_allreduce < 2 * 4 * 64 + 64);
}

TEST_CASE("exchange state round-trips, state of another exchange or cut short is rejected") {
  ExchangeOptions o;
  o.compressor = "topk:0.1";
  o.dense_below = 0;
  GradientExchange ex(o, {{8, 8}}, 2, nullptr);
  std::vector<float> a(64), b(64);
  for (int i = 0; i < 64; ++i) a[size_t(i)] = float(i % 7) - 3.0f, b[size_t(i)] = float(i % 3);
  std::vector<std::vector<float*>> ptr = {{a.data()}, {b.data()}};
  ex.exchange(ptr, 0, 0);
  std::vector<uint8_t> st = ex.save_state();
  GradientExchange same(o, {{8, 8}}, 2, nullptr);
  same.load_state(st);
  CHECK(same.save_state() == st);
  CHECK(*same.compressor(0, 0).residual() == *ex.compressor(0, 0).residual());
  std::vector<uint8_t> cut(st.begin(), st.end() - 1);
  CHECK_THROWS_WITH_AS(same.load_state(cut), doctest::Contains("gradient-exchange state"), frugal::Error);
  GradientExchange other(o, {{4, 8}}, 2, nullptr);
  CHECK_THROWS_WITH_AS(other.load_state(st), doctest::Contains("sizes differ"), frugal::Error);
  GradientExchange three(o, {{8, 8}}, 3, nullptr);
  CHECK_THROWS_WITH_AS(three.load_state(st), doctest::Contains("number of in-process workers"), frugal::Error);
}

TEST_CASE("powersgd:R:warmup=STEPS exchanges the dense mean for STEPS steps, then the rank-R factors") {
  ExchangeOptions p;
  p.compressor = "powersgd:1:warmup=2";
  p.dense_below = 0;
  GradientExchange px(p, {{8, 8}}, 2, nullptr);
  CHECK(px.describe()["powersgd_dense_steps"] == 2);
  CHECK(px.compressor(0, 0).name() == "powersgd:1:warmup=2");
  std::vector<float> a(64), b(64);
  std::vector<std::vector<float*>> ptr = {{a.data()}, {b.data()}};
  for (int step = 0; step < 3; ++step) {
    for (int i = 0; i < 64; ++i) {
      a[size_t(i)] = float(i + step);
      b[size_t(i)] = float((i * 7) % 5);
    }
    auto ea = a, eb = b;
    px.exchange(ptr, step, 0);
    bool exact = true;
    for (int i = 0; i < 64; ++i) exact = exact && a[size_t(i)] == (ea[size_t(i)] + eb[size_t(i)]) / 2.0f;
    CHECK_MESSAGE(exact == (step < 2), "step ", step);
  }
  // bytes: two dense steps (64 floats each) and one step of P (8) + Q (8)
  CHECK(px.take_stats().total.bytes_sent == 2 * 4 * 64 + 4 * 16);
  CHECK_THROWS_WITH_AS(make_compressor("powersgd:2:warmup=-1", CompressorContext{{8, 8}}), doctest::Contains("warmup"),
                       frugal::Error);
}

TEST_CASE("comm_pattern: the cost model charges every byte by the chosen pattern") {
  ExchangeOptions o;
  o.compressor = "topk:0.05";
  o.dense_below = 100;
  for (const char* pat : {"auto", "allreduce", "allgather", "ps"}) {
    o.comm_pattern = pat;
    GradientExchange ex(o, kShapes, 4, nullptr);
    std::vector<std::vector<std::vector<float>>> store(4);
    std::vector<std::vector<float*>> ptr(4);
    for (int w = 0; w < 4; ++w)
      for (size_t p = 0; p < kShapes.size(); ++p) {
        store[size_t(w)].push_back(grad_of(w, 0, p));
        ptr[size_t(w)].push_back(store[size_t(w)].back().data());
      }
    ex.exchange(ptr, 0, 0);
    auto c = ex.take_stats().total;
    const comm::Network net{1e9, 50e-6};
    double expect = 0;
    if (std::string(pat) == "auto")
      expect = comm::comm_seconds(comm::Pattern::ring_allreduce, c.bytes_allreduce, 4, net) +
               comm::comm_seconds(comm::Pattern::allgather, c.bytes_allgather, 4, net);
    else
      expect = comm::comm_seconds(comm::parse_pattern(pat), c.bytes_sent, 4, net);
    CHECK_MESSAGE(c.simulated_comm_s(net) == doctest::Approx(expect), pat);
    CHECK(c.to_json()["comm_pattern"] == (std::string(pat) == "auto"        ? "auto"
                                          : std::string(pat) == "allreduce" ? "ring_allreduce"
                                          : std::string(pat) == "ps"        ? "parameter_server"
                                                                            : "allgather"));
  }
  o.comm_pattern = "mesh";
  CHECK_THROWS_WITH_AS(GradientExchange(o, kShapes, 2, nullptr), doctest::Contains("mesh"), frugal::Error);
}

TEST_CASE("sampled error compares like with like: dgc at full density against its own momentum increment") {
  // dgc:1.0 sends every element of its accumulator: the decoded update is exactly the mean of what each worker
  // added to it (momentum-corrected), so the error is ~0 even though that differs from the raw gradient mean.
  ExchangeOptions o;
  o.compressor = "dgc:1";
  o.dense_below = 0;
  o.dense_1d = false;
  o.sample_every = 1;
  GradientExchange ex(o, {{32, 16}}, 2, nullptr);
  ex.set_momentum(0.9f, false);
  for (int s = 0; s < 4; ++s) {
    auto a = grad_of(0, s, 3), b = grad_of(1, s, 3);
    a.resize(512);
    b.resize(512);
    std::vector<std::vector<float*>> ptr = {{a.data()}, {b.data()}};
    ex.exchange(ptr, s, 0);
  }
  auto c = ex.take_stats().total;
  CHECK(c.error_samples == 4);
  CHECK(c.rel_l2_err() < 1e-5);
  CHECK(c.cosine() == doctest::Approx(1.0).epsilon(1e-6));
  // topk:0.05 with error feedback is compared with the raw gradient mean: a real, bounded error
  ExchangeOptions t = o;
  t.compressor = "topk:0.05";
  GradientExchange tx(t, {{32, 16}}, 2, nullptr);
  auto a = grad_of(0, 0, 3), b = grad_of(1, 0, 3);
  a.resize(512);
  b.resize(512);
  std::vector<std::vector<float*>> ptr = {{a.data()}, {b.data()}};
  tx.exchange(ptr, 0, 0);
  auto tc = tx.take_stats().total;
  CHECK(tc.rel_l2_err() > 0.3);
  CHECK(tc.rel_l2_err() < 1.0);
}

TEST_CASE("fp16 bodies are summed as fp16 (each addition rounded), exactly as the MPI reduction does") {
  ExchangeOptions o;
  o.compressor = "fp16";
  o.dense_below = 0;
  o.dense_1d = false;
  GradientExchange ex(o, {{4}}, 2, nullptr);
  // 2048 + 1 is not representable in fp16 (spacing 2 there): the sum rounds to even, 2048
  std::vector<float> a = {2048.f, 1.f, 0.5f, -3.f}, b = {1.f, 2048.f, 0.25f, 3.f};
  std::vector<std::vector<float*>> ptr = {{a.data()}, {b.data()}};
  ex.exchange(ptr, 0, 0);
  CHECK(a[0] == 1024.f);  // fp16(2048 + 1) / 2
  CHECK(a[1] == 1024.f);
  CHECK(a[2] == 0.375f);
  CHECK(a[3] == 0.f);
  auto c = ex.take_stats().total;
  CHECK(c.bytes_sent == 8);      // 4 codes of 2 bytes: the header stays local
  CHECK(c.bytes_encoded > 8);    // the whole message has a header
}
