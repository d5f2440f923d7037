#include "nn/model_io.h"

#include <cstring>
#include <fstream>

#include "util/check.h"

namespace frugal::nn {

using json = nlohmann::json;

void add_model_tensors(Model& model, io::TensorFile& f) {
  for (auto* p : model.params()) f.tensors.emplace_back(p->name, p->value);
  for (auto b : model.buffers()) f.tensors.emplace_back(b.name, *b.value);
}

void load_model_tensors(Model& model, const io::TensorFile& f, const std::string& path) {
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

void save_model(const std::string& path, Model& model, const json& extra) {
  io::TensorFile f;
  f.meta = extra;
  f.meta["kind"] = "model";
  f.meta["spec"] = model.spec();
  add_model_tensors(model, f);
  io::save_tensor_file(path, f);
}

LoadedModel load_model(const std::string& path) { return load_model(io::load_tensor_file(path), path); }

LoadedModel load_model(const io::TensorFile& f, const std::string& path) {
  FRUGAL_CHECK(f.meta.contains("spec"), "'", path, "' has no model spec in its metadata");
  LoadedModel lm;
  lm.meta = f.meta;
  lm.model = std::make_unique<Model>(f.meta["spec"], 0);
  load_model_tensors(*lm.model, f, path);
  return lm;
}


}  // namespace frugal::nn
