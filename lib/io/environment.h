// The environment block of every results.json: what built and ran the numbers (see results/SCHEMA.md).
#pragma once
#include <nlohmann/json.hpp>

namespace frugal::io {

/// Versions, the commit the binary was built from and whether the tree was dirty (util/build_info.h), build flags,
/// the ISA oneDNN dispatched and frugal's own kernel path, compiler, threads in force, CPU, host.
nlohmann::json environment_info();

}  // namespace frugal::io
