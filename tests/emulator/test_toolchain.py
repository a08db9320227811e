"""Compile driver, pre-pass and the C++ host API."""
import subprocess
import sys

import pytest

from conftest import BUILD_DIR, EMU, KERNELS, build_module, mtlemu

sys.path.insert(0, str(EMU))
import mtlpp  # noqa: E402


def test_cli_build_and_cpp_host_api(tmp_path):
    so = tmp_path / "saxpy.so"
    subprocess.run([sys.executable, str(EMU / "build.py"), str(KERNELS / "saxpy.metal"), "-o", str(so),
                    "--build-dir", str(BUILD_DIR)], check=True, capture_output=True)
    host = tmp_path / "host"
    subprocess.run(["clang++-19", "-std=c++17", "-O1", f"-I{EMU / 'include'}", str(KERNELS.parent / "host_api.cpp"),
                    "-o", str(host), "-ldl"], check=True, capture_output=True, text=True)
    out = subprocess.run([str(host), str(so)], check=True, capture_output=True, text=True).stdout
    assert "kernel saxpy" in out and "saxpy ok" in out, out
    assert "caught: out-of-bounds read of 4 bytes in kernel 'saxpy': device buffer(0) at byte offset 1024" in out, out


def test_fast_build_has_no_checks():
    m = build_module("saxpy", checked=False)
    assert not m.checked
    import numpy as np
    x, y = np.arange(64, dtype=np.float32), np.ones(64, np.float32)
    m.launch("saxpy", grid=1, tg=64, buffers=[x, y, np.array([64], np.uint32).tobytes() + np.float32(3).tobytes()])
    np.testing.assert_array_equal(y, 3 * x + 1)


def test_compile_errors_point_at_metal_lines(tmp_path):
    src = tmp_path / "broken.metal"
    src.write_text("#include <metal_stdlib>\nusing namespace metal;\n\n"
                   "kernel void k(device float* o [[buffer(0)]],\n"
                   "              uint i [[thread_position_in_grid]]) {\n"
                   "  float4 v = float4(1.0f);\n"
                   "  o[i] = v.q;\n"
                   "}\n")
    with pytest.raises(mtlemu.BuildError, match=r"broken\.metal:7:"):
        mtlemu.build([src], tmp_path / "broken.so", build_dir=BUILD_DIR)


def test_prepass_keeps_lines_and_skips_comments():
    src = ("#include <metal_stdlib>\n// float4(x) in a comment\n"
           "constant char* s = \"float4(1)\";\n"
           "kernel void k(device float4* o [[buffer(0)]],\n  uint i [[thread_position_in_grid]]) {\n"
           "  threadgroup float4 t[2][\n  8];\n  o[i] = float4(1.5h) + (float4)int4(i);\n}\n")
    out, info = mtlpp.preprocess(src, "k.metal")
    body = out.split("\n", 1)[1]
    assert body.count("\n") == src.count("\n")
    assert "// float4(x) in a comment" in body and '"float4(1)"' in body
    assert "::mtlemu::construct<float4>(1.5f16)" in body and "::mtlemu::vcast<float4>()->*" in body
    assert "mtlemu_tg_alloc" in body and "[[" not in body
    assert info["kernels"][0]["name"] == "k"


def test_prepass_rejects_unsupported_attributes():
    with pytest.raises(mtlpp.PrepassError, match="function_constant"):
        mtlpp.preprocess("kernel void k(device float* o [[buffer(0)]], bool b [[function_constant(0)]]) {}\n")


def test_headers_are_prepassed_and_sources_combine(tmp_path):
    import numpy as np
    so = mtlemu.build([KERNELS / "uses_header.metal", KERNELS / "second_source.metal"], tmp_path / "multi.so",
                      include_dirs=[KERNELS / "include"], build_dir=BUILD_DIR)
    m = mtlemu.load(so)
    assert sorted(m.kernels()) == ["scale4_f16", "scale4_f32"]
    for name, dt in (("scale4_f16", np.float16), ("scale4_f32", np.float32)):
        x = np.arange(256, dtype=dt).reshape(64, 4)
        out = np.zeros((64, 4), np.float32)
        m.launch(name, grid=1, tg=64, buffers=[x, out])
        np.testing.assert_array_equal(out, 2 * x[::-1].astype(np.float32))


def test_unsupported_function_constant_use_is_rejected():
    with pytest.raises(mtlpp.PrepassError, match="function_constant"):
        mtlpp.preprocess("void f(bool b [[function_constant(0)]]);\n")


def test_function_constants(build):
    import numpy as np
    m = build("fconst")
    x0 = np.arange(64, dtype=np.float32)
    bias = np.full(64, 0.5, np.float32)
    x, flags = x0.copy(), np.zeros(3, np.int32)
    m.launch("apply", grid=1, tg=64, buffers=[x, bias, flags], function_constants={0: True, 1: 2, 2: 1.5})
    np.testing.assert_array_equal(x, (x0 * 1.5 + 0.5) * 4)
    np.testing.assert_array_equal(flags, [1, 1, 2])
    x, flags = x0.copy(), np.zeros(3, np.int32)
    m.launch("apply", grid=1, tg=64, buffers=[x, bias, flags], function_constants={2: 2.0})
    np.testing.assert_array_equal(x, x0 * 2.0 * 2)
    np.testing.assert_array_equal(flags, [0, 0, 1])


def test_compile_is_content_addressed(tmp_path):
    import numpy as np
    src = tmp_path / "k.metal"
    body = ("#include <metal_stdlib>\nusing namespace metal;\n"
            "kernel void fill(device float* o [[buffer(0)]], uint i [[thread_position_in_grid]]) { o[i] = VALUE; }\n")
    results = []
    for value in ("1.0f", "2.0f", "1.0f"):
        src.write_text(body.replace("VALUE", value))
        m = mtlemu.compile(src, build_dir=BUILD_DIR)
        out = np.zeros(32, np.float32)
        m.launch("fill", grid=1, tg=32, buffers=[out])
        results.append((m.path, out[0]))
    assert [r[1] for r in results] == [1.0, 2.0, 1.0]
    assert results[0][0] != results[1][0] and results[0][0] == results[2][0]


def test_prepass_template_brackets_with_comparisons():
    src = ("template <typename T, metal::enable_if_t<sizeof(T) < 8, bool> = true>\n"
           "T twice(T x) { return T(x) * T(2); }\n")
    out, _ = mtlpp.preprocess(src, "t.metal")
    assert "::mtlemu::construct<T>(x)" in out and "::mtlemu::construct<T>(2)" in out
