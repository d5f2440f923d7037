// Small PNG charts drawn with OpenCV for sweep reports: scatter plots (a Pareto front drawn as a joined line) and
// line plots (learning curves), with axes, ticks, labels and a legend. Categorical x values (e.g. compressor
// specs) are placed at 0, 1, 2, ... with their names as tick labels.
#pragma once
#include <string>
#include <vector>

namespace frugal::sweep {

struct Series {
  std::string label;               ///< legend entry ("" = none)
  std::vector<double> x, y;        ///< points; NaN points are skipped
  std::vector<std::string> names;  ///< optional: a label drawn beside each point
  bool lines = false;              ///< join the points in order
  bool markers = true;
  int color = -1;                  ///< palette index (-1: the series' position)
  bool dashed = false;             ///< draw the joining lines dashed (reference lines: a baseline, a budget)
};

struct Chart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  std::vector<std::string> x_categories;  ///< non-empty: x values are indices into these names
  bool log_x = false;                     ///< log10 x axis (all x > 0)
  int width = 900, height = 600;
};

/// Draws the chart and writes it as PNG (temp file + rename); throws frugal::Error when it cannot.
void save_chart_png(const Chart& chart, const std::string& path);

}  // namespace frugal::sweep
