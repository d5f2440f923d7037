// MPI equivalence check (own main; not part of the doctest binary). Run:
//   mpirun --allow-run-as-root --oversubscribe -np 2 ./mpi_exchange_check
// Every rank runs the exchange over MPI with 1 worker, and also the in-process exchange with W local
// workers (it can generate every worker's gradient), and compares the results: bit for bit with 2 ranks
// (any reduction order of two operands gives the same sum), within rounding with more (MPI_Allreduce picks its
// own order). For every compressor the bytes the communicator handed to MPI equal the exchange's counted
// bytes_sent, and both runs count the same bytes.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <vector>

#include "comm/mpi_communicator.h"
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
  comm::MpiSession session(&argc, &argv);
  comm::MpiCommunicator comm;
  int failures = 0;
  try {
    const int W = comm.world(), steps = 4;
    for (const char* spec : {"none", "fp16", "bf16", "randk:0.1", "randk:0.1+ef", "topk:0.05", "dgc:0.01", "qsgd:16",
                             "qsgd:16:elias", "signsgd", "efsign", "powersgd:2", "powersgd:2:warmup=2", "terngrad",
                             "onebit", "threshold:0.5", "adaptive:0.05"}) {
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
        const int me = comm.rank();
        for (size_t p = 0; p < kShapes.size(); ++p) {
          if (W == 2) {
            if (std::memcmp(mine[p].data(), all[size_t(me)][p].data(), 4 * mine[p].size()) != 0) same = false;
          } else {  // within rounding of the summation order (fp16 bodies: of the 16-bit sums)
            const std::string sp = spec;  // a few units in the last place of the body type
            const double tol = sp == "fp16" ? 2e-3 : sp == "bf16" ? 2e-2 : 1e-5;
            double scale = 0;
            for (float v : all[size_t(me)][p]) scale = std::max(scale, double(std::fabs(v)));
            for (size_t i = 0; i < mine[p].size(); ++i)
              if (std::fabs(double(mine[p][i]) - double(all[size_t(me)][p][i])) > tol * (scale + 1e-30)) same = false;
          }
        }
      }
      auto a = mpi_ex.take_stats().total, b = local_ex.take_stats().total;
      // per-worker bytes of variable-size codecs differ between workers: compare the mean over ranks with the
      // in-process mean over workers
      std::vector<uint8_t> mine_b(8);
      std::memcpy(mine_b.data(), &a.bytes_sent, 8);
      double mean = 0;
      for (auto& v : comm.allgatherv(mine_b)) {
        double x;
        std::memcpy(&x, v.data(), 8);
        mean += x / W;
      }
      const bool bytes_ok = a.bytes_handed_to_comm == a.bytes_sent && std::fabs(mean - b.bytes_sent) < 1e-6 * mean;
      if (!same || !bytes_ok) ++failures;
      if (comm.rank() == 0)
        std::printf("%-14s mpi == in-process: %s; bytes/worker over MPI %.1f (rank 0 counted = handed to MPI: %.0f), in-process %.1f%s\n",
                    spec, same ? (W == 2 ? "yes, bit for bit" : "yes, within rounding") : "NO", mean,
                    a.bytes_handed_to_comm, b.bytes_sent, bytes_ok ? "" : "  <- BYTES DIFFER");
    }
  } catch (const Error& e) {
    comm.abort_all(e.what());
  }
  if (comm.rank() == 0) std::printf("%s\n", failures ? "FAILED" : "OK");
  return failures ? 1 : 0;
}
