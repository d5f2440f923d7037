#include "sweep/runner.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <cstdio>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <unistd.h>

#include "comm/communicator.h"
#include "io/files.h"
#include "sweep/asha.h"
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

/// The trial of point `point` at a rung of `epochs` (halving, ASHA): id tNNNN-eEPOCHS.
Trial rung_trial(const std::vector<json>& points, size_t point, int rung, int64_t epochs) {
  char id[48];
  std::snprintf(id, sizeof id, "t%04zu-e%lld", point, static_cast<long long>(epochs));
  Trial t;
  t.id = id;
  t.point = point;
  t.params = points.at(point);
  t.epochs = epochs;
  t.rung = rung;
  return t;
}

/// The point and rung of a rung trial's id (tNNNN-eEPOCHS, EPOCHS one of `budgets`); false for any other id.
bool parse_rung_id(const std::string& id, const std::vector<int64_t>& budgets, size_t& point, int& rung) {
  unsigned long long p = 0;
  long long e = 0;
  int used = 0;
  if (std::sscanf(id.c_str(), "t%llu-e%lld%n", &p, &e, &used) != 2 || size_t(used) != id.size()) return false;
  const auto it = std::find(budgets.begin(), budgets.end(), e);
  if (it == budgets.end()) return false;
  point = size_t(p);
  rung = static_cast<int>(it - budgets.begin());
  return true;
}

int max_workers(const SweepSpec& spec) {
  int64_t w = spec.base.at("workers").get<int64_t>();
  for (const auto& d : spec.space)
    if (d.key == "workers")
      for (const json& v : d.values) w = std::max(w, v.get<int64_t>());
  return static_cast<int>(std::max<int64_t>(1, w));
}

/// Who runs this sweep: this process's rank among the ranks of the run, and the run's id (shared by its ranks).
struct RunIdentity {
  int rank = 0, ranks = 1;
  std::string run;  ///< host:pid:start of rank 0; goes into claims and failures (journal.h)
};

/// One sweep run's shared state: the journal, the progress line, the trials in flight.
class Scheduler {
 public:
  Scheduler(const SweepSpec& spec, const RunOptions& opts, RunIdentity who, int parallel, int threads,
            int64_t total_epochs)
      : spec_(spec), opts_(opts), who_(std::move(who)), journal_(opts.out_dir + "/trials.jsonl"),
        parallel_(parallel), threads_(threads), epochs_left_(total_epochs), start_(Clock::now()) {}

