"""How the report writes a value: one spelling for "not measured", counts with a k/M/G suffix, BLEU and sizes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NOT_MEASURED = "not measured"


def human(n: float, decimals: int = 1) -> str:
    """`n` with a k/M/G suffix (94371840 -> "94.4M"); below 1000 a whole number."""
    a = abs(n)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= scale:
            return f"{n / scale:.{decimals}f}{suffix}"
    return f"{n:.0f}"


def fmt_opt(v: Any, fmt: Callable[[Any], str]) -> str:
    return NOT_MEASURED if v is None else fmt(v)


def fmt_bleu(b: dict | None) -> str:
    return NOT_MEASURED if b is None else f"{b['bleu']:.2f}"


def fmt_testset(b: dict | None) -> str:
    if b is None:
        return NOT_MEASURED
    sents = f", {b['sentences']:,} sentences" if b.get("sentences") is not None else ""
    return f"{b.get('corpus') or 'corpus not recorded'} {b['split']}{sents}, {b['decoding']}"


def fmt_macs(m: int | None) -> str:
    return NOT_MEASURED if m is None else f"{human(m)} ({m:,})"


def fmt_size(row: dict) -> str:
    return NOT_MEASURED if row["size_bytes"] is None else f"{row['size_mb']:.2f} MB ({row['size_bytes']:,} B)"
