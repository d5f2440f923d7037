#include "comm/mpi_communicator.h"

#define OMPI_SKIP_MPICXX 1
#include <mpi.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include "util/check.h"
#include "util/fatal.h"

namespace frugal::comm {

namespace {
bool g_initialized_here = false;
int g_world_rank = -1;  // cached: MPI_Comm_rank may not be called once MPI_Finalize has started

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  FRUGAL_FAIL(call, " failed: ", std::string(msg, size_t(len)),
              ". A rank may have died or ranks disagree on the collective sequence (same config on every rank?)");
}

MPI_Comm& as_comm(void* p) { return *static_cast<MPI_Comm*>(p); }
MPI_Op& as_op(void* p) { return *static_cast<MPI_Op*>(p); }

// Prints "frugal: rank R aborting the job: msg" and MPI_Abort()s; also while MPI_Finalize is running on another thread.
[[noreturn]] void abort_world(const std::string& msg) {
  static std::atomic<bool> aborting{false};
  if (aborting.exchange(true))  // another thread is ending the process (e.g. terminate while main aborts)
    for (;;) ::pause();
  if (g_world_rank < 0) MPI_Comm_rank(MPI_COMM_WORLD, &g_world_rank);
  std::fprintf(stderr, "frugal: rank %d aborting the job: %s\n", g_world_rank, msg.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);  // MPI_Abort does not return
}

// MPI_Finalize, or mpi abort after `seconds` if it has not returned by then (the other ranks are not coming).
void finalize_or_abort(int seconds) {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(m);
    if (!cv.wait_for(lock, std::chrono::seconds(seconds), [&] { return done; }))
      abort_world("MPI_Finalize waited " + std::to_string(seconds) + " s for the other ranks, which are still running: "
                  "this rank finished its command early (do all ranks run the same command?)");
  });
  MPI_Finalize();
  {
    std::lock_guard<std::mutex> lock(m);
    done = true;
  }
  cv.notify_one();
  watchdog.join();
}

bool mpi_running() {
  int inited = 0, fin = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&fin);
  return inited && !fin;
}

// atexit: exit() before MPI_Finalize (a library's exit(), a stray return path) would leave the other ranks waiting in
// a collective, or, for exit code 0, leave mpirun to notice; end the job now, naming the rank. The app's normal
// return finalizes MPI first (MpiSession), so this does nothing then.
void abort_if_exiting_mid_job() {
  if (g_initialized_here && mpi_running())
    mpi_abort_job("exit() called before the job ended (MPI not finalized); the other ranks cannot continue without "
                  "this one");
}
}  // namespace

bool launched_by_mpirun() { return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK"); }

bool mpi_init_if_needed(int* argc, char*** argv) {
  int inited = 0;
  MPI_Initialized(&inited);
  if (inited) return false;
  check_mpi(MPI_Init(argc, argv), "MPI_Init");
  g_initialized_here = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_world_rank);
  return true;
}

void mpi_finalize_if_initialized_here() {
  if (!g_initialized_here) return;
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) finalize_or_abort(kFinalizeWaitS);
  g_initialized_here = false;
}

void mpi_abort_job(const std::string& msg) {
  if (mpi_running()) abort_world(msg);
  std::fprintf(stderr, "frugal: %s\n", msg.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

void install_rank_death_handlers() {
  FRUGAL_CHECK(mpi_running(), "install_rank_death_handlers needs MPI to be initialized (comm::mpi_init_if_needed)");
  if (g_world_rank < 0) MPI_Comm_rank(MPI_COMM_WORLD, &g_world_rank);
  util::install_fatal_signal_handlers("rank " + std::to_string(g_world_rank));
  util::install_terminate_handler([](const std::string& msg) { mpi_abort_job(msg); });
  std::atexit(abort_if_exiting_mid_job);
}

MpiCommunicator::MpiCommunicator() : comm_(new MPI_Comm(MPI_COMM_NULL)), u16_op_(nullptr) {
  int inited = 0;
  MPI_Initialized(&inited);
  FRUGAL_CHECK(inited, "MpiCommunicator needs MPI to be initialized: call comm::mpi_init_if_needed(&argc, &argv) "
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
  if (u16_op_) {
    if (!fin) MPI_Op_free(&as_op(u16_op_));
    delete static_cast<MPI_Op*>(u16_op_);
  }
  delete static_cast<MPI_Comm*>(comm_);
}

void MpiCommunicator::allreduce_sum(float* data, size_t n) {
  if (n == 0) return;
  FRUGAL_CHECK(n <= size_t(INT_MAX), "allreduce_sum: ", n, " floats exceed MPI's int count");
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, data, int(n), MPI_FLOAT, MPI_SUM, as_comm(comm_)), "MPI_Allreduce");
  count(4.0 * double(n), 0);
}

namespace {
// The U16SumFn of the allreduce in flight. MPI calls the user operation inside MPI_Allreduce on the calling
// thread; collectives of one communicator never overlap, so one slot suffices.
U16SumFn g_u16_add = nullptr;

void u16_sum_op(void* in, void* inout, int* len, MPI_Datatype*) {
  g_u16_add(static_cast<const uint16_t*>(in), static_cast<uint16_t*>(inout), size_t(*len));
}
}  // namespace

void MpiCommunicator::allreduce_sum_u16(uint16_t* data, size_t n, U16SumFn add) {
  if (n == 0) return;
  FRUGAL_CHECK(n <= size_t(INT_MAX), "allreduce_sum_u16: ", n, " codes exceed MPI's int count");
  FRUGAL_CHECK(add, "allreduce_sum_u16: no sum function");
  if (!u16_op_) {
    u16_op_ = new MPI_Op(MPI_OP_NULL);
    check_mpi(MPI_Op_create(&u16_sum_op, /*commute=*/1, &as_op(u16_op_)), "MPI_Op_create");
  }
  g_u16_add = add;
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, data, int(n), MPI_UINT16_T, as_op(u16_op_), as_comm(comm_)),
            "MPI_Allreduce (16-bit codes)");
  g_u16_add = nullptr;
  count(2.0 * double(n), 0);
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
  count(double(sz), 8.0);
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
  count(rank_ == root ? double(sz) : 0.0, rank_ == root ? 8.0 : 0.0);
}

// MPI_Ibarrier polled with growing sleeps (up to 5 ms), not MPI_Barrier: Open MPI's blocking barrier spins, so a rank
// that finished its share (the end of a sweep) would take a core from the ranks still training on it.
void MpiCommunicator::barrier() {
  MPI_Request request;
  check_mpi(MPI_Ibarrier(as_comm(comm_), &request), "MPI_Ibarrier");
  auto pause = std::chrono::microseconds(50);
  for (;;) {
    int done = 0;
    check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test (barrier)");
    if (done) return;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(5000));
  }
}

void MpiCommunicator::abort_all(const std::string& msg) { mpi_abort_job(msg); }

}  // namespace frugal::comm
