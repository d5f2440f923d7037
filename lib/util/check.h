// Error policy: FRUGAL_CHECK for bad user input (throws frugal::Error with file and line),
// assert() for internal invariants. Library code never calls exit() or abort().
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace frugal {

/// The one exception type user-facing errors travel in; main() maps it to a message and exit code 1.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] inline void throw_error(const char* file, int line, const std::string& msg) {
  std::string f(file);
  auto pos = f.find("lib/");
  if (pos != std::string::npos) f = f.substr(pos);
  throw Error(msg + "  [" + f + ":" + std::to_string(line) + "]");
}
}  // namespace detail

}  // namespace frugal

/// FRUGAL_CHECK(k > 0 && k <= 1, "expected k in (0,1], got ", k);
#define FRUGAL_CHECK(cond, ...)                                                              \
  do {                                                                                      \
    if (!(cond)) ::frugal::detail::throw_error(__FILE__, __LINE__,                           \
                                               ::frugal::detail::concat(__VA_ARGS__));      \
  } while (0)

/// Unconditional user-facing failure.
#define FRUGAL_FAIL(...) \
  ::frugal::detail::throw_error(__FILE__, __LINE__, ::frugal::detail::concat(__VA_ARGS__))
