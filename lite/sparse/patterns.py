"""Sparse attention patterns: which keys each query of one head may see.

A pattern is data (YAML -> HeadPattern). Every block-structured pattern is compiled, for a sequence
length n, into a small table over blocks of `block` tokens:

    kinds[h, query block, key block] in {SKIP, BAND, FULL}

SKIP blocks are never computed; inside a BAND block a query at i sees a key at j when
|i - j| <= radius * dilation and (i - j) % dilation == 0; FULL blocks (random blocks, learned block
masks) are seen whole. Then three per-token rules apply everywhere: causal (j <= i), the diagonal
(SparseBERT: a head may drop j == i), and global tokens (a global query sees every key, every query
sees a global key; Longformer/BigBird/ERNIE-Sparse). `reference_mask` writes the same definition as
an n x n boolean matrix, straight from the pattern, for tests and for the masked dense fallback.

Two kinds are learned during training (lite/sparse/learned.py) and binarised after it into the fixed
kinds above: dam (SparseBERT's Differentiable Attention Mask, a gate per block pair -> blocks) and
degree (Breaking BERT's learned neighbour degree, a soft band radius per head -> local).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np

from lite.errors import ConfigError

KINDS = ("dense", "local", "blocks", "dam", "degree")
LEARNED = ("dam", "degree")
SKIP, BAND, FULL = 0, 1, 2


@dataclass
class HeadPattern:
    """One head's keys. kind: dense (all keys), local (band + the options below), blocks (a fixed
    list of key blocks per query block: a binarised learned block mask); learned while training:
    dam (a gate per pair of blocks of `block` tokens) and degree (a band whose radius is learned,
    starting at window // 2)."""

    kind: str = "dense"
    window: int = 0  # local: a query sees the window // 2 keys on each side (causal: before it), itself included
    dilation: int = 1  # local: only every dilation-th key inside a band dilation times as wide
    global_tokens: list[int] = field(default_factory=list)  # positions that see and are seen by every token
    random_blocks: int = 0  # extra key blocks per query block, drawn once from `seed` (BigBird)
    seed: int = 0
    diagonal: bool = True  # False: a query never sees its own key (SparseBERT)
    block: int = 0  # block size of the block kernel; 0: window // 2 (local) - the smallest that needs 3 blocks
    blocks: list[list[int]] = field(default_factory=list)  # kind blocks: key blocks per query block
    # ERNIE-Sparse: every query also sees one representative per block (the mean of that block's keys
    # and values), a summary of each window; encoder (non-causal) block-sparse heads only
    representatives: bool = False
    penalty: float = 0.0  # dam/degree: weight of the sparsity term (expected share of keys kept) in the loss
    temperature: float = 0.5  # dam: Gumbel-sigmoid temperature; degree: softness of the band edge, in tokens

    @property
    def radius(self) -> int:
        return self.window // 2

    def block_size(self) -> int:
        if self.block:
            return self.block
        return max(self.radius * self.dilation, 1)


def check_pattern(p: HeadPattern, where: str) -> str | None:
    """A one-line description of what is wrong with `p`, or None."""
    if p.kind not in KINDS:
        return f"{where}.kind must be one of {', '.join(KINDS)}, got {p.kind!r}"
    if p.kind in ("local", "degree") and p.window < 2:
        return f"{where}.window must be >= 2 for a {p.kind} pattern (keys window // 2 on each side)"
    if p.kind == "dam" and p.block < 1:
        return f"{where}.block must be >= 1 for a dam pattern (the size of the blocks it gates)"
    if p.penalty < 0 or p.temperature <= 0:
        return f"{where}: penalty must be >= 0 and temperature > 0"
    if p.representatives and p.kind not in ("local", "blocks"):
        return f"{where}.representatives needs a local or blocks pattern (a summary per block)"
    if p.kind in LEARNED and (p.global_tokens or p.random_blocks or p.blocks or p.dilation != 1):
        return f"{where}: a {p.kind} head takes no global_tokens, random_blocks, blocks or dilation"
    if p.dilation < 1:
        return f"{where}.dilation must be >= 1"
    if p.random_blocks < 0 or p.block < 0:
        return f"{where}: random_blocks and block must be >= 0"
    if any(t < 0 for t in p.global_tokens):
        return f"{where}.global_tokens must be non-negative positions"
    if p.kind == "blocks" and (not p.block or not p.blocks):
        return f"{where}: a blocks pattern needs block (its size) and blocks (key blocks per query block)"
    if p.kind == "dense" and (p.window or p.random_blocks or p.global_tokens or p.blocks):
        return f"{where}: a dense head takes no window, random_blocks, global_tokens or blocks"
    return None


def is_learned(p: HeadPattern) -> bool:
    return p.kind in LEARNED


def is_block_sparse(p: HeadPattern) -> bool:
    return p.kind in ("local", "blocks")


def runs_blockwise(heads: list[HeadPattern]) -> bool:
    """Can these heads of one layer share a block layout (all block-sparse, one block size)?"""
    return all(is_block_sparse(h) for h in heads) and len({h.block_size() for h in heads}) == 1


def reference_mask(p: HeadPattern, n: int, causal: bool) -> np.ndarray:
    """[n, n] bool, True where query i may see key j: the pattern's definition, written directly."""
    if is_learned(p):
        raise ValueError(f"a {p.kind} head has no fixed mask until it is binarised (lite/sparse/learned.py)")
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    if p.kind == "dense":
        allowed = np.ones((n, n), bool)
    elif p.kind == "local":
        dist = i - j
        reach = p.radius * p.dilation
        band = (np.abs(dist) <= reach) & (dist % p.dilation == 0)
        if causal:
            band &= dist >= 0
        chosen = _random_table(p, n, causal)
        b = p.block_size()
        allowed = band | chosen[i // b, j // b]
    else:
        b = p.block
        table = np.zeros((-(-n // b),) * 2, bool)
        for q, keys in enumerate(p.blocks[: len(table)]):
            table[q, [k for k in keys if k < len(table)]] = True
        allowed = table[i // b, j // b]
    glob = np.zeros(n, bool)
    glob[[t for t in p.global_tokens if t < n]] = True
    allowed = allowed | glob[:, None] | glob[None, :]
    if causal:
        allowed &= j <= i
    if not p.diagonal:
        allowed &= j != i
    return allowed


def _random_table(p: HeadPattern, n: int, causal: bool) -> np.ndarray:
    """[nb, nb] bool: the random key blocks of each query block (none among its band blocks)."""
    b = p.block_size()
    nb = -(-n // b)
    table = np.zeros((nb, nb), bool)
    if not p.random_blocks:
        return table
    rng = random.Random(p.seed)
    span = math.ceil(p.radius * p.dilation / b)
    for q in range(nb):
        candidates = [k for k in range(nb) if abs(k - q) > span and (not causal or k < q)]
        table[q, rng.sample(candidates, min(p.random_blocks, len(candidates)))] = True
    return table


@dataclass(frozen=True)
class BlockLayout:
    """A layer's heads compiled for length n: what the block kernel gathers and which entries it keeps.

    key_blocks [H, nb, K]: the key blocks each query block computes (K = the most any needs; unused
    slots point at block 0 and are masked). allowed [H, nb, b, K*b + g + r]: may row r of query block q
    see gathered key slot s (then the g global keys, in the order of `globals_`, then the r = nb block
    representatives when some head has them, else r = 0)? global_rows
    [H, g, n]: may global query u see key j? is_global [H, n]: the global positions of each head.
    The masks are O(n * (K*b + g)) booleans, built here once per length: the kernel and the exported
    graphs only read them (no n x n tensor, no position arithmetic at run time).
    """

    n: int
    block: int
    key_blocks: np.ndarray
    key_positions: np.ndarray  # [H, nb, K*b] the token position of every gathered slot (>= n: padding)
    flat_key_blocks: np.ndarray  # [H*nb*K] key_blocks as rows of the [H*nb] blocks of one sequence
    allowed: np.ndarray
    global_rows: np.ndarray
    is_global: np.ndarray
    globals_: tuple[int, ...]
    global_row_of: np.ndarray  # [n] position -> its row among the global queries (0 elsewhere)
    causal: bool
    representatives: int = 0  # r: representative columns (nb when some head has them)

    @property
    def num_blocks(self) -> int:
        return self.key_blocks.shape[1]


def _causal_and_diagonal(allowed: np.ndarray, dist: np.ndarray, causal: bool, keep_diag: np.ndarray) -> np.ndarray:
    """The per-token rules every part shares: no later key when causal (dist = query - key position),
    no own key where a head drops the diagonal (keep_diag broadcast per head)."""
    if causal:
        allowed = allowed & (dist >= 0)
    return allowed & ((dist != 0) | keep_diag)


def compile_layout(heads: list[HeadPattern], n: int, causal: bool) -> BlockLayout:
    """The block tables and masks of a layer whose heads are all block-sparse and share one block size."""
    if not runs_blockwise(heads):
        raise ValueError(
            "the block kernel needs block-sparse heads (local or blocks) with one block size; "
            f"got kinds {[h.kind for h in heads]} and block sizes {sorted({h.block_size() for h in heads})}"
        )
    b = heads[0].block_size()
    nb = -(-n // b)
    kinds = np.full((len(heads), nb, nb), SKIP, np.int8)
    for h, p in enumerate(heads):
        q = np.arange(nb)[:, None]
        k = np.arange(nb)[None, :]
        if p.kind == "local":
            reach = p.radius * p.dilation
            # key block k holds some key within reach of some query in block q
            lo, hi = q * b - reach, (q + 1) * b - 1 + reach
            near = (k * b <= hi) & ((k + 1) * b - 1 >= lo)
            if causal:
                near &= k <= q
            kinds[h][near] = BAND
            kinds[h][_random_table(p, n, causal)] = FULL
        else:
            for qb, keys in enumerate(p.blocks[:nb]):
                kinds[h, qb, [kb for kb in keys if kb < nb and (not causal or kb <= qb)]] = FULL
    width = max(1, int((kinds != SKIP).sum(-1).max()))
    key_blocks = np.zeros((len(heads), nb, width), np.int64)
    slot_kind = np.full((len(heads), nb, width), SKIP, np.int8)
    for h in range(len(heads)):
        for qb in range(nb):
            chosen = np.nonzero(kinds[h, qb])[0]
            key_blocks[h, qb, : len(chosen)] = chosen
            slot_kind[h, qb, : len(chosen)] = kinds[h, qb, chosen]
    is_global = np.zeros((len(heads), n), bool)
    for h, p in enumerate(heads):
        is_global[h, [t for t in p.global_tokens if t < n]] = True
    globals_ = tuple(sorted({t for p in heads for t in p.global_tokens if t < n}))
    per_head = lambda values: np.array(values).reshape(-1, 1, 1, 1)  # noqa: E731
    reach = per_head([p.radius * p.dilation for p in heads])
    dilation = per_head([p.dilation for p in heads])
    keep_diag = per_head([p.diagonal for p in heads])

    # gathered slots: [H, nb, b, K*b], one head at a time (the int32 temporaries are score-sized)
    qpos = np.arange(nb * b, dtype=np.int32).reshape(nb, b, 1)
    key_positions = (key_blocks[..., None] * b + np.arange(b)).reshape(len(heads), nb, width * b)
    slots = np.empty((len(heads), nb, b, width * b), bool)
    for h in range(len(heads)):
        kpos = key_positions[h].reshape(nb, 1, width * b).astype(np.int32)
        kind = np.repeat(slot_kind[h], b, axis=-1).reshape(nb, 1, width * b)
        dist = qpos - kpos
        band = (np.abs(dist) <= reach[h]) & (dist % dilation[h] == 0)
        seen = _causal_and_diagonal((kind == FULL) | ((kind == BAND) & band), dist, causal, keep_diag[h])
        # global keys are seen through their own columns; a padded slot (position >= n) is never seen
        slots[h] = seen & ~is_global[h][np.minimum(kpos, n - 1)] & (kpos < n)
    qpos = qpos.reshape(1, nb, b, 1)
    # the g global key columns: [H, nb, b, g]
    gpos = np.array(globals_, np.int32).reshape(1, 1, 1, -1)
    gcols = _causal_and_diagonal(
        np.broadcast_to(is_global[:, list(globals_)].reshape(len(heads), 1, 1, -1), (len(heads), nb, b, len(globals_))),
        qpos - gpos,
        causal,
        keep_diag,
    )
    # the g global query rows: [H, g, n]
    rows = _causal_and_diagonal(
        np.ones((len(heads), len(globals_), n), bool),
        np.array(globals_, np.int32).reshape(1, -1, 1) - np.arange(n, dtype=np.int32),
        causal,
        keep_diag.reshape(-1, 1, 1),
    )
    parts = [slots, gcols]
    reps = np.array([p.representatives for p in heads])
    if reps.any():
        if causal:
            raise ConfigError(
                "representatives summarise whole blocks, future tokens included: encoder (non-causal) heads only"
            )
        parts.append(np.broadcast_to(reps.reshape(-1, 1, 1, 1), (len(heads), nb, b, nb)))
    global_row_of = np.zeros(n, np.int64)
    global_row_of[list(globals_)] = np.arange(len(globals_))
    return BlockLayout(
        n=n,
        block=b,
        key_blocks=key_blocks,
        key_positions=key_positions,
        flat_key_blocks=(np.arange(len(heads))[:, None, None] * nb + key_blocks).reshape(-1),
        allowed=np.concatenate(parts, axis=-1),
        global_rows=rows,
        is_global=is_global,
        globals_=globals_,
        global_row_of=global_row_of,
        causal=causal,
        representatives=nb if reps.any() else 0,
    )


def computed_pairs(heads: list[HeadPattern], n: int, causal: bool) -> int:
    """(query, key) score entries the attention core computes for these heads at length n, summed over
    heads: the MAC counter's figure (times the head width, once for scores and once for values).

    Block kernel: every head computes the layout's K key blocks (the most any head needs) and the g
    global keys for each of the nb * b padded query rows, plus g dense global rows of n keys.
    Masked dense fallback: n * n per head, masked or not."""
    if not runs_blockwise(heads):
        return len(heads) * n * n
    layout = compile_layout(heads, n, causal)
    g = len(layout.globals_)
    return (
        int(np.prod(layout.allowed.shape)) + len(heads) * g * n
    )  # block rows (slots, globals, representatives) + global rows
