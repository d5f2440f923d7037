#include <condition_variable>
#include <cstring>
#include <mutex>

#include "comm/communicator.h"
#include "util/check.h"

namespace frugal::comm {

struct ThreadGroup::State {
  int world;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  uint64_t generation = 0;
  bool failed = false;
  std::string failure;
  std::vector<std::vector<uint8_t>> slots;  // one per rank, valid between the two barriers of a collective

  // Blocks until all ranks arrive; throws if the group failed.
  void sync(std::unique_lock<std::mutex>& lk) {
    if (failed) FRUGAL_FAIL("collective aborted: ", failure);
    uint64_t gen = generation;
    if (++arrived == world) {
      arrived = 0;
      ++generation;
      cv.notify_all();
    } else {
      cv.wait(lk, [&] { return generation != gen || failed; });
      if (generation == gen) FRUGAL_FAIL("collective aborted: ", failure);
    }
  }
};

namespace {
class ThreadRank final : public Communicator {
 public:
  ThreadRank(ThreadGroup::State* s, ThreadGroup* g, int r) : s_(s), g_(g), r_(r) {}
  int rank() const override { return r_; }
  int world() const override { return s_->world; }

  // Every rank deposits, all sync, all read, all sync (so slots can be reused).
  std::vector<std::vector<uint8_t>> exchange(const uint8_t* p, size_t n) {
    std::unique_lock lk(s_->mu);
    s_->slots[size_t(r_)].assign(p, p + n);
    s_->sync(lk);
    std::vector<std::vector<uint8_t>> all = s_->slots;
    s_->sync(lk);
    return all;
  }

  void allreduce_sum(float* data, size_t n) override {
    auto all = exchange(reinterpret_cast<const uint8_t*>(data), 4 * n);
    for (int r = 0; r < s_->world; ++r)
      FRUGAL_CHECK(all[size_t(r)].size() == 4 * n, "allreduce_sum: rank ", r, " passed ", all[size_t(r)].size() / 4,
                   " floats, rank ", r_, " passed ", n, "; all ranks must reduce the same buffer size");
    std::vector<float> acc(n), tmp(n);
    std::memcpy(acc.data(), all[0].data(), 4 * n);
    for (int r = 1; r < s_->world; ++r) {
      std::memcpy(tmp.data(), all[size_t(r)].data(), 4 * n);
      for (size_t i = 0; i < n; ++i) acc[i] += tmp[i];
    }
    std::memcpy(data, acc.data(), 4 * n);
    count(4.0 * double(n), 0);
  }
  void allreduce_sum_u16(uint16_t* data, size_t n, U16SumFn add) override {
    auto all = exchange(reinterpret_cast<const uint8_t*>(data), 2 * n);
    for (int r = 0; r < s_->world; ++r)
      FRUGAL_CHECK(all[size_t(r)].size() == 2 * n, "allreduce_sum_u16: rank ", r, " passed ",
                   all[size_t(r)].size() / 2, " codes, rank ", r_, " passed ", n);
    std::vector<uint16_t> acc(n), tmp(n);
    std::memcpy(acc.data(), all[0].data(), 2 * n);
    for (int r = 1; r < s_->world; ++r) {  // rank order, like the in-process exchange
      std::memcpy(tmp.data(), all[size_t(r)].data(), 2 * n);
      add(tmp.data(), acc.data(), n);
    }
    std::memcpy(data, acc.data(), 2 * n);
    count(2.0 * double(n), 0);
  }
  std::vector<std::vector<uint8_t>> allgatherv(const std::vector<uint8_t>& mine) override {
    count(double(mine.size()), 8.0);
    return exchange(mine.data(), mine.size());
  }
  void broadcast(std::vector<uint8_t>& bytes, int root) override {
    FRUGAL_CHECK(root >= 0 && root < s_->world, "broadcast root ", root, " out of range");
    auto all = exchange(bytes.data(), r_ == root ? bytes.size() : 0);
    bytes = all[size_t(root)];
  }
  void barrier() override {
    std::unique_lock lk(s_->mu);
    s_->sync(lk);
  }
  [[noreturn]] void abort_all(const std::string& msg) override {
    g_->fail("rank " + std::to_string(r_) + ": " + msg);
    FRUGAL_FAIL("rank ", r_, " aborted the job: ", msg);
  }

 private:
  ThreadGroup::State* s_;
  ThreadGroup* g_;
  int r_;
};
}  // namespace

ThreadGroup::ThreadGroup(int world) : state_(std::make_unique<State>()) {
  FRUGAL_CHECK(world >= 1, "ThreadGroup needs world >= 1, got ", world);
  state_->world = world;
  state_->slots.resize(size_t(world));
  for (int r = 0; r < world; ++r) ranks_.push_back(std::make_unique<ThreadRank>(state_.get(), this, r));
}
ThreadGroup::~ThreadGroup() = default;
Communicator& ThreadGroup::rank(int r) {
  FRUGAL_CHECK(r >= 0 && r < int(ranks_.size()), "rank ", r, " out of range");
  return *ranks_[size_t(r)];
}
int ThreadGroup::world() const { return state_->world; }
void ThreadGroup::fail(const std::string& msg) {
  std::lock_guard lk(state_->mu);
  if (!state_->failed) {
    state_->failed = true;
    state_->failure = msg;
  }
  state_->cv.notify_all();
}

void check_same_on_all_ranks(Communicator& comm, const std::string& what, const std::string& value) {
  auto all = comm.allgatherv(std::vector<uint8_t>(value.begin(), value.end()));
  for (size_t r = 0; r < all.size(); ++r) {
    std::string v(all[r].begin(), all[r].end());
    FRUGAL_CHECK(v == std::string(all[0].begin(), all[0].end()), what, " differs between ranks: rank 0 has '",
                 std::string(all[0].begin(), all[0].end()), "', rank ", r, " has '", v,
                 "'. Start every rank with the same config and seed.");
  }
}

}  // namespace frugal::comm
