"""The on-device runtime's own work per decoder step: time outside the graph calls, before and after the fast path.

Per TFLite folder of each run (and with its vocabulary shortlist where the folder has one): the 30 greedy
steps of the latency protocol (batch 1, ONE thread, the same 30-token test source as
benchmarks/latency.py, encoder output computed beforehand), timed as a whole, and the interpreter's
Invoke calls inside them timed one by one (a wrapper around the wrapper's Invoke: ~0.1 us each). The
difference is the Python side of a step: writing inputs, moving the caches, reading the logits, the
argmax, and with the shortlist the numpy projection onto the candidates' rows (real work, reported
apart: the projection alone is timed on the same hidden state).

Two paths, alternated run by run:
- "dict": Translator.initial_state + Translator.step, the general path (beam search, the parity gate):
  every input set and every output copied out on every step;
- "session": Translator.decoding, what greedy translation and the protocol run: caches kept in the
  interpreter, the encoder's outputs set once per sentence (export/runtime.py _Session).
Target: the Python work at most 10% of a step at batch 1 (TARGET_SHARE; each row says PASS or FAIL).

    python benchmarks/runtime_overhead.py [--runs runs/default runs/default-transformer] [--repeats 50]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy starts a pool
    os.environ[_var] = "1"

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.latency import SRC_LEN, STEPS, pick_source  # noqa: E402 - the same sentence and protocol
from export.manifest import read_manifest
from export.runtime import Translator
from lite.files import write_json_atomic
from lite.provenance import command_line, relative, stamped
from lite.tokenizer import Tokenizer

FOLDERS = ("tflite-fp32", "tflite-dynamic-int8", "tflite-int8")
TARGET_SHARE = 0.10


class _TimedWrapper:
    """The interpreter wrapper with its Invoke timed; everything else passes through."""

    def __init__(self, wrapper):
        self._wrapper = wrapper
        self.seconds = 0.0

    def __getattr__(self, name):
        return getattr(self._wrapper, name)

    def Invoke(self, subgraph: int) -> None:  # noqa: N802 - the wrapper's own name
        start = time.perf_counter()
        self._wrapper.Invoke(subgraph)
        self.seconds += time.perf_counter() - start


def _instrument(translator: Translator) -> list[_TimedWrapper]:
    timers = []
    for sig in translator.backend.runners.values():
        if sig.wrapper is None:
            raise SystemExit("this ai-edge-litert build exposes no interpreter wrapper to time")
        sig.wrapper = _TimedWrapper(sig.wrapper)
        timers.append(sig.wrapper)
    return timers


def _dict_steps(translator: Translator, memory: dict, cands: np.ndarray | None) -> None:
    state = translator.initial_state(memory, 1, STEPS)
    token = translator.bos
    for pos in range(STEPS):
        best = int(translator.step(state, np.array([token]), pos, cands)[0].argmax())
        token = best if cands is None else int(cands[best])


def _session_steps(translator: Translator, memory: dict, cands: np.ndarray | None) -> None:
    step = translator.decoding(memory, STEPS, cands)
    token = translator.bos
    for pos in range(STEPS):
        best = int(step(token, pos).argmax())
        token = best if cands is None else int(cands[best])


def measure(folder: Path, ids: list[int], shortlist: bool, warmup: int, repeats: int) -> dict:
    translator = Translator(folder, num_threads=1, shortlist=shortlist)
    timers = _instrument(translator)
    cands = translator.candidates(ids) if shortlist else None
    memory = translator.encode(ids)
    paths = {"dict": _dict_steps, "session": _session_steps}
    for run in paths.values():
        for _ in range(warmup):
            run(translator, memory, cands)
    wall: dict[str, list[float]] = {name: [] for name in paths}
    graph: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, run in paths.items():
            for t in timers:
                t.seconds = 0.0
            start = time.perf_counter()
            run(translator, memory, cands)
            wall[name].append(time.perf_counter() - start)
            graph[name].append(sum(t.seconds for t in timers))
    out: dict = {"candidates": None if cands is None else len(cands), "hidden_steps": cands is not None}
    for name in paths:
        w, g = np.median(wall[name]) * 1e3 / STEPS, np.median(graph[name]) * 1e3 / STEPS
        out[name] = {
            "step_ms": round(float(w), 4),
            "graph_ms": round(float(g), 4),
            "outside_graph_us": round(float(w - g) * 1e3, 1),
            "outside_share": round(float((w - g) / w), 3),
        }
    if cands is not None:  # the numpy projection onto the candidates: compute, not overhead
        rows = translator.backend.candidate_rows(cands)
        hidden = np.random.default_rng(0).standard_normal(rows.shape[1]).astype(np.float32)
        start = time.perf_counter()
        for _ in range(200):
            rows @ hidden
        out["projection_us"] = round((time.perf_counter() - start) / 200 * 1e6, 1)
        s = out["session"]
        s["python_us"] = round(s["outside_graph_us"] - out["projection_us"], 1)
        s["python_share"] = round(s["python_us"] / 1e3 / s["step_ms"], 3)
    else:
        out["session"]["python_us"] = out["session"]["outside_graph_us"]
        out["session"]["python_share"] = out["session"]["outside_share"]
    out["target"] = "PASS" if out["session"]["python_share"] <= TARGET_SHARE else "FAIL"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs", nargs="+", type=Path, default=[ROOT / "runs/default", ROOT / "runs/default-transformer"]
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/runtime_overhead.json")
    args = parser.parse_args()
    source = pick_source(args.runs)
    results = []
    for run in args.runs:
        tokenizer = Tokenizer(run / "tokenizer/spm.model")
        ids = tokenizer.encode(source["text"])[: SRC_LEN - 1] + [tokenizer.eos_id]
        for name in FOLDERS:
            folder = run / "export" / name
            if not (folder / "manifest.json").is_file():
                continue
            has_shortlist = read_manifest(folder).shortlist is not None
            for shortlist in (False, True) if has_shortlist else (False,):
                row = {"run": relative(run), "folder": name, "shortlist": shortlist}
                row |= measure(folder, ids, shortlist, args.warmup, args.repeats)
                results.append(row)
                d, s = row["dict"], row["session"]
                print(
                    f"{run.name} {name}{' +shortlist' if shortlist else ''}: step {d['step_ms']:.3f} -> "
                    f"{s['step_ms']:.3f} ms (graph {s['graph_ms']:.3f}); outside the graph "
                    f"{d['outside_graph_us']:.0f} -> {s['outside_graph_us']:.0f} us/step; Python "
                    f"{s['python_us']:.0f} us = {s['python_share']:.0%} of a step [{row['target']}]",
                    flush=True,
                )
    result = {
        "benchmark": "runtime_overhead",
        "command": command_line(),
        "protocol": {
            "batch": 1,
            "threads": 1,
            "decoder_steps": STEPS,
            "src_tokens": SRC_LEN,
            "warmup": args.warmup,
            "timed_runs": args.repeats,
            "alternated": "dict and session paths, run by run",
            "timed": "30 greedy steps from a ready encoder output; Invoke calls timed inside",
        },
        "source": source,
        "target_python_share_max": TARGET_SHARE,
        "results": results,
    }
    write_json_atomic(stamped(result, threads=1), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
