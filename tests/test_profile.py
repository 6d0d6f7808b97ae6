"""Profiles: kernel families by function name, guest addresses to ELF symbols, the host perf profile."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from eval.kernels import FAMILIES, by_family, family
from eval.targets.symbols import Mapping, SymbolTable, attribute, read_maps

LIB = "libpywrap_litert_common.so"


@pytest.mark.parametrize(
    "library, symbol, expected",
    [
        (LIB, "xnn_f32_gemm_minmax_ukernel_1x8__asm_aarch64_neonfma_cortex_a75_prfm", "fp32 matmul"),
        (LIB, "kai_kernel_matmul_clamp_f32_qai8dxp1x4_qsi8cxp4x4_1x4_neon_dotprod", "int8 matmul"),
        (LIB, "xnn_qs8_qc8w_gemm_minmax_fp32_ukernel_1x16c4__neondot", "int8 matmul"),
        (LIB, "kai_run_lhs_quant_pack_qai8dxp_f32", "quantize/dequantize"),
        (LIB, "xnn_f32_qs8_vcvt_ukernel__neonv8_u32", "quantize/dequantize"),
        (LIB, "xnn_x32_packw_gemm_gio_ukernel_x8__neon_u2", "packing dynamic matmul operands"),
        (LIB, "xnn_x32_transposec_ukernel__4x4_aarch64_neon_tbl128", "packing dynamic matmul operands"),
        (
            LIB,
            "void tflite::reference_ops::RunSelectOp<bool, unsigned int>(bool const*)",
            "TFLite kernels outside XNNPACK",
        ),
        (LIB, "xnn_f32_vadd_ukernel__neon_u8", "elementwise, norms, softmax"),
        (LIB, "tflite::Subgraph::InvokeImpl()", "graph dispatch"),
        ("python3.11", "_PyEval_EvalFrameDefault", "python interpreter"),
        ("_multiarray_umath.cpython-311-aarch64-linux-gnu.so", "FLOAT_argmax", "numpy"),
        ("libc.so.6", "?", "libc (copies, allocation)"),
        ("mystery.so", "f", "other"),
    ],
)
def test_kernel_families(library, symbol, expected):
    assert family(library, symbol) == expected


def test_by_family_sums_and_lists_every_family():
    out = by_family({("libc.so.6", "?"): 3, ("python3.11", "x"): 2, ("libc.so.6", "memcpy"): 1})
    assert list(out) == FAMILIES
    assert out["libc (copies, allocation)"] == 4 and out["python interpreter"] == 2 and out["other"] == 0


@pytest.fixture(scope="module")
def tiny_so(tmp_path_factory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    d = tmp_path_factory.mktemp("so")
    (d / "t.c").write_text("int first(int x) { return x * 3 + 1; }\nint second(int x) { return x - 7; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(d / "t.so"), str(d / "t.c")], check=True)
    return d / "t.so"


def _address(so: Path, name: str) -> int:
    out = subprocess.run(["nm", str(so)], capture_output=True, text=True, check=True).stdout
    return next(int(line.split()[0], 16) for line in out.splitlines() if line.endswith(" " + name))


def test_guest_addresses_map_to_functions(tiny_so, tmp_path):
    """An address inside a mapping, through the file's program headers, names its function; an address
    in no mapping or between functions counts, unnamed."""
    table = SymbolTable(str(tiny_so))
    first, second = _address(tiny_so, "first"), _address(tiny_so, "second")
    assert table.lookup(first) == "first" and table.lookup(second + 1) == "second"
    base = 0x7F0000000000  # the .so's code mapped at a page-aligned base, file offset 0 (as ld.so maps it)
    maps = tmp_path / "maps"
    maps.write_text(
        f"{base:x}-{base + 0x10000:x} r-xp 00000000 08:01 42 {tiny_so}\n"
        f"{base + 0x10000:x}-{base + 0x20000:x} rw-p 00000000 00:00 0 [heap]\n"
    )
    parsed = read_maps(maps)
    assert parsed == [Mapping(base, base + 0x10000, 0, str(tiny_so))]
    counts = attribute({base + first: 10, base + second: 5, base + first + 2: 1, 0x1000: 7}, parsed)
    assert counts == {("t.so", "first"): 11, ("t.so", "second"): 5, ("?", "?"): 7}


@pytest.mark.skipif(shutil.which("perf") is None, reason="perf not installed")
def test_host_profile_of_the_smoke_folder(exported):
    from eval.host_profile import profile_host

    p = profile_host(exported / "export" / "tflite-fp32", [5, 9, 14, 22, 31, 2], 10, seconds=1.5)
    assert p["samples"]["sentence"] > 500 and p["runs"]["sentence"] > 10
    step = sum(f["step_ms"] for f in p["families"].values())
    assert step == pytest.approx(p["step_ms"], rel=0.02)  # the families split the measured step time
    assert p["families"]["fp32 matmul"]["step_ms"] > 0 and p["families"]["int8 matmul"]["step_ms"] == 0
    assert p["top_step"][0]["count"] > 0
