#include <doctest/doctest.h>

#include <set>

#include "data/transforms.h"
#include "util/check.h"

using namespace frugal::data;

TEST_CASE("default_normalization values") {
  auto m = default_normalization("mnist");
  CHECK(m.mean == std::vector<float>{0.1307f});
  CHECK(m.std == std::vector<float>{0.3081f});
  auto f = default_normalization("fashion-mnist");
  CHECK(f.mean[0] == 0.2860f);
  CHECK(f.std[0] == 0.3530f);
  auto c10 = default_normalization("cifar10");
  CHECK(c10.mean == std::vector<float>{0.4914f, 0.4822f, 0.4465f});
  CHECK(c10.std == std::vector<float>{0.2470f, 0.2435f, 0.2616f});
  auto c100 = default_normalization("cifar100");
  CHECK(c100.mean == std::vector<float>{0.5071f, 0.4865f, 0.4409f});
  CHECK(c100.std == std::vector<float>{0.2673f, 0.2564f, 0.2762f});
  CHECK(default_normalization("folder").mean == std::vector<float>{0.5f});
  CHECK(default_normalization("folder:/some/path").std == std::vector<float>{0.5f});
  CHECK_THROWS_AS(default_normalization("imagenet"), frugal::Error);
}

namespace {
// 3 x 4 grey image, pixel (y, x) = 10 * (y * 4 + x) + 10
const std::vector<uint8_t> kImg = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120};
const Normalization kUnit{{0.0f}, {1.0f / 255.0f}};  // x_float == x_uint8
}  // namespace

TEST_CASE("transform_image: identity, flip, crop with padding") {
  std::vector<float> dst(12);  // (3, 4, 1)
  transform_image(kImg.data(), 3, 4, 1, kUnit, 0, {}, dst.data());
  for (int i = 0; i < 12; ++i) CHECK(dst[i] == doctest::Approx(kImg[i]));

  transform_image(kImg.data(), 3, 4, 1, kUnit, 0, {0, 0, true}, dst.data());
  CHECK(std::vector<float>(dst.begin(), dst.begin() + 4) == std::vector<float>{40, 30, 20, 10});
  CHECK(dst[8] == 120);

  // pad 2, window at (dy, dx) = (3, 1): output (y, x) = src(y + 1, x - 1)
  transform_image(kImg.data(), 3, 4, 1, kUnit, 2, {3, 1, false}, dst.data());
  CHECK(std::vector<float>(dst.begin(), dst.end()) ==
        std::vector<float>{0, 50, 60, 70, 0, 90, 100, 110, 0, 0, 0, 0});

  // the same window, flipped: output (y, x) = src(y + 1, 3 - x - 1)
  transform_image(kImg.data(), 3, 4, 1, kUnit, 2, {3, 1, true}, dst.data());
  CHECK(std::vector<float>(dst.begin(), dst.begin() + 4) == std::vector<float>{70, 60, 50, 0});

  // centred window with padding == no shift
  transform_image(kImg.data(), 3, 4, 1, kUnit, 2, {2, 2, false}, dst.data());
  for (int i = 0; i < 12; ++i) CHECK(dst[i] == doctest::Approx(kImg[i]));
}

TEST_CASE("transform_image: per-channel normalization, padding is the mean (0 after normalizing)") {
  const std::vector<uint8_t> rgb = {255, 0, 51, 0, 255, 102};  // (1, 2, 3)
  Normalization n{{0.5f, 0.25f, 0.2f}, {0.5f, 0.25f, 0.1f}};
  std::vector<float> dst(6);
  transform_image(rgb.data(), 1, 2, 3, n, 0, {}, dst.data());
  CHECK(dst[0] == doctest::Approx(1.0f));
  CHECK(dst[1] == doctest::Approx(-1.0f));
  CHECK(dst[2] == doctest::Approx(0.0f));
  CHECK(dst[3] == doctest::Approx(-1.0f));
  CHECK(dst[4] == doctest::Approx(3.0f));
  CHECK(dst[5] == doctest::Approx(2.0f));
  transform_image(rgb.data(), 1, 2, 3, n, 1, {1, 2, false}, dst.data());  // shift left by one
  CHECK(dst[0] == doctest::Approx(-1.0f));
  CHECK(dst[3] == 0.0f);
  CHECK(dst[4] == 0.0f);
  CHECK(dst[5] == 0.0f);
  CHECK_THROWS_AS(transform_image(rgb.data(), 1, 2, 3, Normalization{{0.1f, 0.2f}, {1.0f}}, 0, {}, dst.data()),
                  frugal::Error);
}

