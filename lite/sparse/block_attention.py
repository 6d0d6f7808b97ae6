"""Block-sparse attention: only the key blocks a pattern needs are gathered and multiplied.

    queries, in blocks of b           keys gathered per query block (BlockLayout.key_blocks)
    [B*H*nb, b, d]        @           [B*H*nb, K*b + g, d]^T   (K blocks + the g global keys)

so time and memory are O(n * (K*b + g)) instead of O(n^2). Global query rows (a few tokens that see
everything) are computed separately, densely, and written over their positions. No tensor has more
than 4 dimensions and no n x n tensor exists, so torch.onnx.export and litert-torch turn it into
builtin ops (gather, batch matmul, softmax, select). Which gathered entries a query may see is a
boolean table the size of the scores, O(n * (K*b + g)), built once per length (compile_layout).

Written by hand because no library kernel exports to both formats: torch's flex_attention and the
xformers/DeepSpeed block-sparse kernels lower to custom ops that neither exporter knows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lite.sparse.patterns import BlockLayout


def _tables(layout: BlockLayout, device: torch.device) -> dict[str, Tensor]:
    """The layout's numpy tables as tensors. Made on every call, not cached: tensors made while an
    exporter traces are its fake tensors (in eager mode as_tensor shares the numpy memory)."""
    h, nb, _ = layout.key_blocks.shape
    return {
        "flat": torch.as_tensor(layout.flat_key_blocks, device=device),
        "kpos": torch.as_tensor(layout.key_positions.reshape(-1), device=device),
        "allowed": torch.as_tensor(layout.allowed.reshape(h * nb, layout.block, -1), device=device),
        "global_rows": torch.as_tensor(layout.global_rows, device=device),
        "is_global": torch.as_tensor(layout.is_global, device=device),
        "globals": torch.as_tensor(layout.globals_, dtype=torch.long, device=device),
        "which": torch.as_tensor(layout.global_row_of, device=device),
    }


def block_sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: BlockLayout,
    key_padding_mask: Tensor | None = None,
    fill: float = -1e4,
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    """q (already scaled), k, v [B, H, n, d] -> [B, H, n, d] under `layout` (compile_layout(heads, n, causal)).

    key_padding_mask [B, n] True at pads. fill: the bounded score of a masked key; masked keys also
    get probability exactly 0, and a query that sees no key at all returns 0. dropout: on the
    attention probabilities while training, as in dense attention.
    """
    drop = dict(p=dropout, training=training)
    bsz, heads, n, d = q.shape
    if n != layout.n or heads != layout.key_blocks.shape[0]:
        raise ValueError(
            f"layout compiled for n={layout.n}, {layout.key_blocks.shape[0]} heads; got n={n}, {heads} heads"
        )
    b, nb = layout.block, layout.num_blocks
    width = layout.key_blocks.shape[2]
    g = len(layout.globals_)
    t = _tables(layout, q.device)
    pad_len = nb * b - n
    qp, kp, vp = (torch.nn.functional.pad(x, (0, 0, 0, pad_len)) for x in (q, k, v))

    def gather_blocks(x: Tensor) -> Tensor:  # [B, H, N, d] -> [B*H*nb, K*b, d]
        blocks = x.reshape(bsz, heads * nb, b * d).index_select(1, t["flat"])
        return blocks.reshape(bsz * heads * nb, width * b, d)

    qb = qp.reshape(bsz * heads * nb, b, d)
    keys, values = gather_blocks(kp), gather_blocks(vp)
    if g:
        kg = k.index_select(2, t["globals"])  # [B, H, g, d]
        vg = v.index_select(2, t["globals"])
        keys = torch.cat([keys, kg[:, :, None].expand(-1, -1, nb, -1, -1).reshape(-1, g, d)], dim=1)
        values = torch.cat([values, vg[:, :, None].expand(-1, -1, nb, -1, -1).reshape(-1, g, d)], dim=1)
    r = layout.representatives
    pad = None if key_padding_mask is None else torch.nn.functional.pad(key_padding_mask, (0, pad_len), value=True)
    if r:  # the n..N padding rows must not enter the last block's mean, with or without a mask
        no_pads = torch.zeros(bsz, n, dtype=torch.bool, device=q.device)
        padded = pad if pad is not None else torch.nn.functional.pad(no_pads, (0, pad_len), value=True)
        reps_k, reps_v, empty = _representatives(kp, vp, padded, b)
        keys = torch.cat([keys, reps_k], dim=1)
        values = torch.cat([values, reps_v], dim=1)
    allowed = t["allowed"][None]  # [1, H*nb, b, K*b + g + r]
    if pad is not None:
        pad_keys = pad.index_select(1, t["kpos"]).view(bsz, heads * nb, 1, width * b)
        if g:
            pad_globals = key_padding_mask.index_select(1, t["globals"]).view(bsz, 1, 1, g)
            pad_keys = torch.cat([pad_keys, pad_globals.expand(-1, heads * nb, -1, -1)], dim=-1)
        if r:  # a block of pads only has no representative
            pad_keys = torch.cat([pad_keys, empty.view(bsz, 1, 1, r).expand(-1, heads * nb, -1, -1)], dim=-1)
        allowed = allowed & ~pad_keys
    allowed = allowed.expand(bsz, -1, -1, -1).reshape(bsz * heads * nb, b, width * b + g + r)
    out = masked_softmax_values(qb @ keys.transpose(1, 2), allowed, values, fill, **drop)
    out = out.reshape(bsz, heads, nb * b, d)[:, :, :n]
    if g:
        out = _overwrite_global_rows(out, q, k, v, t, key_padding_mask, fill, drop)
    return out


def _representatives(kp: Tensor, vp: Tensor, pad: Tensor, b: int) -> tuple[Tensor, Tensor, Tensor]:
    """ERNIE-Sparse's window summaries: the mean key and value of each block over its real tokens,
    given to every query block: ([B*H*nb, nb, d] keys, values, [B, nb] True where a block is all pads)."""
    bsz, heads, big_n, d = kp.shape
    nb = big_n // b
    keep = (~pad).to(kp.dtype).unsqueeze(-1)  # [B, N, 1]
    count = keep.view(bsz, nb, b).sum(-1)  # [B, nb]
    weights = (keep / count.repeat_interleave(b, dim=1).clamp_min(1).unsqueeze(-1)).unsqueeze(1)  # [B, 1, N, 1]

    def summary(x: Tensor) -> Tensor:  # [B, H, N, d] -> [B*H*nb, nb, d]: every query block gets all nb
        means = (x * weights).reshape(bsz * heads, nb, b, d).sum(2)  # [B*H, nb, d]
        return means[:, None].expand(-1, nb, -1, -1).reshape(bsz * heads * nb, nb, d)

    return summary(kp), summary(vp), count == 0


def masked_softmax_values(
    scores: Tensor, allowed: Tensor, values: Tensor, fill: float, p: float = 0.0, training: bool = False
) -> Tensor:
    """softmax over the allowed keys (exactly 0 elsewhere) @ values; all-masked rows give 0.
    `scores` is consumed: in eager inference it is overwritten in place, so the softmax holds one
    score-sized buffer instead of three (the peak memory of long sequences)."""
    if torch.is_grad_enabled() or training or torch.compiler.is_compiling():
        probs = torch.softmax(scores.masked_fill(~allowed, fill), dim=-1) * allowed
        return torch.nn.functional.dropout(probs, p=p, training=training) @ values
    probs = scores.masked_fill_(~allowed, fill)
    probs = probs.sub_(probs.amax(-1, keepdim=True)).exp_()
    probs = probs.div_(probs.sum(-1, keepdim=True)).mul_(allowed)
    return probs @ values


def _overwrite_global_rows(
    out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    t: dict[str, Tensor],
    key_padding_mask: Tensor | None,
    fill: float,
    drop: dict,
) -> Tensor:
    """Global queries see every key: g dense rows, written over their positions (for the heads
    where they are global) with a select, not a scatter (scatter breaks TFLite int8)."""
    allowed = t["global_rows"][None]  # [1, H, g, n]
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
    rows = masked_softmax_values(q.index_select(2, t["globals"]) @ k.transpose(-1, -2), allowed, v, fill, **drop)
    take = t["is_global"][None, :, :, None]  # [1, H, n, 1]
    return torch.where(take, rows.index_select(2, t["which"]), out)
