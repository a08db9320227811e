// Stress check of cpu/thread_pool.cpp (built with ThreadSanitizer by
// tests/test_thread_pool.py): every task of every job runs exactly once, jobs of one
// task up to more than 2^20, back to back and from two calling threads at once (a
// worker that wakes late must never run an old job's task index on a new job), nested
// calls, and a throwing task.  Prints "ok" or the first failure, and exits non-zero on failure.
#include <atomic>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cpu/thread_pool.h"

namespace {

std::atomic<bool> failed{false};

void fail(const char* what, long a, long b) {
  if (!failed.exchange(true)) std::printf("FAIL %s: %ld %ld\n", what, a, b);
}

void check_job(int num_tasks, int salt) {
  std::vector<std::atomic<int>> hits(num_tasks);
  for (auto& h : hits) h.store(0, std::memory_order_relaxed);
  std::atomic<long> sum{0};
  marlin::cpu::parallel_for(num_tasks, [&](int t) {
    if (t < 0 || t >= num_tasks) {
      fail("task index out of range", t, num_tasks);
      return;
    }
    hits[t].fetch_add(1, std::memory_order_relaxed);
    sum.fetch_add(static_cast<long>(t) * salt, std::memory_order_relaxed);
  });
  for (int t = 0; t < num_tasks; ++t)
    if (hits[t].load() != 1) fail("task ran other than once", t, hits[t].load());
  const long want = static_cast<long>(num_tasks) * (num_tasks - 1) / 2 * salt;
  if (sum.load() != want) fail("sum", sum.load(), want);
}

void caller(unsigned seed, int jobs) {
  std::mt19937 rng(seed);
  for (int j = 0; j < jobs && !failed.load(); ++j) {
    const int r = static_cast<int>(rng() % 100);
    const int n = r < 40 ? 1 + static_cast<int>(rng() % 4) : r < 95 ? 1 + static_cast<int>(rng() % 300)
                                                                   : 1 + static_cast<int>(rng() % 20000);
    check_job(n, 1 + j % 7);
  }
}

}  // namespace

int main() {
  caller(1, 3000);

  // Two threads issuing jobs at once (MLX streams on different threads).
  std::thread other(caller, 2u, 1500);
  caller(3, 1500);
  other.join();

  // Nested parallel_for runs serially inside a task.
  std::atomic<int> inner{0};
  marlin::cpu::parallel_for(16, [&](int) { marlin::cpu::parallel_for(8, [&](int) { inner.fetch_add(1); }); });
  if (inner.load() != 16 * 8) fail("nested", inner.load(), 16 * 8);

  // A job of more than 2^20 tasks.
  check_job((1 << 20) + 12345, 1);

  // A throwing task: the exception reaches the caller, the pool stays usable.
  bool caught = false;
  try {
    marlin::cpu::parallel_for(64, [&](int t) {
      if (t == 17) throw std::runtime_error("task 17");
    });
  } catch (const std::runtime_error&) {
    caught = true;
  }
  if (!caught) fail("exception not propagated", 0, 0);
  check_job(100, 3);

  // Workers asleep (past their spin) before a job.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  check_job(50, 5);

  if (failed.load()) return 1;
  std::printf("ok\n");
  return 0;
}
