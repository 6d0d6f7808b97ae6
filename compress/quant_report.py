"""Per-layer int8 sensitivity: which weights hurt when quantized, by how much, so the worst can stay
in higher precision (or get quantization-aware fine-tuning).

One layer at a time, the weights are fake-quantized exactly as the TFLite exporter will store them
(compress/qat.py: per-row symmetric int8, the converter's LayerNorm folds included), optionally with
the layer's inputs quantized per tensor as static int8 does (ranges: min/max over the same sentences,
as the exporter calibrates). Measured teacher-forced on validation sentences against the float model:
the per-token loss increase and the largest |logit difference|. A last pass quantizes every layer at
once, for the total.

Why not the artifact itself: ai-edge-quantizer's validator (model_validator.compare_model) does run
on our graphs, but it compares every tensor of a float and a fully quantized file, so each figure is
the error accumulated up to that tensor, not one layer's own; and the tensor names are the converter's
fused scope strings ("...LayerNorm_norm;;...Linear_fc1;;...;11"), which do not map back to one module
reliably. Isolating one layer there would take one conversion per layer (minutes each).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from tqdm import tqdm

from compress.qat import InputFakeQuant, exporter_folds, remove_weight_quantizer, site_quantizers
from lite.batching import Batch, Example, collate, make_batches
from lite.errors import ConfigError, DataError
from lite.models.seq2seq import EncoderDecoder

# padded tokens per teacher-forced batch: small batches pad less (the vocabulary projection dominates)
MAX_TOKENS = 500


@dataclass
class QuantReportConfig:
    """What the report measures (a recipe's quant_report step maps onto it)."""

    valid_sentences: int = 200  # first N validation examples, teacher-forced
    activations: bool = False  # also quantize each layer's input per tensor (static int8)
    threshold: float = 0.01  # loss increase (nats/token) above which a layer is listed in keep_float
    exporter_folds: bool = True  # quantize W diag(gamma) where the converter folds a LayerNorm (qat.exporter_folds)

    def __post_init__(self) -> None:
        n = self.valid_sentences
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ConfigError(f"valid_sentences: expected a positive count, got {self.valid_sentences!r}")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold) and self.threshold >= 0):
            raise ConfigError(f"threshold: expected a non-negative number, got {self.threshold!r}")


@contextlib.contextmanager
def _quantized(pairs: list, activations: bool) -> Iterator[list[InputFakeQuant]]:
    """Fake-quantize the weights of (module, quantizer) pairs (and their Linear inputs) for the duration;
    yields the input quantizers (to calibrate). The original Parameters come back afterwards."""
    inputs, handles, done = [], [], []
    try:
        for module, quantizer in pairs:
            parametrize.register_parametrization(module, "weight", quantizer)
            done.append(module)
            if activations and isinstance(module, nn.Linear):
                inputs.append(InputFakeQuant())
                handles.append(module.register_forward_pre_hook(inputs[-1]))
        yield inputs
    finally:
        for handle in handles:
            handle.remove()
        for module in done:
            remove_weight_quantizer(module)


class _Measure:
    """Teacher-forced loss and logit differences against the float model, batches built once."""

    def __init__(self, model: EncoderDecoder, examples: list[Example]):
        self.model = model
        pad, bos = model.cfg.pad_id, model.cfg.bos_id
        self.batches: list[Batch] = [collate(examples, idx, pad, bos) for idx in make_batches(examples, MAX_TOKENS)]
        self.tokens = sum(b.ntokens for b in self.batches)
        self.reference = None
        self.reference = [logits for logits, _ in self._passes()]  # float logits at the real target tokens

    def _passes(self) -> Iterator[tuple[torch.Tensor, float]]:
        for batch in self.batches:
            keep = batch.target.ne(self.model.cfg.pad_id)
            logits = self.model(batch.src, batch.prev).float()[keep]
            yield logits, float(F.cross_entropy(logits, batch.target[keep], reduction="sum"))

    def calibrate(self, inputs: list[InputFakeQuant]) -> None:
        """Global min/max of every quantized input over all batches, quantizing nothing meanwhile."""
        for q in inputs:
            q.calibrating = True
        for _ in self._passes():
            pass
        for q in inputs:
            q.calibrating = False

    def __call__(self) -> dict:
        nll, worst, mean = 0.0, 0.0, 0.0
        for (logits, batch_nll), ref in zip(self._passes(), self.reference or []):
            diff = (logits - ref).abs().amax(dim=-1)  # per token
            nll, worst, mean = nll + batch_nll, max(worst, float(diff.max())), mean + float(diff.sum())
        tokens = max(self.tokens, 1)
        return {"loss": nll / tokens, "max_logit_diff": worst, "mean_max_logit_diff": mean / tokens}


