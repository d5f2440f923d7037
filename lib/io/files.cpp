#include "io/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "util/check.h"

namespace frugal::io {

void write_file_atomic(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  FRUGAL_CHECK(fd >= 0, "cannot create '", tmp, "': ", std::strerror(errno), " (check that the folder exists and is writable)");
  size_t off = 0;
  while (off < content.size()) {
    ssize_t w = ::write(fd, content.data() + off, content.size() - off);
    if (w < 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      FRUGAL_FAIL("write to '", tmp, "' failed at byte ", off, ": ", std::strerror(e));
    }
    off += static_cast<size_t>(w);
  }
  ::fsync(fd);
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    FRUGAL_FAIL("cannot rename '", tmp, "' to '", path, "': ", std::strerror(e));
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  FRUGAL_CHECK(in.good(), "cannot open '", path, "': no such file or not readable");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void make_dirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  FRUGAL_CHECK(!ec, "cannot create folder '", dir, "': ", ec.message());
}

bool file_exists(const std::string& path) { return std::filesystem::exists(path); }

}  // namespace frugal::io
