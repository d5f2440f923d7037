// Runs a sweep's trials through the trainer, several at once in this process within a thread budget, recording
// every claim and result in DIR/trials.jsonl (lib/sweep/journal.h) so that a rerun resumes and several processes
// can share one sweep. Each trial trains quietly into DIR/trials/ID (results.json, train.log, model.bin); the
// sweep prints one progress line on stderr as trials start and finish (and every 30 s).
//
// Threads: trials x workers x threads-per-trial <= the cores this process may use. The base config's `threads`
// (if > 0) is the threads per worker; else each trial gets cores / (parallel x workers), at least 1. parallel is
// --parallel, else the sweep file's "parallel", else cores / (workers x threads).
//
// Successive halving runs rung by rung: all of a rung's trials finish (here or in another process sharing the
// journal) before the best 1/eta by the first objective are promoted and retrained from scratch at eta times the
// epochs. A failed trial (e.g. a diverged loss) is recorded "failed" and ranks last; a rerun retries it.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sweep/space.h"

namespace frugal::sweep {

struct RunOptions {
  std::string out_dir;
  int parallel = 0;       ///< 0: the sweep file's, else automatic
  bool quiet = false;     ///< no progress lines
  bool list_only = false; ///< check the journal and thread budget, run nothing
};

struct TrialRecord {
  Trial trial;
  std::string status = "pending";  ///< done | failed | pending
  nlohmann::json values;           ///< nested numbers of the trial (results.json paths and sweep.*), done only
  std::string message;             ///< failed: why
};

struct SweepOutcome {
  std::vector<TrialRecord> trials;  ///< every trial of every rung reached, rung by rung
  std::vector<int64_t> budgets;     ///< epochs per rung (grid / random: one rung, -1 = the config's epochs)
  int parallel = 1, threads_per_trial = 1, cores = 1;
  double wall_s = 0;                ///< this run's wall time
  int ran_here = 0;                 ///< trials this process ran (the rest were finished before or elsewhere)
};

/// The threads each trial gets and how many run at once (see above); throws when they exceed the cores.
std::pair<int, int> thread_budget(const SweepSpec& spec, int parallel_flag, int cores);

/// Opens (or starts) DIR/trials.jsonl for `spec`: a new journal gets the fingerprint as its first record; an
/// existing one with another fingerprint is an error listing what changed. create = false: only checks.
void check_or_start_journal(const SweepSpec& spec, const std::string& journal_path, bool create = true);

/// Runs (or resumes) the sweep; returns every trial's record, read back from the journal.
SweepOutcome run_sweep(const SweepSpec& spec, const RunOptions& opts);

/// The number at a dotted path of a trial's values, or NaN.
double value_of(const TrialRecord& r, const std::string& path);

}  // namespace frugal::sweep
