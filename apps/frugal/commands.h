// One function per subcommand: binds its options with CLI11 and runs one lib/ function.
#pragma once
#include <CLI/CLI.hpp>

namespace frugal::app {

struct Globals {
  std::string dist = "none";  // none | mpi
};

void add_train(CLI::App& app, Globals& g);
void add_evaluate(CLI::App& app, Globals& g);
void add_compress(CLI::App& app, Globals& g);
void add_sweep(CLI::App& app, Globals& g);

}  // namespace frugal::app
