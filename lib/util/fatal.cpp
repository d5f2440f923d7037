#include "util/fatal.h"

#include <cxxabi.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <typeinfo>

#include "util/check.h"

namespace frugal::util {

namespace {
std::string demangle(const char* name) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> s(abi::__cxa_demangle(name, nullptr, nullptr, &status), std::free);
  return status == 0 && s ? std::string(s.get()) : std::string(name);
}

// Prepared outside the handler: the handler may only call async-signal-safe functions.
char g_prefix[128];  // "frugal: rank 1: fatal signal "
size_t g_prefix_len = 0;
alignas(16) char g_alt_stack[1 << 16];

struct SignalName {
  int sig;
  const char* name;
};
constexpr SignalName kFatal[] = {
    {SIGSEGV, "SIGSEGV"}, {SIGBUS, "SIGBUS"}, {SIGFPE, "SIGFPE"}, {SIGILL, "SIGILL"}, {SIGABRT, "SIGABRT"}};

void write_all(const char* s, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    s += w;
    n -= size_t(w);
  }
}

void on_fatal_signal(int sig) {
  const int saved_errno = errno;
  const char* name = "unknown";
  for (const auto& f : kFatal)
    if (f.sig == sig) name = f.name;
  size_t len = 0;
  while (name[len]) ++len;
  write_all(g_prefix, g_prefix_len);
  write_all(name, len);
  write_all("\n", 1);
  // Default action, then re-raise: the signal stays blocked until this handler returns, then kills the process
  // (a faulting instruction would also fault again on return).
  ::signal(sig, SIG_DFL);
  ::raise(sig);
  errno = saved_errno;
}

void (*g_on_terminate)(const std::string&) = nullptr;

[[noreturn]] void on_terminate() {
  const auto e = std::current_exception();
  const std::string msg =
      e ? "terminate called: " + describe_exception(e) : std::string("terminate called without an active exception");
  if (g_on_terminate) g_on_terminate(msg);
  std::fprintf(stderr, "frugal: %s\n", msg.c_str());
  std::abort();
}
}  // namespace

std::string describe_exception(std::exception_ptr e) {
  if (!e) return "no exception";
  try {
    std::rethrow_exception(e);
  } catch (const Error& x) {
    return std::string("error: ") + x.what();
  } catch (const std::bad_alloc& x) {
    return "out of memory (" + demangle(typeid(x).name()) + ")";
  } catch (const std::exception& x) {
    return "internal error (" + demangle(typeid(x).name()) + "): " + x.what();
  } catch (...) {
    return "unknown exception (not a std::exception)";
  }
}

void install_fatal_signal_handlers(const std::string& who) {
  std::snprintf(g_prefix, sizeof g_prefix, "frugal: %s: fatal signal ", who.c_str());
  g_prefix_len = std::char_traits<char>::length(g_prefix);
  stack_t ss{};
  ss.ss_sp = g_alt_stack;
  ss.ss_size = sizeof g_alt_stack;
  ::sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_handler = on_fatal_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_ONSTACK;
  for (const auto& f : kFatal) ::sigaction(f.sig, &sa, nullptr);
}

void install_terminate_handler(void (*on_terminate_action)(const std::string& msg)) {
  g_on_terminate = on_terminate_action;
  std::set_terminate(on_terminate);
}

}  // namespace frugal::util
