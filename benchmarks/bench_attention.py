"""mlx_marlin.attention vs mx.fast.scaled_dot_product_attention, side by side in one process.

    python benchmarks/bench_attention.py [--quick] [--device cpu|gpu]

--device cpu (default): the CPU kernels, with per-core rates against the FMA peak.
--device gpu (a Mac with a Metal build of MLX): mlx_marlin's Metal kernels against MLX's
Metal sdpa, both on mx.gpu; the per-core / FMA-peak columns are left out there (they
describe CPU cores) and every cell is a median of warm repetitions, each ending in
mx.eval (which waits for the GPU).

Prefill: B=1, Hq=32, Hkv=8, D=128, causal, L = 1024 / 2048 / 4096.
Decode:  B=1, Hq=32, Hkv=8, D=128, Lq=1, Lk = 4096 / 16384.
FLOPs counted as 4 * Hq * D * (visible q-k pairs) (QK^T and PV, 2 per FMA).
"""
import argparse
import os
import platform
import subprocess
import sys
import time

import mlx.core as mx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlx_marlin as mm  # noqa: E402


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def gpu_name():
    info = mx.metal.device_info() if mx.metal.is_available() else {}
    return f"{info.get('device_name', '?')} GPU ({info.get('memory_size', 0) / 2**30:.0f} GiB unified memory)"


def timeit(fn, reps, warmup=1):
    """Best wall time, and the process CPU time of that repetition."""
    for _ in range(warmup):
        mx.eval(fn())
    best, cpu = float("inf"), float("inf")
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        mx.eval(fn())
        wall, used = time.perf_counter() - t, time.process_time() - c
        if wall < best:
            best, cpu = wall, used
    return best, cpu




def flops(Hq, Lq, Lk, D, causal):
    if causal:
        pairs = sum(min(Lk, i + Lk - Lq + 1) for i in range(Lq))
    else:
        pairs = Lq * Lk
    return 4.0 * Hq * D * pairs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer shapes and repetitions")
    ap.add_argument("--fma-peak-per-core", type=float, default=263.0,
                    help="fp32 FMA GFLOP/s of one core (benchmarks/fma_peak.c; 263 on the dev machine)")
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                    help="where both ops run (gpu: the Metal kernels, on a Mac with a Metal build of MLX)")
    args = ap.parse_args()
    gpu = args.device == "gpu"
    if gpu and not (mx.metal.is_available() and "attention" in mm._ext._gpu_ops()):
        sys.exit("--device gpu needs a Metal GPU and mlx_marlin's Metal kernels (mlx_marlin._ext._gpu_ops() "
                 f"= {mm._ext._gpu_ops()}, Metal available: {mx.metal.is_available()})")
    stream = mx.gpu if gpu else mx.cpu
    mx.set_default_device(stream)
    ncores = os.cpu_count()
    peak = args.fma_peak_per_core
    print(f"# hardware: {gpu_name() if gpu else cpu_model()}, {ncores} CPU cores, ISA {mm._ext._cpu_isa()}; "
          f"stream {stream}")
    print(f"# command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    if not gpu:
        print(f"# fp32 FMA peak: {peak:.0f} GFLOP/s per core (benchmarks/fma_peak.c), {peak * ncores:.0f} for "
              f"{ncores} cores")
        print(f"# load average at start: {os.getloadavg()[0]:.1f}; the cores may be shared, so the per-core column "
              "divides by the process CPU time, which other processes do not inflate")
    B, Hq, Hkv, D = 1, 32, 8, 128
    cases = [("prefill", L, L, "causal") for L in ([1024, 2048] if args.quick else [1024, 2048, 4096])]
    cases += [("decode", 1, Lk, None) for Lk in ([4096] if args.quick else [4096, 16384])]
    if gpu:
        print("| phase | Lq | Lk | dtype | marlin ms | marlin GFLOP/s | mlx sdpa ms | mlx sdpa GFLOP/s | speedup |")
        print("|---|---|---|---|---|---|---|---|---|")
    else:
        print("| phase | Lq | Lk | dtype | marlin ms | marlin GFLOP/s (wall) | GFLOP/s per busy core (CPU time) | "
              "% of core FMA peak | mlx sdpa ms | speedup |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    dtypes = (mx.float16, mx.bfloat16, mx.float32) if gpu else (mx.float16, mx.float32)
    for phase, Lq, Lk, mask in cases:
        for dt in dtypes:
            q = mx.random.normal((B, Hq, Lq, D)).astype(dt)
            k = mx.random.normal((B, Hkv, Lk, D)).astype(dt)
            v = mx.random.normal((B, Hkv, Lk, D)).astype(dt)
            mx.eval(q, k, v)
            scale = D**-0.5
            reps = 10 if phase == "decode" else (3 if Lq <= 2048 else 2)
            if gpu:
                reps = 20
            if args.quick:
                reps = max(1, reps // 2)
            t_ours, cpu_ours = timeit(lambda: mm.attention(q, k, v, scale=scale, mask=mask, stream=stream), reps)
            # MLX's CPU sdpa takes seconds to minutes at these lengths: one cold run for prefill.
            slow = phase == "prefill" and not gpu
            t_mlx, _ = timeit(lambda: mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask,
                                                                            stream=stream),
                              1 if slow else reps, warmup=0 if slow else 1)
            f = flops(Hq, Lq, Lk, D, mask == "causal")
            gf = f / t_ours / 1e9
            if gpu:
                print(f"| {phase} | {Lq} | {Lk} | {str(dt).split('.')[-1]} | {t_ours * 1e3:.3f} | {gf:.0f} | "
                      f"{t_mlx * 1e3:.3f} | {f / t_mlx / 1e9:.0f} | {t_mlx / t_ours:.2f}x |", flush=True)
                continue
            per_core = f / max(cpu_ours, 1e-9) / 1e9
            print(f"| {phase} | {Lq} | {Lk} | {str(dt).split('.')[-1]} | {t_ours * 1e3:.2f} | {gf:.1f} | "
                  f"{per_core:.1f} | {100 * per_core / peak:.0f}% | "
                  f"{t_mlx * 1e3:.2f} | {t_mlx / t_ours:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
