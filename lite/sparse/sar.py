"""Self-Attention Regularization (ERNIE-Sparse): the model's output distribution under its sparse
attention topology is pulled towards the one under the dense topology, by adding
sar_weight * (KL(p_sparse || p_dense) + KL(p_dense || p_sparse)) to the training loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch.nn.functional as F
from torch import Tensor, nn


@contextmanager
def dense_topology(model: nn.Module) -> Iterator[None]:
    """Inside the block every attention of `model` ignores its sparse or learned pattern."""
    layers = [m for m in model.modules() if hasattr(m, "dense_topology")]
    before = [m.dense_topology for m in layers]
    for m in layers:
        m.dense_topology = True
    try:
        yield
    finally:
        for m, b in zip(layers, before):
            m.dense_topology = b


def symmetric_kl(logits_a: Tensor, logits_b: Tensor, keep: Tensor | None = None) -> Tensor:
    """KL(a || b) + KL(b || a) between the softmax distributions of two [..., V] logit tensors,
    summed over the positions where `keep` (shape [...]) is True (all when None)."""
    la, lb = F.log_softmax(logits_a.float(), -1), F.log_softmax(logits_b.float(), -1)
    per_position = ((la.exp() - lb.exp()) * (la - lb)).sum(-1)  # = KL(a||b) + KL(b||a)
    if keep is not None:
        per_position = per_position * keep
    return per_position.sum()


def sar_term(model: nn.Module, sparse_logits: Tensor, forward, keep: Tensor | None = None) -> Tensor:
    """The symmetric KL between `sparse_logits` (already computed) and `forward()` run again under
    the dense topology. Zero when the model has no sparse heads (both passes are the same network)."""
    with dense_topology(model):
        dense_logits = forward()
    return symmetric_kl(sparse_logits, dense_logits, keep)
