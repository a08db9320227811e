// Function constants the way MLX kernels use them.
#include <metal_stdlib>
using namespace metal;

constant bool has_bias [[function_constant(0)]];
constant int scale_shift [[function_constant(1)]];
constant float alpha [[function_constant(2)]];
constant bool bias_and_shift = has_bias && (scale_shift > 0);
constant int shift_or_one = is_function_constant_defined(scale_shift) ? scale_shift : 1;

kernel void apply(device float* x [[buffer(0)]],
                  device const float* bias [[buffer(1)]],
                  device int* flags [[buffer(2)]],
                  uint i [[thread_position_in_grid]]) {
  float v = x[i] * alpha;
  if (has_bias) v += bias[i];
  x[i] = v * float(1 << shift_or_one);
  if (i == 0) {
    flags[0] = bias_and_shift ? 1 : 0;
    flags[1] = is_function_constant_defined(has_bias) ? 1 : 0;
    flags[2] = shift_or_one;
  }
}
