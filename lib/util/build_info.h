// What this binary was built from: recorded at BUILD time (cmake/build_info.cmake runs on every build and writes
// build/generated/build_info.cpp), so a rebuilt binary never reports the commit of an older configure.
#pragma once

namespace frugal::util {

struct BuildInfo {
  const char* git_commit;  // full hash of HEAD of the source tree at build time, or "unknown" outside a git checkout
  bool git_dirty;          // tracked files differed from git_commit when the binary was built (untracked ones ignored)
  const char* build_type;  // CMAKE_BUILD_TYPE: "Release", "Debug", ...
  bool native;             // FRUGAL_NATIVE: compiled with -march=native for the build machine's ISA
  const char* cxx_flags;   // CMAKE_CXX_FLAGS, the build type's flags and the directory's compile options
};

/// The build's provenance; defined in the generated build_info.cpp.
const BuildInfo& build_info();

}  // namespace frugal::util
