"""Writing the report files of one or more run folders."""

from __future__ import annotations

from pathlib import Path

from eval.report.build import build_report
from eval.report.collect import rel
from eval.report.plots import layer_panels, plot_bleu_vs_macs, plot_macs_per_layer
from eval.report.render import render_html, render_markdown
from lite.files import write_json_atomic, write_text_atomic

REPORT_FILES = ("report.md", "report.html", "report.json", "bleu_vs_macs.png", "macs_per_layer.png")


def write_report(runs: list[Path], out_dir: Path | None = None) -> dict:
    """Write report.md, report.html, report.json, bleu_vs_macs.png and macs_per_layer.png into
    out_dir (default: the first run's folder); each file atomically. Returns the report.json content
    plus "files": {name: path}."""
    runs = [Path(r) for r in runs]
    report = build_report(runs)
    out_dir = Path(out_dir) if out_dir is not None else runs[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    for run in report["runs"]:
        run["path"] = rel(Path(run["path"]), out_dir)

    rows = report["rows"]
    frontier = sorted((r for r in rows if r["pareto"]), key=lambda r: (r["macs"], -r["bleu"]["bleu"]))
    plot_bleu_vs_macs(rows, frontier, [r["budget"] for r in report["runs"]], out_dir / "bleu_vs_macs.png")
    plot_macs_per_layer(layer_panels(rows), out_dir / "macs_per_layer.png")
    write_text_atomic(render_markdown(report), out_dir / "report.md")
    write_text_atomic(render_html(report), out_dir / "report.html")
    write_json_atomic(report, out_dir / "report.json")
    return report | {"files": {name: str(out_dir / name) for name in REPORT_FILES}}
