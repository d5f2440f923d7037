#include "data/jpeg.h"

#include <doctest/doctest.h>

#include <random>

#include "util/check.h"

using namespace frugal::data;

namespace {
Dataset smooth_images(int channels, size_t n) {
  Dataset d;
  d.name = "synthetic";
  d.channels = channels;
  d.height = d.width = 32;
  d.num_classes = 2;
  std::mt19937 rng(1);
  for (size_t i = 0; i < n; ++i) {
    d.labels.push_back(int32_t(i % 2));
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x)
        for (int c = 0; c < channels; ++c) d.images.push_back(uint8_t((x * 6 + y * 2 + c * 40 + int(rng() % 8)) % 256));
  }
  return d;
}
}  // namespace

TEST_CASE("JPEG inputs: fewer bits and more error at lower quality, grey and colour, labels untouched") {
  for (int ch : {1, 3}) {
    CAPTURE(ch);
    Dataset a = smooth_images(ch, 20), b = a, orig = a;
    const JpegStats hi = jpeg_roundtrip(a, 95), lo = jpeg_roundtrip(b, 10);
    CHECK(hi.bits_per_pixel > lo.bits_per_pixel);
    CHECK(lo.bits_per_pixel > 0.05);
    CHECK(hi.mean_abs_error < lo.mean_abs_error);
    CHECK(hi.mean_abs_error < 10.0);  // noisy synthetic pixels; colour loses more to 4:2:0 chroma subsampling
    CHECK(a.images != orig.images);  // pixels replaced by the decoded ones
    CHECK(a.labels == orig.labels);
    Dataset c = orig;
    jpeg_roundtrip(c, 95);
    CHECK(c.images == a.images);  // deterministic
  }
  Dataset d = smooth_images(1, 2);
  CHECK_THROWS_AS(jpeg_roundtrip(d, 0), frugal::Error);
  CHECK_THROWS_AS(jpeg_roundtrip(d, 101), frugal::Error);
}
