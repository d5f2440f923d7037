#include "sweep/asha.h"

#include <doctest/doctest.h>

#include <cmath>
#include <map>

#include "sweep/halving.h"
#include "util/check.h"

using namespace frugal::sweep;
using State = AshaTrial::State;
using Kind = AshaJob::Kind;

namespace {
AshaTrial done(size_t point, int rung, double score) { return {point, rung, State::done, score}; }
AshaTrial running(size_t point, int rung) { return {point, rung, State::running, 0}; }

bool runs(const AshaJob& j, size_t point, int rung) {
  return j.kind == Kind::run && j.point == point && j.rung == rung;
}
}  // namespace

TEST_CASE("asha: promotes as soon as a trial is in the top 1/eta of its rung's results so far") {
  const size_t n = 9;  // 9 points, eta 3, rungs at 1, 3, 9 epochs
  // free workers start new points while nothing is promotable: they never wait for a rung
  CHECK(runs(asha_next({}, n, 3, 3, true), 0, 0));
  CHECK(runs(asha_next({running(0, 0)}, n, 3, 3, true), 1, 0));
  CHECK(runs(asha_next({done(0, 0, 0.5), done(1, 0, 0.9), running(2, 0)}, n, 3, 3, true), 3, 0));
  // 3 results at rung 0: the best one (point 1) goes up now, with 6 points not even started (synchronous
  // halving would start point 3 here and promote only after all 9)
  std::vector<AshaTrial> t{done(0, 0, 0.5), done(1, 0, 0.9), done(2, 0, 0.7)};
  CHECK(runs(asha_next(t, n, 3, 3, true), 1, 1));
  t.push_back(running(1, 1));
  CHECK(runs(asha_next(t, n, 3, 3, true), 3, 0));  // quota 1 used up: start the next point
  // 6 results: quota 2, the top two are points 3 (0.95) and 1 (promoted already): point 3 goes up, not 2 (0.7)
  for (auto [p, s] : {std::pair<size_t, double>{3, 0.95}, {4, 0.1}, {5, 0.2}}) t.push_back(done(p, 0, s));
  CHECK(runs(asha_next(t, n, 3, 3, true), 3, 1));
  // promotions are never taken back, and a higher rung's promotion comes first: at rung 1 point 1 finished (one
  // result, floor(1/3) = 0: nothing yet), so point 6 starts
  t.push_back(running(3, 1));
  t[3] = done(1, 1, 0.91);
  CHECK(runs(asha_next(t, n, 3, 3, true), 6, 0));
  // minimize: the lowest score is the best
  CHECK(runs(asha_next({done(0, 0, 3.0), done(1, 0, 1.0), done(2, 0, 2.0)}, n, 3, 3, false), 1, 1));
  // ties go to the lower point
  CHECK(runs(asha_next({done(0, 0, 0.5), done(1, 0, 0.8), done(2, 0, 0.8)}, n, 3, 3, true), 1, 1));
}

