#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <exception>
#include <new>
#include <stdexcept>
#include <string>

#include "util/check.h"
#include "util/fatal.h"

using namespace frugal;

TEST_CASE("describe_exception names the kind and the message") {
  auto describe = [](auto x) { return util::describe_exception(std::make_exception_ptr(x)); };
  CHECK(describe(Error("bad key")) == "error: bad key");
  CHECK(describe(std::bad_alloc()) == "out of memory (std::bad_alloc)");
  CHECK(describe(std::runtime_error("boom")) == "internal error (std::runtime_error): boom");
  CHECK(describe(42) == "unknown exception (not a std::exception)");
  CHECK(util::describe_exception(nullptr) == "no exception");
}

namespace {
// Runs body in a forked child with its stderr on a pipe; returns what it wrote and its wait status.
template <typename F>
std::string in_child(F body, int& status) {
  int fd[2];
  REQUIRE(::pipe(fd) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fd[0]);
    ::dup2(fd[1], STDERR_FILENO);
    body();
    ::_exit(0);
  }
  ::close(fd[1]);
  std::string out;
  char buf[256];
  for (ssize_t n; (n = ::read(fd[0], buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  ::close(fd[0]);
  ::waitpid(pid, &status, 0);
  return out;
}
}  // namespace

TEST_CASE("a fatal signal is named on stderr and still kills the process by that signal") {
  for (int sig : {SIGSEGV, SIGFPE, SIGABRT}) {
    int status = 0;
    std::string err = in_child(
        [sig] {
          util::install_fatal_signal_handlers("rank 7");
          ::raise(sig);
        },
        status);
    CAPTURE(sig);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == sig);
    CHECK(err.find("frugal: rank 7: fatal signal SIG") == 0);
  }
  int status = 0;
  std::string err = in_child(
      [] {
        util::install_fatal_signal_handlers("rank 2");
        volatile int* volatile p = nullptr;  // volatile: neither the null nor the write can be optimized away
        *p = 1;
      },
      status);
  CAPTURE(status);
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGSEGV);
  CHECK(err == "frugal: rank 2: fatal signal SIGSEGV\n");
}

TEST_CASE("the terminate handler passes the escaping exception to its action") {
  int status = 0;
  std::string err = in_child(
      [] {
        util::install_terminate_handler([](const std::string& msg) {
          const std::string line = "action: " + msg + "\n";
          (void)!::write(STDERR_FILENO, line.data(), line.size());
          ::_exit(5);
        });
        try {
          throw std::runtime_error("from a noexcept function");
        } catch (...) {
          std::terminate();
        }
      },
      status);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 5);
  CHECK(err == "action: terminate called: internal error (std::runtime_error): from a noexcept function\n");
}
