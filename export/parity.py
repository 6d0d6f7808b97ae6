"""The parity gate: does an exported model folder compute what the PyTorch model computes?

On N real test sentences, through the shipped runtime (export/runtime.py) and its interpreter:
- teacher-forced logits: the artifact's decoder steps are fed PyTorch's greedy output; per step the
  largest |logit difference| and whether the argmax agrees (pad/bos excluded, as in decoding);
- free-running greedy decoding of both, scored with sacrebleu against the references (the artifact's
  own greedy path is the teacher-forced one up to its first disagreement, then continues on its own);
- the runtime's batch-1 fast path (Translator.greedy: caches kept in the interpreter, only the written
  cache slot moved) must give exactly the tokens of the general path above on every sentence, since
  translation runs the fast path and the gate's figures come from the general one.
The thresholds per precision come from the config (export.parity); a precision may also be held to
the greedy BLEU of the fp32 artifact of the same model on the same sentences (export/stage.py finds or
builds that artifact).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from export.runtime import Translator
from lite.config import ParityThresholds
from lite.metrics.bleu import score
from lite.models.seq2seq import EncoderDecoder

CHUNK = 16  # sentences per batched PyTorch pass


@torch.no_grad()
def _torch_reference(
    model: EncoderDecoder, sources: list[list[int]], max_lens: list[int], allowed: list[np.ndarray] | None = None
) -> list[tuple[list[int], np.ndarray]]:
    """Per sentence: PyTorch greedy tokens (eos excluded, at most its max_len; among its `allowed`
    tokens [V] if given) and the logits [steps, V] of every step taken. Batched: padding does not
    change the model's outputs."""
    cfg = model.cfg
    out = []
    for start in range(0, len(sources), CHUNK):
        chunk, limits = sources[start : start + CHUNK], max_lens[start : start + CHUNK]
        keep = None if allowed is None else torch.from_numpy(np.stack(allowed[start : start + CHUNK]))
        src = torch.full((len(chunk), max(map(len, chunk))), cfg.pad_id, dtype=torch.long)
        for row, ids in enumerate(chunk):
            src[row, : len(ids)] = torch.tensor(ids)
        memory, pad = model.encode(src)
        cache: dict = {}
        prev = torch.full((len(chunk), 1), cfg.bos_id, dtype=torch.long)
        tokens: list[list[int]] = [[] for _ in chunk]
        rows: list[list[np.ndarray]] = [[] for _ in chunk]
        done = [False] * len(chunk)
        for step in range(max(limits)):
            logits = model.decode(prev, memory, pad, cache)[:, -1]
            masked = logits.clone()
            masked[:, [cfg.pad_id, cfg.bos_id]] = -torch.inf
            if keep is not None:
                masked = masked.masked_fill(~keep, -torch.inf)
            nxt = masked.argmax(-1)
            for i in range(len(chunk)):
                if done[i]:
                    continue
                rows[i].append(logits[i].numpy().copy())
                token = int(nxt[i])
                if token == cfg.eos_id:
                    done[i] = True
                else:
                    tokens[i].append(token)
                    done[i] = step + 1 >= limits[i]
            if all(done):
                break
            prev = nxt[:, None]
        out += [(t, np.stack(r)) for t, r in zip(tokens, rows)]
    return out


def _artifact_pass(
    translator: Translator, ids: list[int], max_len: int, forced: list[int], ref_logits: np.ndarray, skip: list[int]
) -> tuple[float, int, int, list[int]]:
    """Feed PyTorch's tokens to the artifact (teacher forcing) and compare logits per step (at the
    sentence's shortlist candidates when the translator has a shortlist); where the artifact's own
    argmax first differs, its free-running greedy continues from a copy of the state.
    Returns (max |logit diff|, agreeing steps, steps, the artifact's free greedy tokens)."""
    state = translator.initial_state(translator.encode(ids), 1, max_len)
    cands = translator.candidates(ids)
    ids_at = np.arange(ref_logits.shape[1]) if cands is None else cands  # token id of each compared logit
    skipped = np.isin(ids_at, skip)
    worst, agree, own = 0.0, 0, None
    for pos, token in enumerate([translator.bos] + forced[: len(ref_logits) - 1]):
        logits = translator.step(state, np.array([token]), pos, cands)[0].astype(np.float64)
        ref = ref_logits[pos][ids_at].astype(np.float64)
        worst = max(worst, float(np.abs(logits - ref).max()))
        logits[skipped], ref[skipped] = -np.inf, -np.inf
        mine, theirs = int(ids_at[logits.argmax()]), int(ids_at[ref.argmax()])
        agree += int(mine == theirs)
        if own is None and mine != theirs:
            own = forced[:pos] + ([] if mine == translator.eos else [mine])
            if mine != translator.eos and len(own) < max_len:
                own += translator.greedy_from(
                    {k: v.copy() for k, v in state.items()}, mine, pos + 1, max_len - len(own), cands
                )
    return worst, agree, len(ref_logits), forced if own is None else own


