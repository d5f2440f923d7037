#pragma once
#include <string>

namespace frugal::io {

/// Writes `content` to `path` atomically: a temporary file in the same folder, fsync, rename.
/// Readers never see a half-written file; on failure the old file stays as it was.
void write_file_atomic(const std::string& path, const std::string& content);
std::string read_file(const std::string& path);
void make_dirs(const std::string& dir);
bool file_exists(const std::string& path);

}  // namespace frugal::io
