#include "cpu/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace marlin::cpu {
namespace {

thread_local bool inside_pool_task = false;

int configured_threads() {
  if (const char* env = std::getenv("MLX_MARLIN_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

class Pool {
 public:
  explicit Pool(int threads) : size_(threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work_loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int size() const { return size_; }

  void run(int num_tasks, const std::function<void(int)>& body) {
    // One job at a time: streams on different threads may call concurrently.
    std::lock_guard<std::mutex> job_lock(job_mutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      num_tasks_ = num_tasks;
      next_task_.store(0);
      active_ = static_cast<int>(workers_.size());
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    drain();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return active_ == 0; });
    body_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void drain() {
    inside_pool_task = true;
    for (;;) {
      int t = next_task_.fetch_add(1);
      if (t >= num_tasks_) break;
      try {
        (*body_)(t);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        next_task_.store(num_tasks_);  // stop handing out work
      }
    }
    inside_pool_task = false;
  }

  void work_loop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      drain();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_.notify_all();
    }
  }

  int size_;
  std::vector<std::thread> workers_;
  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* body_ = nullptr;
  int num_tasks_ = 0;
  std::atomic<int> next_task_{0};
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

Pool& pool() {
  // Leaked on purpose: joining threads during static destruction at interpreter
  // exit can deadlock.
  static Pool* p = new Pool(configured_threads());
  return *p;
}

} // namespace

int num_threads() {
  return pool().size();
}

void parallel_for(int num_tasks, const std::function<void(int)>& body) {
  if (num_tasks <= 0) return;
  if (num_tasks == 1 || inside_pool_task || pool().size() == 1) {
    for (int t = 0; t < num_tasks; ++t) body(t);
    return;
  }
  pool().run(num_tasks, body);
}

} // namespace marlin::cpu
