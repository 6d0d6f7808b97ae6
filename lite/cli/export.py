"""`lite export RUN`: TFLite/ONNX model folders, each published only after its parity gate."""

from __future__ import annotations

import argparse
from pathlib import Path

from lite.cli.common import run_parser
from lite.errors import UsageError


def run_export(args: argparse.Namespace) -> int:
    from lite.config import FORMATS, PRECISIONS
    from lite.run import open_run

    def listed(value: str | None, allowed: tuple[str, ...], flag: str) -> list[str] | None:
        if value is None:
            return None
        items = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise UsageError(f"{flag}: expected a comma-separated list from {', '.join(allowed)}, got {value!r}")
        return items

    formats = listed(args.format, FORMATS, "--format")
    precisions = listed(args.precision, PRECISIONS, "--precision")
    paths, cfg = open_run(Path(args.run), args.config)
    from export.stage import export_run

    export_run(cfg, paths, formats, precisions, force=args.force, progress=not args.quiet)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    xp = run_parser(
        sub, "export", "export RUN/model.pt to TFLite/ONNX model folders, each gated on parity with PyTorch"
    )
    xp.add_argument("--format", help="comma-separated: tflite,onnx (default: export.formats of the config)")
    xp.add_argument("--precision", help="comma-separated: fp32,fp16,dynamic-int8,int8 (default: export.precisions)")
    xp.add_argument("--force", action="store_true", help="rebuild folders that are up to date")
    xp.set_defaults(func=run_export)
