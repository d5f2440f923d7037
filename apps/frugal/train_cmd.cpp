#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <stdexcept>
#include <thread>

#include "commands.h"
#include "util/omp_env.h"
#include "comm/mpi_communicator.h"
#include "io/config.h"
#include "train/trainer.h"
#include "util/check.h"
#include "util/fatal.h"

namespace frugal::app {

namespace {
struct TrainArgs {
  std::string config, out = "runs/last", resume;
  std::vector<std::string> sets;
  bool quiet = false, keys = false;
  int stop_after_epoch = -1;
};

// Test hook for tests/e2e/mpi_rank_death.sh, read once when `train` starts; does nothing when unset.
// FRUGAL_FAULT=RANK:STEP:KIND makes rank RANK (0 without MPI) fail before training step STEP (0-based) by KIND:
//   throw      a std::runtime_error          bad_alloc  a std::bad_alloc
//   terminate  an exception escaping a thread (std::terminate)
//   segv       a write through a null pointer (SIGSEGV)
//   exit       std::exit(0) in the middle of the job, without MPI_Finalize
//   return     `train` returns as if it had finished, so main() returns 0 while the other ranks still train
struct Fault {
  int rank = -1;
  int64_t step = -1;
  std::string kind;
};

struct LeaveEarly {};  // thrown by kind "return", caught by the train callback, which then returns

Fault read_fault_env() {
  const char* env = std::getenv("FRUGAL_FAULT");
  if (!env || !*env) return {};
  const std::string s(env);
  const auto a = s.find(':'), b = a == std::string::npos ? a : s.find(':', a + 1);
  Fault f;
  try {
    if (b == std::string::npos) throw std::invalid_argument(s);
    f.rank = std::stoi(s.substr(0, a));
    f.step = std::stoll(s.substr(a + 1, b - a - 1));
    f.kind = s.substr(b + 1);
  } catch (const std::exception&) {
    FRUGAL_FAIL("FRUGAL_FAULT='", s, "': expected RANK:STEP:KIND, e.g. 1:5:throw (a test hook; unset it to train)");
  }
  FRUGAL_CHECK(f.kind == "throw" || f.kind == "bad_alloc" || f.kind == "terminate" || f.kind == "segv" ||
                   f.kind == "exit" || f.kind == "return",
               "FRUGAL_FAULT='", s, "': KIND must be throw, bad_alloc, terminate, segv, exit or return");
  return f;
}

void inject_fault(const Fault& f) {
  const std::string where = "injected fault FRUGAL_FAULT=" + std::to_string(f.rank) + ":" + std::to_string(f.step) +
                            ":" + f.kind;
  std::fprintf(stderr, "frugal: %s\n", where.c_str());
  std::fflush(stderr);
  if (f.kind == "throw") throw std::runtime_error(where);
  if (f.kind == "bad_alloc") throw std::bad_alloc();
  if (f.kind == "terminate") std::thread([where] { throw std::runtime_error(where + " (on a thread)"); }).join();
  if (f.kind == "segv") {
    volatile int* volatile p = nullptr;  // volatile: the compiler can neither see the null nor drop the write
    *p = 1;
  }
  if (f.kind == "exit") std::exit(0);
  if (f.kind == "return") throw LeaveEarly{};
}

void print_table(const nlohmann::json& r) {
  const auto& m = r["metrics"];
  std::printf("\n%-28s %s\n", "model", r["config"]["model"].get<std::string>().c_str());
  std::printf("%-28s %s\n", "dataset", r["config"]["dataset"].get<std::string>().c_str());
  std::printf("%-28s %d\n", "epochs", static_cast<int>(r["epochs"].size()));
  std::printf("%-28s %lld\n", "params", static_cast<long long>(m["params"].get<int64_t>()));
  std::printf("%-28s %.2f %%\n", "test accuracy", 100 * m["test_accuracy"].get<double>());
  std::printf("%-28s %.4f\n", "test loss", m["test_loss"].get<double>());
  std::printf("%-28s %.0f\n", "train images/s", m["train_images_per_second"].get<double>());
  std::printf("%-28s %.1f s\n", "wall time", r["timing"]["wall_s"].get<double>());
  if (r.contains("communication")) {
    const auto& c = r["communication"];
    std::printf("%-28s %s\n", "compressor", r["config"]["compressor"].get<std::string>().c_str());
    if (c.contains("ratio_vs_fp32")) std::printf("%-28s %.1fx\n", "compression vs fp32", c["ratio_vs_fp32"].get<double>());
  }
}
}  // namespace

void add_train(CLI::App& app, Globals& g) {
  auto a = std::make_shared<TrainArgs>();
  auto* c = app.add_subcommand("train", "Train a CNN; writes model.bin, checkpoint.bin, train.log and results.json into --out");
  c->add_option("-c,--config", a->config, "experiment config (JSON object of keys, see --keys)")->check(CLI::ExistingFile);
  c->add_option("-s,--set", a->sets, "override a config key: --set key=value (repeatable)");
  c->add_option("-o,--out", a->out, "output folder")->capture_default_str();
  c->add_option("--resume", a->resume, "continue the interrupted run in this folder from its checkpoint.bin")
      ->check(CLI::ExistingDirectory);
  c->add_option("--dist", g.dist, "none: in-process workers; mpi: one worker per rank (mpirun -np W frugal train --dist mpi ...)")
      ->check(CLI::IsMember({"none", "mpi"}))
      ->capture_default_str();
  c->add_option("--stop-after-epoch", a->stop_after_epoch, "end after this many epochs as if interrupted (testing --resume)");
  c->add_flag("-q,--quiet", a->quiet, "no progress lines on stderr");
  c->add_flag("--keys", a->keys, "list every config key with its default and exit");
  c->footer("Config keys (set in --config files or with --set key=value):\n" + io::Config::describe());
  c->callback([a, &g]() {
    if (a->keys) {
      std::printf("%s", io::Config::describe().c_str());
      return;
    }
    io::Config cfg;
    if (!a->config.empty()) cfg.load_file(a->config);
    for (auto& s : a->sets) cfg.set(s);
    // Quantized / approximate layers run TBB passes after each oneDNN conv: restart with a short OpenMP spin
    // (util/omp_env.h). Not under MPI, which is already initialized.
    if (!cfg.s("multiplier").empty() && g.dist != "mpi") util::prefer_short_omp_spin();
    train::TrainOptions opts;
    opts.out_dir = a->out;
    opts.resume_dir = a->resume;
    opts.quiet = a->quiet;
    opts.stop_after_epoch = a->stop_after_epoch;
    std::unique_ptr<comm::MpiCommunicator> comm;
    if (g.dist == "mpi") {
      comm = std::make_unique<comm::MpiCommunicator>();
      opts.comm = comm.get();
      if (comm->rank() != 0) opts.quiet = true;
    }
    if (const Fault f = read_fault_env(); f.rank == (comm ? comm->rank() : 0))
      opts.before_step = [f](int64_t step) {
        if (step == f.step) inject_fault(f);
      };
    try {
      auto r = train::run_training(cfg, opts);
      if (!opts.comm || opts.comm->rank() == 0) print_table(r);
      if (comm) comm->barrier();  // leave together: MPI_Finalize waits only so long for the others (mpi_communicator.h)
    } catch (const LeaveEarly&) {
      return;
    } catch (...) {  // under MPI, end the job here while the communicator is alive; main() reports the rest
      if (comm) comm->abort_all(util::describe_exception(std::current_exception()));
      throw;
    }
  });
}

}  // namespace frugal::app
