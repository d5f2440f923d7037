// split_holdout: sizes, disjoint parts whose union is the source, images and labels aligned, the same split for
// the same seed and another one for another seed, stratified class proportions.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include "data/split.h"
#include "util/check.h"

using namespace frugal::data;

namespace {
/// n images of 2x2x1 whose 4 bytes encode the image's index (bytes 0..2) and its label (byte 3), so every
/// image of a split says where it came from and which label it must carry.
Dataset numbered(size_t n, int classes) {
  Dataset d;
  d.name = "numbered";
  d.channels = 1, d.height = 2, d.width = 2, d.num_classes = classes;
  for (size_t i = 0; i < n; ++i) {
    const int32_t label = int32_t((i * 7) % size_t(classes));  // 7 is coprime with 10: 100 per class of 1000
    d.images.insert(d.images.end(), {uint8_t(i), uint8_t(i >> 8), uint8_t(i >> 16), uint8_t(label)});
    d.labels.push_back(label);
  }
  return d;
}

size_t index_of(const Dataset& d, size_t j) {
  const uint8_t* p = d.images.data() + j * 4;
  return size_t(p[0]) | size_t(p[1]) << 8 | size_t(p[2]) << 16;
}

void check_partition(const Dataset& src, const HoldoutSplit& s, size_t n_val) {
  REQUIRE(s.val.size() == n_val);
  REQUIRE(s.train.size() == src.size() - n_val);
  CHECK(s.val.images.size() == n_val * 4);
  CHECK(s.train.images.size() == (src.size() - n_val) * 4);
  REQUIRE(s.val_indices.size() == n_val);
  std::set<size_t> seen;
  for (const Dataset* part : {&s.train, &s.val})
    for (size_t j = 0; j < part->size(); ++j) {
      const size_t i = index_of(*part, j);
      CHECK(seen.insert(i).second);                              // disjoint, no duplicates
      CHECK(part->labels[j] == src.labels[i]);                   // label travelled with its image
      CHECK(part->images[j * 4 + 3] == uint8_t(src.labels[i]));  // and the image is the source's
    }
  CHECK(seen.size() == src.size());  // union is the whole source
  for (size_t j = 0; j < n_val; ++j) CHECK(index_of(s.val, j) == s.val_indices[j]);
  CHECK(std::is_sorted(s.val_indices.begin(), s.val_indices.end()));
  CHECK(s.val.name == src.name);
  CHECK(s.train.num_classes == src.num_classes);
}
}  // namespace

TEST_CASE("split_holdout: sizes, disjoint, union is the source, labels aligned") {
  Dataset src = numbered(1000, 10);
  for (bool strat : {false, true})
    for (size_t n_val : {size_t(0), size_t(1), size_t(137), size_t(999), size_t(1000)}) {
      CAPTURE(strat);
      CAPTURE(n_val);
      check_partition(src, split_holdout(src, n_val, kValSplitSeed, strat), n_val);
    }
}

TEST_CASE("split_holdout: the same seed gives the same split, another seed another one") {
  Dataset src = numbered(1000, 10);
  for (bool strat : {false, true}) {
    CAPTURE(strat);
    HoldoutSplit a = split_holdout(src, 100, 42, strat), b = split_holdout(src, 100, 42, strat);
    HoldoutSplit c = split_holdout(src, 100, 43, strat);
    CHECK(a.val_indices == b.val_indices);
    CHECK(a.val_indices_sha256 == b.val_indices_sha256);
    CHECK(a.val.images == b.val.images);
    CHECK(a.train.labels == b.train.labels);
    CHECK(a.val_indices != c.val_indices);
    CHECK(a.val_indices_sha256 != c.val_indices_sha256);
    CHECK(a.val_indices_sha256.size() == 64);
  }
  // the hash is of the indices as little-endian uint32: {} and a fixed split are pinned
  CHECK(split_holdout(src, 0, 1).val_indices_sha256 == sha256_bytes(nullptr, 0));
  HoldoutSplit d = split_holdout(src, 2, 7);
  const uint8_t le[8] = {uint8_t(d.val_indices[0]), uint8_t(d.val_indices[0] >> 8), 0, 0,
                         uint8_t(d.val_indices[1]), uint8_t(d.val_indices[1] >> 8), 0, 0};
  CHECK(d.val_indices_sha256 == sha256_bytes(le, 8));
  // not just the first or last images: the held-out ones are spread over the set
  HoldoutSplit e = split_holdout(src, 100, kValSplitSeed);
  CHECK(e.val_indices.front() < 100);
  CHECK(e.val_indices.back() >= 900);
}

TEST_CASE("split_holdout: stratified keeps class proportions, largest remainders get the rest") {
  Dataset src = numbered(1000, 10);  // 100 images per class
  HoldoutSplit s = split_holdout(src, 250, 5, true);
  for (size_t h : label_histogram(s.val)) CHECK(h == 25);
  HoldoutSplit r = split_holdout(src, 255, 5, true);  // 25.5 each: 5 classes get 26, lowest indices first
  std::vector<size_t> want{26, 26, 26, 26, 26, 25, 25, 25, 25, 25};
  CHECK(label_histogram(r.val) == want);
  // unbalanced classes: class 0 holds 90 %, the split holds out 10 % of each
  Dataset skew = numbered(200, 2);
  for (size_t i = 0; i < 200; ++i) {
    skew.labels[i] = i % 10 == 9 ? 1 : 0;
    skew.images[i * 4 + 3] = uint8_t(skew.labels[i]);
  }
  HoldoutSplit k = split_holdout(skew, 20, 5, true);
  CHECK(label_histogram(k.val) == std::vector<size_t>{18, 2});
  check_partition(skew, k, 20);
}

TEST_CASE("split_holdout: rejects more images than the dataset has, and bad labels when stratifying") {
  Dataset src = numbered(10, 3);
  CHECK_THROWS_WITH_AS(split_holdout(src, 11, 1), doctest::Contains("cannot hold out 11 images"), frugal::Error);
  src.labels[4] = 3;
  CHECK_NOTHROW(split_holdout(src, 5, 1, false));
  CHECK_THROWS_WITH_AS(split_holdout(src, 5, 1, true), doctest::Contains("label 3 of image 4"), frugal::Error);
}
