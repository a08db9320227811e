// Minimal x86-64 System V fibers: a context is just a saved stack pointer.
// The switch saves the callee-saved registers on the old stack and restores
// them from the new one; caller-saved state is already dead at a call site,
// which is what makes this a handful of instructions (swapcontext also saves
// the signal mask with a syscall, ~100x slower).
#pragma once
#include <cstddef>
#include <cstdint>

#if !defined(__x86_64__)
#error "mtlemu fibers are implemented for x86-64 only"
#endif

extern "C" __attribute__((visibility("hidden"))) void mtlemu_fiber_switch(void** save_sp, void* load_sp);

namespace mtlemu {

// Prepares a fresh stack so that the first switch to it "returns" into entry
// with the stack alignment of a normal call. entry must never return.
inline void* fiber_init_stack(char* stack_top, void (*entry)()) {
  auto top = reinterpret_cast<uintptr_t>(stack_top) & ~uintptr_t(15);
  auto* sp = reinterpret_cast<uintptr_t*>(top);
  *--sp = 0;                                     // fake return address of entry
  *--sp = reinterpret_cast<uintptr_t>(entry);    // popped by `ret` in the switch
  for (int i = 0; i < 6; ++i) *--sp = 0;         // rbp rbx r12 r13 r14 r15
  return sp;
}

}  // namespace mtlemu
