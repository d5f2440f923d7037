// The CLI tests' one way to run the built frugal binary: its exit code and its stdout + stderr together.
#pragma once
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "io/files.h"

namespace frugal::testing {

struct Run {
  int code;
  std::string out;
};

/// Runs `env FRUGAL_BINARY args` through the shell (env: assignments or an `env ...` prefix, may be empty).
inline Run run(const std::string& args, const std::string& env = "") {
  const std::string cmd = env + std::string(FRUGAL_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

/// A JSON file the binary wrote.
inline nlohmann::json json_of(const std::string& path) { return nlohmann::json::parse(io::read_file(path)); }

}  // namespace frugal::testing
