#include "sweep/journal.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "util/check.h"

namespace frugal::sweep {

using json = nlohmann::json;

namespace {
std::string host_name() {
  char h[256] = {0};
  gethostname(h, sizeof h - 1);
  return h;
}

/// An open journal file descriptor holding an exclusive lock for its lifetime.
class LockedFile {
 public:
  explicit LockedFile(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    FRUGAL_CHECK(fd_ >= 0, "sweep journal '", path, "': cannot open (", std::strerror(errno), ")");
    if (::flock(fd_, LOCK_EX) != 0) {
      const int e = errno;
      ::close(fd_);
      FRUGAL_FAIL("sweep journal '", path, "': cannot lock (", std::strerror(e), ")");
    }
  }
  ~LockedFile() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  void append_line(const std::string& line) {
    const std::string s = line + "\n";
    size_t done = 0;
    while (done < s.size()) {
      const ssize_t w = ::write(fd_, s.data() + done, s.size() - done);
      FRUGAL_CHECK(w > 0 || errno == EINTR, "sweep journal '", path_, "': write failed (", std::strerror(errno), ")");
      if (w > 0) done += size_t(w);
    }
    FRUGAL_CHECK(::fsync(fd_) == 0, "sweep journal '", path_, "': fsync failed (", std::strerror(errno), ")");
  }

 private:
  std::string path_;
  int fd_ = -1;
};

std::vector<json> parse_lines(const std::string& text, const std::string& path) {
  std::vector<json> out;
  std::istringstream in(text);
  std::string line;
  size_t no = 0;
  const bool torn_tail = !text.empty() && text.back() != '\n';
  std::vector<std::string> lines;
  while (std::getline(in, line)) lines.push_back(line);
  for (const std::string& l : lines) {
    ++no;
    if (l.empty()) continue;
    try {
      json j = json::parse(l);
      FRUGAL_CHECK(j.is_object() && j.contains("trial") && j.contains("event"), "sweep journal '", path, "' line ",
                   no, ": a record needs \"trial\" and \"event\"");
      out.push_back(std::move(j));
    } catch (const json::parse_error& e) {
      if (torn_tail && no == lines.size()) break;  // the line a crash cut short: never acknowledged, ignore it
      FRUGAL_FAIL("sweep journal '", path, "' line ", no, " is not JSON (", e.what(),
                  "); fix or remove that line to resume");
    }
  }
  return out;
}

bool alive_on_this_host(const json& claim) {
  if (claim.value("host", "") != host_name()) return true;  // another host's process: assume it lives
  const int pid = claim.value("pid", 0);
  if (pid <= 0) return false;
  return ::kill(pid, 0) == 0 || errno == EPERM;
}
}  // namespace

Journal::Journal(std::string path) : path_(std::move(path)) {}

void Journal::append(const json& record) {
  FRUGAL_CHECK(record.is_object() && record.contains("trial") && record.contains("event"),
               "sweep journal: a record needs \"trial\" and \"event\", got ", record.dump());
  LockedFile f(path_);
  f.append_line(record.dump());
}

std::vector<json> Journal::read() const {
  std::ifstream in(path_);
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_lines(ss.str(), path_);
}

bool Journal::finished(const std::string& trial) const {
  for (const json& r : read())
    if (r.at("trial") == trial && r.at("event") == "done") return true;
  return false;
}

std::map<std::string, Journal::Status> Journal::statuses() const {
  std::map<std::string, Status> out;
  for (json& r : read()) {
    Status& s = out[r.at("trial").get<std::string>()];
    const std::string ev = r.at("event").get<std::string>();
    if (s.state == "done") continue;
    if (ev == "done" || ev == "failed") s = {ev, std::move(r)};
    else if (ev == "claim") s = {alive_on_this_host(r) ? "running" : "interrupted", std::move(r)};
  }
  return out;
}

bool Journal::claim(const std::string& trial, const json& info) {
  LockedFile f(path_);  // held across the read and the append
  std::ifstream in(path_);
  std::stringstream ss;
  ss << in.rdbuf();
  json latest_claim, latest_failure;
  for (const json& r : parse_lines(ss.str(), path_)) {
    if (r.at("trial") != trial) continue;
    if (r.at("event") == "done") return false;
    if (r.at("event") == "claim") latest_claim = r, latest_failure = nullptr;
    if (r.at("event") == "failed") latest_claim = nullptr, latest_failure = r;
  }
  if (!latest_claim.is_null() && alive_on_this_host(latest_claim)) return false;
  if (!latest_failure.is_null() && info.contains("run") && latest_failure.value("run", json()) == info["run"])
    return false;  // failed in this run: final for it
  json rec = info;
  rec["trial"] = trial;
  rec["event"] = "claim";
  rec["pid"] = int(::getpid());
  rec["host"] = host_name();
  f.append_line(rec.dump());
  return true;
}

}  // namespace frugal::sweep
