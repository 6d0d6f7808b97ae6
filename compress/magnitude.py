"""Fine-grained (unstructured) magnitude pruning with per-layer sensitivity analysis.

The recipe of Han et al. ("Learning both Weights and Connections", 2015), which the Lite
Transformer authors used to compress their models further:

1. sensitivity sweep: prune one layer at a time to each of a few sparsities (the others
   dense), score the model on validation sentences (teacher-forced loss or greedy BLEU);
2. choose per layer the largest sparsity whose metric drop stays within a budget, because
   layers differ widely in how much pruning they tolerate (a uniform rate over-prunes the
   fragile ones or under-prunes the robust ones);
3. keep-masks dropping the smallest-magnitude weights of each layer;
4. fine-tune with the masks fixed: `apply_masks` after every optimizer step puts the pruned
   weights back to exact zeros (the fine-tuning loop itself lives in compress/finetune.py).

A "layer" is the weight matrix of one nn.Linear inside the encoder/decoder blocks, plus the
token embedding, which is tied to the output projection and so counted and masked once.
Nothing here assumes that layers share a shape, so models with per-layer widths work too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm import tqdm

from lite.batching import Example, collate, make_batches
from lite.config import DecodeConfig
from lite.errors import ConfigError, DataError
from lite.models.seq2seq import EncoderDecoder, count_parameters

METRICS = ("loss", "bleu")
# padded tokens per teacher-forced batch. Small batches group similar lengths, so less padding goes
# through the [tokens, vocab] output projection, which dominates the cost: 500 was 3x faster than 4000 (runs/default)
LOSS_MAX_TOKENS = 500
BLEU_BATCH_SIZE = 64


@dataclass
class SensitivityConfig:
    """How the per-layer sensitivity sweep runs and how much degradation a layer may cause."""

    sparsities: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.6, 0.7, 0.8, 0.9])
    valid_sentences: int = 200  # first N valid examples scored per sweep point
    metric: str = "loss"  # "loss" (per-token NLL, teacher-forced) or "bleu" (greedy BLEU on those sentences)
    max_drop: float = 0.02  # per layer: loss increase (nats/token) or BLEU drop allowed
    include_embeddings: bool = True  # the tied token embedding/output matrix counts as one prunable layer

    def __post_init__(self) -> None:
        if not self.sparsities:
            raise ConfigError("sparsities: expected at least one value")
        for s in self.sparsities:
            _check_sparsity(s, "sparsities")
        if self.valid_sentences <= 0:
            raise ConfigError(f"valid_sentences: expected a positive count, got {self.valid_sentences}")
        if self.metric not in METRICS:
            raise ConfigError(f"metric: expected one of {', '.join(METRICS)}, got {self.metric!r}")
        if not self.max_drop >= 0:
            raise ConfigError(f"max_drop: expected a non-negative number, got {self.max_drop}")


def _check_sparsity(s: float, where: str) -> None:
    # 1.0 would delete a whole layer: that is structured pruning's business, not this module's
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s < 1.0:
        raise ConfigError(f"{where}: expected a sparsity in [0, 1), got {s!r}")


def prunable_layers(model: EncoderDecoder, include_embeddings: bool = True) -> dict[str, nn.Parameter]:
    """name -> weight of every prunable layer: each nn.Linear in the encoder/decoder blocks
    ("encoder.0.mixer.attn.q_proj"), then "embedding" (target token embedding = output
    projection; also the source embedding when shared). Biases, LayerNorms, the small conv
    kernels and the frozen positions are left dense."""
    layers: dict[str, nn.Parameter] = {}
    for stack_name in ("encoder", "decoder"):
        for name, module in getattr(model, stack_name).named_modules():
            if isinstance(module, nn.Linear):
                layers[f"{stack_name}.{name}"] = module.weight
    if include_embeddings:
        tgt = model.tgt_embed.tokens.weight
        layers["embedding"] = tgt
        src = model.src_embed.tokens.weight
        if src is not tgt:  # untied vocabularies: the source table is a layer of its own
            layers["src_embedding"] = src
    return layers


def _resolve(model: EncoderDecoder, names) -> dict[str, nn.Parameter]:
    """The prunable parameters called `names`; a name that is not a prunable layer is an error."""
    layers = prunable_layers(model, include_embeddings=True)
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise ValueError(f"layer name {unknown[0]!r}: not a prunable layer of this model (see prunable_layers)")
    return {n: layers[n] for n in names}


def _keep_mask(weight: Tensor, sparsity: float) -> Tensor:
    """Bool mask keeping all but the round(sparsity * numel) smallest-|w| entries (exact count,
    ties broken by position so the result is deterministic)."""
    flat = weight.detach().abs().flatten()
    n_prune = round(sparsity * flat.numel())
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=weight.device)
    if n_prune:
        keep[torch.argsort(flat, stable=True)[:n_prune]] = False
    return keep.view(weight.shape)


def magnitude_masks(model: EncoderDecoder, sparsities: dict[str, float]) -> dict[str, Tensor]:
    """Per named layer a bool keep-mask (True = kept) removing its smallest-magnitude weights."""
    params = _resolve(model, sparsities)
    masks = {}
    for name, s in sparsities.items():
        _check_sparsity(s, f"sparsities[{name!r}]")
        masks[name] = _keep_mask(params[name], float(s))
    return masks


@torch.no_grad()
def apply_masks(model: EncoderDecoder, masks: dict[str, Tensor]) -> None:
    """Zero the pruned weights in place. Call after every optimizer step while fine-tuning: the
    step moves pruned weights off zero (momentum, weight decay) and this puts them back exactly."""
    for name, param in _resolve(model, masks).items():
        mask = masks[name]
        if mask.shape != param.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"masks[{name!r}]: expected a bool tensor of shape {tuple(param.shape)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        param.masked_fill_(~mask, 0.0)  # masked_fill, not multiply: exact zeros even where w is inf/nan


def sparsity_report(model: EncoderDecoder, masks: dict[str, Tensor]) -> dict:
    """Zeros actually present in the masked layers (so a report after fine-tuning shows whether the
    masks held), their totals, and the share of all model parameters that are zero through them."""
    rows = []
    for name, param in _resolve(model, masks).items():
        zeros = int((param.detach() == 0).sum())
        rows.append({"name": name, "params": param.numel(), "zeros": zeros, "sparsity": zeros / max(param.numel(), 1)})
    total = sum(r["params"] for r in rows)
    total_zeros = sum(r["zeros"] for r in rows)
    model_params = count_parameters(model)
    return {
        "layers": rows,
        "total_params": total,
        "total_zeros": total_zeros,
        "sparsity": total_zeros / max(total, 1),
        # the whole model's view: what the pruned zeros are worth against every parameter
        "model_params": model_params,
        "model_sparsity": total_zeros / max(model_params, 1),
    }


class _Scorer:
    """The sweep's metric on a fixed set of validation examples, with the batches built once."""

    def __init__(self, model: EncoderDecoder, examples: list[Example], tokenizer, metric: str):
        self.model, self.metric = model, metric
        pad, bos = model.cfg.pad_id, model.cfg.bos_id
        if metric == "loss":
            self.batches = [collate(examples, idx, pad, bos) for idx in make_batches(examples, LOSS_MAX_TOKENS)]
            return
        # greedy BLEU: sources batched by length; references are the detokenized targets
        self.order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
        self.sources = []
        for start in range(0, len(self.order), BLEU_BATCH_SIZE):
            chunk = [examples[i][0] for i in self.order[start : start + BLEU_BATCH_SIZE]]
            src = torch.full((len(chunk), max(map(len, chunk))), pad, dtype=torch.long)
            for row, ids in enumerate(chunk):
                src[row, : len(ids)] = torch.tensor(ids)
            self.sources.append(src)
        self.tokenizer = tokenizer
        self.references = [tokenizer.decode(examples[i][1]) for i in self.order]
        self.decode_cfg = DecodeConfig(beam=1)

    @torch.no_grad()
    def __call__(self) -> float:
        if self.metric == "loss":
            return self._loss()
        return self._bleu()

    def _loss(self) -> float:
        from lite.train import batch_loss  # lazy: train pulls in the whole training stack

        total, tokens = 0.0, 0
        for batch in self.batches:
            total += float(batch_loss(self.model, batch, 0.0)[1])
            tokens += batch.ntokens
        return total / max(tokens, 1)

    def _bleu(self) -> float:
        from lite.decode import greedy
        from lite.metrics.bleu import score

        hyps = [self.tokenizer.decode(h) for src in self.sources for h in greedy(self.model, src, self.decode_cfg)]
        return float(score(hyps, self.references)["bleu"])


