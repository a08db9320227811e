"""mlx-marlin: fast FP4 (E2M1) inference ops for MLX."""

# mlx.core first: it loads libmlx, which the extension then links against by soname
# (this also makes in-tree development builds importable).
import mlx.core as _mx  # noqa: F401

from ._ext import affine_linear, attention, dense_linear, fp4_gemm
from ._ext import moe_gemm, moe_mlp, moe_route
from .quant import dequantize, from_mlx, quantize, E2M1_VALUES
from .nn import AffineEmbedding, AffineLinear, DenseEmbedding, DenseLinear, MarlinLinear, MarlinSwitchGLU, MarlinSwitchLinear
from .lm import load, quantize_model, save, use_dense_kernels

__all__ = [
    "fp4_gemm",
    "dense_linear",
    "affine_linear",
    "attention",
    "moe_route",
    "moe_gemm",
    "moe_mlp",
    "quantize",
    "dequantize",
    "from_mlx",
    "E2M1_VALUES",
    "MarlinLinear",
    "MarlinSwitchLinear",
    "MarlinSwitchGLU",
    "DenseLinear",
    "DenseEmbedding",
    "AffineLinear",
    "AffineEmbedding",
    "quantize_model",
    "load",
    "save",
    "use_dense_kernels",
]
__version__ = "0.1.0"
