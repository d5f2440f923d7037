// Last words of a dying process: one line on stderr naming what killed it. For the ranks of an MPI job,
// where a rank that dies silently leaves the launcher's report as the only clue (comm::install_rank_death_handlers
// puts these together with MPI_Abort).
#pragma once
#include <exception>
#include <string>

namespace frugal::util {

/// One line naming an exception: "error: WHAT" for frugal::Error (bad input; main() exits 1), "out of memory
/// (std::bad_alloc)", "internal error (TYPE): WHAT" for other std::exceptions, "unknown exception (not a
/// std::exception)" otherwise; "no exception" for a null e.
std::string describe_exception(std::exception_ptr e);

/// For SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT, installs a handler that writes "frugal: WHO: fatal signal
/// SIGSEGV" to stderr with write(2) (async-signal-safe: the text is prepared here), then restores the default
/// action and re-raises, so the process still dies by the signal (core file, exit status, the launcher's report).
/// The handler runs on an alternate stack for the calling thread, so that a stack overflow is named too.
void install_fatal_signal_handlers(const std::string& who);

/// Installs a std::terminate handler that calls on_terminate("terminate called: " + describe_exception(current)),
/// e.g. for an exception escaping a thread. on_terminate must not return; if it does, the handler std::abort()s.
void install_terminate_handler(void (*on_terminate)(const std::string& msg));

}  // namespace frugal::util
