// Collective communication between data-parallel ranks. Two implementations: MpiCommunicator (OpenMPI,
// one rank per process) and ThreadGroup (W ranks as threads of one process, the test twin of MPI).
// The in-process trainer path needs no communicator at all: GradientExchange aggregates its W local
// workers itself, in the same global worker order, so results match an MPI run bit for bit.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace frugal::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  /// data (n) <- sum over ranks, added in rank order ((x0 + x1) + x2) + ... on every rank, so the result
  /// is deterministic and identical everywhere. Every rank must pass the same n.
  virtual void allreduce_sum(float* data, size_t n) = 0;
  /// Returns every rank's bytes, indexed by rank (sizes are exchanged first; empty buffers are fine).
  virtual std::vector<std::vector<uint8_t>> allgatherv(const std::vector<uint8_t>& mine) = 0;
  /// bytes <- root's bytes on every rank (any size).
  virtual void broadcast(std::vector<uint8_t>& bytes, int root) = 0;
  virtual void barrier() = 0;
  /// Ends the whole job with msg on stderr of this rank (the other ranks are terminated by the launcher
  /// or, for ThreadGroup, throw frugal::Error from their next collective). For the app's top-level catch.
  [[noreturn]] virtual void abort_all(const std::string& msg) = 0;
};

/// Checks that every rank holds the same `value` (e.g. a config hash); on mismatch throws frugal::Error
/// on every rank, naming `what` and the first differing rank (never hangs: all ranks see all values).
void check_same_on_all_ranks(Communicator& comm, const std::string& what, const std::string& value);

/// W ranks inside one process, one thread each: group.rank(r) is rank r's communicator. Collectives
/// block until all W ranks arrive. abort_all (or a rank's destruction mid-collective) makes every
/// waiting and later collective throw frugal::Error instead of hanging.
class ThreadGroup {
 public:
  explicit ThreadGroup(int world);
  ~ThreadGroup();
  Communicator& rank(int r);
  int world() const;
  /// Marks the group failed: every rank's pending and future collectives throw with msg.
  void fail(const std::string& msg);

  struct State;
 private:
  std::unique_ptr<State> state_;
  std::vector<std::unique_ptr<Communicator>> ranks_;
};

}  // namespace frugal::dist
