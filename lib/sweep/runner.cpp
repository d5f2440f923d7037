#include "sweep/runner.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "io/files.h"
#include "sweep/halving.h"
#include "sweep/journal.h"
#include "sweep/trial_metrics.h"
#include "train/trainer.h"
#include "util/check.h"
#include "util/threads.h"

namespace frugal::sweep {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {
constexpr const char* kSweepRecord = "_sweep";  // the journal's first record: the fingerprint

/// Sets j at a dotted path, creating the objects on the way.
void put_path(json& j, const std::string& path, const json& v) {
  std::string p = "/" + path;
  std::replace(p.begin(), p.end(), '.', '/');
  j[json::json_pointer(p)] = v;
}

/// The numbers a done record keeps: the objectives plus what every table shows.
std::vector<std::string> recorded_paths(const SweepSpec& spec) {
  std::vector<std::string> p{"metrics.val_accuracy", "metrics.val_loss", "metrics.test_accuracy",
                             "metrics.test_loss",    "timing.wall_s",    "metrics.params",
                             "communication.bytes_sent_per_worker"};
  for (const auto& o : spec.objectives) p.push_back(o.metric);
  return p;
}

std::string fmt_duration(double s) {
  char b[32];
  if (s < 0 || !std::isfinite(s)) return "?";
  if (s < 90) std::snprintf(b, sizeof b, "%.0fs", s);
  else if (s < 5400) std::snprintf(b, sizeof b, "%.0fm%02.0fs", std::floor(s / 60), std::fmod(s, 60));
  else std::snprintf(b, sizeof b, "%.0fh%02.0fm", std::floor(s / 3600), std::fmod(s / 60, 60));
  return b;
}

int max_workers(const SweepSpec& spec) {
  int64_t w = spec.base.at("workers").get<int64_t>();
  for (const auto& d : spec.space)
    if (d.key == "workers")
      for (const json& v : d.values) w = std::max(w, v.get<int64_t>());
  return static_cast<int>(std::max<int64_t>(1, w));
}

/// One sweep run's shared state: the journal, the progress line, the trials in flight.
class Scheduler {
 public:
  Scheduler(const SweepSpec& spec, const RunOptions& opts, int parallel, int threads, int64_t total_epochs)
      : spec_(spec), opts_(opts), journal_(opts.out_dir + "/trials.jsonl"), parallel_(parallel),
        threads_(threads), epochs_left_(total_epochs), start_(Clock::now()) {}

  /// Runs every trial of `batch` not yet finished, in parallel_ threads; returns when each is done or failed
  /// (here or in another process).
  void run_batch(const std::vector<Trial>& batch) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      pending_.clear();
      for (const Trial& t : batch)
        if (!journal_.finished(t.id)) pending_.push_back(t);
        else epochs_left_ -= epochs_of(t);
    }
    std::vector<std::thread> pool;
    for (int i = 0; i < parallel_; ++i) pool.emplace_back([this] { worker(); });
    std::thread ticker([this] { tick(); });
    for (auto& t : pool) t.join();
    {
      std::lock_guard<std::mutex> lk(mu_);
      batch_over_ = true;
    }
    cv_.notify_all();
    ticker.join();
    batch_over_ = false;
    if (!abort_message_.empty()) FRUGAL_FAIL(abort_message_);
  }

  int ran_here() const { return ran_here_; }

 private:
  int64_t epochs_of(const Trial& t) const {
    return t.epochs > 0 ? t.epochs : spec_.base.at("epochs").get<int64_t>();
  }

