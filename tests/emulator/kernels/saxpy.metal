#include <metal_stdlib>
using namespace metal;

struct Params {
  uint n;
  float scale;
};

kernel void saxpy(device const float* x [[buffer(0)]],
                  device float* y [[buffer(1)]],
                  constant Params& p [[buffer(2)]],
                  uint tid [[thread_position_in_grid]]) {
  if (tid >= p.n) return;
  y[tid] = p.scale * x[tid] + y[tid];
}
