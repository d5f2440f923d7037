// The crash-safe record of a sweep: an append-only JSON-lines file that several processes (or MPI ranks) share.
// Every record is one line appended with a single write(2) under an exclusive flock(2) and fsync'd before append()
// returns, so a kill -9 loses at most the line being written (a torn last line, ignored on reading).
//
// Records are JSON objects with at least "trial" (its id) and "event": "claim" (owner, pid, host), "done"
// (results) or "failed" (message). A trial is finished once it has "done"; it is taken while its latest claim
// belongs to a live process; a claim whose process is gone (same host, pid not alive) is stale and the trial runs
// again — so rerunning the same sweep resumes: finished trials are skipped, interrupted ones rerun, and two
// processes never run the same trial at once. A trial whose latest record is "failed" may be claimed again, except
// by a claim carrying the same "run" as the failure: the processes (MPI ranks) of one run do not retry each other's
// failures, a later run does.
#pragma once
#include <nlohmann/json.hpp>
#include <map>
#include <string>
#include <vector>

namespace frugal::sweep {

class Journal {
 public:
  explicit Journal(std::string path);
  const std::string& path() const { return path_; }
  /// Appends one record (a JSON object); durable when it returns.
  void append(const nlohmann::json& record);
  /// Every record in order. A torn last line is skipped; any other malformed line is an error naming its number.
  std::vector<nlohmann::json> read() const;
  /// Claims `trial` for this process unless it is finished, held by a live process, or failed in the run named by
  /// info["run"] (if given): true if this caller got it. `info` goes into the claim record. Check and append happen
  /// under one lock, so of two processes claiming together exactly one succeeds.
  bool claim(const std::string& trial, const nlohmann::json& info = nlohmann::json::object());
  /// True when the trial has a "done" record.
  bool finished(const std::string& trial) const;

  /// A trial's state from its records: "done" (it has a done record), "failed" (its latest claim or failure is a
  /// failure), "running" (its latest is a claim by a live process) or "interrupted" (a claim whose process is gone).
  struct Status {
    std::string state;
    nlohmann::json record;  ///< the record that decided it (done, failed or the claim)
  };
  /// Every trial's status (the fingerprint record "_sweep" included), by trial id.
  std::map<std::string, Status> statuses() const;

 private:
  std::string path_;
};

}  // namespace frugal::sweep
