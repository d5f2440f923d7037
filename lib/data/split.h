// Hold-out split of a dataset: a validation set drawn from the training images by a seeded permutation, so
// schedules and sweeps can be tuned without ever looking at the test set.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace frugal::data {

/// The seed of the training run's validation split (config key val_split). A constant, independent of the
/// run's `seed`, so every run and every sweep trial on the same dataset holds out the same images.
constexpr uint64_t kValSplitSeed = 0x76616c73706c6974ULL;  // "valsplit"

struct HoldoutSplit {
  Dataset train;                      // the images not held out, in their original order
  Dataset val;                        // the held-out images, in their original order
  std::vector<uint32_t> val_indices;  // (n_val) ascending positions of val's images in the source dataset
  std::string val_indices_sha256;     // SHA-256 of val_indices as little-endian uint32: identifies the split
};

/// Splits ds into train and val by a permutation seeded with `seed` alone (mt19937_64 over splitmix64 seeds,
/// so the split is the same on every platform and for every thread count). Images and labels stay aligned;
/// name, shape, classes and files are copied to both parts.
/// requires: n_val <= ds.size(); with stratify, 0 <= every label < ds.num_classes.
/// ensures:  val.size() == n_val, train.size() == ds.size() - n_val, the two index sets are disjoint and
///           their union is every index of ds. stratify: each class c gets floor(n_val * count_c / N) images,
///           the remaining ones go to the classes with the largest remainders (ties: lower class first), so the
///           validation set has the class proportions of ds up to one image per class.
HoldoutSplit split_holdout(const Dataset& ds, size_t n_val, uint64_t seed, bool stratify = false);

/// The validation split every frugal command holds out of a training set: n images, stratified, drawn with
/// kValSplitSeed, so train, compress and the sensitivity analysis agree on the images for the same n.
inline HoldoutSplit hold_out_validation(const Dataset& train, size_t n) {
  return split_holdout(train, n, kValSplitSeed, true);
}

/// How many images compress and the sensitivity analysis hold out for a model that was trained without a
/// validation split: 10 % of the training set, at most 5000 (images that model has seen in training).
inline size_t default_unheld_val_images(size_t train_size) { return std::min<size_t>(5000, train_size / 10); }

}  // namespace frugal::data