  /// Runs every trial of `batch` not yet finished, in parallel_ threads; returns when each is done or failed in
  /// this run (here or in another process).
  void run_batch(const std::vector<Trial>& batch) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      pending_.clear();
      for (const Trial& t : batch)
        if (!journal_.finished(t.id)) pending_.push_back(t);
        else epochs_left_ -= epochs_of(t);
    }
    run_workers([this] { batch_worker(); });
  }

  /// ASHA over `points` with rung budgets `budgets`: returns when asha_next() says the sweep is finished.
  void run_asha(const std::vector<json>& points, const std::vector<int64_t>& budgets) {
    points_ = &points;
    budgets_ = budgets;
    run_workers([this] { asha_worker(); });
  }

  int ran_here() const { return ran_here_; }

 private:
  int64_t epochs_of(const Trial& t) const {
    return t.epochs > 0 ? t.epochs : spec_.base.at("epochs").get<int64_t>();
  }

  void run_workers(const std::function<void()>& body) {
    std::vector<std::thread> pool;
    for (int i = 0; i < parallel_; ++i) pool.emplace_back(body);
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

  /// What a claim of `t` records besides trial, event, pid and host.
  json claim_info(const Trial& t) const {
    return {{"point", t.point}, {"rung", t.rung}, {"epochs", t.epochs}, {"rank", who_.rank}, {"run", who_.run}};
  }

  bool failed_in_this_run(const Journal::Status& s) const {
    return s.state == "failed" && s.record.value("run", json()) == who_.run;
  }

  /// Claims the next pending trial of the batch; false when none is left to claim (all finished, failed in this
  /// run, or running). all_settled: every pending trial is finished or failed in this run. left_ becomes the
  /// trials not started anywhere.
  bool next(Trial& out, bool& all_settled) {
    all_settled = true;
    const auto st = journal_.statuses();
    std::vector<Trial> free;
    for (auto it = pending_.begin(); it != pending_.end();) {
      const auto s = st.find(it->id);
      const std::string state = s == st.end() ? "" : s->second.state;
      if (state == "done") {  // finished by another process meanwhile
        if (!running_.count(it->id)) epochs_left_ -= epochs_of(*it);
        it = pending_.erase(it);
        continue;
      }
      if (failed_here_.count(it->id) || (s != st.end() && failed_in_this_run(s->second))) {  // stays pending:
        ++it;                                                                                  // a rerun retries it
        continue;
      }
      all_settled = false;
      if (!running_.count(it->id) && state != "running") free.push_back(*it);  // not running here or elsewhere
      ++it;
    }
    left_ = free.size();
    for (const Trial& t : free)
      if (journal_.claim(t.id, claim_info(t))) {  // false: another process claimed it since the statuses above
        out = t;
        --left_;
        return true;
      }
    return false;
  }

  void batch_worker() {
    std::unique_lock<std::mutex> lk(mu_);
    while (abort_message_.empty()) {
      Trial t;
      bool settled = false;
      if (!next(t, settled)) {
        if (settled) return;
        cv_.wait_for(lk, std::chrono::milliseconds(500));  // others' trials: poll the journal
        continue;
      }
      execute(t, lk);
    }
  }

  /// asha_next() over the journal's trials (caller holds mu_); left_ becomes the points not started yet.
  AshaJob asha_job() {
    std::vector<AshaTrial> trials;
    std::set<size_t> started;
    for (const auto& [id, s] : journal_.statuses()) {
      AshaTrial a;
      if (!parse_rung_id(id, budgets_, a.point, a.rung) || a.point >= points_->size()) continue;  // _sweep
      started.insert(a.point);
      if (s.state == "done") {
        a.state = AshaTrial::State::done;
        a.score = value_of(TrialRecord{{}, "done", s.record.value("values", json::object()), "", -1},
                           spec_.objectives[0].metric);
      } else if (s.state == "running" || running_.count(id)) {
        a.state = AshaTrial::State::running;
      } else if (failed_in_this_run(s) || failed_here_.count(id)) {  // failed here: not again, even when another
        a.state = AshaTrial::State::failed;                           // process (another run) failed it since
      } else {
        a.state = AshaTrial::State::waiting;  // interrupted, or failed in an earlier run: run it again
      }
      trials.push_back(a);
    }
    left_ = points_->size() - started.size();
    return asha_next(trials, points_->size(), static_cast<int>(budgets_.size()), spec_.halving.eta,
                     spec_.objectives[0].direction == Direction::maximize);
  }

  void asha_worker() {
    std::unique_lock<std::mutex> lk(mu_);
    while (abort_message_.empty()) {
      const AshaJob job = asha_job();
      if (job.kind == AshaJob::Kind::finished) {
        cv_.notify_all();
        return;
      }
      if (job.kind == AshaJob::Kind::wait) {
        cv_.wait_for(lk, std::chrono::milliseconds(500));  // trials in flight here or elsewhere: poll the journal
        continue;
      }
      const Trial t = rung_trial(*points_, job.point, job.rung, budgets_[size_t(job.rung)]);
      if (!journal_.claim(t.id, claim_info(t))) continue;  // another process took it meanwhile: ask again
      execute(t, lk);
    }
  }

  /// Runs trial t, claimed by this process, and records how it ended; lk (held on entry and on return) is released
  /// while it trains.
  void execute(const Trial& t, std::unique_lock<std::mutex>& lk) {
    running_[t.id] = "starting";
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
      journal_.append({{"trial", t.id}, {"event", "failed"}, {"message", failure}, {"rank", who_.rank},
                       {"run", who_.run}});
      status_line("FAILED " + t.id + ": " + failure);
    } else {
      for (auto it = pending_.begin(); it != pending_.end(); ++it)  // run_batch: settled
        if (it->id == t.id) {
          pending_.erase(it);
          break;
        }
      done_s_ += rec["wall_s"].get<double>();
      done_epochs_ += epochs_of(t);
      note_best(t.id, rec["values"]);
      status_line("done " + t.id);
    }
    cv_.notify_all();
  }

  json run_trial(const Trial& t) {
    const io::Config cfg = trial_config(spec_, t, threads_);
    const std::string dir = opts_.out_dir + "/trials/" + t.id;
    train::TrainOptions o;  // no communicator: the trial trains in this process, whatever ranks the sweep has
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
    json rec{{"trial", t.id},       {"event", "done"},    {"point", t.point}, {"rung", t.rung},
             {"epochs", t.epochs},  {"params", t.params}, {"values", values}, {"wall_s", wall},
             {"rank", who_.rank},   {"run", who_.run}};
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
    const double eta = per_epoch < 0 ? -1 : per_epoch * static_cast<double>(epochs_left_) / parallel_ / who_.ranks;
    char best[160] = "best -";
    if (!best_id_.empty())
      std::snprintf(best, sizeof best, "best %s %.6g (%s)", spec_.objectives[0].metric.c_str(), best_,
                    best_id_.c_str());
    char who[48] = "";
    if (who_.ranks > 1) std::snprintf(who, sizeof who, " rank %d/%d", who_.rank, who_.ranks);
    const std::string left = std::to_string(left_) + (points_ ? " points to start" : " left in rung");
    const size_t failed = failed_here_.size();
    std::fprintf(stderr, "sweep%s: %zu done here, %zu failed, %zu running, %s | %s | %s elapsed, ETA %s | %s\n", who,
                 static_cast<size_t>(ran_here_) - failed, failed, running_.size(), left.c_str(), best,
                 fmt_duration(elapsed).c_str(), fmt_duration(eta).c_str(), event.c_str());
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
  const RunIdentity who_;
  Journal journal_;
  const int parallel_, threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Trial> pending_;                  // run_batch: the batch's trials not finished
  const std::vector<json>* points_ = nullptr;   // run_asha: the sweep's points
  std::vector<int64_t> budgets_;                // run_asha: epochs per rung
  std::map<std::string, std::string> running_;  // id -> its last progress line
  std::set<std::string> failed_here_;           // failed in this run, here
  std::string abort_message_, best_id_;
  double best_ = 0, done_s_ = 0;
  int64_t done_epochs_ = 0, epochs_left_ = 0;
  size_t left_ = 0;
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
      t.rank = r.value("rank", -1);
    } else if (ev == "failed" && t.status != "done") {
      t.status = "failed";
      t.message = r.value("message", "");
      t.rank = r.value("rank", -1);
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

namespace {
/// This process's rank and the run's id (rank 0's, broadcast: a collective every rank makes).
RunIdentity identify(comm::Communicator* comm) {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  const long long ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
  RunIdentity who;
  who.run = std::string(host) + ":" + std::to_string(::getpid()) + ":" + std::to_string(ms);
  if (comm) {
    who.rank = comm->rank();
    who.ranks = comm->world();
    std::vector<uint8_t> b(who.run.begin(), who.run.end());
    comm->broadcast(b, 0);
    who.run.assign(b.begin(), b.end());
  }
  return who;
}
}  // namespace

SweepOutcome run_sweep(const SweepSpec& spec, const RunOptions& opts) {
  const auto t0 = Clock::now();
  SweepOutcome out;
  out.cores = opts.comm ? util::cores_per_rank() : util::available_cores();
  out.ranks = opts.comm ? opts.comm->world() : 1;
  std::tie(out.parallel, out.threads_per_trial) = thread_budget(spec, opts.parallel, out.cores);
  const std::string journal_path = opts.out_dir + "/trials.jsonl";
  if (opts.comm)  // ranks started with different sweeps (or --set) would share one journal for different trials
    comm::check_same_on_all_ranks(*opts.comm, "sweep (fingerprint and --out)",
                                  fingerprint_of(spec).dump() + " " + opts.out_dir);
  if (!opts.list_only) io::make_dirs(opts.out_dir + "/trials");
  check_or_start_journal(spec, journal_path, !opts.list_only);
  const std::vector<json> points = expand_points(spec);
  std::vector<Trial> rung = first_rung(spec, points);
  for (const Trial& t : rung) io::Config probe = trial_config(spec, t, out.threads_per_trial);  // reject bad values now
  const bool rungs_of_budgets = spec.strategy == "halving" || spec.strategy == "asha";
  out.budgets = rungs_of_budgets ? rung_budgets(spec.halving.min_epochs, spec.halving.max_epochs, spec.halving.eta)
                                 : std::vector<int64_t>{-1};
  if (opts.list_only) {
    for (Trial& t : rung) out.trials.push_back({t, "pending", json::object(), "", -1});
    return out;
  }
  int64_t total_epochs = 0;  // an estimate for ASHA, which may promote more
  {
    size_t alive = rung.size();
    for (int64_t b : out.budgets) {
      total_epochs += static_cast<int64_t>(alive) * (b > 0 ? b : spec.base.at("epochs").get<int64_t>());
      alive = std::max<size_t>(1, (alive + size_t(spec.halving.eta) - 1) / size_t(spec.halving.eta));
    }
  }
  Scheduler sched(spec, opts, identify(opts.comm), out.parallel, out.threads_per_trial, total_epochs);
  std::vector<std::vector<Trial>> rungs;
  if (spec.strategy == "asha") {
    sched.run_asha(points, out.budgets);
    rungs.resize(out.budgets.size());
    for (const auto& [id, rec] : read_records(journal_path)) {
      size_t point = 0;
      int r = 0;
      if (parse_rung_id(id, out.budgets, point, r) && point < points.size())
        rungs[size_t(r)].push_back(rung_trial(points, point, r, out.budgets[size_t(r)]));
    }
    for (auto& rg : rungs)
      std::sort(rg.begin(), rg.end(), [](const Trial& a, const Trial& b) { return a.point < b.point; });
  } else {
    for (size_t r = 0; r < out.budgets.size(); ++r) {
      sched.run_batch(rung);
      rungs.push_back(rung);
      if (r + 1 < out.budgets.size()) rung = promote_rung(spec, rung, out.budgets[r + 1], read_records(journal_path));
    }
  }
  if (opts.comm) opts.comm->barrier();  // every rank has seen the sweep finish: the records below are final
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
