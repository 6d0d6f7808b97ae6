"""Budget checks: each budget of a run config against one report row, as PASS, FAIL, "unknown" or "no budget".

A quantity that was not measured is "unknown", never a pass. The margin is value - limit: negative is under
a maximum, positive is over a minimum. Latency must meet its budget on every measured target; its margin is
the worst target's.
"""

from __future__ import annotations

from collections.abc import Callable

from eval.report.text import NOT_MEASURED, human
from lite.config import BudgetConfig

BUDGETS = ("max_macs", "max_size_mb", "max_latency_ms", "min_bleu")
# the column of each budget in the report's tables
BUDGET_HEAD = {"max_macs": "MACs", "max_size_mb": "size", "max_latency_ms": "latency", "min_bleu": "BLEU"}


def check(value: float | None, limit: float | None, *, upper: bool, unit: str, fmt: Callable[[float], str]) -> dict:
    """{"limit", "value", "status", "margin", "text"} of one quantity; `upper`: the limit is a maximum."""
    if limit is None:
        return {"limit": None, "value": value, "status": "no budget", "margin": None, "text": "no budget"}
    if value is None:
        return {"limit": limit, "value": None, "status": "unknown", "margin": None, "text": f"unknown ({NOT_MEASURED})"}
    margin = value - limit
    ok = margin <= 0 if upper else margin >= 0
    if margin == 0:
        text = f"at the limit ({fmt(limit)} {unit})"
    else:
        text = f"{'-' if margin < 0 else '+'}{fmt(abs(margin))} {unit} {'under' if margin < 0 else 'over'}"
    return {"limit": limit, "value": value, "status": "PASS" if ok else "FAIL", "margin": margin, "text": text}


def _latency_check(latency_ms: dict, limit: float | None) -> dict:
    """The worst measured target against the limit; the targets not measured are named in the text."""
    measured = {t: v for t, v in latency_ms.items() if v is not None}
    worst = max(measured, key=measured.get) if measured else None
    lat = check(measured.get(worst), limit, upper=True, unit="ms", fmt=lambda x: f"{x:.1f}")
    lat["target"] = worst
    if worst is not None and lat["status"] in ("PASS", "FAIL"):
        lat["text"] += f" (worst: {worst})"
        missing = sorted(t for t, v in latency_ms.items() if v is None)
        if missing:
            lat["text"] += f"; {NOT_MEASURED} on {', '.join(missing)}"
    return lat


def budget_checks(row: dict, budget: BudgetConfig) -> dict:
    """{budget name: check} for a report row (its "macs", "size_mb", "bleu", "latency_ms"), in BUDGETS order."""
    checks = {
        "max_macs": check(row["macs"], budget.max_macs, upper=True, unit="MACs", fmt=human),
        "max_size_mb": check(row["size_mb"], budget.max_size_mb, upper=True, unit="MB", fmt=lambda x: f"{x:.2f}"),
        "min_bleu": check(
            None if row["bleu"] is None else row["bleu"]["bleu"],
            budget.min_bleu,
            upper=False,
            unit="BLEU",
            fmt=lambda x: f"{x:.2f}",
        ),
        "max_latency_ms": _latency_check(row["latency_ms"], budget.max_latency_ms),
    }
    return {k: checks[k] for k in BUDGETS}


def verdict(checks: dict) -> str:
    """FAIL if any budget fails, else "unknown" if any is unknown, else PASS (or "no budget" when none is set)."""
    statuses = [c["status"] for c in checks.values()]
    if "FAIL" in statuses:
        return "FAIL"
    if "unknown" in statuses:
        return "unknown"
    return "PASS" if "PASS" in statuses else "no budget"


def budget_limits(budget: dict) -> str:
    """The limits of a run's budget (a BudgetConfig as a dict) in one line."""
    parts = []
    if budget.get("max_macs") is not None:
        parts.append(f"MACs <= {human(budget['max_macs'])} ({budget['max_macs']:,})")
    if budget.get("max_size_mb") is not None:
        parts.append(f"size <= {budget['max_size_mb']:g} MB")
    if budget.get("max_latency_ms") is not None:
        parts.append(f"latency <= {budget['max_latency_ms']:g} ms per sentence")
    if budget.get("min_bleu") is not None:
        parts.append(f"test BLEU >= {budget['min_bleu']:g}")
    return ", ".join(parts) or "no budget set"


def budget_cell(check: dict) -> str:
    """A check as a table cell: "PASS: -1.5 ms under", "unknown (not measured)", "no budget"."""
    if check["status"] in ("PASS", "FAIL"):
        return f"{check['status']}: {check['text']}"
    return check["text"]
