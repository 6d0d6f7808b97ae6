"""Train and score one sequence classifier on ListOps within a budget of training examples.

Every attention variant sees the same examples in the same batches (one epoch by default), so the
comparison does not depend on how busy the machine is; the CPU minutes each variant took are
reported beside its accuracy, MACs per example and share of attention pairs kept. Learned patterns
(dam, degree) are binarised after training and scored as the fixed patterns they become.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from lite.config import ModelConfig
from lite.models.classifier import SequenceClassifier
from lite.models.seq2seq import count_parameters
from lite.sparse.learned import binarise, kept_share, sparsity_loss
from lite.sparse.sar import sar_term

Example = tuple[list[int], int]


@dataclass
class ClassifierTraining:
    examples: int = 4000  # training examples seen (one epoch of the default split)
    minutes: float | None = None  # optional wall-clock cap on the training loop
    max_tokens: int = 8000  # padded tokens per batch
    lr: float = 1e-3
    warmup_steps: int = 50
    sar_weight: float = 0.0
    seed: int = 1
    threads: int = 1


def batches(examples: list[Example], max_tokens: int, rng: random.Random) -> list[list[int]]:
    """Indices grouped by similar length (little padding), at most max_tokens padded tokens each, shuffled."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i][0]), rng.random()))
    groups, current = [], []
    for i in order:
        if current and (len(current) + 1) * len(examples[i][0]) > max_tokens:
            groups.append(current)
            current = []
        current.append(i)
    groups.append(current)
    rng.shuffle(groups)
    return groups


def collate(examples: list[Example], indices: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(examples[i][0]) for i in indices)
    tokens = torch.full((len(indices), width), pad_id, dtype=torch.long)
    for row, i in enumerate(indices):
        tokens[row, : len(examples[i][0])] = torch.tensor(examples[i][0])
    return tokens, torch.tensor([examples[i][1] for i in indices])


@torch.no_grad()
def accuracy(model: SequenceClassifier, examples: list[Example], max_tokens: int) -> float:
    model.eval()
    right = 0
    for group in batches(examples, max_tokens, random.Random(0)):
        tokens, labels = collate(examples, group, model.cfg.pad_id)
        right += int((model(tokens).argmax(-1) == labels).sum())
    return right / max(len(examples), 1)


@torch.no_grad()
def macs_per_example(model: SequenceClassifier, examples: list[Example], count: int = 16) -> float:
    """Mean multiply-accumulates of one forward pass over `count` test examples (batch 1), as torch's
    flop counter sees the kernels that run (block-sparse heads count only the blocks they gather)."""
    model.eval()
    picks = random.Random(1).sample(range(len(examples)), min(count, len(examples)))
    total = 0
    for i in picks:
        with FlopCounterMode(display=False) as counter:
            model(torch.tensor([examples[i][0]]))
        total += counter.get_total_flops() // 2
    return total / max(len(picks), 1)


def train_and_score(
    cfg: ModelConfig,
    train: list[Example],
    test: list[Example],
    tc: ClassifierTraining,
    num_classes: int,
    progress: bool = True,
    label: str = "",
) -> dict:
    """Train a SequenceClassifier of `cfg` on tc.examples examples (or until tc.minutes), binarise its
    learned heads, score it."""
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    model = SequenceClassifier(cfg, num_classes).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=(0.9, 0.98))
    step, seen, losses = 0, 0, []
    start = time.monotonic()
    cpu_start = time.process_time()
    bar = tqdm(total=tc.examples, disable=not progress, unit="ex", desc=label or "listops")
    epoch = 0
    while seen < tc.examples and (tc.minutes is None or time.monotonic() - start < tc.minutes * 60):
        for group in batches(train, tc.max_tokens, random.Random(tc.seed * 1000 + epoch)):
            tokens, labels = collate(train, group, cfg.pad_id)
            step += 1
            for g in optimizer.param_groups:
                g["lr"] = tc.lr * min(1.0, step / tc.warmup_steps)
            logits = model(tokens)
            loss = F.cross_entropy(logits, labels) + sparsity_loss(model)
            if tc.sar_weight:
                loss = loss + tc.sar_weight * sar_term(model, logits, lambda: model(tokens)) / len(group)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            seen += len(group)
            losses.append(float(loss.detach()))
            bar.update(len(group))
            bar.set_postfix(step=step, loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            if seen >= tc.examples or (tc.minutes is not None and time.monotonic() - start >= tc.minutes * 60):
                break
        epoch += 1
    bar.close()
    train_seconds, cpu_seconds = time.monotonic() - start, time.process_time() - cpu_start
    fixed = binarise(model.eval())
    result = {
        "train_minutes": train_seconds / 60,
        "train_cpu_minutes": cpu_seconds / 60,
        "steps": step,
        "examples_seen": seen,
        "stopped_by": "examples" if seen >= tc.examples else "clock (minutes cap: not reproducible)",
        "final_train_loss": sum(losses[-20:]) / max(len(losses[-20:]), 1),
        "test_accuracy": accuracy(fixed, test, tc.max_tokens),
        "majority_class_accuracy": max(sum(1 for _, y in test if y == c) for c in range(num_classes)) / len(test),
        "macs_per_example": macs_per_example(fixed, test),
        "params": count_parameters(fixed),
        "mean_test_tokens": sum(len(x) for x, _ in test) / len(test),
    }
    if fixed.cfg.encoder_patterns:
        n = round(result["mean_test_tokens"])
        shares = kept_share(fixed.cfg, "encoder", n, causal=False)
        result["kept_share_at_mean_length"] = shares
        result["mean_kept_share"] = sum(map(sum, shares)) / max(sum(map(len, shares)), 1)
    if not math.isfinite(result["final_train_loss"]):
        raise FloatingPointError(f"{label}: training loss is {result['final_train_loss']}")
    return result
