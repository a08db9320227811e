// Emulator runtime: kernel registry, threadgroup scheduler (one fiber per
// thread), barriers, simd collectives, threadgroup memory arena and the
// bounds/race checks called from instrumented kernel code.
//
// Linked into every kernel module; only mtlemu_get_registry is exported.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <set>
#include <string>
#include <vector>

#include "fiber.h"
#define MTLEMU_NO_HOST_WRAPPER  // runtime is built without exceptions
#include "mtlemu/launch.h"
#include "mtlemu/rt.h"

// void mtlemu_fiber_switch(void** save_sp /*rdi*/, void* load_sp /*rsi*/)
asm(R"(
  .text
  .globl mtlemu_fiber_switch
  .hidden mtlemu_fiber_switch
  .type mtlemu_fiber_switch,@function
  .p2align 4
mtlemu_fiber_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size mtlemu_fiber_switch, .-mtlemu_fiber_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");

namespace mtlemu {
namespace {

// Per-thread fiber stack; MTLEMU_STACK_KB overrides (kernels with large
// private arrays). Overflow hits a guard page instead of a neighbour.
const size_t kStackBytes = [] {
  const char* e = getenv("MTLEMU_STACK_KB");
  size_t kb = e ? strtoul(e, nullptr, 10) : 0;
  return (kb >= 64 ? kb : 256) * 1024;
}();
constexpr size_t kGuardBytes = 4096;
constexpr size_t kMaxThreads = 1024;         // Metal's limit per threadgroup
constexpr size_t kMetalTgMemLimit = 32768;   // Apple GPU threadgroup memory
constexpr size_t kArenaBytes = 1 << 20;      // room for oversubscription diagnostics
constexpr size_t kTgRedzone = 64;            // gap between threadgroup allocations
// Checked launches place buffer copies in one reserved address range with
// wide unmapped gaps, so any address inside the range but outside a buffer
// is an out-of-bounds access (and uninstrumented ones fault).
constexpr size_t kHeapReserve = size_t(64) << 30;
constexpr size_t kHeapLead = size_t(1) << 30;     // room for negative offsets
constexpr size_t kMinBufGap = size_t(64) << 20;
constexpr size_t kArenaRegion = size_t(64) << 20;  // arena sits in the middle
constexpr size_t kPage = 4096;
constexpr size_t kMaxMessages = 20;
constexpr uint16_t kManyLanes = 0xffff;
constexpr uint64_t kSpinLimit = 1u << 20;   // atomic-load yields without progress => livelock

struct KernelEntry {
  std::string name;
  void (*shim)();
  const ArgRole* roles;
  int nargs;
  int max_threads;  // [[max_total_threads_per_threadgroup]], 0 if none
};

std::vector<KernelEntry>& kernel_table() {
  static std::vector<KernelEntry> table;
  return table;
}

enum class LaneState : uint8_t { Runnable, Blocked, Done };
enum class WaitKind : uint8_t { None, Barrier, Simd };

struct Lane {
  LaneInfo info;
  void* sp = nullptr;
  char* stack = nullptr;
  LaneState state = LaneState::Done;
  WaitKind wait = WaitKind::None;
};

struct SimdExchange {
  uint32_t mask;
  int op;
  alignas(64) unsigned char data[kSimdWidth * kSlotBytes];
};

struct Simdgroup {
  uint32_t first, count, live, arrived;
  uint64_t gen;
  uint16_t sync_epoch;  // bumped by simdgroup_barrier, for the race checker
  SimdExchange x[2];    // double-buffered by generation: a lane that leaves a
                        // collective early cannot overwrite data still read
};

struct TgAlloc {
  size_t offset, size;
  std::string name;
};

// Race-checker state per threadgroup-memory byte. Epochs identify barrier
// intervals; a byte touched in an older epoch is ordered by a barrier.
struct Shadow {
  uint32_t w_epoch, r_epoch;
  uint16_t w_lane, r_lane;   // r_lane == kManyLanes: several readers
  uint16_t w_sgep, r_sgep;   // simdgroup-barrier epoch at the access
  uint16_t r_sg, pad;        // r_sg == kManyLanes: readers in several simdgroups
};

struct State {
  // launch
  const KernelEntry* kernel = nullptr;
  mtlemu_launch_desc desc{};
  std::vector<mtlemu_buffer> bufs;       // what the kernel sees (checked builds: heap copies)
  std::vector<int> buf_space;              // 1 device, 2 constant (from the kernel's parameters)
  unsigned char* heap = nullptr;            // checked builds: reserved range for buffer copies
  unsigned char* arena_region = nullptr;
  bool race_check = false;
  bool uninit_check = false;
  uint32_t tg_first_epoch = 0;  // epoch at the start of the current threadgroup
  // threadgroup
  uint32_t tg_pos[3]{};
  std::vector<Lane> lanes;
  std::vector<Simdgroup> sgs;
  uint32_t n_lanes = 0, done = 0, barrier_arrived = 0;
  uint64_t spins = 0;     // atomic spin yields since the last sign of progress
  bool aborted = false;   // threadgroup abandoned (livelock)
  uint64_t tg_generation = 0;
  uint32_t epoch = 1;
  unsigned char* arena = nullptr;
  size_t arena_used = 0, arena_payload = 0;
  std::vector<TgAlloc> allocs;
  std::vector<size_t> tg_arg_offsets;
  std::vector<Shadow> shadow;
  // errors
  std::vector<std::string> messages;
  std::set<std::string> seen_keys;
  size_t n_errors = 0;
  std::string last_error;
  std::vector<unsigned char> scratch;
};

State g;
Lane* g_cur = nullptr;
void* g_sched_sp = nullptr;
const bool kChecked =
#ifdef MTLEMU_CHECKED
    true;
#else
    false;
#endif

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

std::string tg_str() { return fmt("(%u,%u,%u)", g.tg_pos[0], g.tg_pos[1], g.tg_pos[2]); }

// Records an error once per key; the count still includes duplicates.
void add_error(const std::string& key, const std::string& msg) {
  ++g.n_errors;
  if (!g.seen_keys.insert(key).second) return;
  if (g.messages.size() < kMaxMessages) g.messages.push_back(msg);
}

std::string kname() { return g.kernel ? g.kernel->name : std::string("?"); }

void* scratch(size_t bytes) {
  if (g.scratch.size() < bytes + 64) g.scratch.resize(bytes + 64);
  std::fill(g.scratch.begin(), g.scratch.end(), 0);
  return g.scratch.data();
}

std::string lane_list(const std::vector<uint32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!s.empty()) s += ",";
    s += j == i ? fmt("%u", ids[i]) : fmt("%u-%u", ids[i], ids[j]);
    i = j + 1;
  }
  return s;
}

// ---------------------------------------------------------------- scheduling

void block_current() {
  Lane* l = g_cur;
  l->state = LaneState::Blocked;
  mtlemu_fiber_switch(&l->sp, g_sched_sp);
}

void complete_simd(Simdgroup& s) {
  SimdExchange& x = s.x[s.gen & 1];
  if (x.op == kOpSimdBarrier) ++s.sync_epoch;
  for (uint32_t i = s.first; i < s.first + s.count; ++i) {
    Lane& l = g.lanes[i];
    if (l.state == LaneState::Blocked && l.wait == WaitKind::Simd) l.state = LaneState::Runnable;
  }
  s.arrived = 0;
  ++s.gen;
  g.spins = 0;
}

void lane_finished(Lane* l) {
  g.spins = 0;
  l->state = LaneState::Done;
  ++g.done;
  Simdgroup& s = g.sgs[l->info.simdgroup_index_in_threadgroup];
  --s.live;
  // Lanes that returned become inactive; a collective the others already
  // wait in completes without them, as on the GPU.
  if (s.arrived > 0 && s.arrived == s.live) complete_simd(s);
}

void fiber_entry() {
  Lane* l = g_cur;
  g.kernel->shim();
  lane_finished(l);
  mtlemu_fiber_switch(&l->sp, g_sched_sp);
  __builtin_trap();  // a finished fiber is never resumed
}

void ensure_stacks(uint32_t n) {
  if (g.lanes.size() < n) g.lanes.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    if (g.lanes[i].stack) continue;
    void* m = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
      perror("mtlemu: mmap fiber stack");
      abort();
    }
    mprotect(m, kGuardBytes, PROT_NONE);  // overflow faults instead of corrupting a neighbour
    g.lanes[i].stack = static_cast<char*>(m);
  }
}

