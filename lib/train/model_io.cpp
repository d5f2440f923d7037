#include "train/model_io.h"

#include <unistd.h>

#include <cstring>
#include <fstream>
#include <thread>

#include "util/build_info.h"
#include "util/check.h"
#include "util/cpu_features.h"
#include "util/threads.h"

namespace frugal::train {

using json = nlohmann::json;

void add_model_tensors(nn::Model& model, io::TensorFile& f) {
  for (auto* p : model.params()) f.tensors.emplace_back(p->name, p->value);
  for (auto b : model.buffers()) f.tensors.emplace_back(b.name, *b.value);
}

void load_model_tensors(nn::Model& model, const io::TensorFile& f, const std::string& path) {
  auto load = [&](const std::string& name, Tensor& dst) {
    const Tensor* t = f.find(name);
    FRUGAL_CHECK(t, "'", path, "': tensor '", name, "' is missing (the file does not match this model spec)");
    FRUGAL_CHECK(t->dims() == dst.dims(), "'", path, "': tensor '", name, "' has dims ", dims_str(t->dims()),
                 " but the model expects ", dims_str(dst.dims()));
    std::memcpy(dst.data(), t->data(), sizeof(float) * static_cast<size_t>(dst.size()));
  };
  for (auto* p : model.params()) {
    load(p->name, p->value);
    ++p->version;
  }
  for (auto b : model.buffers()) load(b.name, *b.value);
}

void save_model(const std::string& path, nn::Model& model, const json& extra) {
  io::TensorFile f;
  f.meta = extra;
  f.meta["kind"] = "model";
  f.meta["spec"] = model.spec();
  add_model_tensors(model, f);
  io::save_tensor_file(path, f);
}

LoadedModel load_model(const std::string& path) {
  io::TensorFile f = io::load_tensor_file(path);
  FRUGAL_CHECK(f.meta.contains("spec"), "'", path, "' has no model spec in its metadata");
  LoadedModel lm;
  lm.meta = f.meta;
  lm.model = std::make_unique<nn::Model>(f.meta["spec"], 0);
  load_model_tensors(*lm.model, f, path);
  return lm;
}

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

}  // namespace frugal::train
