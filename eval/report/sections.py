"""What the report shows, in order: one function per section, listed once in SECTIONS; the markdown and the
HTML renderer both iterate over it."""

from __future__ import annotations

from collections.abc import Callable

from eval.kernels import COLUMNS, column_shares, places
from eval.report.blocks import Image, Items, Paragraph, Section, Span, Table, text
from eval.report.budget import BUDGET_HEAD, BUDGETS, budget_cell, budget_limits
from eval.report.text import NOT_MEASURED, fmt_bleu, fmt_macs, fmt_opt, fmt_size, fmt_testset, human

TITLE = "MAC/BLEU budget report"
MODEL_HEAD = [
    "run",
    "family",
    "artifact",
    "format",
    "precision",
    "MACs",
    "params",
    "params w/o embeddings",
    "size on disk",
    "BLEU",
    "BLEU test set",
    "sacrebleu signature",
]
NUMERIC_HEAD = ("MACs", "params", "params w/o embeddings", "size on disk", "BLEU")
BLEU_DETAIL_HEAD = ["row", "split/decoding", "BLEU", "chrF", "BP", "test set", "sacrebleu signature", "from"]
BLEU_DETAIL_CLASSES = ["", "", "num", "num", "num", "", "sig", ""]
TRAIN_HEAD = ["run", "config", "steps", "stop reason", "wall time", "target tokens/s", "final valid ppl", "final model"]
SOURCE_HEAD = ["row", "MACs", "params", "size", "BLEU", "latency / instructions"]


def intro(report: dict) -> Paragraph:
    """The paragraph under the title: the runs, the MAC convention, how a missing value reads."""
    runs = ", ".join(r["run"] for r in report["runs"])
    return Paragraph(
        [
            Span(f"Runs: {runs}. MACs: {report['mac_convention']}. Anything not measured shows as "),
            Span(NOT_MEASURED, "term"),
            Span("; a budget on an unmeasured quantity is "),
            Span("unknown", "term"),
            Span(", never a pass", "aside"),
            Span("."),
        ]
    )


def budgets(report: dict) -> Section:
    items = [
        [
            Span(r["run"], "bold"),
            Span(" (config "),
            Span(r["config_name"], "code"),
            Span(f"): {budget_limits(r['budget'])}"),
        ]
        for r in report["runs"]
    ]
    return Section("Budgets", [Items(items)])


def _targets(rows: list[dict], key: str) -> list[str]:
    return sorted({t for r in rows for t in r[key]})


def _model_table(report: dict) -> Table:
    """A row per model and artifact: figures, a column per measured target, Pareto membership, verdict."""
    rows = report["rows"]
    lat_t, ins_t = _targets(rows, "latency_ms"), _targets(rows, "instructions")
    head = (
        MODEL_HEAD
        + [f"latency {t} (ms)" for t in lat_t]
        + [f"instructions {t}" for t in ins_t]
        + ["Pareto", "budget verdict"]
    )
    if not lat_t:  # no target measured anywhere: still say so
        head.insert(head.index("Pareto"), "latency (ms)")
    body = []
    for r in rows:
        b = r["bleu"]
        body.append(
            [
                r["run"],
                r["family"],
                r["artifact"],
                r["format"],
                r["precision"],
                fmt_macs(r["macs"]),
                f"{r['params']:,}",
                f"{r['params_no_embed']:,}",
                fmt_size(r),
                fmt_bleu(b),
                fmt_testset(b),
                NOT_MEASURED if b is None else (b["signature"] or "signature not recorded"),
            ]
            + [fmt_opt(r["latency_ms"].get(t), lambda v: f"{v:.2f}") for t in lat_t]
            + [fmt_opt(r["instructions"].get(t), lambda v: f"{v:,.0f}") for t in ins_t]
            + ([] if lat_t else [NOT_MEASURED])
            + ["yes" if r["pareto"] else "", r["verdict"]]
        )
    numeric = {i for i, h in enumerate(head) if h in NUMERIC_HEAD or h.startswith(("latency", "instructions"))}
    classes = [["num" if j in numeric else "" for j in range(len(head) - 1)] + [r["verdict"]] for r in rows]
    for row_cls in classes:
        row_cls[head.index("sacrebleu signature")] = "sig"
    return Table(head, body, classes)


def models(report: dict) -> Section:
    return Section("Models and artifacts", [_model_table(report)])


def budget_check(report: dict) -> Section:
    rows = report["rows"]
    table = Table(
        ["row", "verdict"] + [BUDGET_HEAD[k] for k in BUDGETS],
        [[r["id"], r["verdict"]] + [budget_cell(r["budget"][k]) for k in BUDGETS] for r in rows],
        [["", r["verdict"]] + [r["budget"][k]["status"] for k in BUDGETS] for r in rows],
    )
    return Section("Budget check", [table])


