// One function per subcommand: binds its options with CLI11 and runs one lib/ function.
#pragma once
#include <CLI/CLI.hpp>

namespace frugal::app {

struct Globals {
  std::string dist = "none";  // none | mpi
  bool mpi = false;           // main() initialized MPI (--dist mpi, or `sweep` under mpirun)
  int exit_code = 0;          // what main() returns after a command that ran (e.g. 4: sweep --check regressed)
};

void add_train(CLI::App& app, Globals& g);
void add_evaluate(CLI::App& app, Globals& g);
void add_compress(CLI::App& app, Globals& g);
void add_sweep(CLI::App& app, Globals& g);

}  // namespace frugal::app
