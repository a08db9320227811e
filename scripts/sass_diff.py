#!/usr/bin/env python3
"""Machine code of the CUDA kernels at two revisions, compared kernel by kernel.

Without a GPU, a change to device code can still be shown to be a pure refactor: nvcc
compiles cpp/cuda/*.cu of both trees (sm_80 and sm_90a, the flags of
scripts/cuda_compile_check.sh), cuobjdump prints the SASS, and every kernel is either
byte-identical (addresses and encodings aside) or listed with the per-opcode count
changes, so that "only register moves and address arithmetic moved" can be read off.

    python3 scripts/sass_diff.py                  # HEAD vs the working tree, every .cu
    python3 scripts/sass_diff.py --base HEAD~2 cpp/cuda/moe_kernels.cu

Needs nvcc, cuobjdump and nvdisasm (the CUDA toolkit's, or
`pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm`).
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90a,code=sm_90a"]


def cuobjdump() -> str:
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import nvidia  # the pip wheels' namespace package

        for base in nvidia.__path__:
            for sub in ("cu13", "cuda_cuobjdump"):
                path = os.path.join(base, sub, "bin", "cuobjdump")
                if os.path.exists(path):
                    for tool in os.listdir(os.path.dirname(path)):  # cuobjdump runs nvdisasm
                        os.chmod(os.path.join(os.path.dirname(path), tool), 0o755)
                    os.environ["PATH"] = os.path.dirname(path) + os.pathsep + os.environ["PATH"]
                    return path
    except ImportError:
        pass
    sys.exit("cuobjdump not found: install the CUDA toolkit's or `pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm`")


def mlx_include() -> str:
    import mlx.core as mx

    return os.path.join(os.path.dirname(mx.__file__), "include")


def build(tree: str, source: str, out_dir: str) -> str:
    obj = os.path.join(out_dir, os.path.basename(source) + ".o")
    cmd = ["nvcc", "-std=c++20", "-O3", "-diag-suppress=997", "--expt-relaxed-constexpr", "-DMLX_MARLIN_CUDA=1",
           *ARCHS, "-I", "cpp", "-I", "cpp/cuda/compat", "-I", mlx_include(), "-c", source, "-o", obj]
    subprocess.run(cmd, cwd=tree, check=True)
    return obj


def sass_of(obj: str, tool: str) -> str:
    # One at a time: concurrent cuobjdump runs fail (they share scratch files).
    done = subprocess.run([tool, "-sass", obj], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"cuobjdump failed on {obj}: {done.stderr.strip()}")
    return done.stdout


def functions(sass: str) -> dict:
    """(arch, mangled name) -> instruction lines without addresses or encodings."""
    out, arch, name, body = {}, None, None, []
    for line in sass.splitlines():
        m = re.match(r"\s*arch = (sm_\w+)", line)
        if m:
            arch = m.group(1)
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            if name:
                out[name] = body
            # kernels in anonymous namespaces carry a per-tree hash in their names
            name, body = (arch, re.sub(r"_GLOBAL__N__[0-9a-f]+_", "_GLOBAL__N__", m.group(1))), []
            continue
        if name is None:
            continue
        text = re.sub(r"/\*[0-9a-f]{4,}\*/|/\* 0x[0-9a-f]+ \*/", "", line).strip()
        if text and not text.startswith(("..", "/*")):
            body.append(re.sub(r"0x[0-9a-f]+", "ADDR", text) if re.search(r"\b(BRA|BSSY|BRX|CALL|JMP)\b", text) else text)
    if name:
        out[name] = body
    return out


def opcode(line: str) -> str:
    words = line.split()
    if words[0].startswith("@"):
        words = words[1:]
    return words[0].rstrip(";").split(".")[0]


def compare(name: str, base: dict, new: dict) -> bool:
    same = [k for k in base if new.get(k) == base[k]]
    changed = [k for k in base if k in new and new[k] != base[k]]
    gone = [k for k in base if k not in new]
    added = [k for k in new if k not in base]
    print(f"{name}: {len(base)} -> {len(new)} kernels; identical {len(same)}, changed {len(changed)}, "
          f"removed {len(gone)}, added {len(added)}")
    total = collections.Counter()
    for k in changed:
        a = collections.Counter(opcode(line) for line in base[k])
        b = collections.Counter(opcode(line) for line in new[k])
        delta = {op: b[op] - a[op] for op in sorted(set(a) | set(b)) if b[op] != a[op]}
        total.update(delta)
        print(f"  {k[0]} {k[1][:100]}: {len(base[k])} -> {len(new[k])} instructions"
              + (f"; {delta}" if delta else "; same opcode counts"))
    for k in gone + added:
        print(f"  {'removed' if k in gone else 'added'}: {k[0]} {k[1][:100]}")
    if changed:
        print(f"  net opcode change over the changed kernels: {dict(total)}")
    return not (changed or gone or added)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="*", help="cpp/cuda/*.cu files (default: all)")
    ap.add_argument("--base", default="HEAD", help="revision to compare the working tree with")
    args = ap.parse_args()
    sources = args.sources or sorted(os.path.relpath(os.path.join(d, f), ROOT)
                                     for d, _, fs in os.walk(os.path.join(ROOT, "cpp")) for f in fs if f.endswith(".cu"))
    tool = cuobjdump()
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = os.path.join(tmp, "base")
        subprocess.run(["git", "worktree", "add", "--detach", base_tree, args.base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            os.makedirs(os.path.join(tmp, "a"))
            os.makedirs(os.path.join(tmp, "b"))
            jobs = [(base_tree, s, os.path.join(tmp, "a")) for s in sources] + [(ROOT, s, os.path.join(tmp, "b")) for s in sources]
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
                objs = list(pool.map(lambda j: build(*j), jobs))
            sass = [sass_of(o, tool) for o in objs]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", base_tree], cwd=ROOT, check=False)
        n = len(sources)
        identical = [compare(s, functions(sass[i]), functions(sass[n + i])) for i, s in enumerate(sources)]
    return 0 if all(identical) else 1


if __name__ == "__main__":
    sys.exit(main())
