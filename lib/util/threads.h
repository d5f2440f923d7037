// How many threads each data-parallel worker computes with. oneDNN (Debian's build) runs its primitives on
// OpenMP, whose thread count is per calling thread: a worker sets it on the thread it runs on. The thread
// count decides oneDNN's reduction order (backward weights), so in-process workers and MPI ranks must run
// with the same count to give the same numbers: the default gives both a fair share of the cores.
#pragma once

namespace frugal::util {

/// Cores this process may run on: its CPU affinity mask (under mpirun, the cores the rank is bound to).
int available_cores();

/// Cores one MPI rank may use: its bound cores (available_cores()), but no more than the node's cores divided by
/// the ranks on the node (OMPI_COMM_WORLD_LOCAL_SIZE), so `--bind-to none` ranks do not oversubscribe the node.
int cores_per_rank();

/// The default threads per worker (config `threads` = 0):
///  - OMP_NUM_THREADS when it is set (the user's choice);
///  - in-process: available_cores() / local_workers (at least 1);
///  - MPI rank: cores_per_rank().
int default_threads_per_worker(int local_workers, bool mpi);

/// Sets the OpenMP (oneDNN) thread count of the calling thread; returns the count now in force there.
int set_compute_threads(int threads);

/// The OpenMP thread count in force on the calling thread.
int compute_threads();

}  // namespace frugal::util
