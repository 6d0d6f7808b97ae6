"""What the command modules share: the epilog and the parser of a stage that works on a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = "Every RUN stage reads RUN/config.yaml; pass --config FILE the first time to put it there."


def run_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    """A subcommand taking RUN, --config and --quiet, as every stage does."""
    parser = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG)
    parser.add_argument("run", metavar="RUN", help="run folder, e.g. runs/default")
    parser.add_argument("--config", type=Path, help="YAML config; copied into RUN/config.yaml on first use")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser
