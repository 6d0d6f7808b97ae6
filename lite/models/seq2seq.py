"""Encoder-decoder translation model: Lite Transformer (LSRA blocks) or the baseline Transformer.

    tokens -> embedding * sqrt(d) + positions -> N encoder blocks -> memory
    prev tokens -> embedding * sqrt(d) + positions -> M decoder blocks (self mixer, cross-attention, FFN)
           -> output projection (tied to the embedding when share_embeddings)

`ModelConfig.arch` picks the token mixer of every block (see blocks.py); everything else is
shared so the two families are compared like for like. Token ids are right-padded with pad_id.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lite.config import ModelConfig
from lite.errors import ConfigError
from lite.models.blocks import DecoderBlock, EncoderBlock


def sinusoidal_table(num_positions: int, dim: int) -> Tensor:
    """[P, D] sin/cos position table (Vaswani et al.), first half sin, second half cos."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = torch.arange(num_positions, dtype=torch.float32)[:, None] * freq[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(table, (0, dim - 2 * half))


class Embedder(nn.Module):
    """Token embedding scaled by sqrt(d) plus a position embedding (an nn.Embedding either way,
    so export sees one lookup; sinusoidal positions are a frozen table)."""

    def __init__(self, tokens: nn.Embedding, cfg: ModelConfig):
        super().__init__()
        self.tokens = tokens
        self.positions = nn.Embedding(cfg.max_positions, cfg.embed_dim)
        if cfg.positions == "sinusoidal":
            self.positions.weight.data.copy_(sinusoidal_table(cfg.max_positions, cfg.embed_dim))
            self.positions.weight.requires_grad_(False)
        else:
            nn.init.normal_(self.positions.weight, std=cfg.embed_dim**-0.5)
        self.scale = math.sqrt(cfg.embed_dim)
        self.dropout = cfg.dropout

    def forward(self, tokens: Tensor, start: int = 0) -> Tensor:
        pos = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = self.tokens(tokens) * self.scale + self.positions(pos)[None]
        return F.dropout(x, p=self.dropout, training=self.training)


class EncoderDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ConfigError("model.vocab_size is not set (it comes from the tokenizer)")
        self.cfg = cfg
        d = cfg.embed_dim
        src_tokens = nn.Embedding(cfg.vocab_size, d, padding_idx=cfg.pad_id)
        nn.init.normal_(src_tokens.weight, std=d**-0.5)
        nn.init.zeros_(src_tokens.weight[cfg.pad_id])
        if cfg.share_embeddings:
            tgt_tokens = src_tokens
        else:
            tgt_tokens = nn.Embedding(cfg.vocab_size, d, padding_idx=cfg.pad_id)
            nn.init.normal_(tgt_tokens.weight, std=d**-0.5)
        self.src_embed = Embedder(src_tokens, cfg)
        self.tgt_embed = Embedder(tgt_tokens, cfg)
        self.encoder = nn.ModuleList(EncoderBlock(cfg, i) for i in range(cfg.encoder_layers))
        self.decoder = nn.ModuleList(DecoderBlock(cfg, i) for i in range(cfg.decoder_layers))
        # pre-norm leaves the residual stream un-normalised: one final LayerNorm per stack
        self.encoder_norm = nn.LayerNorm(d) if cfg.pre_norm else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d) if cfg.pre_norm else nn.Identity()
        self.output = nn.Linear(d, cfg.vocab_size, bias=False)
        self.output.weight = tgt_tokens.weight  # tied output projection

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """src [B, S] -> (memory [B, S, D], padding mask [B, S] True at pads)."""
        pad = src.eq(self.cfg.pad_id)
        x = self.src_embed(src)
        for block in self.encoder:
            x = block(x, pad)
        return self.encoder_norm(x), pad

    def decode(self, prev: Tensor, memory: Tensor, memory_pad: Tensor, cache: dict | None = None) -> Tensor:
        """prev [B, T] -> logits [B, T, V]. With `cache` (a dict kept across calls), prev is the
        single newest token [B, 1] and earlier steps are read from the cache."""
        start = 0
        layer_caches = None
        if cache is not None:
            start = cache.get("step", 0)
            layer_caches = cache.setdefault("layers", [{} for _ in self.decoder])
            cache["step"] = start + prev.shape[1]
        x = self.tgt_embed(prev, start)
        for i, block in enumerate(self.decoder):
            x = block(x, memory, memory_pad, None if layer_caches is None else layer_caches[i])
        return self.output(self.decoder_norm(x))

    def forward(self, src: Tensor, prev: Tensor) -> Tensor:
        memory, pad = self.encode(src)
        return self.decode(prev, memory, pad)


def reorder_cache(cache: dict, order: Tensor) -> None:
    """Select batch rows `order` of every cached tensor (beam search keeps the surviving hypotheses)."""
    for layer in cache.get("layers", []):
        for part in layer.values():
            for name, tensor in part.items():
                part[name] = tensor.index_select(0, order)


def count_parameters(model: nn.Module, include_embeddings: bool = True) -> int:
    """Trainable parameter count, each shared tensor once; optionally without the token embeddings
    (as Lite Transformer reports it)."""
    seen: set[int] = set()
    total = 0
    skip = set()
    if not include_embeddings and isinstance(model, EncoderDecoder):
        skip = {id(model.src_embed.tokens.weight), id(model.tgt_embed.tokens.weight)}
    for p in model.parameters():
        if id(p) in seen or id(p) in skip or not p.requires_grad:
            continue
        seen.add(id(p))
        total += p.numel()
    return total
