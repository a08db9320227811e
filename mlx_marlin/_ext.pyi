# Type stubs for the compiled extension mlx_marlin._ext.
import mlx.core

# --- attention
def attention(
    q: mlx.core.array,
    k: mlx.core.array,
    v: mlx.core.array,
    *,
    scale: float,
    mask: str | mlx.core.array | None = None,
    stream: mlx.core.Stream | mlx.core.Device | None = None,
) -> mlx.core.array:
    """Flash attention ``softmax(scale * q @ k.T + mask) @ v`` (drop-in for
    ``mx.fast.scaled_dot_product_attention``, inference only).

    q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D] (Hq % Hkv == 0), D in {64, 80, 96, 128, 256},
    float16/bfloat16/float32 (all the same); mask None, "causal" (end-aligned), bool
    (True = attend) or additive, broadcastable to [B, Hq, Lq, Lk].  Rows with no
    visible key give zeros.  Returns [B, Hq, Lq, D] in q's dtype.
    """
    ...
