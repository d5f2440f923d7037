// frugal sweep: grid / random / successive-halving searches over config keys with a Pareto front (lib/sweep/).
#include "commands.h"
#include "unavailable.h"

namespace frugal::app {

void add_sweep(CLI::App& app, Globals&) {
  add_unavailable(app, "sweep", "Search bit-width x width x depth x compressor x multiplier spaces");
}

}  // namespace frugal::app
