"""Encoder and decoder blocks for both families.

A block = token mixer + (decoder only) encoder-decoder attention + feed-forward, each
wrapped in residual + LayerNorm (post-norm by default, pre-norm optional). The token mixer
is what differs between the families:
- `AttentionMixer`: plain multi-head self-attention over all channels (baseline Transformer);
- `LSRAMixer`: Long-Short Range Attention, the channels split in half between an attention
  branch (long range) and a convolution branch (local context), outputs concatenated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lite.config import LayerShape, ModelConfig
from lite.models.attention import MultiheadAttention
from lite.models.convolution import ConvBranch

Cache = dict[str, dict[str, Tensor]]


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, activation_dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.activation_dropout = activation_dropout

    def forward(self, x: Tensor) -> Tensor:
        h = F.dropout(F.relu(self.fc1(x)), p=self.activation_dropout, training=self.training)
        return self.fc2(h)


class AttentionMixer(nn.Module):
    def __init__(self, dim: int, shape: LayerShape, attention_dropout: float, causal: bool):
        super().__init__()
        self.attn = MultiheadAttention(
            dim, shape.heads, attention_dropout, head_dim=shape.head_dim, patterns=shape.patterns, max_len=shape.max_len
        )
        self.causal = causal

    def forward(self, x: Tensor, padding_mask: Tensor | None, cache: Cache | None = None) -> Tensor:
        attn_cache = None if cache is None else cache.setdefault("self", {})
        return self.attn(x, key_padding_mask=padding_mask, causal=self.causal, cache=attn_cache)


class LSRAMixer(nn.Module):
    """First half of the channels -> attention branch, second half -> convolution branch."""

    def __init__(
        self,
        dim: int,
        shape: LayerShape,
        attention_dropout: float,
        causal: bool,
        conv_type: str,
        conv_glu: bool,
        weight_dropout: float,
    ):
        super().__init__()
        self.branch_dim = dim // 2
        self.attn = MultiheadAttention(
            self.branch_dim,
            shape.heads,
            attention_dropout,
            head_dim=shape.head_dim,
            patterns=shape.patterns,
            max_len=shape.max_len,
        )
        self.conv = ConvBranch(
            dim - self.branch_dim,
            shape.kernel,
            len(shape.conv_channels),
            conv_type,
            conv_glu,
            causal,
            weight_dropout,
            head_channels=shape.conv_channels,
        )
        self.causal = causal

    def forward(self, x: Tensor, padding_mask: Tensor | None, cache: Cache | None = None) -> Tensor:
        xa, xc = x[..., : self.branch_dim], x[..., self.branch_dim :]
        attn_cache = None if cache is None else cache.setdefault("self", {})
        conv_cache = None if cache is None else cache.setdefault("conv", {})
        a = self.attn(xa, key_padding_mask=padding_mask, causal=self.causal, cache=attn_cache)
        c = self.conv(xc, padding_mask=padding_mask, cache=conv_cache)
        return torch.cat([a, c], dim=-1)


def make_mixer(cfg: ModelConfig, shape: LayerShape, causal: bool) -> nn.Module:
    """The token mixer of an encoder (causal=False) or decoder (causal=True) layer of widths `shape`."""
    if cfg.arch == "transformer":
        return AttentionMixer(cfg.embed_dim, shape, cfg.attention_dropout, causal)
    return LSRAMixer(
        cfg.embed_dim, shape, cfg.attention_dropout, causal, cfg.conv_type, cfg.conv_glu, cfg.weight_dropout
    )


class Residual(nn.Module):
    """x + dropout(f(x)) with LayerNorm before f (pre-norm) or after the sum (post-norm)."""

    def __init__(self, dim: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.dropout = dropout
        self.pre_norm = pre_norm

    def forward(self, x: Tensor, fn) -> Tensor:
        y = fn(self.norm(x) if self.pre_norm else x)
        y = x + F.dropout(y, p=self.dropout, training=self.training)
        return y if self.pre_norm else self.norm(y)


class EncoderBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        shape = cfg.layer_shape("encoder", layer)
        self.mixer = make_mixer(cfg, shape, causal=False)
        self.ffn = FeedForward(cfg.embed_dim, shape.ffn, cfg.activation_dropout)
        self.mix_res = Residual(cfg.embed_dim, cfg.dropout, cfg.pre_norm)
        self.ffn_res = Residual(cfg.embed_dim, cfg.dropout, cfg.pre_norm)

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        x = self.mix_res(x, lambda h: self.mixer(h, padding_mask))
        return self.ffn_res(x, self.ffn)


class DecoderBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        shape = cfg.layer_shape("decoder", layer)
        self.mixer = make_mixer(cfg, shape, causal=True)
        self.cross = MultiheadAttention(
            cfg.embed_dim, shape.cross_heads, cfg.attention_dropout, head_dim=shape.cross_head_dim
        )
        self.ffn = FeedForward(cfg.embed_dim, shape.ffn, cfg.activation_dropout)
        self.mix_res = Residual(cfg.embed_dim, cfg.dropout, cfg.pre_norm)
        self.cross_res = Residual(cfg.embed_dim, cfg.dropout, cfg.pre_norm)
        self.ffn_res = Residual(cfg.embed_dim, cfg.dropout, cfg.pre_norm)

    def forward(
        self, x: Tensor, memory: Tensor, memory_padding_mask: Tensor | None, cache: Cache | None = None
    ) -> Tensor:
        """x [B, T, C] target states; with `cache`, T == 1 and earlier steps come from the cache."""
        x = self.mix_res(x, lambda h: self.mixer(h, None, cache))
        cross_cache = None if cache is None else cache.setdefault("cross", {})
        x = self.cross_res(x, lambda h: self.cross(h, memory, memory_padding_mask, cache=cross_cache, static_kv=True))
        return self.ffn_res(x, self.ffn)