void report_deadlock() {
  std::vector<uint32_t> at_barrier, at_simd, finished;
  for (uint32_t i = 0; i < g.n_lanes; ++i) {
    Lane& l = g.lanes[i];
    if (l.state == LaneState::Done) finished.push_back(i);
    else if (l.wait == WaitKind::Barrier) at_barrier.push_back(i);
    else at_simd.push_back(i);
  }
  std::string msg = fmt("deadlock in kernel '%s', threadgroup %s:", kname().c_str(), tg_str().c_str());
  if (!at_barrier.empty())
    msg += fmt(" threads [%s] wait at threadgroup_barrier;", lane_list(at_barrier).c_str());
  if (!at_simd.empty())
    msg += fmt(" threads [%s] wait in a simd collective/simdgroup_barrier;", lane_list(at_simd).c_str());
  if (!finished.empty())
    msg += fmt(" threads [%s] already returned;", lane_list(finished).c_str());
  msg += " every thread of a threadgroup must reach each threadgroup_barrier";
  add_error("deadlock", msg);
}

void poison_arena() {
  if (kChecked) memset(g.arena, 0xff, std::min(kArenaBytes, g.arena_used + kTgRedzone));
  g.arena_used = 0;
  g.arena_payload = 0;
  g.allocs.clear();
}

