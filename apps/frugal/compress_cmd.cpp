// frugal compress: pruning, low-rank, weight sharing and entropy coding into a packed model file (lib/modelcomp/).
#include "commands.h"
#include "unavailable.h"

namespace frugal::app {

void add_compress(CLI::App& app, Globals&) {
  add_unavailable(app, "compress", "Compress a trained model (pruning, low-rank, weight sharing, entropy coding)");
}

}  // namespace frugal::app