TEST_CASE("draw_augment covers the crop range and flips about half the time") {
  std::mt19937_64 rng(7);
  std::set<int> dys, dxs;
  int flips = 0;
  for (int i = 0; i < 2000; ++i) {
    AugmentDraw d = draw_augment({4, true}, rng, 32, 32);
    REQUIRE(d.dy >= 0);
    REQUIRE(d.dy <= 8);
    REQUIRE(d.dx >= 0);
    REQUIRE(d.dx <= 8);
    dys.insert(d.dy), dxs.insert(d.dx), flips += d.flip;
  }
  CHECK(dys.size() == 9);
  CHECK(dxs.size() == 9);
  CHECK(flips > 850);
  CHECK(flips < 1150);
  AugmentDraw none = draw_augment({3, false}, rng, 32, 32);
  CHECK(!none.flip);
  AugmentDraw off = draw_augment({}, rng, 32, 32);
  CHECK(off.dy == 0);
  CHECK(!off.flip);
}

TEST_CASE("cutout: the square is clipped at the border, is 0 after normalizing, and adds no change to other draws") {
  // (3, 4) image; cut 2 centred at (1, 2): rows 0..1, columns 1..2
  std::vector<float> dst(12);
  AugmentDraw d;
  d.cut = 2, d.cy = 1, d.cx = 2;
  transform_image(kImg.data(), 3, 4, 1, kUnit, 0, d, dst.data());
  CHECK(dst == std::vector<float>{10, 0, 0, 40, 50, 0, 0, 80, 90, 100, 110, 120});
  // centred on a corner: only the in-image quarter (cut 3 at (0, 0) covers rows 0..1, columns 0..1 minus
  // the part above/left of the image)
  d.cut = 3, d.cy = 0, d.cx = 0;
  transform_image(kImg.data(), 3, 4, 1, kUnit, 0, d, dst.data());
  CHECK(dst == std::vector<float>{0, 0, 30, 40, 0, 0, 70, 80, 90, 100, 110, 120});
  // cut after flip: the square is in output coordinates
  d.cut = 1, d.cy = 0, d.cx = 0, d.flip = true;
  transform_image(kImg.data(), 3, 4, 1, kUnit, 0, d, dst.data());
  CHECK(std::vector<float>(dst.begin(), dst.begin() + 4) == std::vector<float>{0, 30, 20, 10});

  // the crop and flip draws are the same with and without cutout; centres cover the image
  std::mt19937_64 a(11), b(11);
  std::set<int> cys, cxs;
  for (int i = 0; i < 500; ++i) {
    AugmentDraw plain = draw_augment({4, true}, a, 5, 7);
    AugmentDraw cut = draw_augment({4, true, 8}, b, 5, 7);
    REQUIRE(cut.dy == plain.dy);
    REQUIRE(cut.dx == plain.dx);
    REQUIRE(cut.flip == plain.flip);
    REQUIRE(cut.cut == 8);
    REQUIRE(cut.cy >= 0);
    REQUIRE(cut.cy < 5);
    REQUIRE(cut.cx >= 0);
    REQUIRE(cut.cx < 7);
    cys.insert(cut.cy), cxs.insert(cut.cx);
    a = b;  // the cutout stream drew two more numbers; realign for the next image
  }
  CHECK(cys.size() == 5);
  CHECK(cxs.size() == 7);
  CHECK_THROWS_AS(draw_augment({0, false, 4}, a, 0, 0), frugal::Error);
}
