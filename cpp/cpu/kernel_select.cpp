#include <cstdlib>
#include <cstring>

#include "cpu/fp4_gemm_kernels.h"

namespace marlin::cpu {
namespace {

KernelTable pick() {
  // MLX_MARLIN_CPU_ISA=generic|avx2|avx512 forces a build (for tests and benchmarks).
  const char* forced = std::getenv("MLX_MARLIN_CPU_ISA");
#if defined(MARLIN_HAVE_X86_KERNELS)
  __builtin_cpu_init();
  bool has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl");
  bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (forced) {
    if (!std::strcmp(forced, "avx512") && has512) return kernels_avx512();
    if (!std::strcmp(forced, "avx2") && has2) return kernels_avx2();
    if (!std::strcmp(forced, "generic")) return kernels_generic();
  }
  if (has512) return kernels_avx512();
  if (has2) return kernels_avx2();
#endif
  (void)forced;
  return kernels_generic();
}

} // namespace

const KernelTable& select_kernels() {
  static const KernelTable table = pick();
  return table;
}

} // namespace marlin::cpu