@torch.no_grad()
def quantization_report(
    model: EncoderDecoder, valid_ex: list[Example], cfg: QuantReportConfig, progress: bool = True
) -> dict:
    """Quantize one layer at a time (qat.weight_sites: every Linear of the blocks, "embedding",
    "tgt_embed.positions", ...) and measure it on the first cfg.valid_sentences examples.

    Returns {"baseline_loss", "sentences", "tokens", "activations", "threshold", "folds",
    "all": {"loss", "loss_increase", "max_logit_diff", ...} (every layer at once),
    "layers": [{"name", "params", "folded_with", "loss", "loss_increase", "max_logit_diff",
    "mean_max_logit_diff"}] sorted worst first (loss increase, then logit difference),
    "keep_float": names whose loss increase exceeds cfg.threshold}. The model is left as it was.
    """
    examples = list(valid_ex[: cfg.valid_sentences])
    if not examples:
        raise DataError("valid_ex: expected at least one validation example, got none")
    was_training = model.training
    model.eval()
    folds = exporter_folds(model) if cfg.exporter_folds else {}
    sites = site_quantizers(model, folds)
    bar = tqdm(total=len(sites) + 2, disable=not progress, unit="pass", dynamic_ncols=True, desc="int8 sensitivity")
    try:
        measure = _Measure(model, examples)
        bar.update(1)
        baseline = measure()["loss"]

        def run(pairs: list) -> dict:
            with _quantized(pairs, cfg.activations) as inputs:
                if inputs:
                    measure.calibrate(inputs)
                out = measure()
            return out | {"loss_increase": out["loss"] - baseline}

        rows = []
        for name, pairs in sites.items():
            bar.set_postfix(layer=name)
            weight = pairs[0][0].weight
            rows.append({"name": name, "params": weight.numel(), "folded_with": folds.get(name)} | run(pairs))
            bar.update(1)
        everything = run([pair for name, pairs in site_quantizers(model, folds).items() for pair in pairs])
        bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    rows.sort(key=lambda r: (r["loss_increase"], r["max_logit_diff"]), reverse=True)
    return {
        "baseline_loss": baseline,
        "sentences": len(examples),
        "tokens": measure.tokens,
        "activations": cfg.activations,
        "threshold": cfg.threshold,
        "folds": folds,
        "all": everything,
        "layers": rows,
        "keep_float": [r["name"] for r in rows if r["loss_increase"] > cfg.threshold],
    }


def format_report(report: dict, top: int = 10) -> str:
    """The report as a readable table: the `top` worst layers, the all-layers total, keep_float."""
    what = "weights per-channel int8" + (", inputs per-tensor int8" if report["activations"] else "")
    lines = [
        f"int8 sensitivity, one layer at a time ({what}): {report['sentences']} valid sentences, "
        f"{report['tokens']} tokens, float loss {report['baseline_loss']:.4f} nats/token",
        f"{'layer':<36} {'params':>9} {'loss +':>9} {'max |dlogit|':>13}",
    ]
    rows = report["layers"][:top]
    for r in rows:
        name = r["name"] + (" *" if r.get("folded_with") else "")
        lines.append(f"{name:<36} {r['params']:>9,} {r['loss_increase']:>+9.4f} {r['max_logit_diff']:>13.4f}")
    if len(report["layers"]) > len(rows):
        lines.append(f"... {len(report['layers']) - len(rows)} more layers")
    a = report["all"]
    lines.append(f"{'all layers at once':<36} {'':>9} {a['loss_increase']:>+9.4f} {a['max_logit_diff']:>13.4f}")
    if any(r.get("folded_with") for r in rows):
        lines.append("* the converter folds a LayerNorm gain into this weight; quantized as the file holds it")
    keep = report["keep_float"]
    lines.append(f"keep in float (loss increase > {report['threshold']:g}): {', '.join(keep) if keep else 'none'}")
    return "\n".join(lines)