void* arena_alloc(size_t bytes, size_t align, std::string name) {
  align = std::max<size_t>(align, 16);
  size_t off = (g.arena_used + kTgRedzone + align - 1) & ~(align - 1);
  if (off + bytes > kArenaBytes) {
    add_error("arena", fmt("kernel '%s': threadgroup memory request of %zu bytes for '%s' exceeds the emulator arena",
                           kname().c_str(), bytes, name.c_str()));
    return scratch(bytes);
  }
  g.arena_used = off + bytes;
  g.arena_payload += bytes;
  if (g.arena_payload > kMetalTgMemLimit)
    add_error("tglimit", fmt("kernel '%s' uses %zu bytes of threadgroup memory; Metal allows %zu",
                             kname().c_str(), g.arena_payload, kMetalTgMemLimit));
  g.allocs.push_back({off, bytes, std::move(name)});
  return g.arena + off;
}

void run_threadgroup(uint32_t gx, uint32_t gy, uint32_t gz) {
  const auto& d = g.desc;
  g.tg_pos[0] = gx, g.tg_pos[1] = gy, g.tg_pos[2] = gz;
  ++g.tg_generation;
  ++g.epoch;
  g.tg_first_epoch = g.epoch;
  poison_arena();
  g.tg_arg_offsets.clear();
  for (int i = 0; i < d.n_threadgroup; ++i) {
    auto* p = static_cast<unsigned char*>(arena_alloc(d.threadgroup_bytes[i], 16, fmt("threadgroup(%d)", i)));
    g.tg_arg_offsets.push_back(p - g.arena);
  }
  uint32_t n = g.n_lanes;
  uint32_t nsg = (n + kSimdWidth - 1) / kSimdWidth;
  for (uint32_t s = 0; s < nsg; ++s) {
    Simdgroup& sg = g.sgs[s];
    sg.first = s * kSimdWidth;
    sg.count = std::min(kSimdWidth, n - sg.first);
    sg.live = sg.count;
    sg.arrived = 0;
  }
  for (uint32_t i = 0; i < n; ++i) {
    Lane& l = g.lanes[i];
    LaneInfo& li = l.info;
    uint32_t tx = i % d.threads[0], ty = (i / d.threads[0]) % d.threads[1], tz = i / (d.threads[0] * d.threads[1]);
    uint32_t t[3] = {tx, ty, tz}, gp[3] = {gx, gy, gz};
    for (int k = 0; k < 3; ++k) {
      li.thread_position_in_threadgroup[k] = t[k];
      li.threadgroup_position_in_grid[k] = gp[k];
      li.threads_per_threadgroup[k] = d.threads[k];
      li.threadgroups_per_grid[k] = d.grid[k];
      li.threads_per_grid[k] = d.grid[k] * d.threads[k];
      li.thread_position_in_grid[k] = gp[k] * d.threads[k] + t[k];
    }
    li.thread_index_in_threadgroup = i;
    li.thread_index_in_simdgroup = i % kSimdWidth;
    li.simdgroup_index_in_threadgroup = i / kSimdWidth;
    li.simdgroups_per_threadgroup = nsg;
    // Stagger stack tops: stacks are kStackBytes apart, so unstaggered tops
    // would all map to the same L1 cache sets and evict each other.
    l.sp = fiber_init_stack(l.stack + kStackBytes - (i % 64) * 64 - (i / 64 % 8) * 4096, fiber_entry);
    l.state = LaneState::Runnable;
    l.wait = WaitKind::None;
  }
  g.done = 0;
  g.barrier_arrived = 0;
  g.spins = 0;
  g.aborted = false;
  while (g.done < n && !g.aborted) {
    bool progressed = false;
    for (uint32_t i = 0; i < n; ++i) {
      Lane& l = g.lanes[i];
      if (l.state != LaneState::Runnable) continue;
      g_cur = &l;
      mtlemu_fiber_switch(&g_sched_sp, l.sp);
      progressed = true;
      if (g.aborted) break;
    }
    if (!progressed && !g.aborted) {
      report_deadlock();
      break;
    }
  }
  g_cur = nullptr;
}

