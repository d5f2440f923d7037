#include "sweep/report.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "io/environment.h"
#include "io/files.h"
#include "sweep/pareto.h"
#include "sweep/plot.h"
#include "util/check.h"

namespace frugal::sweep {

using json = nlohmann::json;

namespace {
/// The numeric columns of the tables: objectives first, then those of what every sweep shows that some trial has.
std::vector<std::string> value_columns(const SweepSpec& spec, const json& summary) {
  std::vector<std::string> cols;
  for (const auto& o : spec.objectives)
    if (std::find(cols.begin(), cols.end(), o.metric) == cols.end()) cols.push_back(o.metric);
  for (const char* c : {"metrics.val_accuracy", "metrics.test_accuracy", "sweep.energy_uj", "sweep.weight_bytes",
                        "communication.bytes_sent_per_worker", "timing.wall_s"}) {
    bool any = false;
    for (const json& t : summary["trials"]) any |= at_path(t["values"], c) != nullptr;
    if (any && std::find(cols.begin(), cols.end(), c) == cols.end()) cols.push_back(c);
  }
  return cols;
}

std::string num(const json* v) {
  if (!v || !v->is_number()) return "";
  char b[40];
  const double x = v->get<double>();
  if (v->is_number_integer() || (std::fabs(x) >= 1e6 && x == std::floor(x)))
    std::snprintf(b, sizeof b, "%.0f", x);
  else
    std::snprintf(b, sizeof b, "%.6g", x);
  return b;
}

std::string cell(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

std::string csv_quote(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

double number_at(const json& values, const std::string& path) {
  const json* v = at_path(values, path);
  return v && v->is_number() ? v->get<double>() : NAN;
}

std::string safe_name(std::string s) {
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
  return s;
}

/// Summary trials that are candidates (see report.h) and finished.
std::vector<const json*> candidates(const json& summary) {
  std::vector<const json*> out;
  for (const json& t : summary["trials"])
    if (t["candidate"].get<bool>() && t["status"] == "done") out.push_back(&t);
  return out;
}

void plot_pareto(const SweepSpec& spec, const json& summary, const std::string& dir, json& plots) {
  const auto cand = candidates(summary);
  for (size_t a = 0; a < spec.objectives.size(); ++a)
    for (size_t b = a + 1; b < spec.objectives.size(); ++b) {
      const std::string& ya = spec.objectives[a].metric;
      const std::string& xb = spec.objectives[b].metric;
      Series all{"trials", {}, {}, {}, false, true, 7}, front{"Pareto front", {}, {}, {}, true, true, 3};
      std::vector<std::pair<double, std::pair<double, std::string>>> fp;
      for (const json* t : cand) {
        const double x = number_at((*t)["values"], xb), y = number_at((*t)["values"], ya);
        all.x.push_back(x);
        all.y.push_back(y);
        if ((*t)["pareto"].get<bool>()) fp.push_back({x, {y, (*t)["id"].get<std::string>()}});
      }
      std::sort(fp.begin(), fp.end());
      for (const auto& [x, yi] : fp) {
        front.x.push_back(x);
        front.y.push_back(yi.first);
        front.names.push_back(yi.second);
      }
      Chart ch;
      ch.title = "sweep " + spec.file + ": Pareto front";
      ch.x_label = xb;
      ch.y_label = ya;
      ch.series = {all, front};
      const std::string f = "plots/pareto_" + safe_name(ya) + "_vs_" + safe_name(xb) + ".png";
      save_chart_png(ch, dir + "/" + f);
      plots.push_back(f);
    }
}

void plot_curves(const SweepSpec& spec, const json& summary, const std::string& dir, json& plots) {
  Chart ch;
  ch.title = "learning curves (validation accuracy per epoch)";
  ch.x_label = "epoch";
  ch.y_label = "val_accuracy";
  for (const json& t : summary["trials"]) {
    if (t["status"] != "done") continue;
    const std::string path = dir + "/trials/" + t["id"].get<std::string>() + "/results.json";
    if (!io::file_exists(path)) continue;
    const json r = io::read_json_file(path);
    Series s;
    s.label = t["id"].get<std::string>();
    s.lines = true;
    for (const json& e : r.value("epochs", json::array())) {
      s.x.push_back(e.value("epoch", 0.0));
      s.y.push_back(e.contains("val_accuracy") ? e["val_accuracy"].get<double>() : NAN);
    }
    ch.series.push_back(std::move(s));
  }
  if (ch.series.empty()) return;
  save_chart_png(ch, dir + "/plots/curves.png");
  plots.push_back("plots/curves.png");
}

void plot_keys(const SweepSpec& spec, const json& summary, const std::string& dir, json& plots) {
  const auto cand = candidates(summary);
  const std::string& y = spec.objectives[0].metric;
  for (const Dimension& d : spec.space) {
    Chart ch;
    ch.title = y + " against " + d.key;
    ch.x_label = d.key;
    ch.y_label = y;
    bool numeric = true;
    for (const json& v : d.values) numeric &= v.is_number();
    if (!numeric)
      for (const json& v : d.values) ch.x_categories.push_back(cell(v));
    ch.log_x = numeric && d.kind == Dimension::Kind::log;
    Series s{"trials", {}, {}, {}, false, true, 0};
    for (const json* t : cand) {
      const json& v = (*t)["params"][d.key];
      double x = NAN;
      if (numeric) x = v.get<double>();
      else
        for (size_t i = 0; i < d.values.size(); ++i)
          if (d.values[i] == v) x = static_cast<double>(i);
      s.x.push_back(x);
      s.y.push_back(number_at((*t)["values"], y));
    }
    ch.series.push_back(std::move(s));
    const std::string f = "plots/" + safe_name(d.key) + ".png";
    save_chart_png(ch, dir + "/" + f);
    plots.push_back(f);
  }
}
}  // namespace

json sweep_summary(const SweepSpec& spec, const SweepOutcome& out) {
  const int last_rung = static_cast<int>(out.budgets.size()) - 1;
  const int64_t base_epochs = spec.base.at("epochs").get<int64_t>();
  json trials = json::array();
  std::vector<size_t> cand_idx;
  std::vector<std::vector<double>> points;
  std::vector<Direction> dirs;
  for (const auto& o : spec.objectives) dirs.push_back(o.direction);
  int64_t epochs_spent = 0;
  double wall_spent = 0;
  json by_rank = json::object();  // trials (done or failed) per rank that ran them
  for (const TrialRecord& r : out.trials) {
    const int64_t epochs = r.trial.epochs > 0 ? r.trial.epochs : base_epochs;
    json t{{"id", r.trial.id},         {"point", r.trial.point},   {"rung", r.trial.rung},
           {"epochs", epochs},         {"params", r.trial.params}, {"status", r.status},
           {"values", r.values.is_null() ? json::object() : r.values}, {"candidate", r.trial.rung == last_rung},
           {"pareto", false},          {"best", false}};
    if (!r.message.empty()) t["message"] = r.message;
    if (r.rank >= 0) {
      t["rank"] = r.rank;
      by_rank[std::to_string(r.rank)] = by_rank.value(std::to_string(r.rank), 0) + 1;
    }
    if (r.status == "done") {
      epochs_spent += epochs;
      wall_spent += number_at(r.values, "timing.wall_s") >= 0 ? number_at(r.values, "timing.wall_s") : 0;
    }
    if (r.status == "done" && r.trial.rung == last_rung) {
      std::vector<double> p;
      bool ok = true;
      for (const auto& o : spec.objectives) {
        p.push_back(number_at(r.values, o.metric));
        ok &= std::isfinite(p.back());
      }
      if (ok) {
        cand_idx.push_back(trials.size());
        points.push_back(std::move(p));
      }
    }
    trials.push_back(std::move(t));
  }
  json front_ids = json::array();
  for (size_t k : pareto_front(points, dirs)) {
    trials[cand_idx[k]]["pareto"] = true;
    front_ids.push_back(trials[cand_idx[k]]["id"]);
  }
  json best;
  {
    // the first objective decides; ties go to the next objectives in order (so the choice is on the front)
    auto better = [&](const std::vector<double>& a, const std::vector<double>& b) {
      for (size_t i = 0; i < a.size(); ++i)
        if (a[i] != b[i]) return dirs[i] == Direction::maximize ? a[i] > b[i] : a[i] < b[i];
      return false;
    };
    size_t bi = SIZE_MAX;
    for (size_t k = 0; k < cand_idx.size(); ++k)
      if (bi == SIZE_MAX || better(points[k], points[bi])) bi = k;
    if (bi != SIZE_MAX) {
      json& t = trials[cand_idx[bi]];
      t["best"] = true;
      best = t["values"];
      best["id"] = t["id"];
      best["params"] = t["params"];
      best["epochs"] = t["epochs"];
    }
  }
  json objectives = json::array();
  for (const auto& o : spec.objectives)
    objectives.push_back({{"metric", o.metric}, {"direction", o.direction == Direction::maximize ? "maximize" : "minimize"}});
  const size_t n_points = expand_points(spec).size();
  const int64_t full = static_cast<int64_t>(n_points) *
                       (out.budgets.size() > 1 || out.budgets[0] > 0 ? out.budgets.back() : base_epochs);
  return {{"kind", "sweep"},
          {"sweep_file", spec.file},
          {"strategy", spec.strategy},
          {"fingerprint", fingerprint_of(spec)},
          {"objectives", objectives},
          {"notes", spec.notes},
          {"chosen_on", "validation split (metrics.val_*); test accuracy reported beside, never used to choose"},
          {"budgets", out.budgets},
          {"parallel", out.parallel},
          {"threads_per_trial", out.threads_per_trial},
          {"cores", out.cores},
          {"ranks", out.ranks},
          {"trials_by_rank", by_rank},
          {"trials", trials},
          {"best", best},
          {"pareto_front", front_ids},
          {"compute",
           {{"trial_epochs", epochs_spent},
            {"trial_wall_s", wall_spent},
            {"points", n_points},
            {"all_points_at_full_budget_epochs", full},
            {"this_run_wall_s", out.wall_s},
            {"trials_run_by_this_process", out.ran_here}}},
          {"environment", io::environment_info()}};
}

std::string trials_csv(const SweepSpec& spec, const json& summary) {
  const auto cols = value_columns(spec, summary);
  std::string s = "id,status,epochs";
  for (const auto& d : spec.space) s += "," + csv_quote(d.key);
  for (const auto& c : cols) s += "," + csv_quote(c);
  s += ",pareto,best\n";
  for (const json& t : summary["trials"]) {
    s += t["id"].get<std::string>() + "," + t["status"].get<std::string>() + "," + std::to_string(t["epochs"].get<int64_t>());
    for (const auto& d : spec.space) s += "," + csv_quote(cell(t["params"][d.key]));
    for (const auto& c : cols) s += "," + num(at_path(t["values"], c));
    s += std::string(",") + (t["pareto"].get<bool>() ? "1" : "0") + "," + (t["best"].get<bool>() ? "1" : "0") + "\n";
  }
  return s;
}

std::string trials_markdown(const SweepSpec& spec, const json& summary) {
  const auto cols = value_columns(spec, summary);
  std::string s = "# Sweep " + spec.file + " (" + spec.strategy + ")\n\n";
  s += "Objectives:";
  for (const auto& o : spec.objectives)
    s += " " + o.metric + " (" + (o.direction == Direction::maximize ? "max" : "min") + ")";
  s += ". Chosen on the validation split; the test accuracy is reported beside, never used to choose.\n";
  for (const auto& n : summary["notes"]) s += "Note: " + n.get<std::string>() + ".\n";
  if (summary["ranks"].get<int>() > 1)
    s += "Ran on " + std::to_string(summary["ranks"].get<int>()) + " MPI ranks, trials per rank " +
         summary["trials_by_rank"].dump() + " (sweep.json: the rank of each trial).\n";
  s += "\n★ chosen by the first objective, ◆ on the Pareto front of all objectives";
  if (spec.strategy == "halving" || spec.strategy == "asha") s += " (both among the last rung's trials)";
  s += ".\n\n| | id | status | epochs |";
  for (const auto& d : spec.space) s += " " + d.key + " |";
  for (const auto& c : cols) s += " " + c + " |";
  s += "\n|---|---|---|---:|";
  for (size_t i = 0; i < spec.space.size(); ++i) s += "---|";
  for (size_t i = 0; i < cols.size(); ++i) s += "---:|";
  s += "\n";
  for (const json& t : summary["trials"]) {
    std::string mark = std::string(t["best"].get<bool>() ? "★" : "") + (t["pareto"].get<bool>() ? "◆" : "");
    s += "| " + mark + " | " + t["id"].get<std::string>() + " | " + t["status"].get<std::string>() + " | " +
         std::to_string(t["epochs"].get<int64_t>()) + " |";
    for (const auto& d : spec.space) s += " " + cell(t["params"][d.key]) + " |";
    for (const auto& c : cols) s += " " + num(at_path(t["values"], c)) + " |";
    s += "\n";
  }
  for (const json& t : summary["trials"])
    if (t.contains("message")) s += "\n" + t["id"].get<std::string>() + " failed: " + t["message"].get<std::string>() + "\n";
  const json& c = summary["compute"];
  s += "\nCompute: " + std::to_string(c["trial_epochs"].get<int64_t>()) + " trial epochs (" +
       num(&c["trial_wall_s"]) + " s of trial wall time); every point at the full budget would be " +
       std::to_string(c["all_points_at_full_budget_epochs"].get<int64_t>()) + " epochs.\n";
  return s;
}

json write_sweep_reports(const SweepSpec& spec, const SweepOutcome& outcome, const std::string& dir) {
  json summary = sweep_summary(spec, outcome);
  io::make_dirs(dir + "/plots");
  json plots = json::array();
  plot_pareto(spec, summary, dir, plots);
  plot_curves(spec, summary, dir, plots);
  plot_keys(spec, summary, dir, plots);
  summary["plots"] = plots;
  io::write_file_atomic(dir + "/trials.csv", trials_csv(spec, summary));
  io::write_file_atomic(dir + "/trials.md", trials_markdown(spec, summary));
  io::write_file_atomic(dir + "/sweep.json", summary.dump(2) + "\n");
  return summary;
}

}  // namespace frugal::sweep
