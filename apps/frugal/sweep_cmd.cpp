// frugal sweep: grid / random / successive-halving searches over config keys with a Pareto front (lib/sweep/).
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "commands.h"
#include "io/config.h"
#include "io/files.h"
#include "sweep/compare.h"
#include "sweep/report.h"
#include "sweep/runner.h"
#include "sweep/space.h"
#include "util/omp_env.h"

namespace frugal::app {

using json = nlohmann::json;

namespace {
struct SweepArgs {
  std::string config, out, check;
  std::vector<std::string> sets;
  int parallel = 0;
  bool quiet = false, list = false;
};

void print_trials(const sweep::SweepSpec& spec, const sweep::SweepOutcome& o) {
  std::printf("%zu trials (%s), %d at once x %d threads per worker on %d cores:\n", o.trials.size(),
              spec.strategy.c_str(), o.parallel, o.threads_per_trial, o.cores);
  for (const auto& t : o.trials)
    std::printf("  %s %s%s\n", t.trial.id.c_str(), t.trial.params.dump().c_str(),
                t.trial.epochs > 0 ? (" epochs " + std::to_string(t.trial.epochs)).c_str() : "");
}

void print_best(const sweep::SweepSpec& spec, const json& summary, const std::string& out) {
  const json& b = summary["best"];
  std::printf("\n%zu trials, Pareto front: %s\n", summary["trials"].size(), summary["pareto_front"].dump().c_str());
  if (b.is_null()) {
    std::printf("no trial finished; see %s/trials.md\n", out.c_str());
    return;
  }
  const json* v = sweep::at_path(b, spec.objectives[0].metric);
  const json* test = sweep::at_path(b, "metrics.test_accuracy");
  std::printf("chosen %s %s: %s = %.6g (validation)", b["id"].get<std::string>().c_str(), b["params"].dump().c_str(),
              spec.objectives[0].metric.c_str(), v ? v->get<double>() : NAN);
  if (test) std::printf(", test accuracy %.2f %% (reported beside, not used to choose)", 100 * test->get<double>());
  std::printf("\nwrote %s/trials.csv, trials.md, sweep.json and plots/\n", out.c_str());
}

/// --check: the summary against a baseline table (sweep/compare.h); exits 4 on a regression.
void check_baseline(const json& summary, const std::string& baseline) {
  const auto checks = sweep::compare_with_baseline(summary, io::read_json_file(baseline), baseline);
  std::printf("\ncompared with %s:\n%s", baseline.c_str(), sweep::compare_table(checks).c_str());
  for (const auto& c : checks)
    if (c.regressed) {
      std::fprintf(stderr, "frugal sweep: a metric regressed beyond its tolerance in %s (table above)\n",
                   baseline.c_str());
      std::exit(4);
    }
}

void run(const SweepArgs& a) {
  sweep::SweepSpec spec = sweep::load_sweep(a.config, a.sets);
  // Quantized / approximate trials run TBB passes after each oneDNN conv: restart with a short OpenMP spin
  // (util/omp_env.h), before any output.
  bool approx = !spec.base.at("multiplier").get<std::string>().empty();
  for (const auto& d : spec.space)
    if (d.key == "multiplier")
      for (const json& v : d.values) approx |= !v.get<std::string>().empty();
  if (approx && !a.list) util::prefer_short_omp_spin();
  const std::string out =
      a.out.empty() ? "runs/sweep/" + std::filesystem::path(a.config).stem().string() : a.out;
  for (const auto& n : spec.notes) std::fprintf(stderr, "frugal sweep: note: %s\n", n.c_str());
  sweep::RunOptions ro;
  ro.out_dir = out;
  ro.parallel = a.parallel;
  ro.quiet = a.quiet;
  ro.list_only = a.list;
  const sweep::SweepOutcome o = sweep::run_sweep(spec, ro);
  if (a.list) {
    print_trials(spec, o);
    return;
  }
  const json summary = sweep::write_sweep_reports(spec, o, out);
  print_best(spec, summary, out);
  if (!a.check.empty()) check_baseline(summary, a.check);
}
}  // namespace

void add_sweep(CLI::App& app, Globals&) {
  auto a = std::make_shared<SweepArgs>();
  auto* c = app.add_subcommand(
      "sweep", "Search config keys (grid, random, successive halving) on the validation split; Pareto front, tables, "
               "plots; resumable (DIR/trials.jsonl)");
  c->add_option("-c,--config", a->config, "sweep file (JSON: base, config, space, strategy, objectives; "
                                          "see README 'Sweeps' and lib/sweep/space.h)")
      ->required()
      ->check(CLI::ExistingFile);
  c->add_option("-s,--set", a->sets, "override a base config key for every trial: --set key=value (repeatable)");
  c->add_option("-o,--out", a->out, "output folder (default runs/sweep/<sweep file name>); rerun to resume");
  c->add_option("-p,--parallel", a->parallel, "trials at once (default: the sweep file's, else cores / threads)")
      ->check(CLI::PositiveNumber);
  c->add_option("--check", a->check,
                "after the sweep, compare sweep.json with this baseline (paths such as best.metrics.val_accuracy; "
                "format in lib/sweep/compare.h); exit 4 on a regression")
      ->check(CLI::ExistingFile);
  c->add_flag("--list", a->list, "check the sweep file and journal, print the trials of the first rung, run nothing");
  c->add_flag("-q,--quiet", a->quiet, "no sweep progress lines on stderr");
  c->callback([a]() { run(*a); });
}

}  // namespace frugal::app
