#include "util/threads.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace frugal::util {

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

int cores_per_rank() {
  const int cores = available_cores();
  int share = cores;
  if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE"); local && std::atoi(local) > 0) {
    const int node = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    share = std::max(1, node / std::atoi(local));
  }
  return std::max(1, std::min(cores, share));
}

int default_threads_per_worker(int local_workers, bool mpi) {
  if (const char* omp = std::getenv("OMP_NUM_THREADS"); omp && std::atoi(omp) > 0) return std::atoi(omp);
  if (!mpi) return std::max(1, available_cores() / std::max(1, local_workers));
  return cores_per_rank();
}

int set_compute_threads(int threads) {
  omp_set_num_threads(std::max(1, threads));
  return omp_get_max_threads();
}

int compute_threads() { return omp_get_max_threads(); }

}  // namespace frugal::util
