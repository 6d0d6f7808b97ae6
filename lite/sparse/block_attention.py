"""Block-sparse attention: only the key blocks a pattern needs are gathered and multiplied.

    queries, in blocks of b           keys gathered per query block (BlockLayout.key_blocks)
    [B*H*nb, b, d]        @           [B*H*nb, K*b + g, d]^T   (K blocks + the g global keys)

so time and memory are O(n * (K*b + g)) instead of O(n^2). Global query rows (a few tokens that see
everything) are computed separately, densely, and written over their positions. No tensor has more
than 4 dimensions and no n x n tensor exists, so torch.onnx.export and litert-torch turn it into
builtin ops (gather, batch matmul, softmax, select). The allowed-key test inside the gathered blocks
is recomputed from positions (small integer tables), not stored as a mask.

Written by hand because no library kernel exports to both formats: torch's flex_attention and the
xformers/DeepSpeed block-sparse kernels lower to custom ops that neither exporter knows.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lite.sparse.patterns import BAND, FULL, BlockLayout


def _tables(layout: BlockLayout, device: torch.device) -> dict[str, Tensor]:
    """The layout's numpy tables as tensors (tiny: per head and block, never per token pair). Built on
    every call, not cached: tensors made while an exporter traces are its fake tensors."""
    h, nb, width = layout.key_blocks.shape
    b = layout.block
    i32 = dict(dtype=torch.int32, device=device)  # positions in int32: TFLite has no int64 abs/compare kernels
    kpos = torch.as_tensor(layout.key_blocks, **i32)[..., None] * b + torch.arange(b, **i32)
    kind = torch.as_tensor(layout.slot_kind, **i32)[..., None].expand(h, nb, width, b)
    which = np.zeros(layout.n, np.int64)  # position -> its row among the global queries (0 elsewhere)
    which[list(layout.globals_)] = np.arange(len(layout.globals_))
    return {
        "flat": (torch.arange(h, device=device)[:, None, None] * nb
                 + torch.as_tensor(layout.key_blocks, device=device)).reshape(-1),
        "kpos": kpos.reshape(h, nb, width * b),
        "kind": kind.reshape(h, nb, width * b),
        "qpos": torch.arange(nb * b, **i32).view(nb, b),
        "reach": torch.as_tensor(layout.radius * layout.dilation, **i32).view(h, 1, 1, 1),
        "dilation": torch.as_tensor(layout.dilation, **i32).view(h, 1, 1, 1),
        "keep_diag": torch.as_tensor(layout.diagonal, device=device).view(h, 1, 1, 1),
        "is_global": torch.as_tensor(layout.is_global, device=device),
        "globals": torch.as_tensor(layout.globals_, dtype=torch.long, device=device),
        "global_pos": torch.as_tensor(layout.globals_, **i32),
        "which": torch.as_tensor(which, device=device),
    }


def _causal_and_diagonal(allowed: Tensor, dist: Tensor, causal: bool, keep_diag: Tensor) -> Tensor:
    """The per-token rules every part shares: no later key when causal (dist = query - key position),
    no own key where a head drops the diagonal (keep_diag broadcast per head)."""
    if causal:
        allowed = allowed & (dist >= 0)
    return allowed & ((dist != 0) | keep_diag)


def _block_allowed(layout: BlockLayout, t: dict[str, Tensor]) -> Tensor:
    """[H, nb, b, K*b] bool: may query (block, row) see gathered key (slot)? (pattern rules of patterns.py)"""
    n = layout.n
    dist = t["qpos"][None, :, :, None] - t["kpos"][:, :, None, :]
    kind = t["kind"][:, :, None, :]
    band = (dist <= t["reach"]) & (dist >= -t["reach"]) & (torch.remainder(dist, t["dilation"]) == 0)
    allowed = _causal_and_diagonal((kind == FULL) | ((kind == BAND) & band), dist, layout.causal, t["keep_diag"])
    kpos = t["kpos"].clamp(max=n - 1)
    # global keys are seen through their own columns; a padded slot (position >= n) is never seen
    key_is_global = torch.gather(t["is_global"], 1, kpos.reshape(kpos.shape[0], -1).long()).view_as(kpos)
    return allowed & ~key_is_global[:, :, None, :] & (t["kpos"] < n)[:, :, None, :]


def _global_key_allowed(layout: BlockLayout, t: dict[str, Tensor]) -> Tensor:
    """[H, N, g] bool: may query position i (padded length N) see global key u?"""
    dist = t["qpos"].reshape(-1)[None, :, None] - t["global_pos"][None, None, :]
    allowed = t["is_global"][:, t["globals"]][:, None, :].expand(-1, dist.shape[1], -1)
    return _causal_and_diagonal(allowed, dist, layout.causal, t["keep_diag"].view(-1, 1, 1))


def block_sparse_attention(q: Tensor, k: Tensor, v: Tensor, layout: BlockLayout,
                           key_padding_mask: Tensor | None = None, fill: float = -1e4,
                           dropout: float = 0.0, training: bool = False) -> Tensor:
    """q (already scaled), k, v [B, H, n, d] -> [B, H, n, d] under `layout` (compile_layout(heads, n, causal)).

    key_padding_mask [B, n] True at pads. fill: the bounded score of a masked key; masked keys also
    get probability exactly 0, and a query that sees no key at all returns 0. dropout: on the
    attention probabilities while training, as in dense attention.
    """
    drop = dict(p=dropout, training=training)
    bsz, heads, n, d = q.shape
    if n != layout.n or heads != layout.key_blocks.shape[0]:
        raise ValueError(f"layout compiled for n={layout.n}, {layout.key_blocks.shape[0]} heads; got n={n}, {heads} heads")
    b, nb = layout.block, layout.num_blocks
    width = layout.key_blocks.shape[2]
    t = _tables(layout, q.device)
    pad_len = nb * b - n
    qp, kp, vp = (torch.nn.functional.pad(x, (0, 0, 0, pad_len)) for x in (q, k, v))

    def gather_blocks(x: Tensor) -> Tensor:  # [B, H, N, d] -> [B*H*nb, K*b, d]
        blocks = x.reshape(bsz, heads * nb, b * d).index_select(1, t["flat"])
        return blocks.reshape(bsz * heads * nb, width * b, d)

    qb = qp.reshape(bsz * heads * nb, b, d)
    keys, values = gather_blocks(kp), gather_blocks(vp)
    allowed = _block_allowed(layout, t)[None].expand(bsz, -1, -1, -1, -1)  # [B, H, nb, b, K*b]
    if key_padding_mask is not None:
        pad = torch.nn.functional.pad(key_padding_mask, (0, pad_len), value=True)
        pad_slots = pad[:, t["kpos"].reshape(-1).long()].view(bsz, heads, nb, 1, width * b)
        allowed = allowed & ~pad_slots
    allowed = allowed.reshape(bsz * heads * nb, b, width * b)
    g = len(layout.globals_)
    if g:
        kg = k.index_select(2, t["globals"])  # [B, H, g, d]
        vg = v.index_select(2, t["globals"])
        keys = torch.cat([keys, kg[:, :, None].expand(-1, -1, nb, -1, -1).reshape(-1, g, d)], dim=1)
        values = torch.cat([values, vg[:, :, None].expand(-1, -1, nb, -1, -1).reshape(-1, g, d)], dim=1)
        gallowed = _global_key_allowed(layout, t)[None].expand(bsz, -1, -1, -1)  # [B, H, N, g]
        if key_padding_mask is not None:
            gallowed = gallowed & ~key_padding_mask[:, t["globals"]][:, None, None, :]
        allowed = torch.cat([allowed, gallowed.reshape(bsz * heads * nb, b, g)], dim=2)
    out = masked_softmax_values(qb @ keys.transpose(1, 2), allowed, values, fill, **drop)
    out = out.reshape(bsz, heads, nb * b, d)[:, :, :n]
    if g:
        out = _overwrite_global_rows(out, q, k, v, layout, t, key_padding_mask, fill, drop)
    return out


def masked_softmax_values(scores: Tensor, allowed: Tensor, values: Tensor, fill: float,
                          p: float = 0.0, training: bool = False) -> Tensor:
    """softmax over the allowed keys (exactly 0 elsewhere) @ values; all-masked rows give 0."""
    probs = torch.softmax(scores.masked_fill(~allowed, fill), dim=-1) * allowed
    return torch.nn.functional.dropout(probs, p=p, training=training) @ values


def _overwrite_global_rows(out: Tensor, q: Tensor, k: Tensor, v: Tensor, layout: BlockLayout,
                           t: dict[str, Tensor], key_padding_mask: Tensor | None, fill: float, drop: dict) -> Tensor:
    """Global queries see every key: g dense rows, written over their positions (for the heads
    where they are global) with a select, not a scatter (scatter breaks TFLite int8)."""
    n = layout.n
    g_pos = t["globals"]
    j = torch.arange(n, dtype=torch.int32, device=q.device)
    dist = t["global_pos"][:, None] - j[None, :]  # [g, n]
    allowed = torch.ones_like(dist, dtype=torch.bool)[None].expand(q.shape[1], -1, -1)
    allowed = _causal_and_diagonal(allowed, dist, layout.causal, t["keep_diag"].view(-1, 1, 1))
    allowed = allowed[None].expand(q.shape[0], -1, -1, -1)
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
    rows = masked_softmax_values(q.index_select(2, g_pos) @ k.transpose(-1, -2), allowed, v, fill, **drop)  # [B, H, g, d]
    take = t["is_global"][None, :, :, None]  # [1, H, n, 1]
    return torch.where(take, rows.index_select(2, t["which"]), out)
