"""The attention core of one layer's heads under their sparse patterns.

Block-structured heads that share a block size run on the block kernel (block_attention.py);
anything else (a dense head among sparse ones, incremental decoding where the query is one new
token) runs masked dense attention over the pattern's reference mask, with a bounded fill.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lite.errors import ConfigError
from lite.sparse.block_attention import block_sparse_attention, masked_softmax_values
from lite.sparse.patterns import BlockLayout, HeadPattern, compile_layout, reference_mask, runs_blockwise


class SparseCore:
    """Callable as core(q, k, v, ...) with q (scaled) [B, H, Tq, d], k, v [B, H, Tk, d] -> [B, H, Tq, d].

    Queries are the last Tq positions of the Tk keys (Tq < Tk while decoding step by step)."""

    def __init__(self, heads: list[HeadPattern]):
        self.heads = list(heads)
        self.blockwise = runs_blockwise(self.heads)
        if any(h.representatives for h in self.heads) and not self.blockwise:
            raise ConfigError(
                "representatives run on the block kernel only: every head of the layer must be "
                "local/blocks with one block size"
            )
        self._layouts: dict[tuple[int, bool], BlockLayout] = {}
        self._masks: dict[tuple[int, bool], Tensor] = {}

    def layout(self, n: int, causal: bool) -> BlockLayout:
        if (n, causal) not in self._layouts:
            self._layouts[n, causal] = compile_layout(self.heads, n, causal)
        return self._layouts[n, causal]

    def mask(self, n: int, causal: bool) -> Tensor:
        """[H, n, n] bool: the reference masks (dense fallback only)."""
        if (n, causal) not in self._masks:
            self._masks[n, causal] = torch.as_tensor(np.stack([reference_mask(h, n, causal) for h in self.heads]))
        return self._masks[n, causal]

    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        key_padding_mask: Tensor | None,
        causal: bool,
        fill: float,
        dropout: float = 0.0,
        training: bool = False,
    ) -> Tensor:
        tq, tk = q.shape[2], k.shape[2]
        if self.blockwise and tq == tk:
            return block_sparse_attention(q, k, v, self.layout(tk, causal), key_padding_mask, fill, dropout, training)
        allowed = self.mask(tk, causal)[:, tk - tq :].to(q.device)[None]
        if key_padding_mask is not None:
            allowed = allowed & ~key_padding_mask[:, None, None, :]
        return masked_softmax_values(q @ k.transpose(-1, -2), allowed, v, fill, dropout, training)
