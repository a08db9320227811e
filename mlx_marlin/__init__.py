"""mlx-marlin: fast FP4 (E2M1) inference ops for MLX."""

# mlx.core first: it loads libmlx, which the extension then links against by soname
# (this also makes in-tree development builds importable).
import mlx.core as _mx  # noqa: F401

from ._ext import attention, fp4_gemm
from .quant import dequantize, from_mlx, quantize, E2M1_VALUES

__all__ = ["fp4_gemm", "attention", "quantize", "dequantize", "from_mlx", "E2M1_VALUES"]
__version__ = "0.1.0"
