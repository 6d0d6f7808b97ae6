"""A lexical translation table p(target token | source token) from a tokenized parallel corpus, and
the vocabulary shortlist built from it (lite/shortlist.py).

IBM model 1 (Brown et al. 1993), trained by EM from a uniform start, with a NULL source token that
absorbs target tokens no source token explains. Written here in numpy rather than taken from eflomal
(the maintained aligner on the package index): eflomal samples with a seed it draws from /dev/urandom
and offers no way to fix it, so the same corpus would give a different shortlist on every build, and
the pipeline promises the same files from the same config. EM from a uniform start has no randomness.

Vectorised over every (sentence, source position, target position) triple of the corpus: one EM
iteration is three np.bincount passes over them (~30M triples for the 44k docs-en-de training pairs).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from lite.config import RunConfig, ShortlistConfig, to_dict
from lite.data.corpus import load_pairs
from lite.errors import DataError
from lite.files import read_json, sha256_file, write_json_atomic
from lite.run import RunPaths
from lite.shortlist import Shortlist, save_shortlist
from lite.tokenizer import Tokenizer


@dataclass(frozen=True)
class Lexicon:
    """Sparse p(t | s): one entry per (source, target) pair that co-occurs in a sentence pair."""

    source: np.ndarray  # int32 [P]; vocab_size is the NULL token
    target: np.ndarray  # int32 [P]
    prob: np.ndarray  # float64 [P]; sums to 1 over the targets of each source
    vocab_size: int


def ibm1(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], vocab_size: int, iterations: int, progress: bool = False
) -> Lexicon:
    """IBM model 1 t(target | source) over token ids in [0, vocab_size), by `iterations` EM steps."""
    pairs = [(s, t) for s, t in pairs if len(s) and len(t)]
    if not pairs:
        raise DataError("IBM model 1: no sentence pair with tokens on both sides")
    null = vocab_size
    # every (source position incl. NULL, target position) triple: pair key and the target position it explains
    keys, groups, start = [], [], 0
    for src, tgt in pairs:
        s = np.append(np.asarray(src, np.int64), null)
        t = np.asarray(tgt, np.int64)
        keys.append((s[:, None] * (vocab_size + 1) + t[None, :]).ravel())
        groups.append(np.tile(np.arange(start, start + t.size), s.size))
        start += t.size
    key = np.concatenate(keys)
    group = np.concatenate(groups)
    del keys, groups
    unique, pair = np.unique(key, return_inverse=True)
    del key
    source = (unique // (vocab_size + 1)).astype(np.int32)
    target = (unique % (vocab_size + 1)).astype(np.int32)
    prob = np.ones(unique.size)  # uniform start: every co-occurring target equally likely
    for _ in tqdm(range(iterations), desc="IBM model 1", disable=not progress, unit="it"):
        weight = prob[pair]
        weight /= np.bincount(group, weights=weight, minlength=start)[group]  # posterior of each alignment
        counts = np.bincount(pair, weights=weight, minlength=unique.size)
        prob = counts / np.bincount(source, weights=counts, minlength=vocab_size + 1)[source]
    return Lexicon(source, target, prob, vocab_size)


def build_shortlist(
    lexicon: Lexicon, target_sentences: Sequence[Sequence[int]], cfg: ShortlistConfig, special: Sequence[int], eos: int
) -> Shortlist:
    """Per source id its cfg.per_source most likely targets (ties: lower id first), plus the cfg.frequent
    most frequent target tokens of `target_sentences`; `special` ids (pad, bos) never become candidates."""
    v = lexicon.vocab_size
    banned = np.zeros(v + 1, dtype=bool)
    banned[list(special)] = True
    keep = (lexicon.source < v) & ~banned[lexicon.target]
    source, target, prob = lexicon.source[keep], lexicon.target[keep], lexicon.prob[keep]
    order = np.lexsort((target, -prob, source))  # by source, then most likely first, then lower id
    source, target = source[order], target[order]
    first = np.searchsorted(source, np.arange(v))
    rank = np.arange(source.size) - first[source]
    kept = rank < cfg.per_source
    offsets = np.zeros(v + 1, dtype=np.int64)
    np.add.at(offsets, source[kept] + 1, 1)
    counts = np.bincount(np.concatenate([np.asarray(t, np.int64) for t in target_sentences]), minlength=v)[:v]
    counts[list(special)] = -1
    frequent = np.lexsort((np.arange(v), -counts))[: cfg.frequent]
    frequent = frequent[counts[frequent] > 0]
    return Shortlist(
        frequent=frequent.astype(np.int32),
        offsets=np.cumsum(offsets).astype(np.int32),
        targets=target[kept].astype(np.int32),
        vocab_size=v,
        eos=eos,
    )


def build_run_shortlist(cfg: RunConfig, paths: RunPaths, progress: bool = True, force: bool = False) -> dict:
    """`lite shortlist RUN`: learn the shortlist from the run's training split (its tokenizer's pieces)
    into RUN/shortlist.npz, and record in RUN/shortlist.json what it costs and covers on the valid
    split: candidates per sentence, and the share of reference target tokens among them."""
    sc = cfg.shortlist
    summary_path = paths.root / "shortlist.json"
    settings = {"shortlist": to_dict(sc), "tokenizer_sha256": sha256_file(paths.tokenizer), "data": to_dict(cfg.data)}
    done = read_json(summary_path)
    if done and not force and paths.shortlist.is_file() and done.get("settings") == settings:
        return done | {"cached": True}
    started = time.monotonic()
    tokenizer = Tokenizer(paths.tokenizer)
    pairs, _ = load_pairs(cfg.data, "train")
    pairs = pairs[: sc.max_pairs]
    src = tokenizer.encode_batch([s for s, _ in pairs])
    tgt = tokenizer.encode_batch([t for _, t in pairs])
    m = cfg.model
    lexicon = ibm1(list(zip(src, tgt)), tokenizer.vocab_size, sc.iterations, progress)
    shortlist = build_shortlist(lexicon, tgt, sc, special=(m.pad_id, m.bos_id), eos=m.eos_id)
    save_shortlist(shortlist, paths.shortlist)
    valid, _ = load_pairs(cfg.data, "valid")
    sizes, covered, total = [], 0, 0
    for s_ids, t_ids in zip(
        tokenizer.encode_batch([s for s, _ in valid]), tokenizer.encode_batch([t for _, t in valid])
    ):
        keep = shortlist.mask(s_ids + [m.eos_id])
        sizes.append(int(keep.sum()))
        covered += int(keep[t_ids].sum())
        total += len(t_ids)
    summary = {
        "settings": settings,
        "train_pairs": len(pairs),
        "vocab_size": shortlist.vocab_size,
        "entries": int(shortlist.targets.size),
        "valid_candidates_mean": round(float(np.mean(sizes)), 1) if sizes else None,
        "valid_candidates_max": max(sizes, default=None),
        "valid_reference_coverage": round(covered / total, 5) if total else None,
        "seconds": round(time.monotonic() - started, 1),
        "sha256": sha256_file(paths.shortlist),
    }
    write_json_atomic(summary, summary_path)
    return summary
