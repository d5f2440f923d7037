// A sweep's tables and plots, from its outcome (lib/sweep/runner.h):
//   DIR/sweep.json  kind "sweep": the fingerprint, objectives, notes, thread budget, "ranks" (MPI ranks of the
//                   run, 1 without MPI) and "trials_by_rank", every trial (params, epochs, status, values: the
//                   numbers it recorded, nested by their results.json paths, pareto / best flags, "rank": the
//                   rank that ran it), "best" (the trial chosen by the first objective on the validation split, with its
//                   test accuracy beside), "pareto_front" (ids), "compute" (epochs and trial seconds spent) and
//                   "environment". `frugal sweep --check` compares a baseline with this file, e.g. the paths
//                   best.metrics.val_accuracy, best.metrics.test_accuracy, compute.trial_epochs.
//   DIR/trials.csv  one row per trial: id, status, epochs, the swept keys, the recorded numbers, pareto, best
//   DIR/trials.md   the same table in Markdown with the Pareto front (◆) and the chosen trial (★) marked
//   DIR/plots/      pareto_<A>_vs_<B>.png for every pair of objectives, curves.png (validation accuracy per epoch
//                   of every trial, from DIR/trials/ID/results.json), <key>.png (the first objective against each
//                   swept key)
// Choice and front are over the candidates: every finished trial (grid, random) or the finished trials of the last
// rung (halving, asha), so all are compared at the same budget.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "sweep/runner.h"
#include "sweep/space.h"

namespace frugal::sweep {

/// The content of sweep.json (without writing anything).
nlohmann::json sweep_summary(const SweepSpec& spec, const SweepOutcome& outcome);

/// trials.csv and trials.md from a summary.
std::string trials_csv(const SweepSpec& spec, const nlohmann::json& summary);
std::string trials_markdown(const SweepSpec& spec, const nlohmann::json& summary);

/// Writes sweep.json, trials.csv, trials.md and plots/*.png into dir; returns the summary (with "plots").
nlohmann::json write_sweep_reports(const SweepSpec& spec, const SweepOutcome& outcome, const std::string& dir);

}  // namespace frugal::sweep
