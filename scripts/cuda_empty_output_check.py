"""Which MLX ops crash on MLX's CUDA backend with empty arrays (device side).

Each case runs in its own process, so a crash (rc -8 = SIGFPE) names its case.  On an
H200 with MLX 0.32.4 (2026-12-05) every compiled (fused) elementwise kernel with an empty
output crashed: MLX's `Compiled::eval_gpu` launches it with `get_launch_args`, whose block
is min(1024, 0) = 0 threads and whose grid divides by it.  Eager ops and reductions over an
empty axis were fine, and so was `mlx_marlin.fp4_gemm` with K = 0 outside `mx.compile`.
The tests skip zero-row cases under `mx.compile` on CUDA for that reason; run this after
an MLX upgrade to see whether they can come back.

    source .device-mlx/b/activate.sh && PYTHONPATH=$PWD python3 scripts/cuda_empty_output_check.py
"""

import subprocess
import sys

CASES = {
    "sum over an empty axis (2, 3, 0)": "mx.eval(mx.sum(mx.zeros((2, 3, 0)), -1, keepdims=True))",
    "sum of an empty array (0, 4, 0)": "mx.eval(mx.sum(mx.zeros((0, 4, 0)), -1, keepdims=True))",
    "eager elementwise chain, empty output": (
        "b = mx.ones((16,)); mx.eval(mx.maximum(mx.sum(mx.zeros((0, 4, 0)), -1, keepdims=True) + b, 0))"),
    "compiled elementwise, empty output": "f = mx.compile(lambda a: mx.maximum(a + 1, 0)); mx.eval(f(mx.zeros((0, 4, 16))))",
    "shapeless compiled elementwise, empty output on replay": (
        "f = mx.compile(lambda a: mx.maximum(a + 1, 0), shapeless=True)\n"
        "mx.eval(f(mx.zeros((2, 4, 16)))); mx.eval(f(mx.zeros((0, 4, 16))))"),
    "shapeless compiled sum + bias, rows (2, 3), (5, 1), (0, 4)": (
        "b = mx.ones((16,)); f = mx.compile(lambda x: mx.maximum(mx.sum(x, -1, keepdims=True) + b, 0), shapeless=True)\n"
        "for s in ((2, 3, 0), (5, 1, 0), (0, 4, 0)): mx.eval(f(mx.zeros(s))); print(s, 'ok')"),
    "fp4_gemm K = 0, eager, rows (2, 3), (5, 1), (0, 4)": (
        "import mlx_marlin as mm\n"
        "w, s = mx.zeros((0, 16), mx.uint32), mx.zeros((0, 16), mx.float16)\n"
        "for sh in ((2, 3, 0), (5, 1, 0), (0, 4, 0)):\n"
        "    mx.eval(mm.fp4_gemm(mx.zeros(sh), w, s, group_size=32, activation='relu')); print(sh, 'ok')"),
}


def main() -> int:
    crashed = 0
    for name, code in CASES.items():
        r = subprocess.run([sys.executable, "-c", "import mlx.core as mx\n" + code], capture_output=True, text=True,
                           timeout=120)
        crashed += r.returncode != 0
        detail = " ".join((r.stdout.strip() + " " + r.stderr.strip()[-300:]).split())
        print(f"{name}: rc={r.returncode} {detail}", flush=True)
    print(f"{crashed} of {len(CASES)} cases failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
