"""Structured pruning through torch-pruning's dependency graph: attention heads, FFN hidden units and
convolution-branch channels are removed, so the pruned model is smaller and faster as a dense model.

torch-pruning traces the model and groups every tensor dimension that must shrink together:
- heads: q/k/v out-rows and out_proj in-columns of a head (num_heads={q, k, v: H}; whole heads go,
  the head width stays), in the LSRA attention branch, the Transformer's self-attention and the
  cross-attention;
- FFN hidden units: fc1 rows and fc2 columns;
- convolution channels: GLU value and gate rows (two Linears: torch-pruning mis-maps a GLU written as
  F.glu or chunk()), the depthwise lightweight convolution's channels (a custom pruner below; its
  kernel is per head so only the channel -> head map shrinks) and the branch output Linear's columns.
Layers that set the residual width (out_proj, fc2, the conv output Linear, the vocabulary projection)
are ignored as roots, so the residual width never changes: every LSRA layer slices the residual stream
at a fixed channel (the first half to the attention branch, the rest to the convolution branch) and
concatenates the branches' outputs, so a removed residual channel would shift that split in every layer.

The result is written back as a config with per-layer widths (ModelConfig.encoder_heads, ...) and a
fresh model built from it loads the pruned state_dict, so it saves as config + state_dict
(weights_only=True) and exports like any other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from lite.batching import Example, collate, make_batches
from lite.errors import ConfigError
from lite.models.attention import MultiheadAttention
from lite.models.blocks import FeedForward, LSRAMixer
from lite.models.convolution import ConvBranch, DynamicConv, LightweightConv
from lite.models.seq2seq import EncoderDecoder
from lite.train import batch_loss

IMPORTANCES = ("magnitude", "taylor")


@dataclass
class StructuredConfig:
    """A `structured` recipe step. Ratios are the fraction removed (per layer, or over all layers of a
    kind with global_ranking), reached after `iterative_steps` equal steps with fine-tuning between them."""

    heads: float = 0.25  # attention heads (self / LSRA attention branch and cross-attention)
    ffn: float = 0.25  # FFN hidden units
    conv: float = 0.25  # LSRA convolution-branch channels (lightweight convolution)
    importance: str = "magnitude"  # magnitude (L2 of the group's weights) or taylor (|w * dL/dw| on training batches)
    global_ranking: bool = False  # rank groups across layers instead of the same ratio in every layer
    iterative_steps: int = 1
    taylor_batches: int = 8  # training batches whose gradients score the Taylor importance


class _LightweightConvPruner(tp.pruner.BasePruningFunc):
    """Depthwise: removing channel c removes it on both sides. The kernel is shared per head, so only
    the channel -> head map (and the count per head) changes."""

    def prune_out_channels(self, layer: LightweightConv, idxs) -> LightweightConv:
        drop = {int(i) for i in idxs}
        keep = [c for c in range(layer.channels) if c not in drop]
        layer.head_of_channel = layer.head_of_channel[keep]
        layer.channels = len(keep)
        layer.head_channels = torch.bincount(layer.head_of_channel, minlength=layer.heads).tolist()
        return layer

    prune_in_channels = prune_out_channels  # the same function object = torch-pruning's intra-layer coupling

    def get_out_channels(self, layer: LightweightConv) -> int:
        return layer.channels

    def get_in_channels(self, layer: LightweightConv) -> int:
        return layer.channels


def _check(model: EncoderDecoder, cfg: StructuredConfig) -> None:
    for name, ratio in (("heads", cfg.heads), ("ffn", cfg.ffn), ("conv", cfg.conv)):
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(f"structured.{name}: expected a fraction in [0, 1), got {ratio}")
    if cfg.importance not in IMPORTANCES:
        raise ConfigError(f"structured.importance: expected one of {', '.join(IMPORTANCES)}, got {cfg.importance!r}")
    if cfg.iterative_steps < 1:
        raise ConfigError(f"structured.iterative_steps: expected >= 1, got {cfg.iterative_steps}")
    if cfg.conv > 0 and any(isinstance(m, DynamicConv) for m in model.modules()):
        raise ConfigError(
            "structured.conv: channel pruning supports conv_type lightweight; this model uses dynamic "
            "convolutions (set conv: 0)"
        )
    if cfg.heads > 0 and (model.cfg.encoder_patterns or model.cfg.decoder_patterns):
        # the sparse cores hold one pattern (and block layout) per head: removing heads would orphan them
        raise ConfigError(
            "structured.heads: head pruning does not support sparse attention patterns yet "
            "(model.encoder_patterns/decoder_patterns); set heads: 0"
        )


def _pruner(model: EncoderDecoder, cfg: StructuredConfig, example: tuple) -> tp.pruner.MetaPruner:
    ignored: list[nn.Module] = [model.output]
    num_heads: dict[nn.Module, int] = {}
    ratios: dict[nn.Module, float] = {}
    for module in model.modules():
        if isinstance(module, MultiheadAttention):
            ignored.append(module.out_proj)
            for proj in (module.q_proj, module.k_proj, module.v_proj):
                num_heads[proj] = module.num_heads
                ratios[proj] = cfg.heads  # torch-pruning skips a group whose own ratio is 0, heads included
        elif isinstance(module, FeedForward):
            ignored.append(module.fc2)
            ratios[module.fc1] = cfg.ffn
        elif isinstance(module, ConvBranch):
            ignored.append(module.output)
            linears = [module.input.value, module.input.gate] if hasattr(module.input, "gate") else [module.input]
            for m in linears + [module.conv]:
                ratios[m] = cfg.conv
    importance = (
        tp.importance.GroupTaylorImportance()
        if cfg.importance == "taylor"
        else tp.importance.GroupMagnitudeImportance(p=2)
    )
    return tp.pruner.MetaPruner(
        model,
        example,
        importance=importance,
        global_pruning=cfg.global_ranking,
        pruning_ratio=0.0,
        pruning_ratio_dict=ratios,
        iterative_steps=cfg.iterative_steps,
        ignored_layers=ignored,
        num_heads=num_heads,
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=cfg.heads,
        customized_pruners={LightweightConv: _LightweightConvPruner()},
        root_module_types=[nn.Linear, LightweightConv],
    )


def _taylor_gradients(model: EncoderDecoder, examples: list[Example], batches: int, max_tokens: int) -> None:
    """Accumulate dL/dw over a few fixed training batches (GroupTaylorImportance reads .grad). Dropout is
    on, with masks from a generator seeded here: torch's default generator starts from a different seed
    in every process, and the importance (so which channels go) follows the masks."""
    model.zero_grad(set_to_none=True)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for idx in make_batches(examples, max_tokens, seed=0)[:batches]:
            batch = collate(examples, idx, model.cfg.pad_id, model.cfg.bos_id)
            loss, _ = batch_loss(model, batch, 0.0)
            (loss / batch.ntokens).backward()
    model.eval()


def pruned_config(model: EncoderDecoder):
    """The model config with per-layer widths read off the (pruned) modules."""
    cfg = model.cfg
    encoder_heads, decoder_heads, cross_heads, encoder_ffn, decoder_ffn = [], [], [], [], []
    encoder_conv, decoder_conv = [], []
    for stack, heads, ffn, conv in (
        (model.encoder, encoder_heads, encoder_ffn, encoder_conv),
        (model.decoder, decoder_heads, decoder_ffn, decoder_conv),
    ):
        for block in stack:
            attn = block.mixer.attn
            heads.append(attn.q_proj.out_features // attn.head_dim)
            ffn.append(block.ffn.fc1.out_features)
            if isinstance(block.mixer, LSRAMixer):
                conv.append(list(block.mixer.conv.conv.head_channels))
            if stack is model.decoder:
                cross_heads.append(block.cross.q_proj.out_features // block.cross.head_dim)
    lsra = cfg.arch == "lsra"
    return dataclasses.replace(
        cfg,
        encoder_heads=encoder_heads,
        decoder_heads=decoder_heads,
        cross_heads=cross_heads,
        encoder_ffn=encoder_ffn,
        decoder_ffn=decoder_ffn,
        encoder_conv=encoder_conv if lsra else None,
        decoder_conv=decoder_conv if lsra else None,
    )


def rebuild(model: EncoderDecoder) -> EncoderDecoder:
    """A fresh model built from the pruned config, carrying the pruned weights (strict load: any width the
    config does not describe fails here, not at export)."""
    fresh = EncoderDecoder(pruned_config(model))
    fresh.load_state_dict(model.state_dict())
    return fresh.eval()


def prune_structured(
    model: EncoderDecoder,
    cfg: StructuredConfig,
    train_ex: list[Example],
    finetune: Callable[[EncoderDecoder, int], None] | None = None,
    max_tokens: int = 2200,
    log: Callable[[str], None] = print,
) -> tuple[EncoderDecoder, list[dict]]:
    """Prune `model` in place in cfg.iterative_steps steps; `finetune(model, step)` runs after each step.
    Returns (a fresh model built from the pruned config, one record per step)."""
    _check(model, cfg)
    model.eval()
    src = torch.tensor([[model.cfg.bos_id + 3] * 7, [model.cfg.bos_id + 4] * 7])
    prev = torch.tensor([[model.cfg.bos_id] * 5] * 2)
    pruner = _pruner(model, cfg, (src, prev))  # one dependency graph for all steps: it holds these modules
    records = []
    for step in range(1, cfg.iterative_steps + 1):
        before = _param_count(model)
        if cfg.importance == "taylor":
            _taylor_gradients(model, train_ex, cfg.taylor_batches, max_tokens)
        pruner.step()
        model.zero_grad(set_to_none=True)
        for module in model.modules():  # the forward reads heads off the tensors; keep the attribute true too
            if isinstance(module, MultiheadAttention):
                module.num_heads = module.q_proj.out_features // module.head_dim
        record = {
            "step": step,
            "params_before": before,
            "params_after": _param_count(model),
            "widths": _widths(pruned_config(model)),
        }
        log(f"structured step {step}/{cfg.iterative_steps}: {before:,} -> {record['params_after']:,} parameters")
        if finetune is not None:
            finetune(model, step)
            model.eval()
        records.append(record)
    return rebuild(model), records


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _widths(cfg) -> dict:
    fields = (
        "encoder_heads",
        "decoder_heads",
        "cross_heads",
        "encoder_ffn",
        "decoder_ffn",
        "encoder_conv",
        "decoder_conv",
    )
    return {f: getattr(cfg, f) for f in fields}