// ---------------------------------------------------------------- watchdog

// A thread stuck in a loop without barriers or collectives cannot be
// preempted by the cooperative scheduler. With MTLEMU_TIMEOUT_S set, a launch
// running longer than that prints where it is and ends the process (exit
// status 124) instead of hanging a test run.
class Watchdog {
 public:
  explicit Watchdog(double seconds) {
    if (seconds <= 0) return;
    thread_ = std::thread([this, seconds] {
      std::unique_lock<std::mutex> lock(mutex_);
      if (cv_.wait_for(lock, std::chrono::duration<double>(seconds), [this] { return done_; })) return;
      fprintf(stderr,
              "mtlemu: kernel '%s' still running after %.1f s in threadgroup (%u,%u,%u) - a thread loops without "
              "reaching a barrier or collective? (MTLEMU_TIMEOUT_S)\n",
              g.kernel ? g.kernel->name.c_str() : "?", seconds, g.tg_pos[0], g.tg_pos[1], g.tg_pos[2]);
      fflush(stderr);
      _exit(124);
    });
  }
  ~Watchdog() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

double watchdog_seconds() {
  const char* e = getenv("MTLEMU_TIMEOUT_S");
  return e ? atof(e) : 0.0;
}

// ---------------------------------------------------------------- launching

void* reserve(size_t bytes) {
  void* m = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) {
    perror("mtlemu: reserving address space");
    abort();
  }
  return m;
}

size_t page_round(size_t n) { return (n + kPage - 1) & ~(kPage - 1); }

// Checked builds run on private copies of the buffers inside the reserved
// heap range: an access just past one buffer can never land in another.
bool place_buffers() {
  if (!g.heap) g.heap = static_cast<unsigned char*>(reserve(kHeapReserve));
  size_t cursor = kHeapLead;
  for (size_t i = 0; i < g.bufs.size(); ++i) {
    auto& b = g.bufs[i];
    if (!b.ptr) continue;
    size_t mapped = page_round(std::max<size_t>(b.size, 1));
    if (cursor + mapped + kMinBufGap > kHeapReserve) {
      g.last_error = fmt("kernel '%s': buffers too large for the checked heap (%zu GiB); use a fast build",
                         kname().c_str(), kHeapReserve >> 30);
      return false;
    }
    unsigned char* p = g.heap + cursor;
    mprotect(p, mapped, PROT_READ | PROT_WRITE);
    memcpy(p, b.ptr, b.size);
    b.ptr = p;
    cursor += mapped + std::max(kMinBufGap, page_round(b.size));
  }
  return true;
}

void release_buffers() {
  for (size_t i = 0; i < g.bufs.size(); ++i) {
    const auto& orig = g.desc.buffers[i];
    auto& b = g.bufs[i];
    if (!orig.ptr) continue;
    // Only write back what changed: constant buffers may live in read-only memory.
    if (memcmp(orig.ptr, b.ptr, orig.size) != 0) memcpy(orig.ptr, b.ptr, orig.size);
    size_t mapped = page_round(std::max<size_t>(b.size, 1));
    madvise(b.ptr, mapped, MADV_DONTNEED);
    mprotect(b.ptr, mapped, PROT_NONE);
  }
}

