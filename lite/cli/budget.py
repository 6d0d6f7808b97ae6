"""`lite macs` and `lite fit`: the analytic MAC count of a config, and the widest config under a budget."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run_macs(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from lite.config import load_config
    from lite.metrics.macs import model_summary

    cfg = load_config(args.config)
    # the vocabulary only changes the parameter count with embeddings; it comes from the tokenizer section
    model = replace(cfg.model, vocab_size=cfg.model.vocab_size or cfg.tokenizer.vocab_size)
    summary = model_summary(model, args.src_len, args.tgt_len)
    if args.json:
        print(json.dumps(summary | {"config": str(args.config)}, indent=2))
        return 0
    parts = [k for k in dict.fromkeys(k for layer in summary["layers"] for k in layer) if k not in ("name", "total")]
    print(
        f"{args.config}: {summary['macs']:,} MACs ({args.src_len}+{args.tgt_len} tokens), "
        f"{summary['params']:,} params, {summary['params_no_embed']:,} without embeddings "
        f"(vocabulary {summary['vocab_size']})"
    )
    print(f"{'layer':12s}" + "".join(f"{p:>14s}" for p in parts) + f"{'total':>14s}")
    for layer in summary["layers"]:
        print(f"{layer['name']:12s}" + "".join(f"{layer.get(p, 0):14,d}" for p in parts) + f"{layer['total']:14,d}")
    print(f"{'encoder':12s}{summary['encoder']:,}\n{'decoder':12s}{summary['decoder']:,}")
    return 0


def run_fit(args: argparse.Namespace) -> int:
    from eval.fit import as_yaml, fit, parse_count, parse_layers
    from lite.files import write_text_atomic

    budget = parse_count(args.macs)
    cfg, macs = fit(args.family, budget, parse_layers(args.layers), args.heads, args.conv_type)
    text = as_yaml(cfg, macs, args.family, budget)
    if args.out:
        write_text_atomic(text, Path(args.out))
        print(f"{args.out}: {args.family} width {cfg.embed_dim}, {macs:,} MACs (budget {budget:,})")
    else:
        print(text, end="")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    mc = sub.add_parser(
        "macs",
        help="analytic MACs (30+30 tokens, no embeddings/output projection) and parameters",
        description="Mult-adds of one forward pass under the Lite Transformer convention, per layer and branch.",
    )
    mc.add_argument("--config", type=Path, required=True)
    mc.add_argument("--src-len", type=int, default=30)
    mc.add_argument("--tgt-len", type=int, default=30)
    mc.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    mc.set_defaults(func=run_macs)

    ft = sub.add_parser(
        "fit",
        help="the widest LSRA or Transformer config under a MAC budget",
        description="Search the embedding width of a family (fixed shape rules, see eval/fit.py) "
        "for the config closest under the budget; prints or writes YAML.",
    )
    ft.add_argument("--family", required=True, choices=["lsra", "transformer"])
    ft.add_argument("--macs", required=True, help="budget, e.g. 100M, 1.5G")
    ft.add_argument("--layers", default="6+6", help="encoder+decoder layers (default 6+6)")
    ft.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    ft.add_argument("--conv-type", default="dynamic", choices=["dynamic", "lightweight"], help="LSRA convolution")
    ft.add_argument("--out", help="write the YAML here instead of stdout")
    ft.set_defaults(func=run_fit)
