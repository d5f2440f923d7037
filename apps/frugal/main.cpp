// frugal: train, compress, evaluate and sweep CNNs on a budget of bits, energy and time.
#include <cstdio>
#include <cstring>

#include "commands.h"
#include "dist/mpi_communicator.h"
#include "util/build_info.h"
#include "util/check.h"
#include "util/omp_env.h"

int main(int argc, char** argv) {
  frugal::util::remember_argv(argv);  // for prefer_short_omp_spin(), see util/omp_env.h
  // MPI is initialized only for `--dist mpi` (or when started by mpirun with it).
  bool want_mpi = false;
  for (int i = 1; i < argc; ++i)
    if ((std::strcmp(argv[i], "--dist") == 0 && i + 1 < argc && std::strcmp(argv[i + 1], "mpi") == 0) ||
        std::strcmp(argv[i], "--dist=mpi") == 0)
      want_mpi = true;
  std::unique_ptr<frugal::dist::MpiSession> mpi;
  if (want_mpi) mpi = std::make_unique<frugal::dist::MpiSession>(&argc, &argv);

  CLI::App app{"frugal: train, compress, evaluate and sweep CNNs on a budget of bits, energy and time.\n"
               "Every command writes JSON results. Run 'frugal COMMAND --help' for its options."};
  app.require_subcommand(1);
  const frugal::util::BuildInfo& b = frugal::util::build_info();  // experiments/common.sh parses this line
  app.set_version_flag("--version", std::string("frugal ") + FRUGAL_VERSION + " commit " + b.git_commit +
                                        " dirty " + (b.git_dirty ? "true" : "false"));
  frugal::app::Globals g;
  frugal::app::add_train(app, g);
  frugal::app::add_evaluate(app, g);
  frugal::app::add_compress(app, g);
  frugal::app::add_sweep(app, g);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const frugal::Error& e) {
    std::fprintf(stderr, "frugal: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "frugal: internal error: %s\n", e.what());
    return 3;
  }
  return 0;
}