int do_launch(const mtlemu_launch_desc* desc) {
  g.messages.clear();
  g.seen_keys.clear();
  g.n_errors = 0;
  g.kernel = nullptr;
  for (const auto& k : kernel_table())
    if (desc->kernel && k.name == desc->kernel) g.kernel = &k;
  if (!g.kernel) {
    std::string names;
    for (const auto& k : kernel_table()) names += (names.empty() ? "" : ", ") + k.name;
    g.last_error = fmt("unknown kernel '%s' (module has: %s)", desc->kernel ? desc->kernel : "(null)", names.c_str());
    return 1;
  }
  g.desc = *desc;
  uint64_t n = uint64_t(desc->threads[0]) * desc->threads[1] * desc->threads[2];
  if (n == 0 || n > kMaxThreads || desc->grid[0] * desc->grid[1] * desc->grid[2] == 0) {
    g.last_error = fmt("kernel '%s': bad launch size: grid (%u,%u,%u) threadgroups of (%u,%u,%u) threads (1..%zu threads per threadgroup)",
                       g.kernel->name.c_str(), desc->grid[0], desc->grid[1], desc->grid[2], desc->threads[0],
                       desc->threads[1], desc->threads[2], kMaxThreads);
    return 1;
  }
  if (g.kernel->max_threads > 0 && n > uint64_t(g.kernel->max_threads)) {
    g.last_error = fmt("kernel '%s' declares [[max_total_threads_per_threadgroup(%d)]] but was launched with %llu "
                       "threads per threadgroup",
                       g.kernel->name.c_str(), g.kernel->max_threads, (unsigned long long)n);
    return 1;
  }
  g.race_check = kChecked && !(desc->flags & MTLEMU_NO_RACE_CHECK);
  g.uninit_check = kChecked && (desc->flags & MTLEMU_CHECK_UNINITIALIZED);
  if (g.uninit_check && g.shadow.size() != kArenaBytes) g.shadow.assign(kArenaBytes, Shadow{});
  if (!g.arena) {
    g.arena_region = static_cast<unsigned char*>(reserve(kArenaRegion));
    g.arena = g.arena_region + kArenaRegion / 2;
    mprotect(g.arena, kArenaBytes, PROT_READ | PROT_WRITE);
  }
  if (g.race_check && g.shadow.size() != kArenaBytes) g.shadow.assign(kArenaBytes, Shadow{});
  g.buf_space.assign(desc->n_buffers, 1);
  for (int i = 0; i < g.kernel->nargs; ++i) {
    const ArgRole& r = g.kernel->roles[i];
    if (r.kind == kArgBuffer && r.index >= 0 && r.index < desc->n_buffers) g.buf_space[r.index] = r.space;
  }
  g.bufs.assign(desc->buffers, desc->buffers + desc->n_buffers);
  if (kChecked && !place_buffers()) return 1;
  g.n_lanes = static_cast<uint32_t>(n);
  ensure_stacks(g.n_lanes);
  g.sgs.resize((n + kSimdWidth - 1) / kSimdWidth);
  for (uint32_t z = 0; z < desc->grid[2] && g.n_errors == 0; ++z)
    for (uint32_t y = 0; y < desc->grid[1] && g.n_errors == 0; ++y)
      for (uint32_t x = 0; x < desc->grid[0] && g.n_errors == 0; ++x) run_threadgroup(x, y, z);
  if (kChecked) release_buffers();
  if (g.n_errors == 0) {
    g.last_error.clear();
    return 0;
  }
  g.last_error.clear();
  for (const auto& m : g.messages) g.last_error += m + "\n";
  if (g.n_errors > g.messages.size())
    g.last_error += fmt("(%zu problems in total; repeats of the same problem are listed once)\n", g.n_errors);
  return 1;
}

// ---------------------------------------------------------------- checking

const TgAlloc* find_alloc(size_t off, size_t bytes) {
  for (const auto& a : g.allocs)
    if (off >= a.offset && off + bytes <= a.offset + a.size) return &a;
  return nullptr;
}

std::string describe_tg_miss(size_t off, size_t bytes) {
  const TgAlloc* best = nullptr;
  for (const auto& a : g.allocs)
    if (a.offset <= off + bytes && (!best || a.offset > best->offset)) best = &a;
  if (!best) return fmt("at arena offset %zu, before any threadgroup allocation", off);
  long rel = long(off) - long(best->offset);
  return fmt("at byte offset %ld of '%s' (size %zu bytes)", rel, best->name.c_str(), best->size);
}

bool synced_in_simdgroup(uint16_t other_lane, uint16_t then_sgep, uint32_t me) {
  uint32_t sg = me / kSimdWidth;
  return other_lane != kManyLanes && other_lane / kSimdWidth == sg && g.sgs[sg].sync_epoch != then_sgep;
}

void report_race(const char* kind, const TgAlloc& a, size_t off, size_t bytes, uint32_t me, uint32_t other,
                 const char* what) {
  std::string who = other == kManyLanes ? std::string("several threads") : fmt("thread %u", other);
  add_error(fmt("race:%s:%s", kind, a.name.c_str()),
            fmt("threadgroup memory race (%s) in kernel '%s', threadgroup %s: thread %u %s '%s' at byte offset %zu "
                "(%zu bytes) %s %s with no barrier in between",
                kind, kname().c_str(), tg_str().c_str(), me, what, a.name.c_str(), off - a.offset, bytes,
                strcmp(kind, "write-after-read") == 0 ? "read by" : "written by", who.c_str()));
}

