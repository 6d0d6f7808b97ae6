"""Multi-head attention with separate q/k/v projections and an incremental-decoding cache.

q, k and v are three Linears (not one packed in_proj) so that torch-pruning can prune
heads with num_heads={q, k, v: H}. The attention core is written out (matmul, masked fill,
softmax, matmul) so that it exports to ONNX/TFLite builtin ops; heads with sparse patterns
(lite/sparse) replace it with the block kernel or a masked dense core.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lite.errors import ConfigError
from lite.sparse.core import SparseCore
from lite.sparse.learned import LearnedCore
from lite.sparse.patterns import HeadPattern, is_learned

# Bounded fill for masked scores: finite so fully masked rows never produce NaN, and far
# below any real score after softmax (exp(-1e4) underflows to 0 in fp32).
MASK_FILL = -1e4


class MultiheadAttention(nn.Module):
    """Scaled dot-product attention over `num_heads` heads of width head_dim (default embed_dim / num_heads).

    Head-pruned layers keep their head width and have fewer heads: q/k/v project embed_dim to
    num_heads * head_dim and out_proj maps that back to embed_dim.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        kv_dim: int | None = None,
        head_dim: int | None = None,
        patterns: list[HeadPattern] | None = None,
        max_len: int = 0,
    ):
        super().__init__()
        if patterns is not None and len(patterns) != num_heads:
            raise ConfigError(f"{len(patterns)} head patterns for {num_heads} heads")
        if head_dim is None and embed_dim % num_heads:
            raise ConfigError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        kv_dim = kv_dim or embed_dim
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim or embed_dim // num_heads
        inner = num_heads * self.head_dim
        self.dropout = dropout
        self.mask_fill = MASK_FILL  # export sets a smaller bound: int8 scores need a narrow range
        # sparse heads (lite/sparse): fixed patterns (SparseCore) or patterns still being learned
        # (LearnedCore, max_len positions); both None: every query sees every key it may (dense)
        patterns = patterns or []
        self.learned = LearnedCore(patterns, max_len) if any(is_learned(p) for p in patterns) else None
        self.sparse = (
            SparseCore(patterns) if self.learned is None and any(p.kind != "dense" for p in patterns) else None
        )
        self.dense_topology = False  # True: ignore the patterns (SAR's dense pass, lite/sparse/sar.py)
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(kv_dim, inner)
        self.v_proj = nn.Linear(kv_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(proj.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: Tensor) -> Tensor:
        """[B, T, H*Dh] -> [B, H, T, Dh]; the head count is read from the tensor so pruning works."""
        b, t, _ = x.shape
        return x.view(b, t, -1, self.head_dim).transpose(1, 2)

    def project_kv(self, key: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of a memory (e.g. the encoder output), computed once per source."""
        return self._heads(self.k_proj(key)), self._heads(self.v_proj(key))

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        cache: dict[str, Tensor] | None = None,
        static_kv: bool = False,
    ) -> Tensor:
        """query [B, Tq, C]; key [B, Tk, C] (None: self-attention); key_padding_mask [B, Tk] True at pads.

        cache (incremental decoding): for self-attention, the keys/values of earlier steps are
        read from and appended to cache["k"], cache["v"]; with static_kv the cache holds the
        projected memory and `key` is not used.
        """
        q = self._heads(self.q_proj(query)) * (self.head_dim**-0.5)
        if static_kv and cache is not None and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            k, v = self.project_kv(query if key is None else key)
            if cache is not None:
                if not static_kv and "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        core = None if self.dense_topology else (self.learned if self.learned is not None else self.sparse)
        if core is not None:
            out = core(q, k, v, key_padding_mask, causal, self.mask_fill, self.dropout, self.training)
            out = out.transpose(1, 2)
            return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))
        scores = q @ k.transpose(-1, -2)  # [B, H, Tq, Tk]
        mask = None
        if key_padding_mask is not None:
            mask = key_padding_mask[:, None, None, :]
        if causal:
            tq, tk = scores.shape[-2:]
            # query i (absolute position tk - tq + i) may see keys up to that position
            future = torch.ones(tq, tk, dtype=torch.bool, device=scores.device).triu(tk - tq + 1)
            mask = future if mask is None else mask | future
        if mask is not None:
            scores = scores.masked_fill(mask, self.mask_fill)
        probs = F.dropout(F.softmax(scores, dim=-1), p=self.dropout, training=self.training)
        out = (probs @ v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))
