// frugal: train, compress, evaluate and sweep CNNs on a budget of bits, energy and time.
#include <cstdio>
#include <cstring>
#include <exception>

#include "commands.h"
#include "comm/mpi_communicator.h"
#include "util/build_info.h"
#include "util/check.h"
#include "util/cpu_features.h"
#include "util/fatal.h"
#include "util/omp_env.h"

namespace {
// MPI is initialized only for `--dist mpi`, and for `frugal sweep` started by mpirun (one trial per rank at a time,
// apps/frugal/sweep_cmd.cpp).
bool wants_mpi(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if ((std::strcmp(argv[i], "--dist") == 0 && i + 1 < argc && std::strcmp(argv[i + 1], "mpi") == 0) ||
        std::strcmp(argv[i], "--dist=mpi") == 0)
      return true;
  return argc > 1 && std::strcmp(argv[1], "sweep") == 0 && frugal::comm::launched_by_mpirun();
}

// For the exception being handled: "frugal: error: ..." and 1 for a frugal::Error (bad input), 3 for anything else.
// Under MPI ends the whole job instead: returning into MPI_Finalize would leave this rank and the others waiting
// for each other forever.
int report_current_exception(bool under_mpi) {
  const std::string what = frugal::util::describe_exception(std::current_exception());
  if (under_mpi) frugal::comm::mpi_abort_job(what);
  std::fprintf(stderr, "frugal: %s\n", what.c_str());
  try {
    throw;
  } catch (const frugal::Error&) {
    return 1;
  } catch (...) {
    return 3;
  }
}
}  // namespace

int main(int argc, char** argv) {
  frugal::util::remember_argv(argv);  // for prefer_short_omp_spin(), see util/omp_env.h
  std::unique_ptr<frugal::comm::MpiSession> mpi;
  if (wants_mpi(argc, argv)) {
    mpi = std::make_unique<frugal::comm::MpiSession>(&argc, &argv);
    // std::terminate, fatal signals and exit() mid-job end the whole job, naming this rank and the cause.
    frugal::comm::install_rank_death_handlers();
  }

  CLI::App app{"frugal: train, compress, evaluate and sweep CNNs on a budget of bits, energy and time.\n"
               "Every command writes JSON results. Run 'frugal COMMAND --help' for its options."};
  app.require_subcommand(1);
  const frugal::util::BuildInfo& b = frugal::util::build_info();  // experiments/common.sh parses this line
  app.set_version_flag("--version", std::string("frugal ") + FRUGAL_VERSION + " commit " + b.git_commit +
                                        " dirty " + (b.git_dirty ? "true" : "false") + "\nkernels " +
                                        frugal::util::isa_name(frugal::util::kernel_isa()) +
                                        " (frugal's SIMD path on this CPU; FRUGAL_ISA=scalar|avx2|avx512 caps it)" +
                                        (b.native ? "\nbuild native (-march=native: runs only on CPUs like the build machine's)"
                                                  : "\nbuild portable (baseline x86-64; the SIMD kernels are chosen at run time)"));
  frugal::app::Globals g;
  g.mpi = mpi != nullptr;
  frugal::app::add_train(app, g);
  frugal::app::add_evaluate(app, g);
  frugal::app::add_compress(app, g);
  frugal::app::add_sweep(app, g);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    if (mpi && rc != 0) frugal::comm::mpi_abort_job("invalid command line (exit code " + std::to_string(rc) + ")");
    return rc;
  } catch (...) {
    return report_current_exception(mpi != nullptr);
  }
  return g.exit_code;
}
