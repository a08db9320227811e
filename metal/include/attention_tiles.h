// Fragment-level helpers of the Metal flash-attention kernels (metal/attention.metal).
//
// An 8x8 simdgroup_matrix gives each lane of the simdgroup two elements of one
// row (Apple's layout, the one MLX's steel kernels use):
//   qid = lane / 4;  row = (qid & 4) + (lane / 2) % 4;  col = (qid & 2) * 2 + (lane % 2) * 2
//   elements (row, col) and (row, col + 1).
// The four lanes holding one row differ in lane bits 0 and 3, so row reductions
// are two simd_shuffle_xor steps (1 and 8).  Fragments are filled and read
// through thread_elements(): that converts the input dtype to fp32 on the way
// in (all simdgroup_matrix math is fp32) and lets loads take any strides.
#pragma once

#include <metal_stdlib>

namespace marlin {

METAL_FUNC int frag_row(uint lane) {
  const uint qid = lane / 4;
  return int((qid & 4) + (lane / 2) % 4);
}
METAL_FUNC int frag_col(uint lane) {
  const uint qid = lane / 4;
  return int((qid & 2) * 2 + (lane % 2) * 2);
}

// Reductions over the 4 lanes that hold one fragment row.
METAL_FUNC float row_max(float x) {
  x = metal::max(x, metal::simd_shuffle_xor(x, ushort(1)));
  return metal::max(x, metal::simd_shuffle_xor(x, ushort(8)));
}
METAL_FUNC float row_sum(float x) {
  x += metal::simd_shuffle_xor(x, ushort(1));
  return x + metal::simd_shuffle_xor(x, ushort(8));
}

typedef metal::simdgroup_matrix<float, 8, 8> frag_t;

METAL_FUNC frag_t zero_frag() {
  return metal::make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
}

// One element of an additive mask (fp32 / fp16 / bf16, selected at run time).
METAL_FUNC float load_additive_mask(const device uchar* mask, int mask_type, marlin_i64 i) {
  if (mask_type == kAttnMaskF16) return float(((const device half*)mask)[i]);
  if (mask_type == kAttnMaskBF16) return float(((const device bfloat*)mask)[i]);
  return ((const device float*)mask)[i];
}

} // namespace marlin
