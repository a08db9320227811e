"""mlx-marlin: fast FP4 (E2M1) inference ops for MLX."""

from ._ext import fp4_gemm
from .quant import dequantize, from_mlx, quantize, E2M1_VALUES

__all__ = ["fp4_gemm", "quantize", "dequantize", "from_mlx", "E2M1_VALUES"]
__version__ = "0.1.0"
