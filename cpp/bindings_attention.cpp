// Python binding of the attention op (called from bindings.cpp's module init).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>

#include "ops/attention.h"

namespace nb = nanobind;
using namespace nb::literals;

void init_attention(nb::module_& m) {
  m.def(
      "attention",
      [](const mlx::core::array& q, const mlx::core::array& k, const mlx::core::array& v, float scale,
         const std::optional<std::variant<std::string, mlx::core::array>>& mask,
         const std::optional<mlx::core::array>& sinks, mlx::core::StreamOrDevice s) {
        marlin::AttentionMaskArg m;
        if (mask) {
          if (auto* name = std::get_if<std::string>(&*mask))
            m = *name;
          else
            m = std::get<mlx::core::array>(*mask);
        }
        return marlin::attention(q, k, v, scale, m, sinks, s);
      },
      "q"_a, "k"_a, "v"_a, nb::kw_only(), "scale"_a, "mask"_a = nb::none(), "sinks"_a = nb::none(),
      "stream"_a = nb::none(),
      nb::sig("def attention(q: mlx.core.array, k: mlx.core.array, v: mlx.core.array, *, scale: float, "
              "mask: str | mlx.core.array | None = None, sinks: mlx.core.array | None = None, "
              "stream: mlx.core.Stream | mlx.core.Device | None = None) -> mlx.core.array"),
      R"(Flash attention: ``softmax(scale * q @ k.T + mask) @ v``, computed lazily.

A drop-in for :func:`mlx.core.fast.scaled_dot_product_attention` (inference only):
scores are never materialized; the softmax runs online over key tiles in float32.

Args:
    q (array): Queries ``[B, Hq, Lq, D]``; float16, bfloat16 or float32.
    k (array): Keys ``[B, Hkv, Lk, D]``, same dtype as ``q``.  ``Hq`` must be a
        multiple of ``Hkv`` (grouped-query attention: query head ``h`` uses kv
        head ``h // (Hq / Hkv)``).
    v (array): Values ``[B, Hkv, Lk, D]``, same dtype as ``q``.
    scale (float): Multiplies the scores (typically ``D ** -0.5``).
    mask (str or array, optional): ``None``; ``"causal"`` (aligned to the end:
        query ``i`` sees keys ``j <= i + Lk - Lq``); a bool array (True = attend);
        or an additive array whose dtype promotes to ``q``'s (float32 q: any
        float mask; float16 / bfloat16 q: the same dtype).  Arrays must broadcast
        to ``[B, Hq, Lq, Lk]`` (broadcast dims are read through zero strides,
        never expanded).
    sinks (array, optional): Attention sinks, ``[Hq]`` float logits (one per
        query head, not scaled, not masked) that join every row's softmax with a
        zero value vector, as ``sinks`` of MLX's sdpa (gpt-oss).  On the CUDA
        backend calls with sinks run MLX's own sdpa.
    stream (Stream or Device, optional): Where to run.

Returns:
    array: ``[B, Hq, Lq, D]`` in the dtype of ``q``.

Head dims 64, 80, 96, 128 and 256.  A query row with no visible key (fully
masked, ``-inf`` additive mask everywhere, or causal with ``Lq > Lk``) yields
zeros (MLX's sdpa returns an average of v or NaN there).  Not differentiable.)");
}
