"""Type stubs for the mlx-marlin C++ extension."""

from typing import Optional, Sequence, Union

import mlx.core

E2M1_TABLE: Sequence[float]
GROUP_SIZES: Sequence[int]

def _cpu_isa() -> str: ...

# --- fp4_gemm
def fp4_gemm(
    x: mlx.core.array,
    w: mlx.core.array,
    scales: mlx.core.array,
    bias: Optional[mlx.core.array] = None,
    *,
    group_size: int,
    activation: Optional[str] = None,
    stream: Union[None, mlx.core.Stream, mlx.core.Device] = None,
) -> mlx.core.array: ...
