// Row-major inputs for the primitives, without needless graph nodes.
#pragma once

#include "mlx/ops.h"

namespace marlin {

namespace mx = mlx::core;

// The kernels read row-major buffers.  Evaluated arrays that already are (weights,
// mostly) are used as they are: every extra graph node costs ~1 us of dispatch on the
// GPU path, which is a visible share of a decode step.
inline mx::array row_contiguous(const mx::array& a, mx::Stream s) {
  if (a.is_available() && a.flags().row_contiguous) return a;
  return mx::contiguous(a, false, s);
}

} // namespace marlin