void track_race(const TgAlloc& a, size_t off, size_t bytes, bool is_write) {
  const uint32_t me = g_cur->info.thread_index_in_threadgroup;
  const uint16_t my_sg = static_cast<uint16_t>(me / kSimdWidth);
  const uint16_t sgep = g.sgs[my_sg].sync_epoch;
  const uint32_t e = g.epoch;
  for (size_t i = off; i < off + bytes; ++i) {
    Shadow& s = g.shadow[i];
    bool other_wrote = s.w_epoch == e && s.w_lane != me && !synced_in_simdgroup(s.w_lane, s.w_sgep, me);
    if (is_write) {
      if (!g.race_check) {
        s.w_epoch = e, s.w_lane = static_cast<uint16_t>(me), s.w_sgep = sgep;
        continue;
      }
      if (other_wrote) {
        report_race("write-write", a, off, bytes, me, s.w_lane, "writes");
        break;
      }
      bool other_read = s.r_epoch == e && s.r_lane != me &&
                        !(s.r_sg == my_sg && g.sgs[my_sg].sync_epoch != s.r_sgep);
      if (other_read) {
        report_race("write-after-read", a, off, bytes, me, s.r_lane, "writes");
        break;
      }
      s.w_epoch = e, s.w_lane = static_cast<uint16_t>(me), s.w_sgep = sgep;
    } else {
      if (g.uninit_check && s.w_epoch < g.tg_first_epoch) {
        add_error(fmt("uninit:%s", a.name.c_str()),
                  fmt("read of uninitialized threadgroup memory in kernel '%s', threadgroup %s: thread %u reads "
                      "'%s' at byte offset %zu (%zu bytes), which no thread of this threadgroup has written",
                      kname().c_str(), tg_str().c_str(), me, a.name.c_str(), i - a.offset, bytes));
        break;
      }
      if (!g.race_check) continue;
      if (other_wrote) {
        report_race("read-after-write", a, off, bytes, me, s.w_lane, "reads");
        break;
      }
      if (s.r_epoch != e) {
        s.r_epoch = e, s.r_lane = static_cast<uint16_t>(me), s.r_sg = my_sg;
      } else {
        if (s.r_lane != me) s.r_lane = kManyLanes;
        if (s.r_sg != my_sg) s.r_sg = kManyLanes;
      }
      s.r_sgep = sgep;
    }
  }
}

std::string thread_str() {
  const auto& p = g_cur->info.thread_position_in_grid;
  return fmt("thread_position_in_grid (%u,%u,%u)", p[0], p[1], p[2]);
}

const char* space_name(size_t i) { return g.buf_space[i] == 2 ? "constant" : "device"; }

void* check_heap(void* p, uint64_t bytes, int is_write, const char* what) {
  auto a = reinterpret_cast<uintptr_t>(p);
  for (size_t i = 0; i < g.bufs.size(); ++i) {
    auto lo = reinterpret_cast<uintptr_t>(g.bufs[i].ptr);
    if (!g.bufs[i].ptr || a < lo || a + bytes > lo + g.bufs[i].size) continue;
    if (is_write && g.buf_space[i] == 2) {
      add_error(fmt("constwrite:%zu", i),
                fmt("write of %llu bytes to constant buffer(%zu) at byte offset %lu in kernel '%s', %s",
                    (unsigned long long)bytes, i, (unsigned long)(a - lo), kname().c_str(), thread_str().c_str()));
      return scratch(bytes);
    }
    return p;
  }
  // Report against the nearest buffer below the address.
  long best = -1;
  for (size_t i = 0; i < g.bufs.size(); ++i)
    if (g.bufs[i].ptr && reinterpret_cast<uintptr_t>(g.bufs[i].ptr) <= a &&
        (best < 0 || g.bufs[i].ptr > g.bufs[best].ptr))
      best = long(i);
  if (best < 0) {
    add_error(fmt("oob:low:%d", is_write),
              fmt("out-of-bounds %s of %llu bytes in kernel '%s': address %p lies before every bound buffer, %s",
                  what, (unsigned long long)bytes, kname().c_str(), p, thread_str().c_str()));
    return scratch(bytes);
  }
  size_t i = size_t(best);
  long off = long(a - reinterpret_cast<uintptr_t>(g.bufs[i].ptr));
  add_error(fmt("oob:%zu:%d", i, is_write),
            fmt("out-of-bounds %s of %llu bytes in kernel '%s': %s buffer(%zu) at byte offset %ld (buffer size %zu "
                "bytes), %s, threadgroup %s",
                what, (unsigned long long)bytes, kname().c_str(), space_name(i), i, off, g.bufs[i].size,
                thread_str().c_str(), tg_str().c_str()));
  return scratch(bytes);
}

