#include "sweep/pareto.h"

#include <cmath>

#include "util/check.h"

namespace frugal::sweep {

bool dominates(const std::vector<double>& a, const std::vector<double>& b, const std::vector<Direction>& dirs) {
  FRUGAL_CHECK(a.size() == dirs.size() && b.size() == dirs.size(), "pareto: points have ", a.size(), " and ",
               b.size(), " values for ", dirs.size(), " objectives");
  bool better = false;
  for (size_t k = 0; k < dirs.size(); ++k) {
    const double x = dirs[k] == Direction::maximize ? a[k] : -a[k];
    const double y = dirs[k] == Direction::maximize ? b[k] : -b[k];
    if (x < y) return false;
    better |= x > y;
  }
  return better;
}

std::vector<size_t> pareto_front(const std::vector<std::vector<double>>& points, const std::vector<Direction>& dirs) {
  for (size_t i = 0; i < points.size(); ++i)
    for (double v : points[i])
      FRUGAL_CHECK(std::isfinite(v), "pareto: trial ", i, " has a non-finite objective (a failed trial?)");
  std::vector<size_t> front;
  for (size_t i = 0; i < points.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < points.size() && !dominated; ++j) dominated = j != i && dominates(points[j], points[i], dirs);
    if (!dominated) front.push_back(i);
  }
  return front;
}

}  // namespace frugal::sweep