def parity(model: EncoderDecoder, translator: Translator, pairs: list[tuple[str, str]], progress: bool = False) -> dict:
    """Figures of the gate on `pairs` (source, reference): max_logit_diff, top1, steps, BLEU of both,
    bleu_drop, identical (share of sentences decoded to the same tokens)."""
    model.eval()
    sources = [translator.source_ids(src) for src, _ in pairs]
    max_lens = [translator.max_len(len(ids)) for ids in sources]
    allowed = None if translator.shortlist is None else [translator.shortlist.mask(ids) for ids in sources]
    reference = _torch_reference(model, sources, max_lens, allowed)
    worst, agree, steps, identical, fast_differs = 0.0, 0, 0, 0, 0
    hyps_torch, hyps_art = [], []
    skip = [model.cfg.pad_id, model.cfg.bos_id]
    items = zip(sources, max_lens, reference)
    for ids, max_len, (tokens, ref_logits) in tqdm(
        items, total=len(pairs), desc="parity", disable=not progress, unit="sent", leave=False
    ):
        diff, ok, n, art_tokens = _artifact_pass(translator, ids, max_len, tokens, ref_logits, skip)
        worst, agree, steps = max(worst, diff), agree + ok, steps + n
        identical += int(art_tokens == tokens)
        fast_differs += int(translator.greedy(ids) != art_tokens)
        hyps_torch.append(translator.sp.decode(tokens))
        hyps_art.append(translator.sp.decode(art_tokens))
    refs = [t for _, t in pairs]
    bleu_torch, bleu_art = score(hyps_torch, refs), score(hyps_art, refs)
    return {
        "sentences": len(pairs),
        "steps": steps,
        "max_logit_diff": worst,
        "top1": agree / max(steps, 1),
        "identical": identical / max(len(pairs), 1),
        "bleu_pytorch": bleu_torch["bleu"],
        "bleu_artifact": bleu_art["bleu"],
        "bleu_drop": round(bleu_torch["bleu"] - bleu_art["bleu"], 2),
        "bleu_signature": bleu_art["bleu_signature"],
        "fast_path_differs": fast_differs,
    }


def failures(figures: dict, limits: ParityThresholds) -> list[str]:
    """The thresholds a gate result misses, as readable phrases (empty: it passes)."""
    out = []
    if figures.get("fast_path_differs"):  # not a threshold: the two paths must agree exactly
        out.append(f"the runtime's fast path decodes {figures['fast_path_differs']} sentence(s) differently")
    if not figures["max_logit_diff"] <= limits.max_logit_diff:
        out.append(f"max logit difference {figures['max_logit_diff']:.3g} > {limits.max_logit_diff:g}")
    if not figures["top1"] >= limits.min_top1:
        out.append(f"top-1 agreement {figures['top1']:.4f} < {limits.min_top1:g}")
    if not figures["bleu_drop"] <= limits.max_bleu_drop:
        out.append(f"BLEU drop {figures['bleu_drop']:.2f} > {limits.max_bleu_drop:g}")
    if limits.max_bleu_drop_vs_fp32 is not None:
        drop = figures.get("bleu_drop_vs_fp32")
        if drop is None:  # a missing comparison must not read as a pass
            out.append("BLEU drop vs the fp32 artifact not measured")
        elif not drop <= limits.max_bleu_drop_vs_fp32:
            out.append(
                f"BLEU drop vs {figures['fp32_reference']['artifact']} {drop:.2f} > {limits.max_bleu_drop_vs_fp32:g}"
            )
    return out
