"""Token-count batching: sentences of similar length grouped so padding stays small."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor

Example = tuple[list[int], list[int]]  # (source ids + eos, target ids + eos)


@dataclass
class Batch:
    src: Tensor  # [B, S] right-padded source ids
    prev: Tensor  # [B, T] bos + target[:-1] (teacher forcing input)
    target: Tensor  # [B, T] target ids ending in eos
    ntokens: int  # non-pad target tokens

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.src.to(device), self.prev.to(device), self.target.to(device), self.ntokens)


def encode_pairs(pairs: list[tuple[str, str]], tokenizer, max_positions: int) -> tuple[list[Example], int]:
    """Tokenize pairs and append eos; pairs whose ids would not fit the position table are dropped
    (returned count), never truncated."""
    srcs = tokenizer.encode_batch([s for s, _ in pairs])
    tgts = tokenizer.encode_batch([t for _, t in pairs])
    examples, dropped = [], 0
    for s, t in zip(srcs, tgts):
        if not s or not t or len(s) + 1 > max_positions or len(t) + 1 > max_positions:
            dropped += 1
            continue
        examples.append((s + [tokenizer.eos_id], t + [tokenizer.eos_id]))
    return examples, dropped


def make_batches(examples: list[Example], max_tokens: int, seed: int | None = None, epoch: int = 0) -> list[list[int]]:
    """Indices grouped into batches whose padded size (rows x longest side) stays within max_tokens.

    With a seed, equal-length ties are broken and the batch order shuffled by (seed, epoch),
    so an epoch's order can be rebuilt exactly on resume.
    """
    rng = random.Random(None if seed is None else seed * 1000003 + epoch)
    jitter = [rng.random() for _ in examples] if seed is not None else [0.0] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i][1]), len(examples[i][0]), jitter[i]))
    batches, current, longest = [], [], 0
    for i in order:
        size = max(len(examples[i][0]), len(examples[i][1]))
        if current and max(longest, size) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, size)
    if current:
        batches.append(current)
    if seed is not None:
        rng.shuffle(batches)
    return batches


def collate(examples: list[Example], indices: list[int], pad_id: int, bos_id: int) -> Batch:
    srcs = [examples[i][0] for i in indices]
    tgts = [examples[i][1] for i in indices]
    src = torch.full((len(indices), max(map(len, srcs))), pad_id, dtype=torch.long)
    target = torch.full((len(indices), max(map(len, tgts))), pad_id, dtype=torch.long)
    prev = target.clone()
    for row, (s, t) in enumerate(zip(srcs, tgts)):
        src[row, : len(s)] = torch.tensor(s)
        target[row, : len(t)] = torch.tensor(t)
        prev[row, 0] = bos_id
        prev[row, 1 : len(t)] = torch.tensor(t[:-1])
    return Batch(src, prev, target, int(target.ne(pad_id).sum()))
