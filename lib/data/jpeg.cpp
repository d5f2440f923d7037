#include "data/jpeg.h"

#include <tbb/parallel_for.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "util/check.h"

namespace frugal::data {

JpegStats jpeg_roundtrip(Dataset& ds, int quality) {
  FRUGAL_CHECK(quality >= 1 && quality <= 100, "input_jpeg_quality must be in [1, 100] (0: off), got ", quality);
  FRUGAL_CHECK(ds.channels == 1 || ds.channels == 3, "JPEG inputs need 1 or 3 channels, ", ds.name, " has ",
               ds.channels);
  const size_t n = ds.size(), per = ds.image_bytes();
  std::vector<size_t> bytes(n, 0);
  std::vector<double> err(n, 0);
  const int type = ds.channels == 1 ? CV_8UC1 : CV_8UC3;
  tbb::parallel_for(size_t(0), n, [&](size_t i) {
    uint8_t* px = ds.images.data() + i * per;
    cv::Mat img(ds.height, ds.width, type, px), bgr;
    if (ds.channels == 3)
      cv::cvtColor(img, bgr, cv::COLOR_RGB2BGR);  // OpenCV codecs expect BGR
    else
      bgr = img;
    std::vector<uchar> buf;
    FRUGAL_CHECK(cv::imencode(".jpg", bgr, buf, {cv::IMWRITE_JPEG_QUALITY, quality}), "JPEG encoding failed");
    cv::Mat dec = cv::imdecode(buf, ds.channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
    FRUGAL_CHECK(!dec.empty() && dec.rows == ds.height && dec.cols == ds.width, "JPEG decoding failed");
    if (ds.channels == 3) cv::cvtColor(dec, dec, cv::COLOR_BGR2RGB);
    double e = 0;
    const uint8_t* d = dec.ptr<uint8_t>(0);
    for (size_t k = 0; k < per; ++k) e += std::abs(int(d[k]) - int(px[k]));
    std::memcpy(px, d, per);
    bytes[i] = buf.size();
    err[i] = e;
  });
  JpegStats s;
  s.quality = quality;
  double b = 0, e = 0;
  for (size_t i = 0; i < n; ++i) {
    b += double(bytes[i]);
    e += err[i];
  }
  s.bits_per_pixel = n ? 8.0 * b / (double(n) * ds.height * ds.width) : 0;
  s.mean_abs_error = n ? e / (double(n) * double(per)) : 0;
  return s;
}

}  // namespace frugal::data
