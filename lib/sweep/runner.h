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
// epochs. ASHA (lib/sweep/asha.h) promotes without waiting: every free worker asks asha_next() what to run, from
// the journal's state at that moment, so workers of every process sharing the journal follow one schedule. A
// failed trial (e.g. a diverged loss) is recorded "failed" and ranks last; a later run retries it, the processes
// of the same run (MPI ranks) do not.
//
// Under mpirun (RunOptions::comm): every rank runs this function on the same sweep and out_dir, claiming trials
// from the one journal, so each trial runs once, on one rank, with that rank's share of the node's cores
// (util::cores_per_rank()) for its `parallel` trials. The trainer inside a trial is a single-process run (no
// communicator): a sweep never splits one trial over ranks. Ranks started with different sweeps end the job;
// every rank returns once the whole sweep is finished (a barrier), with the same records.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sweep/space.h"

namespace frugal::comm {
class Communicator;
}

namespace frugal::sweep {

struct RunOptions {
  std::string out_dir;
  int parallel = 0;       ///< 0: the sweep file's, else automatic
  bool quiet = false;     ///< no progress lines
  bool list_only = false; ///< check the journal and thread budget, run nothing
  comm::Communicator* comm = nullptr;  ///< MPI: this process is one rank of the sweep; nullptr: alone
};

struct TrialRecord {
  Trial trial;
  std::string status = "pending";  ///< done | failed | pending
  nlohmann::json values;           ///< nested numbers of the trial (results.json paths and sweep.*), done only
  std::string message;             ///< failed: why
  int rank = -1;                   ///< the MPI rank (0 without MPI) that ran it; -1: not recorded
};

struct SweepOutcome {
  std::vector<TrialRecord> trials;  ///< every trial of every rung reached, rung by rung
  std::vector<int64_t> budgets;     ///< epochs per rung (grid / random: one rung, -1 = the config's epochs)
  int parallel = 1, threads_per_trial = 1, cores = 1;
  double wall_s = 0;                ///< this run's wall time
  int ran_here = 0;                 ///< trials this process ran (the rest were finished before or elsewhere)
  int ranks = 1;                    ///< MPI ranks of this run (1 without MPI)
};

/// The threads each trial gets and how many run at once (see above); throws when they exceed the cores (of this
/// process; under MPI, of this rank).
std::pair<int, int> thread_budget(const SweepSpec& spec, int parallel_flag, int cores);

/// Opens (or starts) DIR/trials.jsonl for `spec`: a new journal gets the fingerprint as its first record; an
/// existing one with another fingerprint is an error listing what changed. create = false: only checks.
void check_or_start_journal(const SweepSpec& spec, const std::string& journal_path, bool create = true);

/// Runs (or resumes) the sweep; returns every trial's record, read back from the journal.
SweepOutcome run_sweep(const SweepSpec& spec, const RunOptions& opts);

/// The number at a dotted path of a trial's values, or NaN.
double value_of(const TrialRecord& r, const std::string& path);

}  // namespace frugal::sweep
