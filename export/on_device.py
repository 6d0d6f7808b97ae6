"""What a target runs besides translation: the single-sentence protocol, with instruction-count marks.

    python -m export.on_device protocol --model DIR --ids 5,17,...,2 [--runs 2] [--marks] [--kernels reference]
                                        [--logits OUT.npy] [--shortlist] [--maps OUT.txt]
    python -m export.on_device latency  --model DIR --ids 5,17,...,2 [--warmup 5] [--repeats 50] [--shortlist]

Both print one JSON object on stdout. Translation of a file is `python -m export.runtime --file`.

The protocol is the latency benchmark's (benchmarks/latency.py): batch 1, one thread, the encoder
once, then exactly STEPS greedy decoder steps (argmax fed back; eos does not stop it), from zeroed
caches. With --marks, the job calls close(MARK_FD) before the encoder, after it and after every step:
a syscall that only fails, which the instruction-count plugin (eval/targets/insn_count.c) turns into a
reading of the guest's instruction counter. Two marks back to back come first, so the host can subtract
what a mark itself costs.

Standard library + numpy + the runtime only: this file is copied to boards and emulated targets.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy starts a BLAS pool: one thread,
    os.environ.setdefault(_var, "1")  # so one instruction counter sees all the work

import argparse
import json
import sys
import time
from collections.abc import Callable

import numpy as np

from export.runtime import Translator
from lite.errors import LiteError, UsageError

STEPS = 30  # decoder steps per sentence, the paper's 30 target tokens
MARK_FD = 0x4C495445  # "LITE"; must match eval/targets/insn_count.c


def mark() -> None:
    """One marker for the instruction counter (harmless without it: close() of a descriptor that is not open)."""
    try:
        os.close(MARK_FD)
    except OSError:
        pass


def run_protocol(
    translator: Translator,
    ids: list[int],
    steps: int = STEPS,
    on_mark: Callable[[], None] | None = None,
    logits: list | None = None,
    shortlist: bool = False,
    memory: dict[str, np.ndarray] | None = None,
) -> list[int]:
    """Encoder once + `steps` greedy steps; returns the tokens. on_mark before the encoder, after it and
    after each step; `logits` (a list) receives each step's logits row (over the candidates with
    `shortlist`: the sentence's candidate set, computed inside the protocol, as a translation would).
    `memory`: an encoder output to start from, so only the steps run (the per-step figures)."""
    if on_mark:
        on_mark()
    cands = translator.candidates(ids) if shortlist else None
    if shortlist and cands is None:
        raise UsageError(f"{translator.folder}: shortlist requested, but the translator has none")
    memory = translator.encode(ids) if memory is None else memory
    step = translator.decoding(memory, steps, cands)  # zeroed caches belong to the work
    if on_mark:
        on_mark()
    token, out = translator.bos, []
    for pos in range(steps):
        row = step(token, pos)
        best = int(row.argmax())
        token = best if cands is None else int(cands[best])
        out.append(token)
        if logits is not None:
            logits.append(row.copy())
        if on_mark:
            on_mark()
    return out


def alternate(runs: dict[str, Callable[[], list[int]]], warmup: int, repeats: int) -> dict[str, dict]:
    """The latency protocol's timing for several engines: warm-up runs of each, then `repeats` rounds in
    which every engine runs once in turn (a slow spell of the machine hits all alike); per engine the
    median/p10/p90/min in ms of its timed runs and its last tokens."""
    tokens: dict[str, list[int]] = {}
    for name, run in runs.items():
        for _ in range(warmup):
            tokens[name] = run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            tokens[name] = run()
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, ts in times.items():
        ms = np.array(ts) * 1e3
        out[name] = {
            "status": "ok",
            "median_ms": float(np.median(ms)),
            "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)),
            "min_ms": float(ms.min()),
            "runs": repeats,
            "tokens": tokens.get(name, []),
        }
    return out


def _ids(text: str) -> list[int]:
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--ids: expected comma-separated token ids, got {text!r}") from None
    if not ids:
        raise UsageError("--ids: no token ids given")
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.on_device", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    jobs = parser.add_subparsers(dest="job", required=True)
    for name, text in (
        ("protocol", "encoder + STEPS greedy steps, optionally marked for instruction counts"),
        ("latency", "the latency protocol: warm-up, then timed runs (median ms)"),
    ):
        job = jobs.add_parser(name, help=text)
        job.add_argument("--model", required=True, help="model folder written by `lite export`")
        job.add_argument("--ids", required=True, help="source token ids, eos included, comma-separated")
        job.add_argument("--steps", type=int, default=STEPS, help=f"decoder steps (default {STEPS})")
        job.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
        job.add_argument(
            "--kernels",
            choices=("default", "reference"),
            default="default",
            help="TFLite kernels: default (XNNPACK where it applies) or reference (portable, bit-exact ints)",
        )
        job.add_argument(
            "--shortlist", action="store_true", help="decode over the folder's vocabulary shortlist candidates"
        )
    protocol = jobs.choices["protocol"]
    protocol.add_argument("--runs", type=int, default=2, help="protocol runs (the first warms up; default 2)")
    protocol.add_argument("--marks", action="store_true", help="emit instruction-count marks around every part")
    protocol.add_argument("--logits", help="save the last run's logits [steps, vocab] to this .npy file")
    protocol.add_argument("--maps", help="copy /proc/self/maps here at the end (to name the code a profile counted)")
    latency = jobs.choices["latency"]
    latency.add_argument("--warmup", type=int, default=5)
    latency.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    try:
        ids = _ids(args.ids)
        translator = Translator(args.model, num_threads=args.threads, kernels=args.kernels, shortlist=args.shortlist)
        if args.job == "latency":
            run = lambda: run_protocol(translator, ids, args.steps, shortlist=args.shortlist)  # noqa: E731
            result = alternate({"protocol": run}, args.warmup, args.repeats)["protocol"]
        else:
            if args.marks:
                mark(), mark()  # an empty region: the cost of one mark
            logits: list = []
            tokens: list[int] = []
            for r in range(args.runs):
                logits.clear()
                marks = mark if args.marks else None
                tokens = run_protocol(translator, ids, args.steps, marks, logits, args.shortlist)
            if args.logits:
                np.save(args.logits, np.stack(logits))
            if args.maps:
                with open("/proc/self/maps") as src, open(args.maps, "w") as dst:
                    dst.write(src.read())
            result = {
                "tokens": tokens,
                "runs": args.runs,
                "steps": args.steps,
                "marks_per_run": args.steps + 2 if args.marks else 0,
            }
    except LiteError as exc:
        print(f"on_device: error: {exc}", file=sys.stderr)
        return 2
    result |= {"machine": os.uname().machine, "kernels": args.kernels, "threads": args.threads}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
