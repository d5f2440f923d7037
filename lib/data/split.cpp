#include "data/split.h"

#include <algorithm>
#include <random>

#include "util/check.h"
#include "util/random.h"

namespace frugal::data {
namespace {

/// In-place Fisher-Yates shuffle of v driven by mt19937_64(stream_seed).
void shuffle(std::vector<uint32_t>& v, uint64_t stream_seed) {
  if (v.size() < 2) return;
  std::mt19937_64 rng(stream_seed);
  for (size_t i = v.size() - 1; i > 0; --i) std::swap(v[i], v[size_t(rng() % (i + 1))]);
}

/// Copies the images and labels at `indices` (ascending) of src into a dataset with src's metadata.
Dataset gather(const Dataset& src, const std::vector<uint32_t>& indices) {
  Dataset d;
  d.name = src.name;
  d.channels = src.channels, d.height = src.height, d.width = src.width, d.num_classes = src.num_classes;
  d.class_names = src.class_names;
  d.files = src.files;
  const size_t ib = src.image_bytes();
  d.images.resize(indices.size() * ib);  // (n, H, W, C)
  d.labels.resize(indices.size());       // (n)
  for (size_t j = 0; j < indices.size(); ++j) {
    std::copy_n(src.images.begin() + std::ptrdiff_t(indices[j] * ib), ib, d.images.begin() + std::ptrdiff_t(j * ib));
    d.labels[j] = src.labels[indices[j]];
  }
  return d;
}

/// The held-out positions, unsorted: the first n_val of one seeded permutation, or per class the first
/// quota_c of that class's own seeded permutation.
std::vector<uint32_t> pick(const Dataset& ds, size_t n_val, uint64_t seed, bool stratify) {
  const size_t n = ds.size();
  if (n_val == 0) return {};
  if (!stratify) {
    std::vector<uint32_t> perm(n);
    for (size_t i = 0; i < n; ++i) perm[i] = uint32_t(i);
    shuffle(perm, splitmix64(seed));
    perm.resize(n_val);
    return perm;
  }
  const size_t k = size_t(ds.num_classes);
  std::vector<std::vector<uint32_t>> by_class(k);  // (K) positions of each class, ascending
  for (size_t i = 0; i < n; ++i) by_class[size_t(ds.labels[i])].push_back(uint32_t(i));
  std::vector<size_t> quota(k);
  std::vector<std::pair<uint64_t, size_t>> rem;  // (remainder, class)
  size_t given = 0;
  for (size_t c = 0; c < k; ++c) {
    const uint64_t num = uint64_t(n_val) * by_class[c].size();  // n_val, count_c < 2^32
    quota[c] = size_t(num / n);
    given += quota[c];
    rem.emplace_back(num % n, c);
  }
  std::stable_sort(rem.begin(), rem.end(), [](auto& a, auto& b) { return a.first > b.first; });
  for (size_t j = 0; given < n_val; ++j, ++given) ++quota[rem[j].second];  // at most K - 1 left over
  std::vector<uint32_t> out;
  for (size_t c = 0; c < k; ++c) {
    shuffle(by_class[c], splitmix64(splitmix64(seed) ^ splitmix64(c + 1)));
    out.insert(out.end(), by_class[c].begin(), by_class[c].begin() + std::ptrdiff_t(quota[c]));
  }
  return out;
}

}  // namespace

HoldoutSplit split_holdout(const Dataset& ds, size_t n_val, uint64_t seed, bool stratify) {
  const size_t n = ds.size();
  FRUGAL_CHECK(n_val <= n, "validation split: cannot hold out ", n_val, " images of dataset '", ds.name,
               "', which has ", n);
  FRUGAL_CHECK(n <= UINT32_MAX, "validation split: dataset '", ds.name, "' has ", n, " images, more than 2^32-1");
  FRUGAL_CHECK(ds.images.size() == n * ds.image_bytes(), "validation split: dataset '", ds.name, "' holds ",
               ds.images.size(), " image bytes for ", n, " labels of ", ds.image_bytes(), " bytes each");
  if (stratify)
    for (size_t i = 0; i < n; ++i)
      FRUGAL_CHECK(ds.labels[i] >= 0 && ds.labels[i] < ds.num_classes, "validation split: label ", ds.labels[i],
                   " of image ", i, " of '", ds.name, "' is outside [0, ", ds.num_classes, "); cannot stratify");

  HoldoutSplit s;
  s.val_indices = pick(ds, n_val, seed, stratify);
  std::sort(s.val_indices.begin(), s.val_indices.end());
  std::vector<uint32_t> train_idx;  // (N - n_val) the complement, ascending
  train_idx.reserve(n - n_val);
  for (size_t i = 0, j = 0; i < n; ++i) {
    if (j < s.val_indices.size() && s.val_indices[j] == i)
      ++j;
    else
      train_idx.push_back(uint32_t(i));
  }
  s.train = gather(ds, train_idx);
  s.val = gather(ds, s.val_indices);
  std::vector<uint8_t> le;  // (4 n_val) little-endian indices
  le.reserve(4 * s.val_indices.size());
  for (uint32_t v : s.val_indices)
    for (int b = 0; b < 4; ++b) le.push_back(uint8_t(v >> (8 * b)));
  s.val_indices_sha256 = sha256_bytes(le.data(), le.size());
  return s;
}

}  // namespace frugal::data