  /// Claims the next pending trial; false when none is left to claim (all finished, failed here, or running).
  bool next(Trial& out, bool& all_settled) {
    all_settled = true;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (running_.count(it->id) || failed_here_.count(it->id)) {
        all_settled &= failed_here_.count(it->id) > 0;
        ++it;
        continue;
      }
      if (journal_.claim(it->id, {{"point", it->point}, {"epochs", it->epochs}})) {
        out = *it;
        running_[out.id] = "starting";
        all_settled = false;
        return true;
      }
      if (journal_.finished(it->id)) {  // finished by another process meanwhile
        epochs_left_ -= epochs_of(*it);
        it = pending_.erase(it);
        continue;
      }
      all_settled = false;  // held by another live process: wait for it
      ++it;
    }
    return false;
  }

  void worker() {
    std::unique_lock<std::mutex> lk(mu_);
    while (abort_message_.empty()) {
      Trial t;
      bool settled = false;
      if (!next(t, settled)) {
        if (settled) return;
        cv_.wait_for(lk, std::chrono::milliseconds(500));  // others' trials: poll the journal
        continue;
      }
      status_line("start " + t.id);
      lk.unlock();
      std::string failure;
      json rec;
      try {
        rec = run_trial(t);
      } catch (const std::exception& e) {
        failure = e.what();
      }
      lk.lock();
      running_.erase(t.id);
      ++ran_here_;
      epochs_left_ -= epochs_of(t);
      if (!failure.empty()) {
        failed_here_.insert(t.id);
        journal_.append({{"trial", t.id}, {"event", "failed"}, {"message", failure}});
        status_line("FAILED " + t.id + ": " + failure);
      } else {
        done_s_ += rec["wall_s"].get<double>();
        done_epochs_ += epochs_of(t);
        note_best(t.id, rec["values"]);
        for (auto it = pending_.begin(); it != pending_.end(); ++it)
          if (it->id == t.id) {
            pending_.erase(it);
            break;
          }
        status_line("done " + t.id);
      }
      cv_.notify_all();
    }
  }

  json run_trial(const Trial& t) {
    const io::Config cfg = trial_config(spec_, t, threads_);
    const std::string dir = opts_.out_dir + "/trials/" + t.id;
    train::TrainOptions o;
    o.out_dir = dir;
    o.quiet = true;
    o.progress = [this, id = t.id](const std::string& line) {
      std::lock_guard<std::mutex> lk(mu_);
      if (running_.count(id)) running_[id] = line;
    };
    const auto t0 = Clock::now();
    json r = train::run_training(cfg, o);
    r["sweep"] = trial_model_metrics(dir + "/model.bin", cfg);
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    json values = json::object();
    for (const std::string& p : recorded_paths(spec_))
      if (const json* v = at_path(r, p); v && v->is_number()) put_path(values, p, *v);
    for (const auto& [k, v] : r["sweep"].items()) put_path(values, "sweep." + k, v);
    for (const auto& o : spec_.objectives)
      if (!at_path(values, o.metric)) {
        std::lock_guard<std::mutex> lk(mu_);
        abort_message_ = "objective '" + o.metric + "' is not a number in " + dir +
                         "/results.json (trial " + t.id + "); name a numeric path of results.json "
                         "(results/SCHEMA.md) or sweep.model_file_bytes, sweep.weight_bytes, sweep.energy_uj";
      }
    json rec{{"trial", t.id},   {"event", "done"}, {"point", t.point}, {"rung", t.rung}, {"epochs", t.epochs},
             {"params", t.params}, {"values", values}, {"wall_s", wall}};
    journal_.append(rec);
    return rec;
  }

  void note_best(const std::string& id, const json& values) {
    const Objective& o = spec_.objectives[0];
    const json* v = at_path(values, o.metric);
    if (!v) return;
    const double x = v->get<double>();
    const bool better = best_id_.empty() || (o.direction == Direction::maximize ? x > best_ : x < best_);
    if (better) {
      best_ = x;
      best_id_ = id;
    }
  }

  /// The sweep's progress line (caller holds mu_).
  void status_line(const std::string& event) {
    if (opts_.quiet) return;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    const double per_epoch = done_epochs_ > 0 ? done_s_ / static_cast<double>(done_epochs_) : -1;
    const double eta = per_epoch < 0 ? -1 : per_epoch * static_cast<double>(epochs_left_) / parallel_;
    char best[160] = "best -";
    if (!best_id_.empty())
      std::snprintf(best, sizeof best, "best %s %.6g (%s)", spec_.objectives[0].metric.c_str(), best_,
                    best_id_.c_str());
    size_t failed_pending = 0;  // failed trials stay pending (a rerun retries them); failed_here_ spans rungs
    for (const Trial& t : pending_) failed_pending += failed_here_.count(t.id);
    const size_t failed = failed_here_.size();
    std::fprintf(stderr, "sweep: %zu done here, %zu failed, %zu running, %zu left in rung | %s | %s elapsed, ETA %s | %s\n",
                 static_cast<size_t>(ran_here_) - failed, failed, running_.size(),
                 pending_.size() - running_.size() - failed_pending, best, fmt_duration(elapsed).c_str(),
                 fmt_duration(eta).c_str(), event.c_str());
    std::fflush(stderr);
  }

  void tick() {
    std::unique_lock<std::mutex> lk(mu_);
    while (!batch_over_) {
      if (cv_.wait_for(lk, std::chrono::seconds(30), [this] { return batch_over_; })) return;
      std::string running;
      for (const auto& [id, line] : running_) running += (running.empty() ? "" : "; ") + id + ": " + line;
      status_line(running.empty() ? "waiting for trials claimed elsewhere" : running);
    }
  }

  const SweepSpec& spec_;
  const RunOptions& opts_;
  Journal journal_;
  const int parallel_, threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Trial> pending_;
  std::map<std::string, std::string> running_;  // id -> its last progress line
  std::set<std::string> failed_here_;
  std::string abort_message_, best_id_;
  double best_ = 0, done_s_ = 0;
  int64_t done_epochs_ = 0, epochs_left_ = 0;
  int ran_here_ = 0;
  bool batch_over_ = false;
  Clock::time_point start_;
};

