#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "data/loader.h"
#include "util/check.h"

using namespace frugal::data;

namespace {
/// n grey 2x2 images; every pixel of image i is 10*i (so i can be read back), label i % 3.
Dataset make_dataset(int n, const std::string& name = "toy") {
  Dataset ds;
  ds.name = name;
  ds.channels = 1, ds.height = 2, ds.width = 2, ds.num_classes = 3;
  for (int i = 0; i < n; ++i) {
    for (int p = 0; p < 4; ++p) ds.images.push_back(uint8_t(10 * i));
    ds.labels.push_back(i % 3);
  }
  return ds;
}

LoaderOptions opts(int batch, bool drop_last, uint64_t seed = 1) {
  LoaderOptions o;
  o.batch = batch;
  o.drop_last = drop_last;
  o.seed = seed;
  o.norm = {{0.0f}, {1.0f / 255.0f}};  // x_float == x_uint8
  return o;
}

/// The dataset indices of one epoch, in order (read back from pixel values).
std::vector<int> epoch_order(Loader& l, int epoch) {
  std::vector<int> idx;
  Batch b;
  l.start_epoch(epoch);
  while (l.next(b)) {
    REQUIRE(b.x.size() == size_t(b.n) * 4);
    REQUIRE(b.y.size() == size_t(b.n));
    for (int i = 0; i < b.n; ++i) {
      int k = int(std::lround(b.x[size_t(i) * 4] / 10.0f));
      CHECK(b.y[size_t(i)] == k % 3);
      idx.push_back(k);
    }
  }
  return idx;
}

std::vector<std::vector<float>> epoch_batches(Loader& l, int epoch) {
  std::vector<std::vector<float>> out;
  Batch b;
  l.start_epoch(epoch);
  while (l.next(b)) out.push_back(b.x);
  return out;
}
}  // namespace

TEST_CASE("loader: every example exactly once per epoch with drop_last=false") {
  Dataset ds = make_dataset(10);
  Loader l(ds, opts(3, false));
  CHECK(l.batches_per_epoch() == 4);
  Batch b;
  l.start_epoch(0);
  std::vector<int> sizes;
  while (l.next(b)) {
    sizes.push_back(b.n);
    CHECK(l.batch_index() == sizes.size());
  }
  CHECK(sizes == std::vector<int>{3, 3, 3, 1});
  CHECK(!l.next(b));
  for (int e = 0; e < 3; ++e) {
    auto idx = epoch_order(l, e);
    std::sort(idx.begin(), idx.end());
    std::vector<int> all(10);
    for (int i = 0; i < 10; ++i) all[size_t(i)] = i;
    CHECK(idx == all);
  }
}

TEST_CASE("loader: drop_last, no shuffle, errors") {
  Dataset ds = make_dataset(10);
  LoaderOptions o = opts(4, true);
  o.shuffle = false;
  Loader l(ds, o);
  CHECK(l.batches_per_epoch() == 2);
  CHECK(epoch_order(l, 5) == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7});

  Loader fresh(ds, opts(4, true));
  Batch b;
  CHECK_THROWS_WITH_AS(fresh.next(b), doctest::Contains("start_epoch"), frugal::Error);
  CHECK_THROWS_AS(Loader(ds, opts(11, true)), frugal::Error);
  CHECK_THROWS_AS(Loader(ds, opts(0, false)), frugal::Error);
  LoaderOptions bad = opts(4, false);
  bad.norm = {{0.1f, 0.2f}, {1.0f}};
  CHECK_THROWS_AS(Loader(ds, bad), frugal::Error);
}

TEST_CASE("loader: deterministic in (seed, epoch), prefetch or not, resumable") {
  Dataset ds = make_dataset(25);
  LoaderOptions o = opts(4, false, 42);
  o.augment = {1, true};
  Loader a(ds, o), b(ds, o);
  auto a0 = epoch_batches(a, 0), a1 = epoch_batches(a, 1);
  CHECK(a0 == epoch_batches(b, 0));
  CHECK(a1 == epoch_batches(b, 1));
  CHECK(a0 != a1);

  Loader order(ds, opts(4, false, 42));
  CHECK(epoch_order(order, 0) != epoch_order(order, 1));
  Loader other_seed(ds, opts(4, false, 43));
  CHECK(epoch_order(order, 0) != epoch_order(other_seed, 0));

  LoaderOptions sync = o;
  sync.prefetch = false;
  Loader c(ds, sync);
  CHECK(epoch_batches(c, 1) == a1);
  CHECK(epoch_batches(c, 0) == a0);

  Loader resumed(ds, o);  // straight to epoch 1, and restart mid-epoch
  Batch x;
  resumed.start_epoch(1);
  resumed.next(x);
  resumed.next(x);
  CHECK(resumed.batch_index() == 2);
  CHECK(epoch_batches(resumed, 1) == a1);
}

TEST_CASE("loader: shards partition the epoch") {
  Dataset ds = make_dataset(11);
  std::vector<int> all;
  for (int k = 0; k < 3; ++k) {
    LoaderOptions o = opts(2, false, 9);
    o.num_shards = 3, o.shard = k;
    Loader l(ds, o);
    auto idx = epoch_order(l, 2);
    CHECK(idx.size() == (k < 2 ? 4u : 3u));
    all.insert(all.end(), idx.begin(), idx.end());
  }
  std::sort(all.begin(), all.end());
  CHECK(all.size() == 11);
  CHECK(std::unique(all.begin(), all.end()) == all.end());

  LoaderOptions o = opts(2, true, 9);
  o.num_shards = 3, o.shard = 2;
  CHECK(Loader(ds, o).batches_per_epoch() == 1);  // 11/3 = 3 examples -> one full batch of 2
}

TEST_CASE("loader: default normalization by dataset name") {
  Dataset ds = make_dataset(4, "mnist");
  LoaderOptions o;
  o.batch = 4;
  o.shuffle = false;
  Loader l(ds, o);
  Batch b;
  l.start_epoch(0);
  REQUIRE(l.next(b));
  CHECK(b.x[4] == doctest::Approx((10.0f / 255.0f - 0.1307f) / 0.3081f));
}
