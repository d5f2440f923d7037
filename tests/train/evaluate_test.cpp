// Evaluation helpers: the horizontal flip and flip test-time augmentation.
#include <doctest/doctest.h>

#include <random>

#include "nn/model.h"
#include "train/evaluate.h"

using namespace frugal;

TEST_CASE("flip_horizontal mirrors each row of an NHWC batch; twice is the identity") {
  Tensor x({2, 3, 2, 4});  // N, C, H, W stored NHWC
  for (int64_t i = 0; i < x.size(); ++i) x.data()[i] = float(i);
  Tensor f, ff;
  train::flip_horizontal(x, f);
  for (int n = 0; n < 2; ++n)
    for (int h = 0; h < 2; ++h)
      for (int w = 0; w < 4; ++w)
        for (int c = 0; c < 3; ++c) {
          auto at = [&](const Tensor& t, int ww) { return t.data()[((n * 2 + h) * 4 + ww) * 3 + c]; };
          CHECK(at(f, w) == at(x, 3 - w));
        }
  train::flip_horizontal(f, ff);
  for (int64_t i = 0; i < x.size(); ++i) CHECK(ff.data()[i] == x.data()[i]);
}

TEST_CASE("flip TTA: unchanged on mirror-symmetric images, a different prediction source otherwise") {
  data::Dataset ds;
  ds.name = "cifar10", ds.channels = 3, ds.height = 8, ds.width = 8, ds.num_classes = 10;
  std::mt19937 rng(4);
  const int N = 40;
  ds.images.resize(size_t(N) * 8 * 8 * 3);
  for (int i = 0; i < N; ++i) {
    ds.labels.push_back(i % 10);
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 4; ++x)
        for (int c = 0; c < 3; ++c) {
          const uint8_t v = uint8_t(rng() % 256);
          ds.images[((size_t(i) * 8 + y) * 8 + x) * 3 + c] = v;
          ds.images[((size_t(i) * 8 + y) * 8 + 7 - x) * 3 + c] = v;  // mirror-symmetric
        }
  }
  nn::Model model(nn::preset_spec("cnn", 0.5, -1, {3, 8, 8}, 10), 1);
  const auto norm = data::default_normalization("cifar10");
  train::EvalMetrics plain = train::evaluate(model, ds, norm, 16, 0.f, false);
  train::EvalMetrics tta = train::evaluate(model, ds, norm, 16, 0.f, true);
  CHECK(tta.top1 == plain.top1);
  CHECK(tta.loss == doctest::Approx(plain.loss).epsilon(1e-5));
  // break the symmetry: TTA's loss is no longer the plain one
  for (size_t i = 0; i < ds.images.size(); i += 7) ds.images[i] = uint8_t(255 - ds.images[i]);
  train::EvalMetrics plain2 = train::evaluate(model, ds, norm, 16, 0.f, false);
  train::EvalMetrics tta2 = train::evaluate(model, ds, norm, 16, 0.f, true);
  CHECK(tta2.loss != doctest::Approx(plain2.loss).epsilon(1e-6));
}
