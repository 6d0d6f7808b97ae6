"""Which part of the work a function is: kernel families for a per-symbol profile (host or ARM).

A TFLite step graph runs as XNNPACK micro-kernels (and KleidiAI's on Arm), TFLite's own kernels for the
ops XNNPACK does not take, the interpreter's dispatch, and, between graph calls, the runtime's Python
and numpy. Function names say which: `xnn_f32_gemm_*` is a float matmul, `kai_*matmul*qai8dx*` an
int8 one, `kai_run_lhs_quant_pack_*` quantizes activations, `xnn_x32_packw_*` and `*transposec*` pack a
matmul operand that is not a constant (the attention's keys and values), `tflite::reference_ops::*`
a portable kernel XNNPACK did not take. Families are a profile's rows; the rules are first-match.

Standard library only.
"""

from __future__ import annotations

import re

# (family, library pattern or None, symbol pattern or None); the first rule that matches wins
RULES: list[tuple[str, str | None, str | None]] = [
    ("python interpreter", r"^(python3|libpython3)", None),
    ("numpy", r"(_multiarray|numpy|openblas)", None),
    ("libc (copies, allocation)", r"^(libc\.|ld-linux|libm\.|libstdc\+\+|libgcc)", None),
    ("os kernel", r"kernel", None),
    ("quantize/dequantize", None, r"(lhs_quant_pack|_vcvt_|packq|quantize|dequantize|Quantize|Dequantize)"),
    ("int8 matmul", None, r"(kai_.*matmul|xnn_(qd8|qs8|qu8|qc8|qp8)\w*gemm|ruy::|gemmlowp|integer_ops)"),
    ("fp32 matmul", None, r"(xnn_f32\w*(gemm|ppmm)|xnn_f16\w*gemm|Eigen::|sgemm)"),
    ("packing dynamic matmul operands", None, r"(packw|xnn_pack_|transposec|transposev|kai_run_rhs_pack)"),
    ("TFLite kernels outside XNNPACK", None, r"tflite::(reference_ops|optimized_ops|ops::builtin|tensor_utils)"),
    ("elementwise, norms, softmax", None, r"^xnn_(f32|f16|x32|x8|u8|s8|qs8|qu8)_"),
    ("graph dispatch", None, r"(tflite::|xnn_|pthreadpool|absl::|pybind11|TfLite|litert|LiteRt|std::)"),
]
_COMPILED = [(f, re.compile(lib) if lib else None, re.compile(sym) if sym else None) for f, lib, sym in RULES]
FAMILIES = [f for f, _, _ in RULES] + ["other"]


# the families grouped into the columns of a summary table (README, budget report)
COLUMNS: dict[str, tuple[str, ...]] = {
    "fp32 matmul": ("fp32 matmul",),
    "int8 matmul": ("int8 matmul",),
    "quantize": ("quantize/dequantize",),
    "operand packing": ("packing dynamic matmul operands",),
    "TFLite kernels": ("TFLite kernels outside XNNPACK",),
    "libc": ("libc (copies, allocation)",),
    "Python + numpy": ("python interpreter", "numpy"),
    "rest": ("elementwise, norms, softmax", "graph dispatch", "os kernel", "other"),
}


def column_shares(families: dict[str, dict[str, float]], key: str) -> dict[str, float]:
    """Each COLUMNS column's share of the total of `key` over `families` ({family: {key: value}})."""
    total = sum(f[key] for f in families.values()) or 1.0
    return {col: sum(families.get(f, {}).get(key, 0.0) for f in fs) / total for col, fs in COLUMNS.items()}


def places(row: dict) -> list[tuple[str, dict, str]]:
    """(where, profile, key of a step's figure) for one folder's profile record: the host first
    ("step_ms"), then each emulated core ("step", instructions)."""
    return [("host", row["host"], "step_ms")] + [(core, p, "step") for core, p in row.get("cores", {}).items()]


def family(library: str, symbol: str) -> str:
    """The kernel family of `symbol` in `library` (a file name: libpywrap_litert_common.so, libc.so.6)."""
    for name, lib, sym in _COMPILED:
        if (lib is None or lib.search(library)) and (sym is None or sym.search(symbol)):
            return name
    return "other"


def by_family(counts: dict[tuple[str, str], float]) -> dict[str, float]:
    """Sum of `counts` per family, every family present (zero where nothing landed), in FAMILIES order."""
    out = dict.fromkeys(FAMILIES, 0.0)
    for (library, symbol), n in counts.items():
        out[family(library, symbol)] += n
    return out


def top(counts: dict[tuple[str, str], float], n: int = 15) -> list[dict]:
    """The n largest (library, symbol) entries with their family."""
    best = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return [{"library": lib, "symbol": sym, "family": family(lib, sym), "count": c} for (lib, sym), c in best]
