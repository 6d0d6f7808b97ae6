"""`lite data build NAME`: fetch, align, split and cache a built-in corpus."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run_data(args: argparse.Namespace) -> int:
    from lite.data.corpus import data_root
    from lite.data.libreoffice import build_docs_corpus

    out = build_docs_corpus(args.name, Path(args.out) if args.out else data_root() / args.name, progress=not args.quiet)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    print(f"{out}: " + ", ".join(f"{k} {v}" for k, v in manifest.get("counts", {}).items()))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build a built-in real corpus (LibreOffice help translations via apt)")
    data_sub = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = data_sub.add_parser("build", help="fetch, align, split and cache a corpus")
    build.add_argument("name", help="docs-en-de or docs-en-fr")
    build.add_argument("--out", help="output folder (default: $LITE_DATA_DIR/NAME or data/NAME)")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(func=run_data)
