#include "sweep/asha.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "util/check.h"

namespace frugal::sweep {

namespace {
using State = AshaTrial::State;

bool promotable(const AshaTrial& t) { return t.state == State::done && !std::isnan(t.score); }

/// Rung k's finished trials, best first: done by score (ties to the lower point), then NaN scores and failures.
std::vector<const AshaTrial*> ranked(const std::vector<const AshaTrial*>& finished, bool maximize) {
  std::vector<const AshaTrial*> r = finished;
  std::sort(r.begin(), r.end(), [maximize](const AshaTrial* a, const AshaTrial* b) {
    const bool ga = promotable(*a), gb = promotable(*b);
    if (ga != gb) return ga;
    if (ga && a->score != b->score) return maximize ? a->score > b->score : a->score < b->score;
    return a->point < b->point;
  });
  return r;
}
}  // namespace

AshaJob asha_next(const std::vector<AshaTrial>& trials, size_t n_points, int n_rungs, int eta, bool maximize) {
  FRUGAL_CHECK(n_rungs >= 1, "asha: needs at least one rung, got ", n_rungs);
  FRUGAL_CHECK(eta >= 2, "asha: eta must be >= 2, got ", eta);
  const size_t R = static_cast<size_t>(n_rungs);
  std::vector<std::vector<const AshaTrial*>> finished(R);
  std::vector<std::set<size_t>> present(R);  // points with a trial at the rung
  std::vector<bool> busy(R, false);          // a trial running at the rung
  std::set<size_t> started;
  const AshaTrial* redo = nullptr;
  bool running = false;
  for (const AshaTrial& t : trials) {
    FRUGAL_CHECK(t.point < n_points && t.rung >= 0 && t.rung < n_rungs, "asha: trial of point ", t.point, " at rung ",
                 t.rung, " is outside the sweep's ", n_points, " points and ", n_rungs, " rungs");
    const size_t k = static_cast<size_t>(t.rung);
    FRUGAL_CHECK(present[k].insert(t.point).second, "asha: point ", t.point, " appears twice at rung ", t.rung);
    started.insert(t.point);
    if (t.state == State::waiting && (!redo || t.rung > redo->rung || (t.rung == redo->rung && t.point < redo->point)))
      redo = &t;
    if (t.state == State::running) busy[k] = running = true;
    if (t.state == State::done || t.state == State::failed) finished[k].push_back(&t);
  }
  // 1. a decided trial that is not running
  if (redo) return {AshaJob::Kind::run, redo->point, redo->rung};

  // quotas: floor(finished / eta) while a rung can still grow, the synchronous ceil once it is complete
  std::vector<std::vector<const AshaTrial*>> order(R);
  std::vector<size_t> quota(R, 0);
  bool lower_complete = started.size() == n_points;  // rung 0 grows while points are left to start
  bool busy_so_far = false;
  for (size_t k = 0; k < R; ++k) {
    order[k] = ranked(finished[k], maximize);
    busy_so_far = busy_so_far || busy[k];
    const size_t n = finished[k].size();
    const bool complete = lower_complete && !busy_so_far;
    quota[k] = complete && n > 0 ? std::max<size_t>(1, (n + size_t(eta) - 1) / size_t(eta)) : n / size_t(eta);
    bool left = false;  // a promotion from this rung still to make
    if (k + 1 < R)
      for (size_t i = 0; i < std::min(quota[k], order[k].size()); ++i)
        left = left || (promotable(*order[k][i]) && !present[k + 1].count(order[k][i]->point));
    lower_complete = complete && !left;
  }

  // 2. promotions, highest rung first
  for (size_t k = R - 1; k-- > 0;)
    for (size_t i = 0; i < std::min(quota[k], order[k].size()); ++i) {
      const AshaTrial& t = *order[k][i];
      if (promotable(t) && !present[k + 1].count(t.point)) return {AshaJob::Kind::run, t.point, int(k) + 1};
    }

  // 3. a new point
  for (size_t p = 0; p < n_points; ++p)
    if (!started.count(p)) return {AshaJob::Kind::run, p, 0};

  // 4.
  return {running ? AshaJob::Kind::wait : AshaJob::Kind::finished, 0, 0};
}

}  // namespace frugal::sweep