/// Every trial's latest state in the journal.
std::map<std::string, TrialRecord> read_records(const std::string& journal_path) {
  std::map<std::string, TrialRecord> out;
  for (const json& r : Journal(journal_path).read()) {
    const std::string id = r.at("trial").get<std::string>();
    if (id == kSweepRecord) continue;
    TrialRecord& t = out[id];
    const std::string ev = r.at("event").get<std::string>();
    if (ev == "done") {
      t.status = "done";
      t.values = r.value("values", json::object());
    } else if (ev == "failed" && t.status != "done") {
      t.status = "failed";
      t.message = r.value("message", "");
    }
  }
  return out;
}

std::vector<Trial> promote_rung(const SweepSpec& spec, const std::vector<Trial>& rung, int64_t next_budget,
                                const std::map<std::string, TrialRecord>& recs) {
  const Objective& o = spec.objectives[0];
  const bool maximize = o.direction == Direction::maximize;
  std::vector<size_t> idx;
  std::vector<double> scores;
  for (size_t i = 0; i < rung.size(); ++i) {
    idx.push_back(i);
    const auto it = recs.find(rung[i].id);
    double s = it == recs.end() ? NAN : value_of(it->second, o.metric);
    if (!std::isfinite(s)) s = maximize ? -std::numeric_limits<double>::infinity()   // failed: last
                                        : std::numeric_limits<double>::infinity();
    scores.push_back(s);
  }
  std::vector<size_t> up = promote(idx, scores, spec.halving.eta, maximize);
  std::sort(up.begin(), up.end());
  std::vector<Trial> next;
  for (size_t i : up) {
    Trial t = rung[i];
    t.rung += 1;
    t.epochs = next_budget;
    t.id = t.id.substr(0, t.id.rfind("-e")) + "-e" + std::to_string(next_budget);
    next.push_back(std::move(t));
  }
  return next;
}
}  // namespace

double value_of(const TrialRecord& r, const std::string& path) {
  const json* v = at_path(r.values, path);
  return v && v->is_number() ? v->get<double>() : NAN;
}

