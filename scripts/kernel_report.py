#!/usr/bin/env python3
"""Static report of the Metal FP4 GEMM kernels (metal/gemm_fp4.metal): for every
instantiated host name, its tile (BM x BN x BK), simdgroup layout, threads and
threadgroup memory (double-buffered x tile + one 8 x SN staging slice per simdgroup,
the formula of MARLIN_GEMM_TG_BYTES in metal/include/marlin/gemm_core.h, which also static_asserts it).

Exits non-zero if a kernel exceeds 32 KB of threadgroup memory or has a tile
dimension that is not a multiple of 8.  `--json` prints the rows as JSON.
Parses the instantiation macros; needs neither a Metal compiler nor the extension.
"""
import json
import re
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "metal" / "gemm_fp4.metal"
SIZEOF = {"half": 2, "bfloat": 2, "float": 4}
LIMIT = 32 * 1024


def strip_comments(text):
    return re.sub(r"//[^\n]*", "", text)


def kernels(text):
    text = strip_comments(text)
    # Body of MARLIN_GEMM_VARIANTS: MARLIN_GEMM(variant, ..., BM, BN, BK, WM, WN) lines.
    body = re.search(r"#define\s+MARLIN_GEMM_VARIANTS\(([^)]*)\)((?:[^\n]*\\\n)+[^\n]*)", text)
    formal = [a.strip() for a in body.group(1).split(",")]
    variants = re.findall(r"MARLIN_GEMM\(\s*(\w+)\s*,([^)]*)\)", body.group(2))
    rows = []
    for call in re.finditer(r"^MARLIN_GEMM_VARIANTS\(([^)]*)\)", text, re.M):
        actual = [a.strip() for a in call.group(1).split(",")]
        env = dict(zip(formal, actual))
        for variant, args in variants:
            a = [env.get(x.strip(), x.strip()) for x in args.split(",")]
            xname, T, sname, S, oname, O, bm, bn, bk, wm, wn = a
            bm, bn, bk, wm, wn = map(int, (bm, bn, bk, wm, wn))
            sn = bn // wn
            tg = SIZEOF[T] * (2 * bm * bk + wm * wn * 8 * sn)
            rows.append(dict(kernel=f"fp4_gemm_{variant}_{xname}_{sname}{oname.strip(chr(34))}", variant=variant,
                             x=T, scales=S, out=O, tile_m=bm, tile_n=bn, tile_k=bk, simdgroups=f"{wm}x{wn}",
                             threads=32 * wm * wn, a_tile_bytes=SIZEOF[T] * 2 * bm * bk,
                             b_staging_bytes=SIZEOF[T] * wm * wn * 8 * sn, threadgroup_bytes=tg))
    for call in re.finditer(r"^MARLIN_GEMM_T\(([^)]*)\)", text, re.M):
        xname, T, sname, S = [a.strip() for a in call.group(1).split(",")]
        rows.append(dict(kernel=f"fp4_gemm_transposed_{xname}_{sname}", variant="transposed", x=T, scales=S, out=T,
                         tile_m=0, tile_n=0, tile_k=0, simdgroups="4", threads=128,
                         a_tile_bytes=0, b_staging_bytes=0, threadgroup_bytes=0))
    return rows


def main():
    rows = kernels(SOURCE.read_text())
    bad = [r for r in rows if r["threadgroup_bytes"] > LIMIT or any(r[d] % 8 for d in ("tile_m", "tile_n", "tile_k"))]
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'kernel':40s} {'tile MxNxK':>12s} {'simdgroups':>10s} {'threads':>7s} {'A tiles':>8s} "
              f"{'B slices':>8s} {'tg bytes':>9s}")
        for r in rows:
            tile = f"{r['tile_m']}x{r['tile_n']}x{r['tile_k']}" if r["variant"] != "transposed" else "-"
            sg = r["simdgroups"] if r["variant"] != "transposed" else "-"
            print(f"{r['kernel']:40s} {tile:>12s} {sg:>10s} {r['threads']:7d} {r['a_tile_bytes']:8d} "
                  f"{r['b_staging_bytes']:8d} {r['threadgroup_bytes']:9d}")
        print(f"{len(rows)} kernels, max threadgroup memory {max(r['threadgroup_bytes'] for r in rows)} bytes "
              f"(limit {LIMIT})")
    for r in bad:
        print(f"FAIL {r['kernel']}: {r['threadgroup_bytes']} bytes, tile {r['tile_m']}x{r['tile_n']}x{r['tile_k']}",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
