#!/usr/bin/env python3
"""Static report of the Metal kernels (metal/*.metal): for
every instantiated host name, its tile (BM x BN x BK), simdgroup layout, threads and
threadgroup memory (double-buffered x tile + one 8 x SN staging slice per simdgroup
(+ the row tables of moe_gemm),
the formula of MARLIN_GEMM_TG_BYTES in metal/include/marlin/gemm_core.h, which also static_asserts it).

Exits non-zero if a kernel exceeds 32 KB of threadgroup memory or has a tile
dimension that is not a multiple of 8.  `--json` prints the rows as JSON.
GEMM and MoE-GEMM rows come from parsing the instantiation macros; attention and routing
rows from the kernel-name enumeration and tile functions of the extension (cpp/common/), so
the report needs no Metal compiler.
"""
import json
import re
import sys
from pathlib import Path

METAL = Path(__file__).resolve().parents[1] / "metal"
SIZEOF = {"half": 2, "bfloat": 2, "float": 4}
LIMIT = 32 * 1024
MOE_GROUP_THREADS = 256  # kMoeGroupThreads (cpp/common/moe_params.h)
MOE_GROUP_WINDOW = 256  # kMoeGroupWindow
# moe_group: per-simdgroup histograms of one expert window + six per-simdgroup reduction slots.
MOE_GROUP_TG_BYTES = 4 * (MOE_GROUP_THREADS // 32) * (MOE_GROUP_WINDOW + 6)


def strip_comments(text):
    return re.sub(r"//[^\n]*", "", text)


def tiled(text, variants_macro, gemm_macro, prefixes, row_table_ints):
    """Rows for every expansion of `variants_macro` (whose body lists `gemm_macro`
    calls ending in ..., BM, BN, BK, WM, WN) and every kernel prefix `gemm_macro`
    instantiates.  The gemm macro takes (variant, xname, T, sname, S, oname, O, tiles...)
    (fp4_gemm: output dtype O) or (variant, xname, T, sname, S, tiles...) (MoE: the
    output is T)."""
    body = re.search(r"#define\s+" + variants_macro + r"\(([^)]*)\)((?:[^\n]*\\\n)+[^\n]*)", text)
    formal = [a.strip() for a in body.group(1).split(",")]
    variants = re.findall(gemm_macro + r"\(\s*(\w+)\s*,([^)]*)\)", body.group(2))
    rows = []
    for call in re.finditer(r"^" + variants_macro + r"\(([^)]*)\)", text, re.M):
        env = dict(zip(formal, [a.strip() for a in call.group(1).split(",")]))
        for variant, args in variants:
            a = [env.get(x.strip(), x.strip()) for x in args.split(",")]
            if len(a) == 11:
                xname, T, sname, S, oname, O, bm, bn, bk, wm, wn = a
            else:
                (xname, T, sname, S, bm, bn, bk, wm, wn), oname, O = a, '""', a[1]
            bm, bn, bk, wm, wn = map(int, (bm, bn, bk, wm, wn))
            sn = bn // wn
            a_bytes = SIZEOF[T] * 2 * bm * bk
            b_bytes = SIZEOF[T] * wm * wn * 8 * sn
            other = 4 * bm * row_table_ints
            for prefix in prefixes:
                rows.append(dict(kernel=f"{prefix}_{variant}_{xname}_{sname}{oname.strip(chr(34))}", variant=variant,
                                 x=T, scales=S, out=O, tile_m=bm, tile_n=bn, tile_k=bk, simdgroups=f"{wm}x{wn}",
                                 threads=32 * wm * wn, a_tile_bytes=a_bytes, b_staging_bytes=b_bytes,
                                 other_bytes=other, threadgroup_bytes=a_bytes + b_bytes + other))
    return rows


def simple(kernel, variant, threads, tg_bytes, x="-", scales="-", out="-"):
    return dict(kernel=kernel, variant=variant, x=x, scales=scales, out=out, tile_m=0, tile_n=0, tile_k=0,
                simdgroups=str(threads // 32), threads=threads, a_tile_bytes=0, b_staging_bytes=0,
                other_bytes=tg_bytes, threadgroup_bytes=tg_bytes)


def kernels():
    gemm = strip_comments((METAL / "gemm_fp4.metal").read_text())
    moe = strip_comments((METAL / "moe_gemm.metal").read_text())
    rows = tiled(gemm, "MARLIN_GEMM_VARIANTS", "MARLIN_GEMM", ["fp4_gemm"], 0)
    for call in re.finditer(r"^MARLIN_GEMM_T\(([^)]*)\)", gemm, re.M):
        xname, T, sname, S = [a.strip() for a in call.group(1).split(",")]
        rows.append(simple(f"fp4_gemm_transposed_{xname}_{sname}", "transposed", 128, 0, T, S, T))
    # moe_gemm and moe_gemm_glu (moe_mlp's gate/up GEMM: BN decoded columns = BN/2 gate +
    # BN/2 up, the same staging as moe_gemm): + src_rows[BM] and dst_rows[BM] int tables.
    rows += tiled(moe, "MARLIN_MOE_VARIANTS", "MARLIN_MOE_GEMM", ["moe_gemm", "moe_gemm_glu"], 2)
    for call in re.finditer(r"^MARLIN_MOE_GROUP\((\w+),\s*(\w+)\)", moe, re.M):
        rows.append(simple(f"moe_group_{call.group(1)}", "group", MOE_GROUP_THREADS, MOE_GROUP_TG_BYTES,
                           x=call.group(2)))
    for call in re.finditer(r"^MARLIN_MOE_COMBINE\((\w+),\s*(\w+)\)", moe, re.M):
        rows.append(simple(f"moe_combine_{call.group(1)}", "combine", 128, 0, out=call.group(2)))
    return rows + extension_kernels()


def extension_kernels():
    """Attention (tile sizes from attention_block_k, the kernels' own source of truth) and
    MoE routing (metal/moe_route.metal: everything in registers)."""
    try:
        import mlx_marlin._ext as ext
    except ImportError:  # an in-tree build (scripts/dev_build.sh) of this checkout
        sys.path.insert(0, str(METAL.parent))
        import mlx_marlin._ext as ext

    rows = []
    elem = {"f16": ("half", 2), "bf16": ("bfloat", 2), "f32": ("float", 4)}
    for name in ext._gpu_kernel_names():
        if name.startswith("marlin_attention_"):
            kind, d, dt = name[len("marlin_attention_"):].split("_")
            t, size = elem[dt]
            block_k, tg = ext._attention_tile(int(d[1:]), size)
            if kind == "merge":  # combines fp32 partials per row: no tiles in threadgroup memory
                block_k, tg = 0, 0
            rows.append(dict(kernel=name, variant=kind, x=t, scales="-", out=t, tile_m=64, tile_n=int(d[1:]),
                             tile_k=block_k, simdgroups="8", threads=256, a_tile_bytes=0, b_staging_bytes=0,
                             other_bytes=tg, threadgroup_bytes=tg))
        elif name.startswith("marlin_moe_route_"):
            rows.append(simple(name, "route", 128, 0, x=elem[name[len("marlin_moe_route_"):].split("_")[0]][0]))
    return rows


def main():
    rows = kernels()
    bad = [r for r in rows if r["threadgroup_bytes"] > LIMIT or any(r[d] % 8 for d in ("tile_m", "tile_n", "tile_k"))]
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'kernel':40s} {'tile MxNxK':>12s} {'simdgroups':>10s} {'threads':>7s} {'A tiles':>8s} "
              f"{'B slices':>8s} {'other':>6s} {'tg bytes':>9s}")
        for r in rows:
            tile = f"{r['tile_m']}x{r['tile_n']}x{r['tile_k']}" if r["tile_m"] else "-"
            print(f"{r['kernel']:40s} {tile:>12s} {r['simdgroups']:>10s} {r['threads']:7d} {r['a_tile_bytes']:8d} "
                  f"{r['b_staging_bytes']:8d} {r['other_bytes']:6d} {r['threadgroup_bytes']:9d}")
        print(f"{len(rows)} kernels, max threadgroup memory {max(r['threadgroup_bytes'] for r in rows)} bytes "
              f"(limit {LIMIT})")
    for r in bad:
        print(f"FAIL {r['kernel']}: {r['threadgroup_bytes']} bytes, tile {r['tile_m']}x{r['tile_n']}x{r['tile_k']}",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
