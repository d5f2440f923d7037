// Collective communication between data-parallel ranks. Two implementations: MpiCommunicator (OpenMPI,
// one rank per process) and ThreadGroup (W ranks as threads of one process, the test twin of MPI).
// The in-process trainer path needs no communicator at all: GradientExchange aggregates its W local
// workers itself, in global worker order (bit-reproducible); an MPI run equals it bit for bit with two
// ranks and to rounding with more (MPI_Allreduce chooses its own reduction order).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace frugal::comm {

/// Element-wise sum of 16-bit codes (fp16 or bf16): inout[i] <- code(value(in[i]) + value(inout[i])), each
/// addition rounded back to the 16-bit type. Commutative, so every reduction order of two operands agrees.
using U16SumFn = void (*)(const uint16_t* in, uint16_t* inout, size_t n);

/// What this rank handed to the collectives, in bytes. payload: the data buffers themselves (what a
/// compressor's byte count must match); control: sizes exchanged before a variable-size collective.
struct CommCounters {
  double payload_bytes = 0;
  double control_bytes = 0;
  int64_t collectives = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  /// data (n) <- sum over ranks on every rank. MPI: one MPI_Allreduce (ring / recursive halving, each rank
  /// sends about 2 (W-1)/W * 4n bytes); the reduction order is MPI's, so with more than two ranks the
  /// result may differ from a rank-ordered sum in the last bits. ThreadGroup: rank order ((x0 + x1) + x2)...
  /// Every rank must pass the same n.
  virtual void allreduce_sum(float* data, size_t n) = 0;
  /// data (n 16-bit codes) <- sum over ranks with `add` (see U16SumFn); what crosses the network is 2n bytes.
  virtual void allreduce_sum_u16(uint16_t* data, size_t n, U16SumFn add) = 0;
  /// Returns every rank's bytes, indexed by rank (sizes are exchanged first; empty buffers are fine).
  virtual std::vector<std::vector<uint8_t>> allgatherv(const std::vector<uint8_t>& mine) = 0;
  /// bytes <- root's bytes on every rank (any size).
  virtual void broadcast(std::vector<uint8_t>& bytes, int root) = 0;
  virtual void barrier() = 0;
  /// Ends the whole job with msg on stderr of this rank (the other ranks are terminated by the launcher
  /// or, for ThreadGroup, throw frugal::Error from their next collective). For the app's top-level catch.
  [[noreturn]] virtual void abort_all(const std::string& msg) = 0;
  /// Running totals of what this rank handed to the collectives since construction.
  const CommCounters& counters() const { return counters_; }

 protected:
  void count(double payload, double control) {
    counters_.payload_bytes += payload;
    counters_.control_bytes += control;
    counters_.collectives += 1;
  }

 private:
  CommCounters counters_;
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

}  // namespace frugal::comm
