#include "dist/mpi_communicator.h"

#define OMPI_SKIP_MPICXX 1
#include <mpi.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "util/check.h"

namespace frugal::dist {

namespace {
bool g_initialized_here = false;

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  FRUGAL_FAIL(call, " failed: ", std::string(msg, size_t(len)),
              ". A rank may have died or ranks disagree on the collective sequence (same config on every rank?)");
}

MPI_Comm& as_comm(void* p) { return *static_cast<MPI_Comm*>(p); }
}  // namespace

bool launched_by_mpirun() { return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK"); }

bool mpi_init_if_needed(int* argc, char*** argv) {
  int inited = 0;
  MPI_Initialized(&inited);
  if (inited) return false;
  check_mpi(MPI_Init(argc, argv), "MPI_Init");
  g_initialized_here = true;
  return true;
}

void mpi_finalize_if_initialized_here() {
  if (!g_initialized_here) return;
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) MPI_Finalize();
  g_initialized_here = false;
}

MpiCommunicator::MpiCommunicator() : comm_(new MPI_Comm(MPI_COMM_NULL)) {
  int inited = 0;
  MPI_Initialized(&inited);
  FRUGAL_CHECK(inited, "MpiCommunicator needs MPI to be initialized: call dist::mpi_init_if_needed(&argc, &argv) "
               "first (the app does this for --dist mpi)");
  check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &as_comm(comm_)), "MPI_Comm_dup");
  MPI_Comm_set_errhandler(as_comm(comm_), MPI_ERRORS_RETURN);
  MPI_Comm_rank(as_comm(comm_), &rank_);
  MPI_Comm_size(as_comm(comm_), &world_);
}

MpiCommunicator::~MpiCommunicator() {
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin && as_comm(comm_) != MPI_COMM_NULL) MPI_Comm_free(&as_comm(comm_));
  delete static_cast<MPI_Comm*>(comm_);
}

void MpiCommunicator::allreduce_sum(float* data, size_t n) {
  // Size check first so a mismatch is an error on every rank, not a hang or silent truncation.
  unsigned long long mine = n;
  std::vector<unsigned long long> sizes(static_cast<size_t>(world_));
  check_mpi(MPI_Allgather(&mine, 1, MPI_UNSIGNED_LONG_LONG, sizes.data(), 1, MPI_UNSIGNED_LONG_LONG, as_comm(comm_)),
            "MPI_Allgather (allreduce size)");
  for (int r = 0; r < world_; ++r)
    FRUGAL_CHECK(sizes[size_t(r)] == mine, "allreduce_sum: rank ", r, " passed ", sizes[size_t(r)], " floats, rank ",
                 rank_, " passed ", n, "; all ranks must reduce the same buffer size");
  if (n == 0) return;
  FRUGAL_CHECK(n <= size_t(INT_MAX), "allreduce_sum: ", n, " floats exceed MPI's int count");
  std::vector<float> all(n * size_t(world_));
  check_mpi(MPI_Allgather(data, int(n), MPI_FLOAT, all.data(), int(n), MPI_FLOAT, as_comm(comm_)), "MPI_Allgather");
  std::memcpy(data, all.data(), 4 * n);
  for (int r = 1; r < world_; ++r) {
    const float* src = all.data() + size_t(r) * n;
    for (size_t i = 0; i < n; ++i) data[i] += src[i];
  }
}

std::vector<std::vector<uint8_t>> MpiCommunicator::allgatherv(const std::vector<uint8_t>& mine) {
  unsigned long long sz = mine.size();
  std::vector<unsigned long long> sizes(static_cast<size_t>(world_));
  check_mpi(MPI_Allgather(&sz, 1, MPI_UNSIGNED_LONG_LONG, sizes.data(), 1, MPI_UNSIGNED_LONG_LONG, as_comm(comm_)),
            "MPI_Allgather (sizes)");
  std::vector<int> counts(static_cast<size_t>(world_)), displs(static_cast<size_t>(world_));
  size_t total = 0;
  for (int r = 0; r < world_; ++r) {
    FRUGAL_CHECK(total + sizes[size_t(r)] <= size_t(INT_MAX), "allgatherv: total ", total + sizes[size_t(r)],
                 " bytes exceed MPI's int displacement; use fewer ranks or a smaller payload");
    counts[size_t(r)] = int(sizes[size_t(r)]);
    displs[size_t(r)] = int(total);
    total += sizes[size_t(r)];
  }
  std::vector<uint8_t> buf(std::max<size_t>(total, 1));
  check_mpi(MPI_Allgatherv(mine.data(), int(sz), MPI_BYTE, buf.data(), counts.data(), displs.data(), MPI_BYTE,
                           as_comm(comm_)),
            "MPI_Allgatherv");
  std::vector<std::vector<uint8_t>> out(static_cast<size_t>(world_));
  for (int r = 0; r < world_; ++r)
    out[size_t(r)].assign(buf.begin() + displs[size_t(r)], buf.begin() + displs[size_t(r)] + counts[size_t(r)]);
  return out;
}

void MpiCommunicator::broadcast(std::vector<uint8_t>& bytes, int root) {
  FRUGAL_CHECK(root >= 0 && root < world_, "broadcast root ", root, " out of range for world ", world_);
  unsigned long long sz = bytes.size();
  check_mpi(MPI_Bcast(&sz, 1, MPI_UNSIGNED_LONG_LONG, root, as_comm(comm_)), "MPI_Bcast (size)");
  FRUGAL_CHECK(sz <= size_t(INT_MAX), "broadcast of ", sz, " bytes exceeds MPI's int count");
  bytes.resize(size_t(sz));
  if (sz) check_mpi(MPI_Bcast(bytes.data(), int(sz), MPI_BYTE, root, as_comm(comm_)), "MPI_Bcast");
}

void MpiCommunicator::barrier() { check_mpi(MPI_Barrier(as_comm(comm_)), "MPI_Barrier"); }

void MpiCommunicator::abort_all(const std::string& msg) {
  std::fprintf(stderr, "frugal: rank %d aborting the job: %s\n", rank_, msg.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::terminate();  // MPI_Abort does not return; satisfies [[noreturn]]
}

}  // namespace frugal::dist
