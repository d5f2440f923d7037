// Asynchronous successive halving (ASHA: Li, Jamieson, Rostamizadeh, Gonina, Ben-tzur, Hardt, Recht and
// Talwalkar, "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020, Algorithm 2) over a finite set
// of points: the rungs and budgets of successive halving (sweep/halving.h), but a trial is promoted to the next
// rung as soon as it is in the top 1/eta of the results completed so far at its rung, instead of after the whole
// rung, so that a free worker always has a trial to run while any point is left to start.
//
// asha_next() is the scheduler's whole decision, a pure function of the trials decided so far (the sweep rebuilds
// them from its journal before every decision, so several processes or MPI ranks share one schedule). In order:
//  1. a trial decided earlier but not running (interrupted, or failed in an earlier run): run it again, highest
//     rung first, then lowest point;
//  2. a promotion, from the highest rung below the top down to rung 0: of rung k's finished trials (done, or
//     failed in this run: those rank last and are never promoted) the best q_k by score (ties to the lower point)
//     are promotable, q_k = floor(finished_k / eta) (the paper's rule); the best promotable trial not yet
//     promoted (no trial of its point at rung k + 1) runs at rung k + 1. Promotions are never taken back;
//  3. the lowest point not started yet, at rung 0;
//  4. else wait while any trial runs, or finish.
// A sweep is finite, and with floor() alone a rung whose last results are in might promote nobody (4 trials at
// eta 3 promote 1, whose rung then never reaches 3 results): once rung k is complete — every point started,
// nothing running or waiting at rungs <= k, every lower rung complete with its promotions made — its quota is
// that of synchronous successive halving, max(1, ceil(finished_k / eta)), so at least one trial reaches the top.
#pragma once
#include <cstddef>
#include <vector>

namespace frugal::sweep {

/// One trial decided so far: a point at a rung.
struct AshaTrial {
  size_t point = 0;
  int rung = 0;
  enum class State { waiting, running, done, failed } state = State::waiting;
  double score = 0;  ///< done: the first objective (a NaN ranks last, like a failure)
};

struct AshaJob {
  enum class Kind { run, wait, finished } kind = Kind::finished;
  size_t point = 0;  ///< run: the trial to run now
  int rung = 0;
};

/// The next job for a free worker (rules above). `trials` holds at most one entry per (point, rung); n_rungs >= 1;
/// eta >= 2; maximize: higher scores are better.
AshaJob asha_next(const std::vector<AshaTrial>& trials, size_t n_points, int n_rungs, int eta, bool maximize);

}  // namespace frugal::sweep
