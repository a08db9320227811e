"""The host-side GPU encoders (cpp/gpu/attention.cpp, moe_route.cpp, moe_gemm.cpp, moe_mlp.cpp, as built
into build/dev/libmlx_marlin_core.a) driving the Metal kernels on the checked
emulator through a minimal KernelLauncher (tests/gpu_encoder_check.cpp), compared
with the CPU backend of the same ops.  Skipped without a dev build."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from metal_helpers import BUILD_DIR, ROOT, mtlemu

CORE = ROOT / "build" / "dev" / "libmlx_marlin_core.a"


def test_encoders_on_emulator():
    if not CORE.exists():
        pytest.skip("no dev build (scripts/dev_build.sh)")
    import mlx

    mlx_dir = Path(mlx.__path__[0])
    so = mtlemu.build([str(ROOT / "metal" / "attention.metal"), str(ROOT / "metal" / "moe_route.metal"),
                      str(ROOT / "metal" / "moe_gemm.metal")],
                      include_dirs=[str(ROOT / "metal" / "include"), str(ROOT / "cpp")], build_dir=str(BUILD_DIR))
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    exe = BUILD_DIR / f"gpu_encoder_check_{os.getpid()}"
    src = ROOT / "tests" / "gpu_encoder_check.cpp"
    cxx = shutil.which("c++")
    subprocess.run([cxx, "-std=c++20", "-O1", "-Wno-psabi", f"-I{ROOT / 'cpp'}", f"-I{mlx_dir / 'include'}",
                    f"-I{ROOT / 'metal' / 'emulator' / 'include'}", str(src), str(CORE), f"-L{mlx_dir / 'lib'}",
                    "-lmlx", f"-Wl,-rpath,{mlx_dir / 'lib'}", "-ldl", "-pthread", "-o", str(exe)], check=True)
    try:
        out = subprocess.run([str(exe), str(so)], check=True, capture_output=True, text=True, timeout=300).stdout
    finally:
        exe.unlink(missing_ok=True)
    cases = json.loads(out)["cases"]
    print(cases)
    assert len(cases) == 15 + 12 + 4  # attention (2 with sinks) + MoE + invalid ids
    for name, err, tol, dispatches in cases:
        assert err <= tol, (name, err, tol)
    by_name = {c[0]: c for c in cases}
    assert by_name["attn_prefill_causal_f16"][3] == 1
    assert by_name["attn_decode_splitk_f32"][3] == 2  # decode + merge
    assert by_name["attn_decode_splitk_sinks_bf16"][3] == 2  # the merge adds the sinks
    assert by_name["moe_gemm_of_route_f32"][3] == 3  # group + grouped GEMM + combine
    # moe_mlp: route + group + gate/up GEMM with act(gate) * up fused + down GEMM + combine
    # (no separate GLU pass), for both gate/up layouts; h and y in x's dtype
    # (*_f32_scratch: no float32 scratch but the routing weights for f16 / bf16).
    for dt in ("f32", "f16", "bf16"):
        for form in ("fused", "separate"):
            assert by_name[f"moe_mlp_{form}_{dt}"][3] == 5
            assert f"moe_mlp_{form}_{dt}_f32_scratch" in by_name
    # Invalid expert ids without the emulator's status read-back (what Metal does): NaN rows
    # (the pair's row unweighted, the token's row weighted), the other rows exact.
    for mode in ("unweighted", "weighted"):
        assert f"moe_gemm_invalid_ids_nan_rows_{mode}" in by_name
        assert f"moe_gemm_invalid_ids_other_rows_{mode}" in by_name
