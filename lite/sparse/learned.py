"""Attention patterns learned while training, then binarised into fixed block-structured ones.

- dam, SparseBERT's Differentiable Attention Mask: one logit per (query block, key block) pair and
  head. Training: a relaxed Bernoulli gate g = sigmoid((logit + logistic noise) / temperature)
  (Gumbel-sigmoid). The scores get log g added, so the softmax weights are exp(s) * g renormalised:
  a gate of exactly 1 or 0 is exactly the hard mask. Eval and binarised: g = [logit > 0], as a
  `blocks` pattern. A query block always keeps its own block, so no query is left without keys.
- degree, Breaking BERT's learned neighbour degree: one radius r per head. Training: a soft band
  g_ij = sigmoid((r - |i - j|) / temperature). Eval and binarised: the band of radius
  max(1, round(r)), as a `local` pattern with window 2 * radius.

Each learned head adds penalty * (the share of the allowed (query, key) pairs its gate keeps) to the
training loss (`sparsity_loss`): the sparsity/accuracy trade-off. Learned layers run masked dense
attention (every pair is computed while the pattern is still moving); once binarised, the heads are
block-structured and run on the block kernel.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor, nn

from lite.sparse.block_attention import masked_softmax_values
from lite.sparse.patterns import HeadPattern, is_learned, reference_mask

DAM_INIT_LOGIT = 3.0  # gate ~0.95 at the start: training begins from (almost) dense attention
# The mask parameters are stored scaled down: a logit is DAM_LOGIT_SCALE x its parameter and a radius
# is (starting radius) x its parameter. Adam moves a parameter by about lr per step whatever its
# gradient, so without the scale a logit would move 0.001 per step and a radius 0.001 tokens: no
# pattern could change within a training run of a few thousand steps.
DAM_LOGIT_SCALE = 10.0
LOG_GATE_FLOOR = 1e-6  # log g is bounded below (log 1e-6 = -13.8) so scores stay in a narrow range


class LearnedCore(nn.Module):
    """The attention core of a layer with learned heads (others in the layer keep their fixed or
    dense pattern). Callable like SparseCore: (q scaled [B, H, Tq, d], k, v [B, H, Tk, d]) -> [B, H, Tq, d]."""

    def __init__(self, heads: list[HeadPattern], max_len: int):
        super().__init__()
        self.heads = list(heads)
        self.max_len = max_len
        self.dam_index = {h: i for i, h in enumerate(h for h, p in enumerate(heads) if p.kind == "dam")}
        self.degree_index = {h: i for i, h in enumerate(h for h, p in enumerate(heads) if p.kind == "degree")}
        self.dam_logits = nn.ParameterList(  # logit = DAM_LOGIT_SCALE * parameter
            nn.Parameter(torch.full((-(-max_len // heads[h].block),) * 2, DAM_INIT_LOGIT / DAM_LOGIT_SCALE))
            for h in self.dam_index
        )
        # radius (tokens) = starting radius * parameter
        self.register_buffer(
            "radius_scale", torch.tensor([float(max(1, heads[h].radius)) for h in self.degree_index]), persistent=False
        )
        self.radius = nn.Parameter(torch.ones(len(self.degree_index))) if self.degree_index else None
        self.penalty_term: Tensor | None = None  # set by each training forward, read by sparsity_loss
        self._fixed: dict[tuple[int, int, bool], Tensor] = {}

    def logits(self, h: int) -> Tensor:
        """[nb, nb] the block-gate logits of dam head h (for max_len tokens)."""
        return self.dam_logits[self.dam_index[h]] * DAM_LOGIT_SCALE

    def radii(self) -> Tensor:
        """The learned radii (tokens) of the degree heads, in head order."""
        return self.radius * self.radius_scale

    def hard_radius(self, h: int) -> int:
        return max(1, int(round(float(self.radii()[self.degree_index[h]].detach()))))

    def _fixed_gate(self, h: int, n: int, causal: bool) -> Tensor:
        if (h, n, causal) not in self._fixed:
            self._fixed[h, n, causal] = torch.as_tensor(reference_mask(self.heads[h], n, causal), dtype=torch.float32)
        return self._fixed[h, n, causal]

    def gate(self, h: int, tq: int, tk: int, causal: bool, soft: bool) -> Tensor:
        """[tq, tk] in [0, 1]: how much query i (absolute position tk - tq + i) keeps key j."""
        p = self.heads[h]
        qpos = torch.arange(tk - tq, tk)
        kpos = torch.arange(tk)
        if p.kind == "dam":
            if tk > self.max_len:
                raise ValueError(f"{tk} tokens: longer than the {self.max_len} positions this dam head has gates for")
            nb = -(-tk // p.block)
            logits = self.logits(h)[:nb, :nb]
            own = torch.eye(nb, dtype=torch.bool)
            if soft:
                u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
                blocks = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / p.temperature)
            else:
                blocks = (logits > 0).float()
            blocks = torch.where(own, torch.ones_like(blocks), blocks)
            g = blocks[qpos // p.block][:, kpos // p.block]
        elif p.kind == "degree":
            dist = (qpos[:, None] - kpos[None, :]).abs().float()
            if soft:
                g = torch.sigmoid((self.radii()[self.degree_index[h]] - dist) / p.temperature)
            else:
                g = (dist <= self.hard_radius(h)).float()
        else:
            return self._fixed_gate(h, tk, causal)[tk - tq :]
        if not p.diagonal:
            g = g * (qpos[:, None] != kpos[None, :])
        return g

    def forward(
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
        gates = torch.stack([self.gate(h, tq, tk, causal, soft=training) for h in range(len(self.heads))]).to(q.device)
        allowed = torch.ones(tq, tk, dtype=torch.bool, device=q.device)
        if causal:
            allowed = allowed.tril(tk - tq)
        self.penalty_term = None
        if training:
            share = (gates * allowed).sum((1, 2)) / allowed.sum()  # [H] expected share of pairs kept
            weights = torch.tensor([p.penalty if is_learned(p) else 0.0 for p in self.heads], device=q.device)
            self.penalty_term = (weights * share).sum()
        allowed = allowed[None] & (gates > 0)
        scores = q @ k.transpose(-1, -2) + torch.log(gates.clamp_min(LOG_GATE_FLOOR))
        allowed = allowed[None]
        if key_padding_mask is not None:
            allowed = allowed & ~key_padding_mask[:, None, None, :]
        return masked_softmax_values(scores, allowed, v, fill, dropout, training)

    def binarised(self) -> list[HeadPattern]:
        """The fixed patterns the eval-mode gates stand for: dam -> blocks, degree -> local."""
        out = []
        for h, p in enumerate(self.heads):
            if p.kind == "dam":
                logits = self.logits(h).detach().numpy()
                keep = (logits > 0) | np.eye(len(logits), dtype=bool)
                out.append(
                    HeadPattern(
                        kind="blocks",
                        block=p.block,
                        diagonal=p.diagonal,
                        blocks=[np.nonzero(row)[0].tolist() for row in keep],
                    )
                )
            elif p.kind == "degree":
                out.append(HeadPattern(kind="local", window=2 * self.hard_radius(h), diagonal=p.diagonal))
            else:
                out.append(p)
        return out


def learned_cores(model: nn.Module) -> list[LearnedCore]:
    return [m for m in model.modules() if isinstance(m, LearnedCore)]


def sparsity_loss(model: nn.Module) -> Tensor | float:
    """Sum of the sparsity terms of the learned heads in the last training forward (0 without any)."""
    terms = [m.penalty_term for m in learned_cores(model) if m.penalty_term is not None]
    return torch.stack(terms).sum() if terms else 0.0


def binarise_config(model: nn.Module):
    """The model's config with every learned head replaced by its binarised fixed pattern (full per
    layer, per head tables), or None when the model has no learned heads."""
    cfg = model.cfg
    if not learned_cores(model):
        return None
    tables = {}
    for stack in ("encoder", "decoder"):
        layers = getattr(model, stack, None) or []
        if getattr(cfg, f"{stack}_patterns") is None:
            continue
        rows = []
        for i, block in enumerate(layers):
            attn = block.mixer.attn
            if attn.learned is not None:
                rows.append(attn.learned.binarised())
            else:
                rows.append(cfg.head_patterns(stack, i, attn.num_heads) or [HeadPattern()] * attn.num_heads)
        tables[f"{stack}_patterns"] = rows
    return replace(cfg, **tables)


def kept_share(cfg, stack: str, n: int, causal: bool) -> list[list[float]]:
    """Per layer and head of `cfg`'s fixed patterns: the share of the allowed pairs kept at length n."""
    out = []
    for i in range(getattr(cfg, f"{stack}_layers")):
        heads = cfg.layer_shape(stack, i).patterns or []
        allowed = np.tril(np.ones((n, n), bool)) if causal else np.ones((n, n), bool)
        out.append([round(float((reference_mask(p, n, causal) & allowed).sum() / allowed.sum()), 4) for p in heads])
    return out


def binarise(model: nn.Module) -> nn.Module:
    """A copy of `model` (same class, same weights) whose learned heads are fixed patterns; the model
    itself when it has none. Its outputs equal the eval-mode outputs of the learned model."""
    cfg = binarise_config(model)
    if cfg is None:
        return model
    fixed = model.rebuilt(cfg) if hasattr(model, "rebuilt") else type(model)(cfg)
    fixed.load_state_dict({k: v for k, v in model.state_dict().items() if ".learned." not in k})
    return fixed.train(model.training)
