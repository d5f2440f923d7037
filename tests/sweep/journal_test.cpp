#include "sweep/journal.h"

#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <set>

#include "../data/fixtures.h"
#include "util/check.h"

using namespace frugal;
using namespace frugal::sweep;
using json = nlohmann::json;

TEST_CASE("sweep journal: append and read, a torn last line is ignored, other bad lines are named") {
  data::testing::TempDir dir;
  Journal j(dir / "trials.jsonl");
  CHECK(j.read().empty());
  j.append({{"trial", "t0"}, {"event", "done"}, {"accuracy", 0.9}});
  j.append({{"trial", "t1"}, {"event", "failed"}, {"message", "diverged"}});
  CHECK(j.read().size() == 2);
  CHECK(j.finished("t0"));
  CHECK_FALSE(j.finished("t1"));
  {  // a crash in the middle of a write
    std::ofstream f(dir / "trials.jsonl", std::ios::app);
    f << "{\"trial\": \"t2\", \"ev";
  }
  CHECK(j.read().size() == 2);
  {
    std::ofstream f(dir / "bad.jsonl");
    f << "{\"trial\": \"a\", \"event\": \"done\"}\nnot json\n{\"trial\": \"b\", \"event\": \"done\"}\n";
  }
  CHECK_THROWS_WITH_AS(Journal(dir / "bad.jsonl").read(), doctest::Contains("line 2"), frugal::Error);
  CHECK_THROWS_AS(j.append({{"event", "done"}}), frugal::Error);
}

TEST_CASE("sweep journal: claims — finished trials are skipped, a live claim blocks, a dead owner's claim reruns") {
  data::testing::TempDir dir;
  Journal j(dir / "trials.jsonl");
  CHECK(j.claim("t0"));
  CHECK_FALSE(j.claim("t0"));  // this process holds it
  j.append({{"trial", "t0"}, {"event", "done"}});
  CHECK_FALSE(j.claim("t0"));  // finished
  // a claim by a process that no longer exists (killed mid-trial): the trial is free again
  pid_t child = fork();
  if (child == 0) _exit(0);
  int st = 0;
  waitpid(child, &st, 0);
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  j.append({{"trial", "t1"}, {"event", "claim"}, {"pid", int(child)}, {"host", host}});
  CHECK(j.claim("t1"));
}

TEST_CASE("sweep journal: two processes claiming the same trials never both get one") {
  data::testing::TempDir dir;
  const std::string path = dir / "trials.jsonl";
  const int trials = 40;
  pid_t child = fork();
  if (child == 0) {  // the other process claims every trial it can and marks it done
    Journal j(path);
    for (int t = 0; t < trials; ++t)
      if (j.claim("t" + std::to_string(t))) j.append({{"trial", "t" + std::to_string(t)}, {"event", "done"}, {"by", "child"}});
    _exit(0);
  }
  Journal j(path);
  for (int t = 0; t < trials; ++t)
    if (j.claim("t" + std::to_string(t))) j.append({{"trial", "t" + std::to_string(t)}, {"event", "done"}, {"by", "parent"}});
  int st = 0;
  waitpid(child, &st, 0);
  REQUIRE(WIFEXITED(st));
  std::multiset<std::string> done;
  for (const json& r : j.read())
    if (r.at("event") == "done") done.insert(r.at("trial").get<std::string>());
  CHECK(done.size() == size_t(trials));  // every trial ran exactly once
  for (int t = 0; t < trials; ++t) CHECK(done.count("t" + std::to_string(t)) == 1);
}

TEST_CASE("sweep journal: a failure is final for its run, retried by a later one, and statuses() tell the states") {
  data::testing::TempDir dir;
  Journal j(dir / "trials.jsonl");
  const json run_a{{"run", "host:1:100"}}, run_b{{"run", "host:2:200"}};
  REQUIRE(j.claim("t0", run_a));
  j.append({{"trial", "t0"}, {"event", "failed"}, {"message", "diverged"}, {"run", "host:1:100"}});
  CHECK_FALSE(j.claim("t0", run_a));  // another rank of the same run: not again
  REQUIRE(j.claim("t1", run_a));
  j.append({{"trial", "t1"}, {"event", "done"}});
  // a claim by a process that no longer exists
  pid_t child = fork();
  if (child == 0) _exit(0);
  int st = 0;
  waitpid(child, &st, 0);
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  j.append({{"trial", "t2"}, {"event", "claim"}, {"pid", int(child)}, {"host", host}});
  REQUIRE(j.claim("t3", run_a));
  auto s = j.statuses();
  CHECK(s["t0"].state == "failed");
  CHECK(s["t0"].record["message"] == "diverged");
  CHECK(s["t1"].state == "done");
  CHECK(s["t2"].state == "interrupted");
  CHECK(s["t3"].state == "running");
  CHECK(s["t3"].record["run"] == "host:1:100");
  CHECK(j.claim("t0", run_b));  // a later run retries the failure
  CHECK(j.statuses()["t0"].state == "running");
}
