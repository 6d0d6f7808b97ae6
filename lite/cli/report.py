"""`lite report RUN...`: the MAC/BLEU budget report from what the stages saved."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_report(args: argparse.Namespace) -> int:
    from eval.report import summarize, write_report

    report = write_report([Path(r) for r in args.runs], Path(args.out) if args.out else None)
    print(summarize(report))
    for name, path in report["files"].items():
        print(f"wrote {path}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser(
        "report",
        help="MAC/BLEU budget report (md, html, json, plots) from saved measurements",
        description="Reads only what the stages saved in each run folder (config, results.json, "
        "train.json, model.pt, artifacts.json); never retrains or re-decodes.",
    )
    rp.add_argument("runs", nargs="+", metavar="RUN")
    rp.add_argument("--out", help="output folder (default: the first RUN)")
    rp.set_defaults(func=run_report)
