// The binary names the sources it was built from: commit and dirty flag are taken at build time, not configure time.
#include <doctest/doctest.h>

#include <array>
#include <cstdio>
#include <string>

#include "util/build_info.h"

namespace {
/// stdout of a shell command, and whether it exited 0.
bool shell(const std::string& cmd, std::string& out) {
  FILE* p = popen((cmd + " 2>/dev/null").c_str(), "r");
  if (!p) return false;
  std::array<char, 4096> buf;
  out.clear();
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  return pclose(p) == 0;
}
std::string git(const std::string& args) { return "git -C '" FRUGAL_SOURCE_DIR "' " + args; }
}  // namespace

TEST_CASE("build_info: the commit and dirty flag of the tree the binary was built from") {
  const frugal::util::BuildInfo& b = frugal::util::build_info();
  std::string head, changes;
  if (!shell(git("rev-parse HEAD"), head)) {
    MESSAGE("not a git checkout (or no git): ", FRUGAL_SOURCE_DIR, "; build_info reports '", b.git_commit, "'");
    CHECK(std::string(b.git_commit) == "unknown");
    return;
  }
  while (!head.empty() && (head.back() == '\n' || head.back() == '\r')) head.pop_back();
  INFO("a mismatch means the binary is older than the tree: rebuild (cmake --build build) and rerun");
  CHECK(std::string(b.git_commit) == head);
  REQUIRE(shell(git("status --porcelain --untracked-files=no"), changes));
  CHECK(b.git_dirty == !changes.empty());
  CHECK(std::string(b.build_type).size() > 0);
  CHECK(std::string(b.cxx_flags).find(b.native ? "-march=native" : "") != std::string::npos);
}
