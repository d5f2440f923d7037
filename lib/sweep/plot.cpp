#include "sweep/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "io/files.h"
#include "util/check.h"

namespace frugal::sweep {

namespace {
const cv::Scalar kPalette[] = {{180, 119, 31}, {14, 127, 255}, {44, 160, 44},  {40, 39, 214},  {189, 103, 148},
                               {75, 86, 140},  {194, 119, 227}, {127, 127, 127}, {34, 189, 188}, {207, 190, 23}};
constexpr int kLeft = 90, kRight = 200, kTop = 40, kBottom = 60;

struct Range {
  double lo = std::numeric_limits<double>::infinity(), hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    if (!std::isfinite(v)) return;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  void pad() {
    if (!std::isfinite(lo)) lo = 0, hi = 1;
    if (hi - lo < 1e-12 * std::max(1.0, std::fabs(hi))) lo -= 0.5 * std::max(1e-3, std::fabs(lo)), hi = 2 * hi - lo;
    const double m = 0.05 * (hi - lo);
    lo -= m;
    hi += m;
  }
};

std::string tick_text(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

/// About n round tick values within [lo, hi].
std::vector<double> ticks(double lo, double hi, int n) {
  const double raw = (hi - lo) / n, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) t.push_back(std::fabs(v) < 1e-12 * step ? 0 : v);
  return t;
}

/// A dashed line from a to b: 8-pixel dashes, 6-pixel gaps.
void dashed_line(cv::Mat& img, cv::Point a, cv::Point b, const cv::Scalar& c, int thickness) {
  const double len = std::hypot(double(b.x - a.x), double(b.y - a.y));
  for (double t = 0; t < len; t += 14) {
    const double t1 = std::min(len, t + 8);
    auto at = [&](double u) {
      return cv::Point(a.x + int(std::lround((b.x - a.x) * u / len)), a.y + int(std::lround((b.y - a.y) * u / len)));
    };
    cv::line(img, at(t), at(t1), c, thickness, cv::LINE_AA);
  }
}

void text(cv::Mat& img, const std::string& s, cv::Point at, double scale = 0.45, cv::Scalar c = {0, 0, 0}) {
  cv::putText(img, s, at, cv::FONT_HERSHEY_SIMPLEX, scale, c, 1, cv::LINE_AA);
}
}  // namespace

void save_chart_png(const Chart& ch, const std::string& path) {
  cv::Mat img(ch.height, ch.width, CV_8UC3, cv::Scalar(255, 255, 255));
  const bool cats = !ch.x_categories.empty();
  auto fx = [&](double x) { return ch.log_x ? std::log10(x) : x; };
  Range rx, ry;
  for (const Series& s : ch.series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
      if (std::isfinite(s.y[i]) && std::isfinite(s.x[i]) && (!ch.log_x || s.x[i] > 0)) {
        rx.add(fx(s.x[i]));
        ry.add(s.y[i]);
      }
  if (cats) rx.lo = -0.5, rx.hi = static_cast<double>(ch.x_categories.size()) - 0.5;
  else rx.pad();
  ry.pad();
  const int pw = ch.width - kLeft - kRight, ph = ch.height - kTop - kBottom;
  auto px = [&](double x) { return kLeft + static_cast<int>(std::lround((fx(x) - rx.lo) / (rx.hi - rx.lo) * pw)); };
  auto py = [&](double y) { return kTop + ph - static_cast<int>(std::lround((y - ry.lo) / (ry.hi - ry.lo) * ph)); };
  // axes, grid and ticks
  cv::rectangle(img, {kLeft, kTop}, {kLeft + pw, kTop + ph}, {0, 0, 0}, 1);
  for (double t : ticks(ry.lo, ry.hi, 6)) {
    cv::line(img, {kLeft, py(t)}, {kLeft + pw, py(t)}, {225, 225, 225}, 1);
    text(img, tick_text(t), {4, py(t) + 4}, 0.4);
  }
  if (cats) {
    for (size_t i = 0; i < ch.x_categories.size(); ++i)
      text(img, ch.x_categories[i].substr(0, 14), {px(static_cast<double>(i)) - 30, kTop + ph + 18}, 0.4);
  } else {
    for (double t : ticks(rx.lo, rx.hi, 6)) {
      const double x = ch.log_x ? std::pow(10.0, t) : t;
      cv::line(img, {px(x), kTop}, {px(x), kTop + ph}, {225, 225, 225}, 1);
      text(img, tick_text(x), {px(x) - 18, kTop + ph + 18}, 0.4);
    }
  }
  cv::rectangle(img, {kLeft, kTop}, {kLeft + pw, kTop + ph}, {0, 0, 0}, 1);
  text(img, ch.title, {kLeft, 16}, 0.55);
  text(img, ch.x_label + (ch.log_x ? " (log)" : ""), {kLeft + pw / 2 - 60, ch.height - 16}, 0.5);
  text(img, ch.y_label, {4, kTop - 6}, 0.45);
  // series and legend
  int legend_y = kTop + 10;
  for (size_t k = 0; k < ch.series.size(); ++k) {
    const Series& s = ch.series[k];
    const cv::Scalar c = kPalette[(s.color >= 0 ? static_cast<size_t>(s.color) : k) % std::size(kPalette)];
    cv::Point prev(-1, -1);
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (ch.log_x && s.x[i] <= 0)) continue;
      const cv::Point p(px(s.x[i]), py(s.y[i]));
      if (s.lines && prev.x >= 0) {
        if (s.dashed) dashed_line(img, prev, p, c, 2);
        else cv::line(img, prev, p, c, 2, cv::LINE_AA);
      }
      if (s.markers) cv::circle(img, p, 4, c, cv::FILLED, cv::LINE_AA);
      if (i < s.names.size() && !s.names[i].empty()) text(img, s.names[i], {p.x + 6, p.y - 6}, 0.35, c);
      prev = p;
    }
    if (!s.label.empty() && legend_y < ch.height - kBottom) {
      if (s.dashed) dashed_line(img, {kLeft + pw + 10, legend_y - 4}, {kLeft + pw + 30, legend_y - 4}, c, 3);
      else cv::line(img, {kLeft + pw + 10, legend_y - 4}, {kLeft + pw + 30, legend_y - 4}, c, 3);
      text(img, s.label.substr(0, 22), {kLeft + pw + 34, legend_y}, 0.38);
      legend_y += 16;
    }
  }
  std::vector<uchar> png;
  FRUGAL_CHECK(cv::imencode(".png", img, png), "plot '", path, "': OpenCV could not encode the PNG");
  io::write_file_atomic(path, std::string(png.begin(), png.end()));
}

}  // namespace frugal::sweep
