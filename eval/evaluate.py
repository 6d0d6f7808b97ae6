"""Decode a split of the run's corpus with the trained model and score it with sacrebleu.

Writes eval/<split>.<decoding>.hyp (one line per source) and merges the scores into
results.json under "<split>/<decoding>", e.g. "test/greedy" or "test/beam4-lenpen1.0"; decoding with
the vocabulary shortlist (decode.shortlist, or shortlist=True) adds "-shortlist" to the name.

`evaluate_artifact` does the same for an exported model folder through the on-device runtime (what
ships, not PyTorch) and records the score in that artifact's row of artifacts.json.

On the test split both also time the model on the single-sentence latency protocol (eval/latency.py)
when its row has no host latency yet, so the budget report has a latency column after `make compress`.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from eval.latency import PYTORCH_ROW, artifact_latency, has_latency, model_latency
from lite.artifacts import ArtifactRow, find_row, update_row
from lite.checkpoint import load_model
from lite.config import RunConfig
from lite.data.corpus import load_pairs
from lite.decode import translate
from lite.files import read_json, sha256_file, write_json_atomic, write_text_atomic
from lite.metrics.bleu import score
from lite.provenance import provenance
from lite.run import RunPaths, run_shortlist
from lite.shortlist import Shortlist
from lite.tokenizer import Tokenizer


def decoding_name(beam: int, lenpen: float, shortlist: bool = False) -> str:
    name = "greedy" if beam == 1 else f"beam{beam}-lenpen{lenpen:g}"
    return f"{name}-shortlist" if shortlist else name


def _shortlist(paths: RunPaths, vocab_size: int, wanted: bool) -> tuple[Shortlist | None, str | None]:
    """The run's shortlist and its sha256 when decoding with it, else (None, None)."""
    if not wanted:
        return None, None
    return run_shortlist(paths, vocab_size), sha256_file(paths.shortlist)


def evaluate(
    cfg: RunConfig,
    paths: RunPaths,
    split: str = "test",
    beam: int | None = None,
    lenpen: float | None = None,
    progress: bool = True,
    force: bool = False,
    shortlist: bool | None = None,
) -> dict:
    """Translate `split`, score it, record it in results.json; returns this decoding's record.
    `shortlist` None: the config's decode.shortlist.

    A record already made from the same model.pt and shortlist (same checksums) is returned as it is
    unless `force`."""
    dcfg = replace(
        cfg.decode,
        beam=cfg.decode.beam if beam is None else beam,
        lenpen=cfg.decode.lenpen if lenpen is None else lenpen,
        shortlist=cfg.decode.shortlist if shortlist is None else shortlist,
    )
    name = decoding_name(dcfg.beam, dcfg.lenpen, dcfg.shortlist)
    model_sha = sha256_file(paths.model) if paths.model.is_file() else None
    lexical, shortlist_sha = _shortlist(paths, Tokenizer(paths.tokenizer).vocab_size, dcfg.shortlist)
    cached = read_json(paths.results, {}).get(f"{split}/{name}")
    if (
        cached
        and not force
        and cached.get("model_sha256") == model_sha
        and cached.get("shortlist_sha256") == shortlist_sha
    ):
        if split == "test" and not has_latency(paths, PYTORCH_ROW):
            model_latency(cfg, paths, load_model(paths.model), Tokenizer(paths.tokenizer))
        return cached | {"cached": True}
    torch.set_num_threads(cfg.train.threads)
    model = load_model(paths.model)
    tokenizer = Tokenizer(paths.tokenizer)
    pairs, info = load_pairs(cfg.data, split)
    started = time.monotonic()
    hyps = translate(model, tokenizer, [s for s, _ in pairs], dcfg, progress=progress, shortlist=lexical)
    seconds = time.monotonic() - started
    write_text_atomic("".join(h + "\n" for h in hyps), paths.eval_dir / f"{split}.{name}.hyp")
    record = score(hyps, [t for _, t in pairs]) | {
        "split": split,
        "decoding": name,
        "beam": dcfg.beam,
        "lenpen": dcfg.lenpen,
        "corpus": cfg.data.corpus,
        "pairs": info,
        "decode_seconds": round(seconds, 2),
        "seconds_per_sentence": round(seconds / max(len(pairs), 1), 4),
        "threads": cfg.train.threads,
        "model_sha256": model_sha,
        "shortlist_sha256": shortlist_sha,
        "provenance": provenance(cfg, seed=cfg.train.seed, threads=cfg.train.threads),
    }
    results = read_json(paths.results, {})
    results[f"{split}/{name}"] = record
    write_json_atomic(results, paths.results)
    if split == "test":  # a new model.pt: its host latency for the report, measured again
        record = record | {"latency": model_latency(cfg, paths, model, tokenizer)}
    return record


def evaluate_artifact(
    cfg: RunConfig,
    paths: RunPaths,
    name: str,
    split: str = "test",
    beam: int | None = None,
    lenpen: float | None = None,
    progress: bool = True,
    threads: int | None = None,
    shortlist: bool | None = None,
) -> dict:
    """Translate `split` with the exported folder of artifacts.json entry `name` (export/runtime.py),
    score it, and store the record under that entry's "bleu"; cached by the folder's manifest checksum.
    `shortlist` None: the folder's decode default."""
    from tqdm import tqdm

    from export.runtime import Translator

    row = find_row(paths.root, name)
    folder = paths.root / row.path
    translator = Translator(folder, num_threads=threads, shortlist=shortlist)
    beam = translator.decode_cfg.beam if beam is None else beam
    lenpen = translator.decode_cfg.lenpen if lenpen is None else lenpen
    decoding = decoding_name(beam, lenpen, translator.shortlist is not None)
    manifest_sha = sha256_file(folder / "manifest.json")
    cached = (row.bleu or {}).get(f"{split}/{decoding}")
    if isinstance(cached, dict) and cached.get("manifest_sha256") == manifest_sha:
        if split == "test" and not has_latency(paths, name):
            artifact_latency(cfg, paths, name)
        return cached | {"cached": True, "split": split, "decoding": decoding}
    pairs, info = load_pairs(cfg.data, split)
    started = time.monotonic()
    lines = tqdm(
        translator.translate([s for s, _ in pairs], beam, lenpen),
        total=len(pairs),
        disable=not progress,
        desc=name,
        unit="sent",
        dynamic_ncols=True,
    )
    hyps = list(lines)
    seconds = time.monotonic() - started
    write_text_atomic("".join(h + "\n" for h in hyps), paths.eval_dir / f"{split}.{decoding}.{name}.hyp")
    record = score(hyps, [t for _, t in pairs]) | {
        "split": split,
        "decoding": decoding,
        "beam": beam,
        "lenpen": lenpen,
        "corpus": cfg.data.corpus,
        "pairs": info,
        "decode_seconds": round(seconds, 2),
        "threads": threads,
        "manifest_sha256": manifest_sha,
        "runtime": f"export.runtime ({translator.manifest.format})",
        "provenance": provenance(cfg, seed=cfg.train.seed, threads=threads),
    }

    def store(row: ArtifactRow) -> None:
        row.bleu = (row.bleu or {}) | {f"{split}/{decoding}": {k: v for k, v in record.items() if k != "pairs"}}

    update_row(paths.root, name, store)
    if split == "test" and not has_latency(paths, name):  # the folder's host latency for the report
        record = record | {"latency": artifact_latency(cfg, paths, name)}
    return record
