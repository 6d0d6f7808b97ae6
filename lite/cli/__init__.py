"""`lite`: one command, one subcommand per pipeline stage. Stages talk through the run folder.

lite data build docs-en-de            build a real corpus (cached)
lite tokenizer RUN --config C         train the joint sentencepiece model
lite shortlist RUN                    learn the vocabulary shortlist (IBM model 1)
lite train RUN [--resume]             train the model of the run's config
lite train RUN --nproc 2              ... on 2 processes (DDP; or torchrun ... -m lite train RUN)
lite evaluate RUN [--beam 4]          translate the test split, score BLEU
lite evaluate RUN --target qemu:cortex-a72 | ssh://user@host   the TFLite folders on an ARM target
lite translate RUN [TEXT | -]         translate text with the trained model (PyTorch)
lite export RUN [--format tflite,onnx]  model folders for devices, each behind a parity gate
lite ctranslate2 RUN                  the baseline Transformer as CTranslate2 models (checked on the test split)
lite compress RUN --recipe R          prune / distil / quantize by a recipe, export and measure
lite translate --model DIR [TEXT | -] the on-device translator on an exported folder (no torch)
lite macs --config C [--json]         analytic MACs and parameters (paper convention)
lite fit --family lsra --macs 100M    the widest config under a MAC budget, as YAML
lite report RUN [RUN...]              MAC/BLEU budget report from saved measurements
"""

from __future__ import annotations

import argparse
import sys

from lite.cli import budget, compress, data, evaluate, export, report, training, translate
from lite.cli.common import EPILOG

# the order of `lite --help`; each module adds its subcommands, parser beside handler, and imports the
# stage it runs only inside the handler (`lite translate --model` runs where torch does not exist)
COMMANDS = (data, training, evaluate, translate, export, compress, budget, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lite", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. A LiteError is the user's to fix: its one-line message and exit code. Anything
    else is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    from lite.errors import LiteError

    try:
        return args.func(args)
    except LiteError as exc:
        print(f"lite {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            f"lite {args.command}: interrupted (training: rerun with --resume; it continues exactly "
            "from the last saved step)",
            file=sys.stderr,
        )
        return 130
