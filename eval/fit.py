"""Fit a model family to a MAC budget: the widest config whose analytic MACs stay under it.

The search varies the embedding width (the paper's knob for its 100M/300M/500M comparisons) with
the family's fixed shape rules:
- transformer: FFN = 4 x width, width divisible by the head count;
- lsra: FFN = width (Lite Transformer's flattened bottleneck), half the channels to the attention
  branch, so width divisible by 2 x heads; kernels 3, 7, 15, 31, 31, ... per layer as in the paper.
"""

from __future__ import annotations

import re

import yaml

from lite.config import ModelConfig
from lite.errors import UsageError
from lite.metrics.macs import count_macs

PAPER_KERNELS = [3, 7, 15, 31, 31, 31]


def parse_count(text: str) -> int:
    """'100M' -> 100_000_000; also k, G and plain integers."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?)\s*", text)
    if not match:
        raise UsageError(f"--macs: expected a number with an optional k/M/G suffix, got {text!r}")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[match.group(2).lower()]
    return int(round(float(match.group(1)) * scale))


def parse_layers(text: str) -> tuple[int, int]:
    """'6+6' -> (6, 6); '4' -> (4, 4)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:\+\s*(\d+))?\s*", text)
    if not match or int(match.group(1)) < 1:
        raise UsageError(f"--layers: expected ENCODER+DECODER like 6+6, got {text!r}")
    enc = int(match.group(1))
    return enc, int(match.group(2) or enc)


def kernels_for(layers: int) -> list[int]:
    return (PAPER_KERNELS + [PAPER_KERNELS[-1]] * layers)[:layers]


def family_config(
    family: str, width: int, layers: tuple[int, int], heads: int, conv_type: str = "dynamic"
) -> ModelConfig:
    enc, dec = layers
    if family == "transformer":
        return ModelConfig(
            arch="transformer",
            embed_dim=width,
            ffn_dim=4 * width,
            encoder_layers=enc,
            decoder_layers=dec,
            attention_heads=heads,
        )
    if family == "lsra":
        return ModelConfig(
            arch="lsra",
            embed_dim=width,
            ffn_dim=width,
            encoder_layers=enc,
            decoder_layers=dec,
            attention_heads=heads,
            conv_type=conv_type,
            conv_glu=True,
            encoder_kernels=kernels_for(enc),
            decoder_kernels=kernels_for(dec),
        )
    raise UsageError(f"--family: expected lsra or transformer, got {family!r}")


def fit(
    family: str,
    budget: int,
    layers: tuple[int, int] = (6, 6),
    heads: int = 4,
    conv_type: str = "dynamic",
    src_len: int = 30,
    tgt_len: int = 30,
) -> tuple[ModelConfig, int]:
    """The widest config of `family` with MACs <= budget; returns (config, its MACs)."""
    step = 2 * heads if family == "lsra" else heads
    best = None
    width = step
    while True:  # MACs grow monotonically with width: walk up until the budget is exceeded
        cfg = family_config(family, width, layers, heads, conv_type)
        macs = count_macs(cfg, src_len, tgt_len)["macs"]
        if macs > budget:
            break
        best = (cfg, macs)
        width += step
    if best is None:
        smallest = count_macs(family_config(family, step, layers, heads, conv_type), src_len, tgt_len)["macs"]
        raise UsageError(
            f"--macs: {budget:,} is below the smallest {family} with {layers[0]}+{layers[1]} layers "
            f"({smallest:,} MACs at width {step}); use fewer layers"
        )
    return best


def as_yaml(cfg: ModelConfig, macs: int, family: str, budget: int) -> str:
    """A run config (name + model section) that `lite` loads as it is; the MACs go in a comment."""
    fields = ["arch", "embed_dim", "ffn_dim", "encoder_layers", "decoder_layers", "attention_heads"]
    if cfg.arch == "lsra":
        fields += ["conv_type", "conv_glu", "encoder_kernels", "decoder_kernels"]
    body = yaml.safe_dump(
        {"name": f"fit-{family}-{budget:,}".replace(",", "_"), "model": {f: getattr(cfg, f) for f in fields}},
        sort_keys=False,
    )
    return f"# lite fit --family {family}: {macs:,} MACs (budget {budget:,}; 30+30 tokens, paper convention)\n" + body
