"""Host latency of a run's model.pt and of its exported folders, recorded for the budget report.

The single-sentence protocol of benchmarks/latency.py, on this machine, one thread: batch 1, a real
30-token test source (29 pieces + eos; the first test sentence of that length under the folder's
tokenizer, else the first longer one cut to 30), the encoder once, then exactly 30 greedy decoder steps
(argmax fed back, eos ignored); warm-up runs, then the median of 50 timed runs (time.perf_counter).
Exported folders run through export.runtime.Translator as shipped, with the vocabulary shortlist when
the folder decodes with it by default. The median goes into RUN/artifacts.json as
latency_ms["host-1thread"] of the artifact's row (model.pt: the "pytorch-fp32" row), so `lite report`
and `make compress` show a latency column; the record with p10/p90 and the source is returned.

benchmarks/latency.py runs the same protocol for every engine side by side (alternated, with the
bounds and CTranslate2); this module is what the pipeline stages run on their own artifacts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from lite.artifacts import ArtifactRow, find_row, read_rows, update_row, write_rows
from lite.config import RunConfig
from lite.data.corpus import load_pairs
from lite.models.seq2seq import EncoderDecoder
from lite.run import RunPaths

HOST_TARGET = "host-1thread"  # the latency_ms key of a host measurement (eval/report shows one column per key)
SRC_LEN = STEPS = 30  # the paper's convention: 30 source tokens (eos included) and 30 target tokens
WARMUP, REPEATS = 5, 50
PYTORCH_ROW = "pytorch-fp32"


def protocol_source(sources: list[str], encode: Callable[[str], list[int]], eos: int, length: int = SRC_LEN) -> dict:
    """The protocol's source: the first of `sources` with exactly length - 1 pieces (+ eos), else the first
    longer one cut to that length (said so in "truncated"), else the longest."""
    exact, longer, longest = None, None, None  # (index, pieces); one pass, stopping at the first exact fit
    for i, text in enumerate(sources):
        pieces = encode(text)
        if len(pieces) == length - 1:
            exact = (i, pieces)
            break
        if longer is None and len(pieces) > length - 1:
            longer = (i, pieces)
        if longest is None or len(pieces) > len(longest[1]):
            longest = (i, pieces)
    index, pieces = exact or longer or longest
    truncated = exact is None and longer is not None
    return {"index": index, "text": sources[index], "ids": pieces[: length - 1] + [eos], "truncated": truncated}


def pytorch_protocol(model: EncoderDecoder, ids: list[int], steps: int = STEPS) -> Callable[[], list[int]]:
    """The protocol on PyTorch eager: encoder once, then `steps` cached greedy steps (eos does not stop it)."""
    bos = model.cfg.bos_id

    @torch.no_grad()
    def run() -> list[int]:
        memory, pad = model.encode(torch.tensor([ids]))
        cache: dict = {}
        prev, out = torch.tensor([[bos]]), []
        for _ in range(steps):
            prev = model.decode(prev, memory, pad, cache)[:, -1].argmax(-1, keepdim=True)
            out.append(int(prev))
        return out

    return run


def _timed(run: Callable[[], list[int]], source: dict, shortlist: bool = False) -> dict:
    from export.on_device import alternate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timing = alternate({"protocol": run}, WARMUP, REPEATS)["protocol"]
    finally:
        torch.set_num_threads(threads)
    return {
        "target": HOST_TARGET,
        "median_ms": round(timing["median_ms"], 3),
        "p10_ms": round(timing["p10_ms"], 3),
        "p90_ms": round(timing["p90_ms"], 3),
        "runs": REPEATS,
        "warmup": WARMUP,
        "threads": 1,
        "shortlist": shortlist,
        "source": {k: source[k] for k in ("index", "truncated")} | {"tokens": len(source["ids"])},
    }


def has_latency(paths: RunPaths, name: str) -> bool:
    """Whether the row `name` already holds a host latency (a re-exported folder's row starts without)."""
    row = next((r for r in read_rows(paths.root) if r.name == name), None)
    return row is not None and HOST_TARGET in (row.latency_ms or {})


def _store(row: ArtifactRow, record: dict) -> None:
    row.latency_ms = (row.latency_ms or {}) | {HOST_TARGET: record["median_ms"]}


def model_latency(cfg: RunConfig, paths: RunPaths, model: EncoderDecoder, tokenizer) -> dict:
    """Time model.pt on the protocol and record it on the run's "pytorch-fp32" row (created if missing)."""
    pairs, _ = load_pairs(cfg.data, "test")
    length = min(SRC_LEN, model.cfg.max_positions - 1)
    source = protocol_source([s for s, _ in pairs], tokenizer.encode, model.cfg.eos_id, length)
    record = _timed(pytorch_protocol(model.eval(), source["ids"]), source)
    rows = read_rows(paths.root)
    row = next((r for r in rows if r.name == PYTORCH_ROW), None)
    if row is None:
        row = ArtifactRow(name=PYTORCH_ROW, path="model.pt", format="pytorch", precision="fp32")
        rows.append(row)
    _store(row, record)
    write_rows(paths.root, rows)
    return record


def artifact_latency(cfg: RunConfig, paths: RunPaths, name: str) -> dict:
    """Time the exported folder of artifacts.json row `name` on the protocol, as shipped, and record it."""
    from export.on_device import run_protocol
    from export.runtime import Translator

    folder: Path = paths.root / find_row(paths.root, name).path
    translator = Translator(folder, num_threads=1)
    pairs, _ = load_pairs(cfg.data, "test")
    length = min(SRC_LEN, translator.backend.max_src_len)  # a small model's graphs may take fewer
    source = protocol_source([s for s, _ in pairs], translator.sp.encode, translator.eos, length)
    shortlist = translator.shortlist is not None
    record = _timed(lambda: run_protocol(translator, source["ids"], STEPS, shortlist=shortlist), source, shortlist)
    update_row(paths.root, name, lambda row: _store(row, record))
    return record
