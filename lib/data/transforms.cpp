#include "data/transforms.h"

#include <algorithm>

#include "util/check.h"

namespace frugal::data {

Normalization default_normalization(const std::string& name) {
  if (name == "mnist") return {{0.1307f}, {0.3081f}};
  if (name == "fashion-mnist") return {{0.2860f}, {0.3530f}};
  if (name == "cifar10") return {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
  if (name == "cifar100") return {{0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}};
  if (name == "folder" || name.rfind("folder:", 0) == 0) return {{0.5f}, {0.5f}};
  FRUGAL_FAIL("no default normalization for dataset '", name,
              "'; expected mnist, fashion-mnist, cifar10, cifar100 or folder, or pass mean/std explicitly");
}

AugmentDraw draw_augment(const Augment& aug, std::mt19937_64& rng, int height, int width) {
  AugmentDraw d;
  d.dy = d.dx = aug.crop_pad;
  if (aug.crop_pad > 0) {
    const uint64_t span = uint64_t(2 * aug.crop_pad + 1);
    d.dy = int(rng() % span);
    d.dx = int(rng() % span);
  }
  if (aug.flip) d.flip = (rng() >> 63) != 0;
  if (aug.cutout > 0) {
    FRUGAL_CHECK(height > 0 && width > 0, "draw_augment: cutout needs the image size, got ", height, "x", width);
    d.cut = aug.cutout;
    d.cy = int(rng() % uint64_t(height));
    d.cx = int(rng() % uint64_t(width));
  }
  return d;
}

void transform_image(const uint8_t* src, int height, int width, int channels, const Normalization& norm,
                     int crop_pad, const AugmentDraw& draw, float* dst) {
  FRUGAL_CHECK(channels >= 1 && channels <= 4, "transform_image: channels must be 1..4, got ", channels);
  const size_t nm = norm.mean.size(), ns = norm.std.size();
  FRUGAL_CHECK((nm == 1 || nm == size_t(channels)) && (ns == 1 || ns == size_t(channels)),
               "normalization has ", nm, " mean and ", ns, " std values for an image with ", channels,
               " channels; give 1 or ", channels, " of each");
  float scale[4], shift[4];  // x * scale + shift == (x/255 - mean) / std
  for (int c = 0; c < channels; ++c) {
    float m = norm.mean[nm == 1 ? 0 : size_t(c)], s = norm.std[ns == 1 ? 0 : size_t(c)];
    FRUGAL_CHECK(s > 0, "normalization std for channel ", c, " must be > 0, got ", s);
    scale[c] = 1.0f / (255.0f * s);
    shift[c] = -m / s;
  }
  const int oy = draw.dy - crop_pad, ox = draw.dx - crop_pad;  // source offset of the crop window
  for (int y = 0; y < height; ++y) {
    const int sy = y + oy;
    float* row = dst + size_t(y) * size_t(width) * size_t(channels);
    if (sy < 0 || sy >= height) {
      std::fill(row, row + size_t(width) * size_t(channels), 0.0f);
      continue;
    }
    for (int x = 0; x < width; ++x) {
      const int sx = (draw.flip ? width - 1 - x : x) + ox;
      float* px = row + size_t(x) * size_t(channels);
      if (sx < 0 || sx >= width) {
        for (int c = 0; c < channels; ++c) px[c] = 0.0f;
        continue;
      }
      const uint8_t* sp = src + (size_t(sy) * size_t(width) + size_t(sx)) * size_t(channels);
      for (int c = 0; c < channels; ++c) px[c] = float(sp[c]) * scale[c] + shift[c];
    }
  }
  if (draw.cut > 0) {
    const int y0 = std::max(0, draw.cy - draw.cut / 2), y1 = std::min(height, draw.cy - draw.cut / 2 + draw.cut);
    const int x0 = std::max(0, draw.cx - draw.cut / 2), x1 = std::min(width, draw.cx - draw.cut / 2 + draw.cut);
    for (int y = y0; y < y1; ++y) {
      float* row = dst + (size_t(y) * size_t(width) + size_t(x0)) * size_t(channels);
      std::fill(row, row + size_t(std::max(0, x1 - x0)) * size_t(channels), 0.0f);
    }
  }
}

void augment_image(const uint8_t* src, int height, int width, int channels, const Normalization& norm,
                   const Augment& aug, std::mt19937_64& rng, float* dst) {
  transform_image(src, height, width, channels, norm, aug.crop_pad, draw_augment(aug, rng, height, width), dst);
}

}  // namespace frugal::data
