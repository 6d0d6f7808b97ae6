"""Greedy and beam search over the incremental decoder, and batched translation of text.

With a vocabulary shortlist (lite/shortlist.py) each sentence may only produce its candidates: the
other logits are set to -inf before the log-softmax, so the softmax runs over the candidates, as in
the runtime, which computes only the candidates' logits (export/runtime.py). Computing them all here
and masking keeps this the reference the runtime is checked against."""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from lite.config import DecodeConfig
from lite.models.seq2seq import EncoderDecoder, reorder_cache
from lite.shortlist import Shortlist


def max_output_len(src_len: int, model: EncoderDecoder, cfg: DecodeConfig) -> int:
    """Most output tokens (eos excluded) for a batch whose longest source has src_len tokens (eos included):
    a * src_len + b, within the position table."""
    return max(1, min(int(cfg.max_len_a * src_len + cfg.max_len_b), model.cfg.max_positions - 2))


def _longest(src: Tensor, model: EncoderDecoder) -> int:
    return int(src.ne(model.cfg.pad_id).sum(1).max())


def _step_lprobs(
    model: EncoderDecoder, prev: Tensor, memory: Tensor, pad: Tensor, cache: dict, allowed: Tensor | None
) -> Tensor:
    """Log-probabilities of the next token [N, V]; pad and bos are never generated, and with `allowed`
    [N, V] (a shortlist) nothing outside it."""
    logits = model.decode(prev, memory, pad, cache)[:, -1].float()
    if allowed is not None:
        logits = logits.masked_fill(~allowed, -torch.inf)
    lprobs = torch.log_softmax(logits, dim=-1)
    lprobs[:, model.cfg.pad_id] = -torch.inf
    lprobs[:, model.cfg.bos_id] = -torch.inf
    return lprobs


@torch.no_grad()
def greedy(model: EncoderDecoder, src: Tensor, cfg: DecodeConfig, allowed: Tensor | None = None) -> list[list[int]]:
    """Argmax decoding for a batch of sources [B, S]; returns token ids without eos. `allowed` [B, V]:
    the tokens each sentence may produce (None: all)."""
    eos = model.cfg.eos_id
    memory, pad = model.encode(src)
    cache: dict = {}
    prev = torch.full((src.shape[0], 1), model.cfg.bos_id, dtype=torch.long)
    out: list[list[int]] = [[] for _ in range(src.shape[0])]
    done = torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(max_output_len(_longest(src, model), model, cfg)):
        token = _step_lprobs(model, prev, memory, pad, cache, allowed).argmax(-1)
        for i in torch.nonzero(~done).flatten().tolist():
            if int(token[i]) != eos:
                out[i].append(int(token[i]))
        done |= token.eq(eos)
        if bool(done.all()):
            break
        prev = token[:, None]
    return out


@torch.no_grad()
def beam_search(
    model: EncoderDecoder, src: Tensor, cfg: DecodeConfig, allowed: Tensor | None = None
) -> list[list[int]]:
    """Beam search with length penalty: a finished hypothesis scores sum(log p) / length ** lenpen
    (length counts the eos). A sentence stops when `beam` hypotheses have finished; at the length
    limit the open beams are finished as they are."""
    k, eos = cfg.beam, model.cfg.eos_id
    bsz = src.shape[0]
    memory, pad = model.encode(src)
    memory = memory.repeat_interleave(k, dim=0)
    pad = pad.repeat_interleave(k, dim=0)
    allowed = None if allowed is None else allowed.repeat_interleave(k, dim=0)
    cache: dict = {}
    scores = torch.full((bsz, k), -torch.inf)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first at step 0
    tokens = torch.empty(bsz * k, 0, dtype=torch.long)
    prev = torch.full((bsz * k, 1), model.cfg.bos_id, dtype=torch.long)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(bsz)]
    max_len = max_output_len(_longest(src, model), model, cfg)
    for step in range(max_len + 1):  # max_len tokens, then eos
        lprobs = _step_lprobs(model, prev, memory, pad, cache, allowed)
        vocab = lprobs.shape[-1]
        if step == max_len:  # force the end
            forced = torch.full_like(lprobs, -torch.inf)
            forced[:, eos] = lprobs[:, eos].clamp(min=-1e9)
            lprobs = forced
        cand = (scores.view(-1, 1) + lprobs).view(bsz, k * vocab)
        top_scores, top_idx = cand.topk(min(2 * k, k * vocab), dim=1)
        beam_idx, tok = top_idx // vocab, top_idx % vocab
        is_eos = tok.eq(eos)
        # finished hypotheses: eos among the top-k candidates of a sentence still open
        for b, j in torch.nonzero(is_eos[:, :k] & torch.isfinite(top_scores[:, :k])).tolist():
            if len(finished[b]) < k:
                hyp = tokens[b * k + int(beam_idx[b, j])].tolist()
                finished[b].append((float(top_scores[b, j]) / (len(hyp) + 1) ** cfg.lenpen, hyp))
        if all(len(f) >= k for f in finished):
            break
        # continue with the first k candidates that are not eos (at most k of 2k can be eos)
        rank = is_eos.long() * top_idx.shape[1] + torch.arange(top_idx.shape[1])
        keep = rank.argsort(dim=1)[:, :k]
        scores = top_scores.gather(1, keep)
        rows = (beam_idx.gather(1, keep) + torch.arange(bsz)[:, None] * k).view(-1)
        new_tok = tok.gather(1, keep).view(-1)
        tokens = torch.cat([tokens.index_select(0, rows), new_tok[:, None]], dim=1)
        reorder_cache(cache, rows)
        prev = new_tok[:, None]
    return [max(f, key=lambda h: h[0])[1] if f else [] for f in finished]


def translate(
    model: EncoderDecoder,
    tokenizer,
    lines: list[str],
    cfg: DecodeConfig,
    progress: bool = False,
    shortlist: Shortlist | None = None,
) -> list[str]:
    """Translate lines in length-sorted batches; output order follows input order. Empty lines stay empty.
    With `shortlist`, each sentence produces only its candidates."""
    model.eval()
    ids = tokenizer.encode_batch(lines)
    limit = model.cfg.max_positions - 1
    order = sorted(range(len(lines)), key=lambda i: len(ids[i]))
    out = [""] * len(lines)
    search = greedy if cfg.beam == 1 else beam_search
    todo = [i for i in order if ids[i]]
    too_long = sum(len(ids[i]) > limit for i in todo)
    if too_long:  # the position table bounds the source length; say so rather than fail mid-batch
        print(
            f"warning: {too_long} input line(s) longer than {limit} tokens were truncated to {limit}", file=sys.stderr
        )
    bar = tqdm(total=len(todo), disable=not progress, unit="sent", dynamic_ncols=True)
    for start in range(0, len(todo), cfg.batch_size):
        chunk = todo[start : start + cfg.batch_size]
        seqs = [ids[i][:limit] + [model.cfg.eos_id] for i in chunk]
        src = torch.full((len(seqs), max(map(len, seqs))), model.cfg.pad_id, dtype=torch.long)
        for row, s in enumerate(seqs):
            src[row, : len(s)] = torch.tensor(s)
        allowed = None if shortlist is None else torch.from_numpy(np.stack([shortlist.mask(s) for s in seqs]))
        for i, hyp in zip(chunk, search(model, src, cfg, allowed)):
            out[i] = tokenizer.decode(hyp)
        bar.update(len(chunk))
    bar.close()
    return out
