"""`lite compress RUN --recipe R`: prune, distil and quantize by a recipe, then export and measure."""

from __future__ import annotations

import argparse
from pathlib import Path

from lite.cli.common import run_parser


def run_compress(args: argparse.Namespace) -> int:
    from lite.run import open_run

    paths, cfg = open_run(Path(args.run), args.config)
    from compress.pipeline import compress_run, output_paths
    from compress.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    record = compress_run(cfg, paths, recipe, force=args.force, progress=not args.quiet)
    out = output_paths(paths, recipe).root
    print(
        f"{out}: {record['model']['params']:,} parameters, greedy BLEU {record['model']['bleu_greedy']:.2f}; "
        f"artifacts: "
        + ", ".join(f"{r['name']} {r['size_bytes'] / 1e6:.2f} MB BLEU {r['bleu']:.2f}" for r in record["artifacts"])
    )
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    cp = run_parser(
        sub,
        "compress",
        "apply a compression recipe (structured/fine-grained pruning, distillation, "
        "quantization) to RUN/model.pt; writes RUN/compressed/<recipe name>/, a run folder "
        "with the compressed model, its exported artifacts and their measurements",
    )
    cp.add_argument(
        "--recipe",
        type=Path,
        default=Path("configs/compress/default.yaml"),
        help="recipe YAML (default: configs/compress/default.yaml; format: compress/recipe.py)",
    )
    cp.add_argument("--force", action="store_true", help="start over instead of resuming after the last finished step")
    cp.set_defaults(func=run_compress)
