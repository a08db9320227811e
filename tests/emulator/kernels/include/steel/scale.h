// MSL in a header: vector constructors, threadgroup arrays and a kernel
// template all need the pre-pass, so build.py pre-passes included headers.
#pragma once
#include <metal_stdlib>
using namespace metal;

template <typename T>
METAL_FUNC float4 widen(vec<T, 4> v) {
  return float4(v) * 2.0f;
}

template <typename T>
[[kernel]] void scale4(const device vec<T, 4>* in [[buffer(0)]],
                       device float4* out [[buffer(1)]],
                       uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float4 stage[64];
  stage[lid] = widen<T>(in[lid]);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[lid] = stage[63 - lid];
}
