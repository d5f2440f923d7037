// MPI equivalence check (own main; not part of the doctest binary). Run:
//   mpirun --allow-run-as-root --oversubscribe -np 2 ./mpi_exchange_check
// Every rank runs the exchange over MPI with 1 worker, and also the in-process exchange with W local
// workers (it can generate every worker's gradient), and compares the results bit for bit.
#include <cstdio>
#include <cstring>
#include <exception>
#include <vector>

#include "dist/mpi_communicator.h"
#include "gradcomp/exchange.h"
#include "gradcomp/wire.h"
#include "util/check.h"

using namespace frugal;
using namespace frugal::gradcomp;

static const std::vector<std::vector<int64_t>> kShapes = {{16, 3, 5, 5}, {16}, {32, 16, 3, 3}, {10, 512}, {10}};

static std::vector<float> grad_of(int g, int s, size_t p) {
  Rng r(mix_seed(uint64_t(g) * 1000 + uint64_t(s), p));
  std::vector<float> v(shape_numel(kShapes[p]));
  for (auto& x : v) x = r.normal();
  return v;
}

int main(int argc, char** argv) {
  dist::MpiSession session(&argc, &argv);
  dist::MpiCommunicator comm;
  int failures = 0;
  try {
    const int W = comm.world(), steps = 4;
    for (const char* spec : {"none", "fp16", "randk:0.1", "topk:0.05", "dgc:0.01", "qsgd:16", "signsgd", "efsign",
                             "powersgd:2", "terngrad", "onebit"}) {
      ExchangeOptions o;
      o.compressor = spec;
      o.dense_below = 100;
      o.seed = 3;
      o.sample_every = 2;
      GradientExchange mpi_ex(o, kShapes, 1, &comm);
      GradientExchange local_ex(o, kShapes, W, nullptr);
      bool same = true;
      for (int s = 0; s < steps; ++s) {
        std::vector<std::vector<float>> mine;
        std::vector<std::vector<float*>> mp(1);
        for (size_t p = 0; p < kShapes.size(); ++p) mine.push_back(grad_of(comm.rank(), s, p));
        for (auto& v : mine) mp[0].push_back(v.data());
        mpi_ex.exchange(mp, s, 0);
        std::vector<std::vector<std::vector<float>>> all(static_cast<size_t>(W));
        std::vector<std::vector<float*>> lp(static_cast<size_t>(W));
        for (int w = 0; w < W; ++w) {
          for (size_t p = 0; p < kShapes.size(); ++p) all[size_t(w)].push_back(grad_of(w, s, p));
          for (auto& v : all[size_t(w)]) lp[size_t(w)].push_back(v.data());
        }
        local_ex.exchange(lp, s, 0);
        for (size_t p = 0; p < kShapes.size(); ++p)
          if (std::memcmp(mine[p].data(), all[0][p].data(), 4 * mine[p].size()) != 0) same = false;
      }
      if (!same) ++failures;
      if (comm.rank() == 0) std::printf("%-12s mpi == in-process: %s\n", spec, same ? "yes" : "NO");
    }
  } catch (const Error& e) {
    comm.abort_all(e.what());
  }
  if (comm.rank() == 0) std::printf("%s\n", failures ? "FAILED" : "OK");
  return failures ? 1 : 0;
}
