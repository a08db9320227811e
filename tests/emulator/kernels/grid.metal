#include <metal_stdlib>
using namespace metal;

// Records every builtin for every thread of a 3D dispatch.
kernel void builtins(device uint* out [[buffer(0)]],
                     uint3 gid [[thread_position_in_grid]],
                     uint3 tpos [[thread_position_in_threadgroup]],
                     uint3 tgpos [[threadgroup_position_in_grid]],
                     uint3 tptg [[threads_per_threadgroup]],
                     uint3 tgpg [[threadgroups_per_grid]],
                     ushort2 gid2 [[thread_position_in_grid]],
                     uint lid [[thread_index_in_threadgroup]],
                     ushort lane [[thread_index_in_simdgroup]],
                     uint sg [[simdgroup_index_in_threadgroup]],
                     uint nsg [[simdgroups_per_threadgroup]],
                     uint width [[threads_per_simdgroup]]) {
  uint3 grid = tptg * tgpg;
  uint linear = (gid.z * grid.y + gid.y) * grid.x + gid.x;
  device uint* o = out + linear * 16;
  o[0] = gid.x; o[1] = gid.y; o[2] = gid.z;
  o[3] = tpos.x; o[4] = tpos.y; o[5] = tpos.z;
  o[6] = tgpos.x; o[7] = tgpos.y; o[8] = tgpos.z;
  o[9] = gid2.x; o[10] = gid2.y;
  o[11] = lid; o[12] = lane; o[13] = sg; o[14] = nsg; o[15] = width;
}

[[kernel, max_total_threads_per_threadgroup(64)]] void limited(device uint* out [[buffer(0)]],
                                                               uint lid [[thread_index_in_threadgroup]]) {
  out[lid] = lid;
}

template <typename T>
[[kernel, max_total_threads_per_threadgroup(32)]] void limited_t(device T* out [[buffer(0)]],
                                                                 uint lid [[thread_index_in_threadgroup]]) {
  out[lid] = T(lid);
}
template [[kernel, host_name("limited_f32")]] decltype(limited_t<float>) limited_t<float>;