void* check_tg(void* p, uint64_t bytes, int is_write, bool track) {
  auto* c = static_cast<unsigned char*>(p);
  size_t off = c - g.arena;
  const TgAlloc* a = (c >= g.arena && c < g.arena + kArenaBytes) ? find_alloc(off, bytes) : nullptr;
  if (!a) {
    std::string where = (c >= g.arena && c < g.arena + kArenaBytes)
                            ? describe_tg_miss(off, bytes)
                            : fmt("%zd bytes from the start of threadgroup memory", (ssize_t)(c - g.arena));
    add_error(fmt("tgoob:%d:%s", is_write, where.c_str()),
              fmt("out-of-bounds threadgroup %s of %llu bytes in kernel '%s' %s, thread %u, threadgroup %s",
                  is_write ? "write" : "read", (unsigned long long)bytes, kname().c_str(), where.c_str(),
                  g_cur->info.thread_index_in_threadgroup, tg_str().c_str()));
    return scratch(bytes);
  }
  if (track && (g.race_check || g.uninit_check)) track_race(*a, off, bytes, is_write != 0);
  return p;
}

inline bool in_range(const void* p, const unsigned char* lo, size_t n) {
  return lo && static_cast<size_t>(static_cast<const unsigned char*>(p) - lo) < n;
}

}  // namespace
}  // namespace mtlemu

using namespace mtlemu;

// ---------------------------------------------------------------- rt.h

extern "C" {

const LaneInfo* mtlemu_lane(void) { return &g_cur->info; }

void* mtlemu_arg_buffer(int index, size_t min_bytes) {
  if (index < 0 || index >= static_cast<int>(g.bufs.size()) || !g.bufs[index].ptr) {
    add_error(fmt("arg:%d", index), fmt("kernel '%s' reads [[buffer(%d)]] but the launch bound %zu buffers",
                                        kname().c_str(), index, g.bufs.size()));
    return scratch(min_bytes);
  }
  if (g.bufs[index].size < min_bytes) {
    add_error(fmt("argsize:%d", index), fmt("kernel '%s': [[buffer(%d)]] is bound to %zu bytes but its parameter "
                                            "type needs %zu",
                                            kname().c_str(), index, g.bufs[index].size, min_bytes));
    return scratch(min_bytes);
  }
  return g.bufs[index].ptr;
}

void* mtlemu_arg_buffer_optional(int index, size_t min_bytes) {
  // Kernels may read fields of a parameter their function constant disabled
  // (MLX's steel GEMM reads addmm_params->alpha unconditionally; the Metal
  // compiler drops the dead load). Hand them zeros instead of a null pointer.
  alignas(64) static unsigned char unbound[1 << 16];
  if (index < 0 || index >= static_cast<int>(g.bufs.size()) || !g.bufs[index].ptr) {
    memset(unbound, 0, sizeof unbound);
    return unbound;
  }
  return mtlemu_arg_buffer(index, min_bytes);
}

void* mtlemu_arg_threadgroup(int index) {
  if (index < 0 || index >= static_cast<int>(g.tg_arg_offsets.size())) {
    add_error(fmt("tgarg:%d", index), fmt("kernel '%s' uses [[threadgroup(%d)]] but the launch gave %zu threadgroup sizes",
                                          kname().c_str(), index, g.tg_arg_offsets.size()));
    return scratch(16);
  }
  return g.arena + g.tg_arg_offsets[index];
}

void mtlemu_threadgroup_barrier(void) {
  Lane* l = g_cur;
  if (++g.barrier_arrived == g.n_lanes) {
    g.barrier_arrived = 0;
    g.spins = 0;
    ++g.epoch;
    for (uint32_t i = 0; i < g.n_lanes; ++i) {
      Lane& o = g.lanes[i];
      if (o.state == LaneState::Blocked && o.wait == WaitKind::Barrier) o.state = LaneState::Runnable;
    }
    return;  // the last arriver goes on without a switch
  }
  l->wait = WaitKind::Barrier;
  block_current();
  l->wait = WaitKind::None;
}

unsigned char* mtlemu_simd_slots(void) {
  Simdgroup& s = g.sgs[g_cur->info.simdgroup_index_in_threadgroup];
  return s.x[s.gen & 1].data;
}

uint32_t mtlemu_simd_arrive(int op) {
  Lane* l = g_cur;
  Simdgroup& s = g.sgs[l->info.simdgroup_index_in_threadgroup];
  SimdExchange& x = s.x[s.gen & 1];
  if (s.arrived == 0) {
    x.mask = 0;
    x.op = op;
  } else if (x.op != op) {
    add_error("divergent", fmt("kernel '%s', threadgroup %s: threads of simdgroup %u wait in different simd "
                               "collectives (ops %d and %d) - divergent control flow around a simd_* call",
                               kname().c_str(), tg_str().c_str(), l->info.simdgroup_index_in_threadgroup, x.op, op));
  }
  x.mask |= 1u << l->info.thread_index_in_simdgroup;
  if (++s.arrived == s.live) {
    complete_simd(s);
  } else {
    l->wait = WaitKind::Simd;
    block_current();
    l->wait = WaitKind::None;
  }
  return x.mask;
}

void* mtlemu_tg_alloc(TgSite* site, size_t bytes, size_t align) {
  if (site->generation != g.tg_generation) {
    site->ptr = arena_alloc(bytes, align, site->name);
    site->generation = g.tg_generation;
  }
  return site->ptr;
}

void* mtlemu_check(void* p, uint64_t bytes, int is_write) {
  if (in_range(p, g.arena_region, kArenaRegion)) return check_tg(p, bytes, is_write, true);
  if (in_range(p, g.heap, kHeapReserve)) return check_heap(p, bytes, is_write, is_write ? "write" : "read");
  return p;  // thread-private memory or program data
}

void* mtlemu_check_atomic(void* p, uint64_t bytes) {
  if (in_range(p, g.arena_region, kArenaRegion)) return check_tg(p, bytes, 1, false);
  if (in_range(p, g.heap, kHeapReserve)) return check_heap(p, bytes, 1, "atomic");
  return p;
}

void mtlemu_atomic_spin(void) {
  Lane* l = g_cur;
  if (++g.spins > kSpinLimit) {
    add_error("livelock", fmt("livelock in kernel '%s', threadgroup %s: threads spin on atomics that no thread of "
                              "the threadgroup changes (threadgroups run one after another in the emulator, so "
                              "waiting for a later threadgroup never ends)",
                              kname().c_str(), tg_str().c_str()));
    g.aborted = true;
    l->state = LaneState::Blocked;  // abandoned with the rest of the threadgroup
  }
  mtlemu_fiber_switch(&l->sp, g_sched_sp);
}

void mtlemu_atomic_progress(void) { g.spins = 0; }

int mtlemu_function_constant(int index, double* value) {
  for (int i = 0; i < g.desc.n_function_constants; ++i)
    if (g.desc.function_constants[i].index == index) {
      *value = g.desc.function_constants[i].value;
      return 1;
    }
  *value = 0;
  return 0;
}

void mtlemu_report(const char* msg) { add_error(msg, fmt("kernel '%s': %s", kname().c_str(), msg)); }

void mtlemu_register_kernel(const char* name, void (*shim)(void), const ArgRole* roles, int nargs, int max_threads) {
  // A non-template kernel in a header included by several sources registers once.
  for (const auto& k : kernel_table())
    if (k.name == name) return;
  kernel_table().push_back({name, shim, roles, nargs, max_threads});
}

}  // extern "C"