std::pair<int, int> thread_budget(const SweepSpec& spec, int parallel_flag, int cores) {
  const int workers = max_workers(spec);
  const int key_threads = static_cast<int>(spec.base.at("threads").get<int64_t>());
  int parallel = parallel_flag > 0 ? parallel_flag : spec.parallel;
  int threads = key_threads;
  if (threads <= 0) threads = parallel > 0 ? std::max(1, cores / (parallel * workers)) : 1;
  if (parallel <= 0) parallel = std::max(1, cores / (workers * threads));
  FRUGAL_CHECK(int64_t{parallel} * workers * threads <= cores, "sweep ", spec.file, ": ", parallel,
               " trials at once x ", workers, " workers x ", threads, " threads = ", parallel * workers * threads,
               " threads, more than the ", cores, " cores this process may use; lower --parallel (or \"parallel\") ",
               "or the config key threads");
  return {parallel, threads};
}

void check_or_start_journal(const SweepSpec& spec, const std::string& journal_path, bool create) {
  Journal j(journal_path);
  const json fp = fingerprint_of(spec);
  std::vector<json> recs = j.read();
  if (recs.empty()) {
    if (!create) return;
    // a claim, not a plain append: the check for an empty journal and the write happen under one lock, so of two
    // processes starting together one writes the first record and the other compares with it
    j.claim(kSweepRecord, {{"fingerprint", fp}, {"sweep_file", spec.file}});
    recs = j.read();
  }
  const json& first = recs.front();
  FRUGAL_CHECK(first.at("trial") == kSweepRecord && first.contains("fingerprint"), "sweep journal '", journal_path,
               "': its first record is not a sweep's fingerprint; use another --out folder");
  const std::string diff = describe_changes(first["fingerprint"], fp);
  FRUGAL_CHECK(diff.empty(), "sweep ", spec.file, ": the journal '", journal_path, "' belongs to a different sweep ",
               "(its trials would mean something else). What changed, journal -> now:\n", diff,
               "Use another --out folder for the new sweep, or undo the change to resume the old one.");
}

SweepOutcome run_sweep(const SweepSpec& spec, const RunOptions& opts) {
  const auto t0 = Clock::now();
  SweepOutcome out;
  out.cores = util::available_cores();
  std::tie(out.parallel, out.threads_per_trial) = thread_budget(spec, opts.parallel, out.cores);
  const std::string journal_path = opts.out_dir + "/trials.jsonl";
  if (!opts.list_only) io::make_dirs(opts.out_dir + "/trials");
  check_or_start_journal(spec, journal_path, !opts.list_only);
  const std::vector<json> points = expand_points(spec);
  std::vector<Trial> rung = first_rung(spec, points);
  for (const Trial& t : rung) io::Config probe = trial_config(spec, t, out.threads_per_trial);  // reject bad values now
  out.budgets = spec.strategy == "halving"
                    ? rung_budgets(spec.halving.min_epochs, spec.halving.max_epochs, spec.halving.eta)
                    : std::vector<int64_t>{-1};
  if (opts.list_only) {
    for (Trial& t : rung) out.trials.push_back({t, "pending", json::object(), ""});
    return out;
  }
  int64_t total_epochs = 0;
  {
    size_t alive = rung.size();
    for (int64_t b : out.budgets) {
      total_epochs += static_cast<int64_t>(alive) * (b > 0 ? b : spec.base.at("epochs").get<int64_t>());
      alive = std::max<size_t>(1, (alive + size_t(spec.halving.eta) - 1) / size_t(spec.halving.eta));
    }
  }
  Scheduler sched(spec, opts, out.parallel, out.threads_per_trial, total_epochs);
  std::vector<std::vector<Trial>> rungs;
  for (size_t r = 0; r < out.budgets.size(); ++r) {
    sched.run_batch(rung);
    rungs.push_back(rung);
    if (r + 1 < out.budgets.size()) rung = promote_rung(spec, rung, out.budgets[r + 1], read_records(journal_path));
  }
  const auto recs = read_records(journal_path);
  for (const auto& rg : rungs)
    for (const Trial& t : rg) {
      TrialRecord tr;
      if (auto it = recs.find(t.id); it != recs.end()) tr = it->second;
      tr.trial = t;
      out.trials.push_back(std::move(tr));
    }
  out.ran_here = sched.ran_here();
  out.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  return out;
}

}  // namespace frugal::sweep