def pareto(report: dict) -> Section:
    if report["pareto"]:
        listing = Items(
            [text(f"{p['id']}: {human(p['macs'])} MACs, BLEU {p['bleu']:.2f}") for p in report["pareto"]], ordered=True
        )
    else:
        listing = Paragraph(text(f"No row has both MACs and BLEU ({NOT_MEASURED})."), muted=True)
    plot = Image("bleu_vs_macs.png", "BLEU vs MACs", "BLEU vs MACs with the Pareto frontier")
    return Section("Pareto frontier (BLEU vs MACs, across runs)", [listing, plot])


def macs_per_layer(report: dict) -> Section:
    return Section("MACs per layer", [Image("macs_per_layer.png", "MACs per layer", "MACs per layer by part")])


def _bleu_detail_rows(report: dict) -> list[list[str]]:
    out = []
    for r in report["rows"]:
        for key, b in sorted(r["bleu_all"].items()):
            out.append(
                [
                    r["id"],
                    key,
                    f"{b['bleu']:.2f}",
                    fmt_opt(b.get("chrf"), lambda v: f"{v:.2f}"),
                    fmt_opt(b.get("brevity_penalty"), lambda v: f"{v:.4f}"),
                    fmt_testset(b),
                    b["signature"] or "signature not recorded",
                    b["source"],
                ]
            )
    return out


def bleu_by_decoding(report: dict) -> Section:
    detail = _bleu_detail_rows(report)
    if not detail:
        return Section("BLEU by decoding", [Paragraph(text(f"BLEU {NOT_MEASURED}."), muted=True)])
    return Section("BLEU by decoding", [Table(BLEU_DETAIL_HEAD, detail, [BLEU_DETAIL_CLASSES for _ in detail])])


def _train_row(run: dict) -> list[str]:
    t = run["train"]
    if t is None:
        return [run["run"], run["config_name"]] + [NOT_MEASURED] * 6
    stop = str(t.get("stop_reason", NOT_MEASURED))
    if t.get("stop_reason") == "max_minutes":  # the step count depended on the machine's speed
        stop += " (stopped by the clock: not reproducible)"
    return [
        run["run"],
        run["config_name"],
        fmt_opt(t.get("steps"), str),
        stop,
        fmt_opt(t.get("wall_seconds"), lambda v: f"{v / 60:.1f} min"),
        fmt_opt(t.get("target_tokens_per_s"), lambda v: f"{v:,.0f}"),
        fmt_opt(t.get("final_valid_ppl"), lambda v: f"{v:.2f}"),
        str(t.get("final_model", NOT_MEASURED)),
    ]


def training(report: dict) -> Section:
    return Section("Training", [Table(TRAIN_HEAD, [_train_row(run) for run in report["runs"]])])


def sources(report: dict) -> Section:
    body = [
        [r["id"]] + [r["sources"].get(k) or NOT_MEASURED for k in ("macs", "params", "size", "bleu", "latency_ms")]
        for r in report["rows"]
    ]
    return Section("Where the numbers come from", [Table(SOURCE_HEAD, body)])


def profile(report: dict) -> Section | None:
    """Per profiled folder: one decoder step's time (host) or instructions (emulated core), and the share
    of each kernel-family column (eval/kernels.py); left out when no run was profiled."""
    body = []
    for run in report["runs"]:
        for r in run.get("profile", []):
            for where, p, key in places(r):
                step = f"{p['step_ms']:.3f} ms" if key == "step_ms" else f"{p['step_mean'] / 1e6:.2f}M instructions"
                shares = column_shares(p["families"], key).values()
                body.append([run["run"], r["artifact"], where, step, *(f"{x:.0%}" for x in shares)])
    if not body:
        return None
    head = ["run", "artifact", "where", "decoder step", *COLUMNS]
    return Section("Where a decoder step goes (benchmarks/profile.py)", [Table(head, body)])


def notes(report: dict) -> Section | None:
    if not report["notes"]:
        return None
    return Section("Notes", [Items([text(n) for n in report["notes"]])])


SECTIONS: tuple[Callable[[dict], Section | None], ...] = (
    budgets,
    models,
    budget_check,
    pareto,
    macs_per_layer,
    bleu_by_decoding,
    training,
    sources,
    profile,
    notes,
)


def sections(report: dict) -> list[Section]:
    """The report's sections in order; a section with nothing to show (no notes) is left out."""
    return [s for s in (make(report) for make in SECTIONS) if s is not None]
