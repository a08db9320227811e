"""Python runner for emulator kernel modules (ctypes; numpy buffers).

    import mtlemu
    emu = mtlemu.compile("k.metal", include_dirs=[...])  # build (cached) + load
    # or: so = mtlemu.build(["k.metal"], "k.so"); emu = mtlemu.load(so)
    emu.launch("name", grid=(gx, gy, gz), tg=(tx, ty, tz),
               buffers=[a, b, np.array([n], np.uint32), params_bytes],
               threadgroup_mem=[4096])
    # a, b are written in place; failures raise mtlemu.EmulatorError

buffers[i] binds [[buffer(i)]]: numpy arrays are used in place (they must be
C-contiguous); bytes/bytearray/ctypes objects are copied to a temporary
buffer (use them for constant parameter structs).
function_constants={index: value} sets [[function_constant(index)]] values.
"""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from build import BuildError, build  # noqa: E402,F401

MTLEMU_NO_RACE_CHECK = 1
MTLEMU_CHECK_UNINITIALIZED = 2
ABI_VERSION = 1


class EmulatorError(RuntimeError):
    """A launch found problems (out-of-bounds access, race, deadlock...)."""


class _Buffer(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class _FunctionConstant(ctypes.Structure):
    _fields_ = [("index", ctypes.c_int), ("value", ctypes.c_double)]


class _LaunchDesc(ctypes.Structure):
    _fields_ = [
        ("kernel", ctypes.c_char_p),
        ("grid", ctypes.c_uint32 * 3),
        ("threads", ctypes.c_uint32 * 3),
        ("buffers", ctypes.POINTER(_Buffer)),
        ("n_buffers", ctypes.c_int),
        ("threadgroup_bytes", ctypes.POINTER(ctypes.c_size_t)),
        ("n_threadgroup", ctypes.c_int),
        ("flags", ctypes.c_int),
        ("function_constants", ctypes.POINTER(_FunctionConstant)),
        ("n_function_constants", ctypes.c_int),
    ]


class _Registry(ctypes.Structure):
    _fields_ = [
        ("abi_version", ctypes.c_int),
        ("checked", ctypes.c_int),
        ("kernel_count", ctypes.CFUNCTYPE(ctypes.c_int)),
        ("kernel_name", ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_int)),
        ("launch", ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_LaunchDesc))),
        ("last_error", ctypes.CFUNCTYPE(ctypes.c_char_p)),
    ]


def _dim3(v) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, 1, 1)
    v = tuple(int(x) for x in v)
    return (v + (1, 1, 1))[:3]


def _as_array(b):
    if isinstance(b, np.ndarray):
        if not b.flags["C_CONTIGUOUS"]:
            raise ValueError("mtlemu: buffers must be C-contiguous numpy arrays")
        return b
    if isinstance(b, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(b), dtype=np.uint8).copy()
    if isinstance(b, (ctypes.Structure, ctypes.Array)):
        return np.frombuffer(bytes(b), dtype=np.uint8).copy()
    if isinstance(b, np.generic):
        return np.array([b])
    raise TypeError(f"mtlemu: unsupported buffer type {type(b).__name__}")


class Module:
    def __init__(self, path):
        self.path = str(path)
        self._lib = ctypes.CDLL(self.path, mode=ctypes.RTLD_LOCAL)
        get = self._lib.mtlemu_get_registry
        get.restype = ctypes.POINTER(_Registry)
        self._reg = get().contents
        if self._reg.abi_version != ABI_VERSION:
            raise EmulatorError(f"{path}: ABI version {self._reg.abi_version}, expected {ABI_VERSION}")

    @property
    def checked(self) -> bool:
        return bool(self._reg.checked)

    def kernels(self) -> list[str]:
        return [self._reg.kernel_name(i).decode() for i in range(self._reg.kernel_count())]

    def launch(self, name, grid, tg, buffers=(), threadgroup_mem=(), check_races=True, function_constants=None,
               check_uninitialized=False):
        arrays = [None if b is None else _as_array(b) for b in buffers]
        raw = (_Buffer * max(1, len(arrays)))()
        for i, a in enumerate(arrays):
            raw[i].ptr = None if a is None else a.ctypes.data
            raw[i].size = 0 if a is None else a.nbytes
        tgm = (ctypes.c_size_t * max(1, len(threadgroup_mem)))(*threadgroup_mem)
        d = _LaunchDesc()
        d.kernel = name.encode()
        d.grid[:] = _dim3(grid)
        d.threads[:] = _dim3(tg)
        d.buffers = raw
        d.n_buffers = len(arrays)
        d.threadgroup_bytes = tgm
        d.n_threadgroup = len(threadgroup_mem)
        d.flags = (0 if check_races else MTLEMU_NO_RACE_CHECK) | (MTLEMU_CHECK_UNINITIALIZED if check_uninitialized else 0)
        fcs = sorted((function_constants or {}).items())
        fc = (_FunctionConstant * max(1, len(fcs)))(*[(int(i), float(v)) for i, v in fcs])
        d.function_constants = fc
        d.n_function_constants = len(fcs)
        if self._reg.launch(ctypes.byref(d)) != 0:
            raise EmulatorError(self._reg.last_error().decode())
        return arrays


def load(path) -> Module:
    return Module(path)


def compile(sources, include_dirs=(), defines=(), checked=True, build_dir=None) -> Module:  # noqa: A001
    """Build (cached, content-addressed) and load a module in one step."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    return load(build(sources, None, include_dirs, defines, checked, build_dir))
