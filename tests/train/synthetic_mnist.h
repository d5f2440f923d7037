// A small learnable MNIST-format dataset: class k is a bright 6x6 square at a position given by k, plus noise.
#pragma once
#include <random>
#include <string>
#include <vector>

#include "../data/fixtures.h"
#include "io/config.h"

namespace frugal::testing {

inline void write_synthetic_mnist(const std::string& root, int n_train = 512, int n_test = 128, uint64_t seed = 1) {
  using namespace frugal::data::testing;
  std::mt19937_64 rng(seed);
  auto make = [&](int n, const std::string& img, const std::string& lab) {
    std::vector<uint8_t> images;
    put_be32(images, 0x00000803), put_be32(images, uint32_t(n)), put_be32(images, 28), put_be32(images, 28);
    std::vector<uint8_t> labels;
    for (int i = 0; i < n; ++i) {
      int k = static_cast<int>(rng() % 10);
      labels.push_back(uint8_t(k));
      int oy = 2 + (k / 5) * 12, ox = 1 + (k % 5) * 5;
      for (int y = 0; y < 28; ++y)
        for (int x = 0; x < 28; ++x) {
          int v = static_cast<int>(rng() % 60);
          if (y >= oy && y < oy + 6 && x >= ox && x < ox + 6) v += 180;
          images.push_back(uint8_t(std::min(v, 255)));
        }
    }
    write_file(root + "/mnist/" + img, images);
    write_file(root + "/mnist/" + lab, idx_labels(labels));
  };
  make(n_train, "train-images-idx3-ubyte", "train-labels-idx1-ubyte");
  make(n_test, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
}

/// lenet5 at half width on the synthetic MNIST under root: batch 32, 3 epochs, lr 0.05, quiet progress.
inline io::Config tiny_config(const std::string& root) {
  io::Config c;
  c.set("data_dir=" + root);
  c.set("dataset=mnist");
  c.set("model=lenet5");
  c.set("width=0.5");
  c.set("batch=32");
  c.set("epochs=3");
  c.set("lr=0.05");
  c.set("progress_s=1000");
  c.set("eval_batch=64");
  return c;
}

}  // namespace frugal::testing
