// Internal interface between emulated kernel code (metal_stdlib, generated
// launch shims) and the emulator runtime (runtime/runtime.cpp). Kernel code
// never calls these directly; they back the MSL builtins.
#pragma once
#include <cstddef>
#include <cstdint>

#define MTLEMU_API extern "C" __attribute__((visibility("default")))
#define MTLEMU_HIDDEN __attribute__((visibility("hidden")))

namespace mtlemu {

constexpr unsigned kSimdWidth = 32;
// Bytes each lane may deposit into a simdgroup exchange slot; bounds the size
// of a value passed to simd_shuffle & co.
constexpr unsigned kSlotBytes = 64;

// Per-lane builtin values, filled in by the scheduler before a lane starts.
struct LaneInfo {
  uint32_t thread_position_in_grid[3];
  uint32_t thread_position_in_threadgroup[3];
  uint32_t threadgroup_position_in_grid[3];
  uint32_t threads_per_threadgroup[3];
  uint32_t threadgroups_per_grid[3];
  uint32_t threads_per_grid[3];
  uint32_t thread_index_in_threadgroup;
  uint32_t thread_index_in_simdgroup;
  uint32_t simdgroup_index_in_threadgroup;
  uint32_t simdgroups_per_threadgroup;
};

// Roles of kernel parameters, recorded by the pre-pass from MSL attributes.
enum ArgKind : int {
  kArgBuffer = 0,       // [[buffer(n)]]
  kArgThreadgroup = 1,  // [[threadgroup(n)]]
  kArgBuiltin = 2,      // [[thread_position_in_grid]] & co
  kArgLimits = 3,       // table terminator; index = [[max_total_threads_per_threadgroup]] or 0
};
enum Builtin : int {
  kThreadPositionInGrid,
  kThreadPositionInThreadgroup,
  kThreadgroupPositionInGrid,
  kThreadsPerThreadgroup,
  kThreadgroupsPerGrid,
  kThreadsPerGrid,
  kThreadIndexInThreadgroup,
  kThreadIndexInSimdgroup,
  kSimdgroupIndexInThreadgroup,
  kSimdgroupsPerThreadgroup,
  kThreadsPerSimdgroup,
  kThreadIndexInQuadgroup,
  kQuadgroupIndexInThreadgroup,
};
struct ArgRole {
  int kind;
  int index;      // buffer / threadgroup slot, or Builtin
  int space = 0;     // buffers: 1 device, 2 constant (writes to constant buffers are errors)
  int optional = 0;  // [[buffer(i), function_constant(c)]]: may be unbound
};

// One threadgroup-scope variable declared inside a function body. The
// pre-pass emits a function-local static per declaration site; the runtime
// hands every lane of a threadgroup the same arena block for it.
struct TgSite {
  const char* name;
  const char* file;
  int line;
  uint64_t generation;  // threadgroup generation this site was last placed in
  void* ptr;
};

// Simd collective kinds, used to detect divergent collectives (lanes of one
// simdgroup waiting in different collective operations).
enum SimdOp : int {
  kOpShuffle = 1, kOpShuffleXor, kOpShuffleUp, kOpShuffleDown, kOpBroadcast,
  kOpSum, kOpProduct, kOpMax, kOpMin, kOpPrefixInclusive, kOpPrefixExclusive,
  kOpBallot, kOpAll, kOpAny, kOpAnd, kOpOr, kOpXor, kOpMatrixMultiply,
  kOpBroadcastFirst, kOpSimdBarrier,
};

}  // namespace mtlemu

extern "C" {
// The lane currently executing (valid only inside a kernel).
MTLEMU_HIDDEN const mtlemu::LaneInfo* mtlemu_lane(void);
// Buffer / threadgroup-argument binding for the running launch. Reports an
// error (and returns a scratch block) when a buffer is missing or smaller
// than min_bytes.
MTLEMU_HIDDEN void* mtlemu_arg_buffer(int index, size_t min_bytes);
// Same for optional parameters ([[buffer(i), function_constant(c)]]): an
// unbound buffer yields a zero-filled block, no error.
MTLEMU_HIDDEN void* mtlemu_arg_buffer_optional(int index, size_t min_bytes);
MTLEMU_HIDDEN void* mtlemu_arg_threadgroup(int index);
// Threadgroup barrier: blocks until every lane of the threadgroup arrives.
MTLEMU_HIDDEN void mtlemu_threadgroup_barrier(void);
// Exchange area of this lane's simdgroup for its next collective: a block of
// kSimdWidth * kSlotBytes bytes; the lane writes its own slot before arriving.
MTLEMU_HIDDEN unsigned char* mtlemu_simd_slots(void);
// Arrive at a simd collective; returns the mask of lanes that took part once
// every live lane of the simdgroup has arrived.
MTLEMU_HIDDEN uint32_t mtlemu_simd_arrive(int op);
MTLEMU_HIDDEN void* mtlemu_tg_alloc(mtlemu::TgSite* site, size_t bytes, size_t align);
// Checked-build hook, called from every instrumented load and store (see
// instrument.py). Accesses to threadgroup memory are bounds and race
// checked, accesses to the checked heap holding the bound buffers are bounds
// checked, anything else (thread-private memory) passes. Returns the pointer
// to use: the original, or a harmless scratch block after an out-of-bounds
// access was reported.
MTLEMU_HIDDEN void* mtlemu_check(void* p, uint64_t bytes, int is_write);
// Bounds check without race tracking, used by atomics.
MTLEMU_HIDDEN void* mtlemu_check_atomic(void* p, uint64_t bytes);
// Current launch's value of [[function_constant(index)]]; returns 0 when the
// launch did not define it.
MTLEMU_HIDDEN int mtlemu_function_constant(int index, double* value);
// Atomic loads and failed compare-exchanges yield to the other lanes so that
// spin-waits on a flag set by another thread of the threadgroup make
// progress; a spin that no thread can end is reported as a livelock.
MTLEMU_HIDDEN void mtlemu_atomic_spin(void);
// Atomic stores and read-modify-writes: the memory other lanes spin on may
// have changed.
MTLEMU_HIDDEN void mtlemu_atomic_progress(void);
// Record an error for the running launch.
MTLEMU_HIDDEN void mtlemu_report(const char* msg);
// Register a kernel (called from static constructors of generated code).
MTLEMU_HIDDEN void mtlemu_register_kernel(const char* name, void (*shim)(void),
                                          const mtlemu::ArgRole* roles, int nargs, int max_threads);
}