TEST_CASE("asha: interrupted trials first, failures rank last and never rise, complete rungs use the synchronous quota") {
  // an interrupted trial (its owner is gone) is run again before anything new, the highest rung first
  CHECK(runs(asha_next({done(0, 0, 0.9), {0, 1, State::waiting, 0}, {1, 0, State::waiting, 0}}, 4, 3, 3, true), 0, 1));
  // a failed trial ranks last: with a failure and two results the best done trial goes up
  CHECK(runs(asha_next({{0, 0, State::failed, 0}, done(1, 0, 0.2), done(2, 0, 0.1)}, 9, 3, 3, true), 1, 1));
  // ... and never rises, even when its rung is complete and it is within the quota
  CHECK(asha_next({{0, 0, State::failed, 0}}, 1, 2, 3, true).kind == Kind::finished);
  // 4 points, eta 3: floor(4/3) = 1 promotion while rung 0 can grow ...
  std::vector<AshaTrial> t{done(0, 0, 0.4), done(1, 0, 0.9), done(2, 0, 0.3), running(3, 0)};
  CHECK(runs(asha_next(t, 4, 3, 3, true), 1, 1));
  t.push_back(running(1, 1));
  CHECK(asha_next(t, 4, 3, 3, true).kind == Kind::wait);  // every point started, nothing promotable: wait
  // ... once rung 0 is complete (all 4 finished, nothing running below rung 1) its quota is ceil(4/3) = 2
  t[3] = done(3, 0, 0.8);
  CHECK(runs(asha_next(t, 4, 3, 3, true), 3, 1));
  t.push_back(done(3, 1, 0.7));
  t[4] = done(1, 1, 0.95);
  // rung 1 complete with 2 results: ceil(2/3) = 1 reaches the top rung, the better one
  CHECK(runs(asha_next(t, 4, 3, 3, true), 1, 2));
  t.push_back(running(1, 2));
  CHECK(asha_next(t, 4, 3, 3, true).kind == Kind::wait);
  t.back() = done(1, 2, 0.97);
  CHECK(asha_next(t, 4, 3, 3, true).kind == Kind::finished);
  // bad input
  CHECK_THROWS_AS(asha_next({done(5, 0, 1)}, 4, 3, 3, true), frugal::Error);
  CHECK_THROWS_AS(asha_next({done(0, 0, 1), done(0, 0, 2)}, 4, 3, 3, true), frugal::Error);
  CHECK_THROWS_AS(asha_next({}, 4, 3, 1, true), frugal::Error);
}

TEST_CASE("asha: 4 parallel workers on a synthetic objective find the best point, never idle, spend less than the grid") {
  // point p has final quality q_p; its score at budget b approaches q_p as b grows (noise shrinking with budget).
  // Workers are simulated as events: a trial at budget b takes b time units.
  const size_t n = 27;
  const int eta = 3, workers = 4;
  const std::vector<int64_t> budgets = rung_budgets(1, 27, eta);
  const int rungs = int(budgets.size());
  std::vector<double> quality(n);
  for (size_t p = 0; p < n; ++p) quality[p] = 0.9 + 0.003 * double((p * 7) % n);
  auto score = [&](size_t p, int rung) {
    return quality[p] - 0.01 / double(budgets[size_t(rung)]) * std::sin(double(p) * 1.7);
  };
  std::vector<AshaTrial> trials;
  std::multimap<int64_t, size_t> ends;  // finish time -> index in trials
  int64_t now = 0, cost = 0, first_promotion_at = -1;
  int idle_with_points_left = 0;
  for (;;) {
    while (int(ends.size()) < workers) {  // every free worker asks for a job
      const AshaJob j = asha_next(trials, n, rungs, eta, true);
      if (j.kind != Kind::run) {
        size_t started = 0;
        for (const AshaTrial& t : trials) started += t.rung == 0;
        idle_with_points_left += started < n;
        break;
      }
      if (j.rung > 0 && first_promotion_at < 0) {
        size_t finished0 = 0;
        for (const AshaTrial& t : trials) finished0 += t.rung == 0 && t.state == State::done;
        first_promotion_at = int64_t(finished0);
      }
      trials.push_back(running(j.point, j.rung));
      ends.emplace(now + budgets[size_t(j.rung)], trials.size() - 1);
      cost += budgets[size_t(j.rung)];
    }
    if (ends.empty()) break;
    const auto it = ends.begin();
    now = it->first;
    AshaTrial& t = trials[it->second];
    t.state = State::done;
    t.score = score(t.point, t.rung);
    ends.erase(it);
  }
  CHECK(idle_with_points_left == 0);
  CHECK(first_promotion_at == eta);  // the first promotion came with eta results, not with the whole rung
  size_t best = 0, top_best = n;
  for (size_t p = 1; p < n; ++p)
    if (quality[p] > quality[best]) best = p;
  for (const AshaTrial& t : trials) {
    CHECK(t.state == State::done);
    if (t.rung == rungs - 1 && (top_best == n || t.score > score(top_best, rungs - 1))) top_best = t.point;
  }
  REQUIRE(top_best < n);
  CHECK(top_best == best);  // the best trial at the full budget is the best point
  CHECK(double(cost) <= 0.4 * double(n * 27));  // within 40 % of the grid's budget
}
