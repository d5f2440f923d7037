// OpenMPI communicator: one rank per process (`mpirun -np W frugal train --dist mpi ...`).
#pragma once
#include "dist/communicator.h"

namespace frugal::dist {

/// True when this process was started by mpirun (OMPI_COMM_WORLD_SIZE or PMIX_RANK is set).
bool launched_by_mpirun();

/// Initializes MPI unless it already is; returns true if this call initialized it (then call
/// mpi_finalize_if_initialized_here() before returning from main). The app calls it only for --dist mpi.
bool mpi_init_if_needed(int* argc, char*** argv);
/// Finalizes MPI if mpi_init_if_needed initialized it and it is not finalized yet.
void mpi_finalize_if_initialized_here();

/// RAII form of the two calls above.
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
  /// Prints "frugal: rank R aborting the job: msg" and calls MPI_Abort, which ends every rank.
  [[noreturn]] void abort_all(const std::string& msg) override;

 private:
  void* comm_;     // MPI_Comm, kept opaque so this header does not need <mpi.h>
  void* u16_op_;   // MPI_Op for allreduce_sum_u16, created on first use
  int rank_ = 0, world_ = 1;
};

}  // namespace frugal::dist
