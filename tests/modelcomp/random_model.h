// Test fixtures for model-compression tests: uniform random tensors and randomized models.
#pragma once
#include <random>
#include <string>

#include "nn/model.h"

namespace frugal::testing {

inline void fill(Tensor& t, std::mt19937_64& rng, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = u(rng);
}

/// Random weights, biases and batch-norm statistics (scales and variances positive).
inline void randomize(nn::Model& m, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (nn::Param* p : m.params()) {
    const bool bn_scale = p->name.find("scale") != std::string::npos;
    fill(p->value, rng, bn_scale ? 0.5f : -0.3f, bn_scale ? 1.5f : 0.3f);
    ++p->version;
  }
  for (auto b : m.buffers()) {
    const bool var = b.name.find("running_var") != std::string::npos;
    fill(*b.value, rng, var ? 0.5f : -0.2f, var ? 2.f : 0.2f);
  }
}

}  // namespace frugal::testing
