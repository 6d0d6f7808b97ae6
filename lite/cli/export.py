"""`lite export RUN`: TFLite/ONNX model folders, each published only after its parity gate.
`lite ctranslate2 RUN`: the baseline Transformer for CTranslate2, the engine we benchmark against."""

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


def run_ctranslate2(args: argparse.Namespace) -> int:
    from lite.run import open_run

    try:
        import ctranslate2  # noqa: F401 - only to fail early with a clear message
    except ImportError:
        raise UsageError("the ctranslate2 package is not installed (pip install -e '.[dev]' installs it)") from None
    from export.to_ctranslate2 import QUANTIZATIONS, ctranslate2_run

    quantizations = [q.strip() for q in args.quantization.split(",") if q.strip()]
    bad = [q for q in quantizations if q not in QUANTIZATIONS]
    if bad or not quantizations:
        raise UsageError(f"--quantization: expected a comma-separated list from {', '.join(QUANTIZATIONS)}")
    paths, cfg = open_run(Path(args.run), args.config)
    ctranslate2_run(cfg, paths, quantizations, progress=not args.quiet)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    xp = run_parser(
        sub, "export", "export RUN/model.pt to TFLite/ONNX model folders, each gated on parity with PyTorch"
    )
    xp.add_argument("--format", help="comma-separated: tflite,onnx (default: export.formats of the config)")
    xp.add_argument("--precision", help="comma-separated: fp32,fp16,dynamic-int8,int8 (default: export.precisions)")
    xp.add_argument("--force", action="store_true", help="rebuild folders that are up to date")
    xp.set_defaults(func=run_export)

    cp = run_parser(
        sub,
        "ctranslate2",
        "convert a baseline Transformer run (model.arch: transformer) to CTranslate2 models in RUN/ctranslate2/, "
        "each checked on the test split against PyTorch (greedy tokens, BLEU; with the run's shortlist as its "
        "vocabulary map too)",
    )
    cp.add_argument(
        "--quantization", default="float32,int8", help="comma-separated CTranslate2 weight types (default: %(default)s)"
    )
    cp.set_defaults(func=run_ctranslate2)
