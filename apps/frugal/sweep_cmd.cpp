// frugal sweep: grid / random / successive-halving / ASHA searches over config keys with a Pareto front (lib/sweep/).
// Under mpirun (`mpirun -np N frugal sweep ...`, MPI initialized by main) every rank claims trials from the one
// journal with its share of the cores; rank 0 prints and writes the reports once every rank is done.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "commands.h"
#include "comm/mpi_communicator.h"
#include "io/config.h"
#include "io/files.h"
#include "sweep/compare.h"
#include "sweep/report.h"
#include "sweep/runner.h"
#include "sweep/space.h"
#include "util/fatal.h"
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

/// --check: the summary against a baseline table (sweep/compare.h); true on a regression.
bool check_baseline(const json& summary, const std::string& baseline) {
  const auto checks = sweep::compare_with_baseline(summary, io::read_json_file(baseline), baseline);
  std::printf("\ncompared with %s:\n%s", baseline.c_str(), sweep::compare_table(checks).c_str());
  for (const auto& c : checks)
    if (c.regressed) {
      std::fprintf(stderr, "frugal sweep: a metric regressed beyond its tolerance in %s (table above)\n",
                   baseline.c_str());
      return true;
    }
  return false;
}

/// Runs the sweep (this rank's part under MPI); returns the exit code: 0, or 4 when --check found a regression.
int run(const SweepArgs& a, comm::Communicator* comm) {
  const bool lead = !comm || comm->rank() == 0;  // prints and writes the reports
  sweep::SweepSpec spec = sweep::load_sweep(a.config, a.sets);
  // Quantized / approximate trials run TBB passes after each oneDNN conv: restart with a short OpenMP spin
  // (util/omp_env.h), before any output.
  bool approx = !spec.base.at("multiplier").get<std::string>().empty();
  for (const auto& d : spec.space)
    if (d.key == "multiplier")
      for (const json& v : d.values) approx |= !v.get<std::string>().empty();
  if (approx && !a.list && !comm) util::prefer_short_omp_spin();  // not under MPI, which is already initialized
  const std::string out =
      a.out.empty() ? "runs/sweep/" + std::filesystem::path(a.config).stem().string() : a.out;
  if (lead)
    for (const auto& n : spec.notes) std::fprintf(stderr, "frugal sweep: note: %s\n", n.c_str());
  sweep::RunOptions ro;
  ro.out_dir = out;
  ro.parallel = a.parallel;
  ro.quiet = a.quiet;
  ro.list_only = a.list;
  ro.comm = comm;
  const sweep::SweepOutcome o = sweep::run_sweep(spec, ro);  // under MPI returns on every rank together
  if (a.list) {
    if (lead) print_trials(spec, o);
    return 0;
  }
  std::vector<uint8_t> regressed{0};
  if (lead) {
    const json summary = sweep::write_sweep_reports(spec, o, out);
    print_best(spec, summary, out);
    if (!a.check.empty()) regressed[0] = check_baseline(summary, a.check);
  }
  if (comm) comm->broadcast(regressed, 0);  // every rank leaves with rank 0's verdict, after its reports
  return regressed[0] ? 4 : 0;
}
}  // namespace

void add_sweep(CLI::App& app, Globals& g) {
  auto a = std::make_shared<SweepArgs>();
  auto* c = app.add_subcommand(
      "sweep", "Search config keys (grid, random, successive halving, ASHA) on the validation split; Pareto front, "
               "tables, plots; resumable (DIR/trials.jsonl); under mpirun the ranks share its trials");
  c->add_option("-c,--config", a->config, "sweep file (JSON: base, config, space, strategy, objectives; "
                                          "see README 'Sweeps' and lib/sweep/space.h)")
      ->required()
      ->check(CLI::ExistingFile);
  c->add_option("-s,--set", a->sets, "override a base config key for every trial: --set key=value (repeatable)");
  c->add_option("-o,--out", a->out, "output folder (default runs/sweep/<sweep file name>); rerun to resume");
  c->add_option("-p,--parallel", a->parallel,
                "trials at once (per rank under MPI; default: the sweep file's, else cores / threads)")
      ->check(CLI::PositiveNumber);
  c->add_option("--check", a->check,
                "after the sweep, compare sweep.json with this baseline (paths such as best.metrics.val_accuracy; "
                "format in lib/sweep/compare.h); exit 4 on a regression (every rank under MPI)")
      ->check(CLI::ExistingFile);
  c->add_flag("--list", a->list, "check the sweep file and journal, print the trials of the first rung, run nothing");
  c->add_flag("-q,--quiet", a->quiet, "no sweep progress lines on stderr");
  c->callback([a, &g]() {
    std::unique_ptr<comm::MpiCommunicator> comm;
    if (g.mpi) comm = std::make_unique<comm::MpiCommunicator>();
    try {
      g.exit_code = run(*a, comm.get());
    } catch (...) {  // under MPI, end the job here while the communicator is alive; main() reports the rest
      if (comm) comm->abort_all(util::describe_exception(std::current_exception()));
      throw;
    }
  });
}

}  // namespace frugal::app
