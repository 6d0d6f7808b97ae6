"""The report's figures: BLEU vs MACs with the Pareto frontier and the budgets, and MACs per layer by part.

Each figure is written atomically as a PNG (matplotlib's object API, no global pyplot state).
"""

from __future__ import annotations

import json
from pathlib import Path

from eval.report.text import NOT_MEASURED, human
from lite.files import atomic_path

# the per-layer parts of lite.metrics.macs, in the order they are stacked in the plot
MAC_PARTS = (
    "attn_proj",
    "attn_scores",
    "attn_values",
    "glu",
    "conv_in",
    "conv_kernel",
    "conv",
    "conv_out",
    "cross_proj",
    "cross_scores",
    "cross_values",
    "ffn",
)


def _save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


FORMAT_MARKERS = {"pytorch": "o", "onnx": "s", "tflite": "^"}
BUDGET_COLOR = "firebrick"


def _plot_points(ax, points: list[dict], colors: dict[str, str], one_run: bool) -> None:
    """A marker per row (colour: run, shape: format) with its label; labels of points at the same spot
    (fp32 and int8 of one model share the MACs) are stacked."""
    stack: dict[tuple, int] = {}
    for r in sorted(points, key=lambda r: (r["macs"], -r["bleu"]["bleu"])):
        x, y = r["macs"] / 1e6, r["bleu"]["bleu"]
        ax.scatter(
            [x],
            [y],
            s=70,
            color=colors[r["run"]],
            marker=FORMAT_MARKERS.get(r["format"], "o"),
            zorder=3,
            edgecolors="black",
            linewidths=0.6,
        )
        spot = (round(x, 1), round(y, 0))
        k = stack.get(spot, 0)
        stack[spot] = k + 1
        name = r["artifact"] if one_run else f"{r['run']}: {r['artifact']}"
        ax.annotate(
            f"{name} ({r['format']} {r['precision']})",
            (x, y),
            xytext=(8, 6 - 13 * k),
            textcoords="offset points",
            fontsize=8,
            color="#222222",
        )


def _plot_frontier(ax, frontier: list[dict], points: list[dict]) -> None:
    """The frontier as a dashed staircase to just past the last point, its rows circled."""
    xs = [r["macs"] / 1e6 for r in frontier]
    ys = [r["bleu"]["bleu"] for r in frontier]
    xmax = max(r["macs"] for r in points) / 1e6
    ax.step(
        xs + [max(xmax, xs[-1]) * 1.02],
        ys + [ys[-1]],
        where="post",
        color="black",
        linestyle="--",
        linewidth=1.2,
        zorder=2,
    )
    ax.scatter(xs, ys, s=190, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)


def _plot_budgets(ax, budgets: list[dict]) -> None:
    """A vertical line per distinct MAC budget and a horizontal one per BLEU budget, each labelled."""
    for value in sorted({b["max_macs"] for b in budgets if b.get("max_macs") is not None}):
        ax.axvline(value / 1e6, color=BUDGET_COLOR, linestyle=":", linewidth=1)
        ax.annotate(
            f"MAC budget {human(value)}",
            (value / 1e6, 0.02),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=8,
            color=BUDGET_COLOR,
            ha="right",
            va="bottom",
        )
    for value in sorted({b["min_bleu"] for b in budgets if b.get("min_bleu") is not None}):
        ax.axhline(value, color=BUDGET_COLOR, linestyle="-.", linewidth=1)
        ax.annotate(
            f"BLEU budget {value:g}",
            (0.01, value),
            xycoords=("axes fraction", "data"),
            fontsize=8,
            color=BUDGET_COLOR,
            va="bottom",
        )


def _note_unplotted(ax, rows: list[dict], points: list[dict]) -> None:
    missing = [r["id"] for r in rows if r not in points]
    if missing and points:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        ax.text(
            0.01,
            0.99,
            f"not plotted (BLEU {NOT_MEASURED}): {shown}",
            transform=ax.transAxes,
            fontsize=8,
            va="top",
            color="#555555",
        )


def _set_limits(ax, points: list[dict], budgets: list[dict]) -> None:
    """Axes around the points and budget lines, with room on the right for the labels."""
    xs_all = [r["macs"] / 1e6 for r in points] + [b["max_macs"] / 1e6 for b in budgets if b.get("max_macs")]
    lo, hi = min(xs_all), max(xs_all)
    pad = max((hi - lo) * 0.15, hi * 0.05)
    ax.set_xlim(max(lo - pad, 0), hi + pad * 2.5)
    ys_all = [r["bleu"]["bleu"] for r in points] + [b["min_bleu"] for b in budgets if b.get("min_bleu") is not None]
    ylo, yhi = min(ys_all), max(ys_all)
    ypad = max((yhi - ylo) * 0.15, 1.0)
    ax.set_ylim(max(ylo - ypad, 0), yhi + ypad)


