// Model files and checkpoints on top of io::TensorFile.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>

#include "io/tensor_file.h"
#include "nn/model.h"

namespace frugal::nn {

/// Adds every parameter and buffer of the model to f.tensors under its registered name.
void add_model_tensors(Model& model, io::TensorFile& f);
/// Copies tensors of f into the model's parameters and buffers; every one must be present with the same dims.
void load_model_tensors(Model& model, const io::TensorFile& f, const std::string& path);

/// Writes a model file: meta {"kind": "model", "spec": ..., "config": ..., plus `extra`}.
void save_model(const std::string& path, Model& model, const nlohmann::json& extra);

struct LoadedModel {
  std::unique_ptr<nn::Model> model;
  nlohmann::json meta;
};
/// Reads a model file (or a checkpoint, whose model part is used).
LoadedModel load_model(const std::string& path);
/// Builds the model from an already read file (its meta "spec" and tensors); path names it in errors.
LoadedModel load_model(const io::TensorFile& f, const std::string& path);


}  // namespace frugal::nn
