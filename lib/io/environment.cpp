#include "io/environment.h"

#include <dnnl.hpp>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "util/build_info.h"
#include "util/cpu_features.h"
#include "util/threads.h"

namespace frugal::io {

using json = nlohmann::json;

json environment_info() {
  const dnnl_version_t* v = dnnl_version();
  std::string isa;
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx512_core_amx: isa = "avx512_core_amx"; break;
    case dnnl::cpu_isa::avx512_core_bf16: isa = "avx512_core_bf16"; break;
    case dnnl::cpu_isa::avx512_core_vnni: isa = "avx512_core_vnni"; break;
    case dnnl::cpu_isa::avx512_core: isa = "avx512_core"; break;
    case dnnl::cpu_isa::avx2_vnni: isa = "avx2_vnni"; break;
    case dnnl::cpu_isa::avx2: isa = "avx2"; break;
    case dnnl::cpu_isa::avx: isa = "avx"; break;
    case dnnl::cpu_isa::sse41: isa = "sse41"; break;
    default: isa = "other";
  }
  std::string cpu = "unknown";
  std::ifstream ci("/proc/cpuinfo");
  for (std::string line; std::getline(ci, line);)
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  const util::BuildInfo& b = util::build_info();
  return {{"frugal_version", FRUGAL_VERSION},
          {"git_commit", b.git_commit},
          {"git_dirty", b.git_dirty},
          {"build_type", b.build_type},
          {"native", b.native},
          {"cxx_flags", b.cxx_flags},
          {"onednn_version", std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch)},
          {"onednn_cpu_isa", isa},
          {"compiler", FRUGAL_COMPILER},
          {"kernel_isa", util::isa_name(util::kernel_isa())},  // frugal's own SIMD kernels (util/cpu_features.h)
          {"threads", util::compute_threads()},  // in force on the calling thread; train: see results.parallelism
          {"gomp_spincount", spin ? spin : ""},
          {"omp_wait_policy", wait ? wait : ""},
          {"cpu", cpu},
          {"host", host}};
}

}  // namespace frugal::io
