// Per-image preprocessing: uint8 HWC -> normalized float HWC, with optional random crop (zero
// padding) and horizontal flip. All randomness comes from a caller-supplied std::mt19937_64 and is
// drawn with plain modulo arithmetic (not std::uniform_int_distribution), so results are the same
// with every standard library.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace frugal::data {

/// x_float = (x_uint8 / 255 - mean[c]) / std[c]. mean/std hold one value per channel, or one value
/// that applies to every channel.
struct Normalization {
  std::vector<float> mean, std;
};

/// mnist 0.1307/0.3081; fashion-mnist 0.2860/0.3530; cifar10 (0.4914,0.4822,0.4465)/(0.2470,0.2435,0.2616);
/// cifar100 (0.5071,0.4865,0.4409)/(0.2673,0.2564,0.2762); folder (and "folder:...") 0.5/0.5 for every
/// channel. Unknown name: frugal::Error.
Normalization default_normalization(const std::string& dataset_name);

/// Training-time augmentation. crop_pad > 0: pad the image by crop_pad pixels on each side, then take
/// a random H x W crop (offsets uniform in [0, 2*crop_pad]). The padding is 0 in NORMALIZED space,
/// i.e. padded pixels equal the per-channel mean (not black). flip: mirror left-right with p = 0.5.
/// cutout > 0: after crop and flip, a cutout x cutout square (clipped at the border) centred on a uniformly
/// drawn pixel is set to 0 in normalized space (DeVries & Taylor 2017).
struct Augment {
  int crop_pad = 0;
  bool flip = false;
  int cutout = 0;
};

/// The random choices for one image: the crop window starts at (dy, dx) in padded coordinates.
struct AugmentDraw {
  int dy = 0, dx = 0;  // in [0, 2*crop_pad]; crop_pad, crop_pad means "no shift"
  bool flip = false;
  int cut = 0;         // side of the cutout square, 0 = none
  int cy = 0, cx = 0;  // its centre in output coordinates, in [0, H) x [0, W)
};

/// Draws in this order: dy, dx (only if crop_pad > 0), then flip (only if aug.flip), then the cutout centre cy,
/// cx (only if aug.cutout > 0), so that adding cutout leaves the other draws as they were. height and width are
/// the image's (they bound the cutout centre).
AugmentDraw draw_augment(const Augment& aug, std::mt19937_64& rng, int height, int width);

/// Normalizes one image and applies a crop/flip/cutout draw.
/// src: (H, W, C) uint8; dst: (H, W, C) float. dst(y, x, c) = norm(src(y + dy - pad, x' + dx - pad, c)),
/// where x' = W-1-x if draw.flip else x, and out-of-image source pixels give 0; then dst(y, x, c) = 0 where
/// cy - cut/2 <= y < cy - cut/2 + cut and likewise for x.
void transform_image(const uint8_t* src, int height, int width, int channels, const Normalization& norm,
                     int crop_pad, const AugmentDraw& draw, float* dst);

/// draw_augment + transform_image.
void augment_image(const uint8_t* src, int height, int width, int channels, const Normalization& norm,
                   const Augment& aug, std::mt19937_64& rng, float* dst);

}  // namespace frugal::data
