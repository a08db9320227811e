"""Shared helpers: build .metal test kernels with the emulator (cached) and
load them through the ctypes runner."""
import hashlib
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EMU = ROOT / "metal" / "emulator"
KERNELS = Path(__file__).resolve().parent / "kernels"
sys.path.insert(0, str(EMU))

import mtlemu  # noqa: E402

BUILD_DIR = Path(os.environ.get("MTLEMU_TEST_BUILD", "/tmp/mtlemu-test-build"))


def _emulator_digest():
    h = hashlib.sha256()
    for p in sorted(EMU.rglob("*")):
        if p.is_file() and p.suffix in (".py", ".h", ".cpp", "") and "__pycache__" not in p.parts:
            h.update(p.read_bytes())
    return h.hexdigest()


def build_module(name_or_source, checked=True, defines=()):
    """Build tests/emulator/kernels/<name>.metal (or a source string) and
    load it. The .so name includes a content hash: dlopen caches by path, so
    a rebuilt module must never reuse the name of a loaded one."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    if name_or_source.endswith(".metal") or "\n" not in name_or_source:
        src = KERNELS / (name_or_source if name_or_source.endswith(".metal") else name_or_source + ".metal")
        text = src.read_text()
    else:
        text = name_or_source
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        src = BUILD_DIR / f"inline_{digest}.metal"
        src.write_text(text)
    tag = hashlib.sha256((text + repr(checked) + repr(defines) + _emulator_digest()).encode()).hexdigest()[:12]
    so = BUILD_DIR / f"{src.stem}_{'chk' if checked else 'fast'}_{tag}.so"
    if not so.exists():
        mtlemu.build([src], so, checked=checked, defines=defines, build_dir=BUILD_DIR)
    return mtlemu.load(so)


@pytest.fixture(scope="session")
def build():
    return build_module
