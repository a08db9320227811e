// Single-core AVX-512 FMA throughput: 12 independent vfmadd231ps zmm chains.
// gcc -O2 -mavx512f benchmarks/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak
#include <stdio.h>
#include <time.h>
int main(){
  long iters=200000000;
  clock_t t0=clock();
  __asm__ volatile("vxorps %%zmm0,%%zmm0,%%zmm0\n" ::: "xmm0");
  for(long it=0;it<iters;it++){
    __asm__ volatile(
      "vfmadd231ps %%zmm20,%%zmm21,%%zmm0\n vfmadd231ps %%zmm20,%%zmm21,%%zmm1\n vfmadd231ps %%zmm20,%%zmm21,%%zmm2\n"
      "vfmadd231ps %%zmm20,%%zmm21,%%zmm3\n vfmadd231ps %%zmm20,%%zmm21,%%zmm4\n vfmadd231ps %%zmm20,%%zmm21,%%zmm5\n"
      "vfmadd231ps %%zmm20,%%zmm21,%%zmm6\n vfmadd231ps %%zmm20,%%zmm21,%%zmm7\n vfmadd231ps %%zmm20,%%zmm21,%%zmm8\n"
      "vfmadd231ps %%zmm20,%%zmm21,%%zmm9\n vfmadd231ps %%zmm20,%%zmm21,%%zmm10\n vfmadd231ps %%zmm20,%%zmm21,%%zmm11\n"
      ::: "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11");
  }
  double dt=(double)(clock()-t0)/CLOCKS_PER_SEC;
  printf("1 core (CPU time): %.1f GFLOP/s\n", iters*12.0*32/dt/1e9);
}
