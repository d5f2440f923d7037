#include "approx/characterize.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "util/check.h"

namespace frugal::approx {

nlohmann::json characterize(const Multiplier& m) {
  double sum_abs = 0, sum = 0, sum_sq = 0, sum_rel = 0, wcre = 0;
  int64_t wce = 0, errors = 0, nonzero = 0, max_exact = 0;
  for (int a = m.lo(); a <= m.hi(); ++a) {
    for (int b = m.lo(); b <= m.hi(); ++b) {
      int64_t e = int64_t(a) * b;
      int64_t d = int64_t(m.mul(a, b)) - e;
      int64_t ad = int64_t(std::llabs(d));
      sum_abs += double(ad);
      sum += double(d);
      sum_sq += double(d) * double(d);
      wce = std::max<int64_t>(wce, ad);
      errors += d != 0;
      max_exact = std::max<int64_t>(max_exact, std::llabs(e));
      if (e != 0) {
        double r = double(ad) / double(std::llabs(e));
        sum_rel += r;
        wcre = std::max(wcre, r);
        ++nonzero;
      }
    }
  }
  const double n = 65536.0;
  nlohmann::json j;
  j["multiplier"] = m.name();
  j["signed"] = m.is_signed;
  j["relative_power"] = m.relative_power;
  j["pairs"] = 65536;
  j["mae"] = sum_abs / n;
  j["mae_pct"] = sum_abs / n / 65536.0 * 100.0;
  j["wce"] = wce;
  j["wce_pct"] = double(wce) / 65536.0 * 100.0;
  j["mre_pct"] = nonzero ? sum_rel / double(nonzero) * 100.0 : 0.0;
  j["wcre_pct"] = wcre * 100.0;
  j["ep_pct"] = double(errors) / n * 100.0;
  j["bias"] = sum / n;
  j["mse"] = sum_sq / n;
  j["nmed"] = sum_abs / n / double(max_exact);
  return j;
}

void write_error_heatmap_png(const Multiplier& m, const std::string& path) {
  cv::Mat err(256, 256, CV_64F);
  double max_abs = 0;
  for (int a = m.lo(); a <= m.hi(); ++a)
    for (int b = m.lo(); b <= m.hi(); ++b) {
      double d = double(m.mul(a, b)) - double(a) * b;
      err.at<double>(a - m.lo(), b - m.lo()) = d;
      max_abs = std::max(max_abs, std::abs(d));
    }
  double scale = max_abs > 0 ? max_abs : 1.0;
  cv::Mat u8;
  err.convertTo(u8, CV_8U, 127.5 / scale, 127.5);  // -max -> 0, 0 -> 127.5, +max -> 255
  cv::Mat heat;
  cv::applyColorMap(u8, heat, cv::COLORMAP_TURBO);
  // Canvas: map (256x256) + colour bar (16 px) + labels.
  cv::Mat canvas(276, 360, CV_8UC3, cv::Scalar(255, 255, 255));
  heat.copyTo(canvas(cv::Rect(0, 20, 256, 256)));
  cv::Mat bar(256, 1, CV_8U);
  for (int r = 0; r < 256; ++r) bar.at<uint8_t>(r) = uint8_t(255 - r);
  cv::Mat bar_c;
  cv::applyColorMap(bar, bar_c, cv::COLORMAP_TURBO);
  cv::resize(bar_c, bar_c, cv::Size(16, 256), 0, 0, cv::INTER_NEAREST);
  bar_c.copyTo(canvas(cv::Rect(266, 20, 16, 256)));
  auto label = [&](const std::string& s, int y) {
    cv::putText(canvas, s, cv::Point(286, y), cv::FONT_HERSHEY_SIMPLEX, 0.35, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  };
  label("+" + std::to_string(int64_t(max_abs)), 30);
  label("0", 150);
  label("-" + std::to_string(int64_t(max_abs)), 274);
  cv::putText(canvas, m.name() + " error (rows a, cols b)", cv::Point(2, 14), cv::FONT_HERSHEY_SIMPLEX, 0.4,
              cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  bool ok = false;
  try {
    ok = cv::imwrite(path, canvas);
  } catch (const cv::Exception& e) {
    FRUGAL_FAIL("cannot write heat map '", path, "': ", e.what());
  }
  FRUGAL_CHECK(ok, "cannot write heat map '", path, "'; check that the folder exists and the name ends in .png");
}

}  // namespace frugal::approx
