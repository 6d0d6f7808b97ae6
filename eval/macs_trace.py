"""Trace-based MAC count: run the real model once under torch.utils.flop_counter.FlopCounterMode.

An independent cross-check of the analytic count in lite/metrics/macs.py (docs/design.md, "MAC
convention"): one eval-mode forward of a [1, src_len] source and a [1, tgt_len] previous-target
tensor through the real EncoderDecoder, FLOPs read from the aten ops that actually ran, MACs =
FLOPs / 2. Embedding lookups are gathers (aten.embedding) with no formula, so they count zero, as
do elementwise ops (softmax, GLU product, LayerNorm, residuals, bias adds): the analytic convention.

What reaches the counter on CPU (torch 2.13, every op of every config checked):
- Linear layers: aten.addmm, or aten.mm for the bias-free output projection (3-D inputs are
  flattened first). Built-in formula.
- Attention scores and weighted values (`q @ k^T`, `probs @ v` on [B, H, T, Dh]) become aten.bmm.
  Built-in formula. Causal masking is a masked_fill, so the full T*T matrices are counted, as in
  the paper's convention.
- The depthwise conv1d of the lightweight convolution: aten.convolution with weight [C, 1, K]. The
  built-in formula multiplies c_out by the per-group input channels (1), giving T*K*C. Built in.
- The einsum of the dynamic convolution ("btkhr,bthk->bthr") decomposes to aten.bmm with batch
  B*T*H, contraction K and R output columns: T*K*C. Built in.
So this model needed no custom formula. One real gap exists nearby: on CPU,
F.scaled_dot_product_attention dispatches to aten._scaled_dot_product_flash_attention_for_cpu, which
the counter does not know (it silently counts 0). It is registered below with the counter's own SDPA
formula, so an attention rewritten with SDPA keeps being counted. And any matrix-contracting op that
runs without a formula raises `UncountedOpError` instead of being dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from lite.config import ModelConfig
from lite.models.seq2seq import EncoderDecoder

aten = torch.ops.aten
TRACE_VOCAB = 64  # vocabulary used when the config does not know its own (the count excludes it anyway)

# Names of aten ops that multiply matrices/contract dimensions; running one without a formula is an error.
_CONTRACTING = re.compile(r"mm|mv|dot|conv|matmul|einsum|linear|attention|tensordot")


class UncountedOpError(RuntimeError):
    """A matrix-multiplying op ran but the FLOP counter has no formula for it."""


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """The CPU flash-attention kernel: scores and weighted values, full Tq x Tk (masks not subtracted)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


CUSTOM_FORMULAS = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


class MacCounter(FlopCounterMode):
    """FlopCounterMode with the CPU gaps filled and a record of ops that ran without a formula."""

    def __init__(self) -> None:
        super().__init__(display=False, custom_mapping=CUSTOM_FORMULAS)
        self.uncounted: set[str] = set()

    def _count_flops(self, func_packet, out, args, kwargs):
        if func_packet not in self.flop_registry:
            self.uncounted.add(str(func_packet))
        return super()._count_flops(func_packet, out, args, kwargs)

    def check_complete(self) -> None:
        missed = sorted(op for op in self.uncounted if _CONTRACTING.search(op.split(".", 1)[-1]))
        if missed:
            raise UncountedOpError(f"no FLOP formula for {', '.join(missed)}: register one in eval/macs_trace.py")


def trace_macs(cfg: ModelConfig, src_len: int = 30, tgt_len: int = 30) -> dict:
    """{"macs": int, "by_op": {aten op: macs}, "output_projection_macs": int} of one forward.

    The output (vocabulary) projection is excluded by subtracting exactly what the counter
    attributed to the module `EncoderDecoder.output` (its module tracker keys counts by module
    path, per op). The complete forward runs, so the trace sees the model exactly as training and
    export call it; the amount subtracted is returned as output_projection_macs.
    """
    torch.manual_seed(0)
    model = EncoderDecoder(replace(cfg, vocab_size=cfg.vocab_size or TRACE_VOCAB)).eval()
    vocab = model.cfg.vocab_size
    first = max(cfg.pad_id, cfg.bos_id, cfg.eos_id) + 1  # ordinary tokens, so the source has no padding
    g = torch.Generator().manual_seed(0)
    src = torch.randint(first, max(vocab, first + 1), (1, src_len), generator=g)
    prev = torch.randint(first, max(vocab, first + 1), (1, tgt_len), generator=g)
    counter = MacCounter()
    with torch.no_grad(), counter:
        model(src, prev)
    counter.check_complete()
    counts = counter.get_flop_counts()
    total = counts.get("Global", {})
    output = counts.get(f"{type(model).__name__}.output", {})
    if not output:
        raise UncountedOpError("no FLOPs attributed to the output projection module `output`; cannot exclude it")
    by_op = {str(op): (flops - output.get(op, 0)) // 2 for op, flops in total.items()}
    by_op = {op: macs for op, macs in by_op.items() if macs}
    return {"macs": sum(by_op.values()), "by_op": by_op, "output_projection_macs": sum(output.values()) // 2}