def _legend(ax, points: list[dict], runs: list[str], colors: dict[str, str], frontier: bool) -> None:
    """Runs (colours) and formats (shapes) that appear among the points, and the frontier."""
    from matplotlib.lines import Line2D

    def marker(shape: str, face: str, label: str) -> Line2D:
        return Line2D(
            [],
            [],
            linestyle="none",
            marker=shape,
            markersize=8,
            markerfacecolor=face,
            markeredgecolor="black",
            label=label,
        )

    handles = [marker("o", colors[run], f"run {run}") for run in runs if any(r["run"] == run for r in points)]
    handles += [marker(m, "white", f) for f, m in FORMAT_MARKERS.items() if any(r["format"] == f for r in points)]
    if frontier:
        handles.append(
            Line2D(
                [],
                [],
                color="black",
                linestyle="--",
                marker="o",
                markersize=11,
                markerfacecolor="none",
                label="Pareto frontier",
            )
        )
    ax.legend(handles=handles, fontsize=8, loc="lower right", framealpha=0.9)


def plot_bleu_vs_macs(rows: list[dict], frontier: list[dict], budgets: list[dict], path: Path) -> None:
    """Every row with both MACs and BLEU, the Pareto frontier (`frontier`, ordered by MACs) and the runs'
    MAC and BLEU budgets (BudgetConfig dicts); the rows left out are named in a corner."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6))
    ax = fig.add_subplot()
    points = [r for r in rows if r["macs"] is not None and r["bleu"] is not None]
    runs = list(dict.fromkeys(r["run"] for r in rows))
    colors = {run: f"C{i % 10}" for i, run in enumerate(runs)}
    if not points:
        ax.text(0.5, 0.5, "no row has both BLEU and MACs measured", ha="center", va="center", transform=ax.transAxes)
    _plot_points(ax, points, colors, one_run=len(runs) == 1)
    if frontier:
        _plot_frontier(ax, frontier, points)
    _plot_budgets(ax, budgets)
    _note_unplotted(ax, rows, points)
    ax.set_xlabel("MACs (millions; 30+30 tokens, no embeddings / output projection)")
    ax.set_ylabel("BLEU (test split, headline decoding)")
    ax.set_title("BLEU vs MACs: up and to the left is better")
    ax.grid(True, alpha=0.3)
    if points:
        _set_limits(ax, points, budgets)
        _legend(ax, points, runs, colors, bool(frontier))
    _save_figure(fig, path)


def plot_macs_per_layer(panels: list[dict], path: Path) -> None:
    """panels: [{"title", "layers": lite.metrics.macs layer breakdowns}], one stacked-bar panel each."""
    from matplotlib.figure import Figure

    n = max(len(panels), 1)
    fig = Figure(figsize=(max(6.0, 4.2 * n), 5.2), layout="constrained")
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    parts = [p for p in MAC_PARTS if any(p in layer for panel in panels for layer in panel["layers"])]
    colors = {  # attention blues, convolution greens, cross-attention purples, FFN orange
        "attn_proj": "#1f4e9c",
        "attn_scores": "#4f81d9",
        "attn_values": "#9dbbf0",
        "glu": "#1b7a3a",
        "conv_in": "#1b7a3a",
        "conv_kernel": "#4caf50",
        "conv": "#8fd694",
        "conv_out": "#c7ecc4",
        "cross_proj": "#6a3d9a",
        "cross_scores": "#9e7cc1",
        "cross_values": "#d2c0e6",
        "ffn": "#f28e2b",
    }
    if not panels:
        axes[0].text(0.5, 0.5, "no model", ha="center", va="center", transform=axes[0].transAxes)
    for ax, panel in zip(axes, panels):
        names = [layer["name"].replace("encoder.", "enc ").replace("decoder.", "dec ") for layer in panel["layers"]]
        bottom = [0.0] * len(names)
        for part in parts:
            values = [layer.get(part, 0) / 1e6 for layer in panel["layers"]]
            if any(values):
                ax.bar(
                    names, values, bottom=bottom, color=colors.get(part), label=part, edgecolor="white", linewidth=0.4
                )
                bottom = [b + v for b, v in zip(bottom, values)]
        for i, total in enumerate(bottom):
            ax.annotate(f"{total:.1f}", (i, total), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
        ax.set_title(panel["title"], fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("MACs per layer (millions)")
    handles: dict = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
    ordered = [p for p in parts if p in handles]
    if ordered:
        fig.legend([handles[p] for p in ordered], ordered, loc="outside right center", fontsize=8, title="part")
    fig.suptitle("MACs per layer by part (lite.metrics.macs, 30+30 tokens)")
    _save_figure(fig, path)


def layer_panels(rows: list[dict]) -> list[dict]:
    """One plot_macs_per_layer panel per distinct model of a run (a pruned artifact gets its own)."""
    panels, seen = [], set()
    for r in rows:
        key = (r["run"], json.dumps(r["model_config"], sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        label = r["run"] if r["artifact"] == "model.pt" else f"{r['run']}: {r['artifact']}"
        panels.append({"title": f"{label} ({r['family']})\n{human(r['macs_analytic'])} MACs", "layers": r["layers"]})
    return panels
