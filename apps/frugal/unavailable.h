// A subcommand whose capability has not landed yet: listed in --help, exits 2 with a message (never a fake result).
#pragma once
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace frugal::app {

inline void add_unavailable(CLI::App& app, const std::string& name, const std::string& what) {
  auto* c = app.add_subcommand(name, what + " — not available yet");
  c->allow_extras();
  c->callback([name]() {
    std::fprintf(stderr, "frugal %s: not available yet (a planned capability)\n", name.c_str());
    std::exit(2);
  });
}

}  // namespace frugal::app
