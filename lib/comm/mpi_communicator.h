// OpenMPI communicator: one rank per process (`mpirun -np W frugal train --dist mpi ...`).
#pragma once
#include "comm/communicator.h"

namespace frugal::comm {

/// True when this process was started by mpirun (OMPI_COMM_WORLD_SIZE or PMIX_RANK is set).
bool launched_by_mpirun();

/// Initializes MPI unless it already is; returns true if this call initialized it (then call
/// mpi_finalize_if_initialized_here() before returning from main). The app calls it only for --dist mpi.
bool mpi_init_if_needed(int* argc, char*** argv);
/// Finalizes MPI if mpi_init_if_needed initialized it and it is not finalized yet. MPI_Finalize waits for every rank;
/// a rank that got here while the others still run collectives (it left the job early) would wait forever, and they
/// for it, so after kFinalizeWaitS seconds it ends the job instead (mpi_abort_job). Ranks that finish a command
/// together (the train command ends with a barrier) reach it within milliseconds of each other.
constexpr int kFinalizeWaitS = 10;
void mpi_finalize_if_initialized_here();

/// Ends the whole job: prints "frugal: rank R aborting the job: msg" (R: rank in MPI_COMM_WORLD) and calls
/// MPI_Abort, on which mpirun ends every rank. Without a running MPI prints "frugal: msg" and _Exit(1)s. Safe to
/// call from any thread; a second caller waits for the first to end the process.
[[noreturn]] void mpi_abort_job(const std::string& msg);

/// Makes every way this rank can die end the whole job within seconds, naming the rank and the cause, instead of
/// leaving the other ranks waiting in a collective: std::terminate and exit() before MPI_Finalize call
/// mpi_abort_job; SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT are named on stderr and still kill the process
/// (util/fatal.h), on which mpirun ends the job. Exceptions are the caller's to catch (the app's main catches
/// every one under MPI and calls mpi_abort_job). Requires MPI to be initialized; call once, from main().
void install_rank_death_handlers();

/// RAII form of mpi_init_if_needed / mpi_finalize_if_initialized_here.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv) { mpi_init_if_needed(argc, argv); }
  ~MpiSession() { mpi_finalize_if_initialized_here(); }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
};

/// Communicator over a duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN: every MPI error becomes a
/// frugal::Error naming the call. allreduce_sum is MPI_Allreduce(MPI_SUM) on the floats; allreduce_sum_u16
/// is MPI_Allreduce on MPI_UINT16_T with a commutative user operation that applies the given U16SumFn.
/// barrier is MPI_Ibarrier polled with short sleeps, so a rank waiting for the others leaves its core to them.
class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator();  // requires MPI to be initialized
  ~MpiCommunicator() override;
  int rank() const override { return rank_; }
  int world() const override { return world_; }
  void allreduce_sum(float* data, size_t n) override;
  void allreduce_sum_u16(uint16_t* data, size_t n, U16SumFn add) override;
  std::vector<std::vector<uint8_t>> allgatherv(const std::vector<uint8_t>& mine) override;
  void broadcast(std::vector<uint8_t>& bytes, int root) override;
  void barrier() override;
  /// mpi_abort_job(msg): prints "frugal: rank R aborting the job: msg" and calls MPI_Abort, which ends every rank.
  [[noreturn]] void abort_all(const std::string& msg) override;

 private:
  void* comm_;     // MPI_Comm, kept opaque so this header does not need <mpi.h>
  void* u16_op_;   // MPI_Op for allreduce_sum_u16, created on first use
  int rank_ = 0, world_ = 1;
};

}  // namespace frugal::comm
