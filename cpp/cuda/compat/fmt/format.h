// Minimal stand-in for {fmt}, which MLX's CUDA headers include (lru_cache.h, ...) but
// the MLX wheels do not ship.  Those headers only call fmt::format in error paths of
// templates this project never instantiates; this keeps them compiling.  The message
// is returned unformatted.  Put on the include path only when no real fmt is found.
#pragma once
#include <string>

namespace fmt {
template <typename... Args>
inline std::string format(const char* f, Args&&...) {
  return std::string(f);
}
} // namespace fmt
