"""`lite translate`: text through a run's PyTorch model, or through an exported folder without torch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lite.errors import UsageError


def _read_lines(source: str) -> list[str]:
    """Lines of a file or stdin ('-'), as UTF-8; a bad byte is reported with its line number."""
    from export.runtime import read_lines

    if source == "-":
        return list(read_lines(sys.stdin.buffer, "stdin"))
    with open(source, "rb") as stream:
        return list(read_lines(stream, source))


def run_translate(args: argparse.Namespace) -> int:
    if len(args.positional) > (1 if args.model else 2):
        raise UsageError(f"too many arguments: {' '.join(args.positional)} (quote a sentence with spaces)")
    if args.model:  # the exported folder through the torch-free runtime
        from export.runtime import run

        text = args.positional[0] if args.positional else None
        return run(args.model, text, args.file, args.beam, args.lenpen, args.threads, shortlist=args.shortlist)
    if not args.positional:
        raise UsageError("give a RUN folder, or --model DIR for an exported model folder")
    args.run, args.text = args.positional[0], (args.positional[1:] or [None])[0]
    from dataclasses import replace

    from lite.checkpoint import load_model
    from lite.decode import translate
    from lite.run import open_run, run_shortlist
    from lite.tokenizer import Tokenizer

    paths, cfg = open_run(Path(args.run), None)
    lines = [args.text] if args.text not in (None, "-") and not args.file else _read_lines(args.file or "-")
    dcfg = replace(
        cfg.decode,
        beam=args.beam or cfg.decode.beam,
        lenpen=args.lenpen if args.lenpen is not None else cfg.decode.lenpen,
    )
    tokenizer = Tokenizer(paths.tokenizer)
    wanted = cfg.decode.shortlist if args.shortlist is None else args.shortlist
    shortlist = run_shortlist(paths, tokenizer.vocab_size) if wanted else None
    for out in translate(load_model(paths.model), tokenizer, lines, dcfg, shortlist=shortlist):
        print(out)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    tl = sub.add_parser(
        "translate",
        help="translate TEXT, a file (--file) or stdin ('-') with a run or an exported folder",
        usage="lite translate (RUN | --model DIR) [TEXT | -] [--file F] [--beam K]",
        description="With RUN: PyTorch and RUN/model.pt. With --model DIR: the exported folder "
        "through the on-device runtime (numpy + TFLite/ONNX interpreter, no torch). "
        "One output line per input line; empty lines stay empty; sources longer than "
        "the exported graphs take are truncated with a warning.",
    )
    tl.add_argument(
        "positional",
        nargs="*",
        metavar="RUN / TEXT",
        help="RUN folder (without --model), then a sentence or '-' for stdin (default)",
    )
    tl.add_argument("--model", metavar="DIR", help="exported model folder, e.g. runs/default/export/tflite-int8")
    from export.runtime import add_arguments

    add_arguments(tl)
    tl.set_defaults(func=run_translate)