// ---------------------------------------------------------------- registry

namespace {
int reg_count() { return static_cast<int>(kernel_table().size()); }
const char* reg_name(int i) {
  return i >= 0 && i < reg_count() ? kernel_table()[i].name.c_str() : nullptr;
}
// One launch at a time per module: the runtime state is global.
std::mutex g_launch_mutex;
int reg_launch(const mtlemu_launch_desc* d) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  Watchdog watchdog(watchdog_seconds());
  return do_launch(d);
}
const char* reg_last_error() { return g.last_error.c_str(); }
const mtlemu_registry kRegistry = {MTLEMU_ABI_VERSION, kChecked ? 1 : 0, reg_count, reg_name,
                                   reg_launch, reg_last_error};
}  // namespace

MTLEMU_API const mtlemu_registry* mtlemu_get_registry(void) { return &kRegistry; }

// ---------------------------------------------------------------- bfloat
// clang lowers float->__bf16 conversions to these compiler-rt helpers, which
// the system libgcc (GCC 12) lacks. Round to nearest even; NaNs stay quiet NaNs.
extern "C" MTLEMU_HIDDEN __bf16 __truncsfbf2(float x) {
  uint32_t bits = __builtin_bit_cast(uint32_t, x);
  uint16_t out;
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    out = static_cast<uint16_t>((bits >> 16) | 0x0040u);
  } else {
    bits += 0x7fffu + ((bits >> 16) & 1u);
    out = static_cast<uint16_t>(bits >> 16);
  }
  return __builtin_bit_cast(__bf16, out);
}
// double -> bfloat goes through float; the double rounding only matters for
// doubles within 2^-24 relative of a bfloat rounding midpoint.
extern "C" MTLEMU_HIDDEN __bf16 __truncdfbf2(double x) { return __truncsfbf2(static_cast<float>(x)); }
