"""Putting the runs together: every run's rows, the Pareto frontier across runs, and the notes on what is
comparable. No files are written here."""

from __future__ import annotations

from pathlib import Path

from eval.report.collect import collect_run
from lite.errors import UsageError

MAC_CONVENTION = (
    "mult-adds of one forward pass, 30-token source + 30-token target, without embeddings "
    "or the output projection (lite/metrics/macs.py)"
)


def pareto_frontier(rows: list[dict]) -> list[dict]:
    """Rows with both MACs and a headline BLEU that no other row beats (fewer-or-equal MACs and
    higher-or-equal BLEU, one of them strictly), ordered by MACs. Ties on both are all kept."""
    points = [r for r in rows if r["macs"] is not None and r["bleu"] is not None]
    front = []
    for r in points:
        m, b = r["macs"], r["bleu"]["bleu"]
        dominated = any(
            o["macs"] <= m and o["bleu"]["bleu"] >= b and (o["macs"] < m or o["bleu"]["bleu"] > b) for o in points
        )
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: (r["macs"], -r["bleu"]["bleu"], r["id"]))


def _comparability_notes(rows: list[dict]) -> list[str]:
    """Headline BLEU scores are comparable (and the Pareto frontier meaningful) only on one test set,
    one decoding and one sacrebleu signature: say where that is not known or not so."""
    notes = []
    unsigned = [r["id"] for r in rows if r["bleu"]["signature"] is None or r["bleu"]["sentences"] is None]
    if unsigned:
        notes.append(
            f"BLEU of {', '.join(unsigned)} was recorded without its sacrebleu signature or sentence "
            "count: its comparability with the other rows is not known"
        )
    for field, what in (
        ("corpus", "test corpora"),
        ("sentences", "test-set sizes"),
        ("signature", "sacrebleu signatures"),
        ("decoding", "decodings"),
    ):
        values = {r["bleu"][field] for r in rows if r["bleu"][field] is not None}
        if len(values) > 1:
            notes.append(
                f"the headline BLEU scores use different {what} ({', '.join(sorted(map(str, values)))}): "
                "compare them, and read the Pareto frontier, with care"
            )
    return notes


def _name_by_path_when_shared(collected: list[dict]) -> None:
    """Two run folders with one name (e.g. a/default, b/default) are told apart by their paths."""
    names = [c["run"] for c in collected]
    for c in collected:
        if names.count(c["run"]) > 1:
            c["run"] = c["path"]
            for row in c["rows"]:
                row["run"], row["id"] = c["path"], f"{c['path']}/{row['artifact']}"


def build_report(runs: list[Path]) -> dict:
    """Collect every run and put the rows together (no files written)."""
    if not runs:
        raise UsageError("no run folders given")
    collected = [collect_run(Path(r)) for r in runs]
    _name_by_path_when_shared(collected)
    rows = [row for c in collected for row in c["rows"]]
    frontier = pareto_frontier(rows)
    ids = {r["id"] for r in frontier}
    for r in rows:
        r["pareto"] = r["id"] in ids
    notes = [n for c in collected for n in c["notes"]]
    notes += _comparability_notes([r for r in rows if r["bleu"] is not None])
    return {
        "mac_convention": MAC_CONVENTION,
        "runs": [{k: v for k, v in c.items() if k != "rows" and k != "notes"} for c in collected],
        "rows": rows,
        "pareto": [
            {"id": r["id"], "run": r["run"], "artifact": r["artifact"], "macs": r["macs"], "bleu": r["bleu"]["bleu"]}
            for r in frontier
        ],
        "notes": notes,
    }
