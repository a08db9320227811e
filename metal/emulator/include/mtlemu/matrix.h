// simdgroup_matrix<T, 8, 8>: each lane owns the same two elements Apple GPUs
// give it, so thread_elements() code written against the hardware layout
// works unchanged:
//   qid = lane / 4
//   row = (qid & 4) + (lane / 2) % 4
//   col = (qid & 2) * 2 + (lane % 2) * 2      elements (row, col), (row, col+1)
// Loads and stores are per lane (no synchronisation); multiply-accumulate is
// a simd collective that gathers A and B from all 32 lanes.
#pragma once
#include "mtlemu/simd.h"

namespace metal {

namespace detail {
struct FragCoord {
  uint row, col;
};
inline FragCoord frag_coord(uint lane) {
  uint qid = lane / 4;
  return {(qid & 4) + (lane / 2) % 4, (qid & 2) * 2 + (lane % 2) * 2};
}
inline FragCoord my_frag_coord() { return frag_coord(mtlemu_lane()->thread_index_in_simdgroup); }
}  // namespace detail

template <class T, int Cols = 8, int Rows = 8>
struct simdgroup_matrix {
  static_assert(Cols == 8 && Rows == 8, "mtlemu supports 8x8 simdgroup matrices");
  using element_type = T;
  vec<T, 2> elems;

  simdgroup_matrix() = default;
  // MSL: a matrix with `diag` on the diagonal and zero elsewhere.
  explicit simdgroup_matrix(T diag) {
    auto c = detail::my_frag_coord();
    elems[0] = c.row == c.col ? diag : T(0);
    elems[1] = c.row == c.col + 1 ? diag : T(0);
  }
  vec<T, 2>& thread_elements() { return elems; }
  const vec<T, 2>& thread_elements() const { return elems; }
};

typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;
typedef simdgroup_matrix<half, 8, 8> simdgroup_half8x8;
typedef simdgroup_matrix<bfloat, 8, 8> simdgroup_bfloat8x8;

template <class T, int Cols, int Rows>
inline simdgroup_matrix<T, Cols, Rows> make_filled_simdgroup_matrix(const T value) {
  simdgroup_matrix<T, Cols, Rows> m;
  m.elems = vec<T, 2>(value);
  return m;
}

// Element (r, c) of the loaded matrix is src[(origin.y + r) * elements_per_row
// + origin.x + c]; with transpose it is the (c, r) element of that block.
template <class T, int C, int R, class P>
inline void simdgroup_load(simdgroup_matrix<T, C, R>& d, P src, size_t elements_per_row = C,
                           ulong2 matrix_origin = ulong2(0), bool transpose_matrix = false) {
  auto c = detail::my_frag_coord();
  for (uint i = 0; i < 2; ++i) {
    size_t r = c.row, k = c.col + i;
    if (transpose_matrix) {
      size_t t = r;
      r = k;
      k = t;
    }
    d.elems[i] = static_cast<T>(src[(matrix_origin.y + r) * elements_per_row + matrix_origin.x + k]);
  }
}

template <class T, int C, int R, class P>
inline void simdgroup_store(const simdgroup_matrix<T, C, R>& m, P dst, size_t elements_per_row = C,
                            ulong2 matrix_origin = ulong2(0), bool transpose_matrix = false) {
  using E = std::remove_cvref_t<decltype(dst[0])>;
  auto c = detail::my_frag_coord();
  for (uint i = 0; i < 2; ++i) {
    size_t r = c.row, k = c.col + i;
    if (transpose_matrix) {
      size_t t = r;
      r = k;
      k = t;
    }
    dst[(matrix_origin.y + r) * elements_per_row + matrix_origin.x + k] = static_cast<E>(m.elems[i]);
  }
}

// d = a * b + c, accumulated in float in k order, rounded once to d's type.
template <class TD, class TA, class TB, class TC>
inline void simdgroup_multiply_accumulate(simdgroup_matrix<TD, 8, 8>& d, const simdgroup_matrix<TA, 8, 8>& a,
                                          const simdgroup_matrix<TB, 8, 8>& b,
                                          const simdgroup_matrix<TC, 8, 8>& c) {
  float acc0 = float(c.elems[0]), acc1 = float(c.elems[1]);
  auto pos = detail::my_frag_coord();
  float* xa = reinterpret_cast<float*>(mtlemu_simd_slots());
  float* xb = xa + 64;
  xa[pos.row * 8 + pos.col] = float(a.elems[0]);
  xa[pos.row * 8 + pos.col + 1] = float(a.elems[1]);
  xb[pos.row * 8 + pos.col] = float(b.elems[0]);
  xb[pos.row * 8 + pos.col + 1] = float(b.elems[1]);
  mtlemu_simd_arrive(mtlemu::kOpMatrixMultiply);
  for (uint k = 0; k < 8; ++k) {
    float ak = xa[pos.row * 8 + k];
    acc0 += ak * xb[k * 8 + pos.col];
    acc1 += ak * xb[k * 8 + pos.col + 1];
  }
  d.elems[0] = static_cast<TD>(acc0);
  d.elems[1] = static_cast<TD>(acc1);
}

template <class TD, class TA, class TB>
inline void simdgroup_multiply(simdgroup_matrix<TD, 8, 8>& d, const simdgroup_matrix<TA, 8, 8>& a,
                               const simdgroup_matrix<TB, 8, 8>& b) {
  simdgroup_multiply_accumulate(d, a, b, make_filled_simdgroup_matrix<TD, 8, 8>(TD(0)));
}

}  // namespace metal