def _drop(metric: str, baseline: float, value: float) -> float:
    """How much worse `value` is than the dense baseline: loss up, or BLEU down."""
    return value - baseline if metric == "loss" else baseline - value


@torch.no_grad()
def sensitivity_sweep(
    model: EncoderDecoder, valid_ex: list[Example], tokenizer, cfg: SensitivityConfig, progress: bool = True
) -> dict:
    """Prune one layer at a time to each sparsity of `cfg` (all other layers dense), score the
    first cfg.valid_sentences validation examples, restore the weights after each point.

    Returns {"metric", "baseline", "sparsities", "layers": [{"name", "params", "values", "drop"}]}
    with values/drop keyed by str(sparsity). Deterministic at a fixed thread count.
    """
    examples = list(valid_ex[: cfg.valid_sentences])
    if not examples:
        raise DataError("valid_ex: expected at least one validation example, got none")
    was_training = model.training
    model.eval()  # dropout off: every point must see the same network apart from the pruned layer
    scorer = _Scorer(model, examples, tokenizer, cfg.metric)
    layers = prunable_layers(model, cfg.include_embeddings)
    bar = tqdm(
        total=1 + len(layers) * len(cfg.sparsities),
        disable=not progress,
        unit="eval",
        dynamic_ncols=True,
        desc=f"sensitivity ({cfg.metric})",
    )
    try:
        baseline = scorer()
        bar.update(1)
        rows = []
        for name, param in layers.items():
            dense = param.detach().clone()
            values, drops = {}, {}
            for s in cfg.sparsities:
                bar.set_postfix(layer=name, sparsity=s)
                param.masked_fill_(~_keep_mask(dense, float(s)), 0.0)
                value = scorer()
                param.copy_(dense)  # restore before the next point: only one layer is ever pruned
                values[str(s)] = value
                drops[str(s)] = _drop(cfg.metric, baseline, value)
                bar.update(1)
            rows.append({"name": name, "params": param.numel(), "values": values, "drop": drops})
    finally:
        bar.close()
        model.train(was_training)
    return {
        "metric": cfg.metric,
        "baseline": baseline,
        "sparsities": [float(s) for s in cfg.sparsities],
        "layers": rows,
    }


def choose_sparsities(sweep: dict, max_drop: float) -> dict[str, float]:
    """Per layer the largest swept sparsity whose drop is within max_drop (0.0 if none is)."""
    if not (isinstance(max_drop, (int, float)) and max_drop >= 0 and math.isfinite(max_drop)):
        raise ConfigError(f"max_drop: expected a non-negative number, got {max_drop!r}")
    if not isinstance(sweep, dict) or not isinstance(sweep.get("layers"), list):
        raise ValueError("sweep: expected the dict returned by sensitivity_sweep (with a 'layers' list)")
    chosen = {}
    for row in sweep["layers"]:
        if "name" not in row or not isinstance(row.get("drop"), dict):
            raise ValueError("sweep.layers: expected entries with 'name' and a 'drop' mapping")
        within = [float(s) for s, d in row["drop"].items() if d <= max_drop]
        chosen[row["name"]] = max(within, default=0.0)
    return chosen
