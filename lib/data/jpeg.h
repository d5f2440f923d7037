// Compressed multimedia inputs: images passed through JPEG at a given quality (OpenCV's libjpeg) before the network,
// so experiments can trace accuracy against input bits per pixel (config key input_jpeg_quality).
#pragma once
#include "data/dataset.h"

namespace frugal::data {

struct JpegStats {
  int quality = 0;
  double bits_per_pixel = 0;  ///< mean bits per pixel (H x W) of the whole JPEG files, headers included (about 600
                              ///< bytes: they dominate for 28x28 images, e.g. MNIST at quality 10 is 4.1 bpp)
  double mean_abs_error = 0;  ///< mean |decoded - original| over all pixel values (0-255)
};

/// Replaces every image of ds by its JPEG round trip at `quality` (1-100), in parallel (TBB); deterministic.
JpegStats jpeg_roundtrip(Dataset& ds, int quality);

}  // namespace frugal::data
