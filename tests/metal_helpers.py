"""Helpers for tests that run the project's .metal kernels on the Metal-on-CPU
emulator (metal/emulator): module builds, bf16/f16 buffers, and small C++ probes
that print what the shared host headers (cpp/common/*.h) compute."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "metal" / "emulator"))

import mtlemu  # noqa: E402

BUILD_DIR = Path(os.environ.get("MTLEMU_TEST_BUILD", Path(tempfile.gettempdir()) / "mtlemu-test-build"))
INCLUDE_DIRS = [str(ROOT / "metal" / "include"), str(ROOT / "cpp")]


def compile_metal(name, checked=True):
    """metal/<name> built with the emulator (cached by content hash)."""
    return mtlemu.compile([str(ROOT / "metal" / name)], include_dirs=INCLUDE_DIRS, checked=checked,
                          build_dir=str(BUILD_DIR))


def run_probe(source, args=()):
    """Compiles a small C++17 program against cpp/ and returns its stdout parsed as JSON."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    cxx = shutil.which("clang++-19") or shutil.which("c++")
    import hashlib

    # Keyed on the headers too: a probe prints what they define.
    headers = b"".join(h.read_bytes() for h in sorted((ROOT / "cpp" / "common").glob("*.h")))
    tag = hashlib.sha256(source.encode() + headers).hexdigest()[:12]
    exe = BUILD_DIR / f"probe_{tag}"
    if not exe.exists():
        src = BUILD_DIR / f"probe_{tag}.cpp"
        src.write_text(source)
        tmp = exe.with_name(exe.name + f".{os.getpid()}.tmp")
        subprocess.run([cxx, "-std=c++17", "-O1", f"-I{ROOT / 'cpp'}", str(src), "-o", str(tmp)], check=True)
        tmp.replace(exe)
    out = subprocess.run([str(exe), *map(str, args)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


# ---- dtypes.  bf16 buffers are uint16 arrays holding the bit patterns.
def to_bf16_bits(x):
    """float32 -> bf16 bits, round to nearest even (NaN stays NaN)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), r).astype(np.uint16)


def from_bf16_bits(b):
    return (np.asarray(b, np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_device(x, dtype):
    """float32 values -> (buffer in `dtype`, the float32 values it holds)."""
    x = np.ascontiguousarray(x, np.float32)
    if dtype == "f32":
        return x.copy(), x.copy()
    if dtype == "f16":
        h = x.astype(np.float16)
        return h, h.astype(np.float32)
    b = to_bf16_bits(x)
    return b, from_bf16_bits(b)


def from_device(buf, dtype):
    if dtype == "bf16":
        return from_bf16_bits(buf)
    return np.asarray(buf).astype(np.float32)


def nan_buffer(shape, dtype):
    """An output buffer poisoned with NaN (proves every element is written)."""
    return to_device(np.full(shape, np.nan, np.float32), dtype)[0]


ELEM_BYTES = {"f16": 2, "bf16": 2, "f32": 4}
