"""Dense vs local+global attention as the sequence grows: wall time, peak memory, MACs.

    python benchmarks/attention_scaling.py [--sizes 256 512 ... 8192] [--repeats 5] [--runtimes pytorch tflite]
                                           [--parts layer core]

One attention layer (d=256, 4 heads; local window w=128 with 2 global tokens vs dense), batch 1,
one thread, measured twice: the whole layer (q/k/v/out projections included, which cost the same
in both) and its core alone (softmax(q k^T) v, the part sparsity changes). Every measurement runs
in its own fresh process: the median wall time of `repeats` calls after one warm-up, and the peak
resident memory added: VmHWM over the timed calls minus VmRSS before the module was built. The peak
is reset after the warm-up call, so one-time costs (lazy library set-up, compiling the block layout
for this length) are not counted, and neither are the interpreter and libraries. call_mb: the same
peak minus VmRSS after the warm-up, the memory one call needs on top of everything that stays.
TFLite: the layer converted with litert-torch (in this process) and run under ai-edge-litert in a
process that imports no torch.
Writes benchmarks/results/attention_scaling.json and attention_scaling.png, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
D, HEADS, WINDOW, GLOBALS = 256, 4, 128, [0, 1]
SIZES = [256, 512, 1024, 2048, 4096, 8192]


def _module(part: str, kind: str):
    """part "layer": x [1, n, D] -> projections + attention + output projection.
    part "core": q, k, v [1, HEADS, n, D/HEADS] -> softmax(q k^T) v, the only part sparsity changes."""
    import torch

    from lite.models.attention import MultiheadAttention
    from lite.sparse.core import SparseCore
    from lite.sparse.patterns import HeadPattern

    patterns = None if kind == "dense" else [HeadPattern(kind="local", window=WINDOW, global_tokens=GLOBALS)] * HEADS
    fill = -30.0  # as exported (export/graphs.py)

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = MultiheadAttention(D, HEADS, patterns=patterns)
            self.attn.mask_fill = fill

        def forward(self, x):
            return self.attn(x)

    class Core(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sparse = None if patterns is None else SparseCore(patterns)

        def forward(self, q, k, v):
            if self.sparse is None:
                return torch.softmax(q @ k.transpose(-1, -2), -1) @ v
            return self.sparse(q, k, v, None, causal=False, fill=fill)

    torch.manual_seed(0)
    return (Layer() if part == "layer" else Core()).eval()


def _inputs(part: str, n: int) -> list:
    import numpy as np

    rng = np.random.default_rng(0)
    shapes = [(1, n, D)] if part == "layer" else [(1, HEADS, n, D // HEADS)] * 3
    return [rng.standard_normal(s, dtype=np.float32) for s in shapes]


def macs(part: str, kind: str, n: int) -> int:
    """Scores + values (+ the four projections for the layer): what the kernel computes."""
    from lite.sparse.patterns import HeadPattern, computed_pairs

    pairs = (
        HEADS * n * n
        if kind == "dense"
        else computed_pairs([HeadPattern(kind="local", window=WINDOW, global_tokens=GLOBALS)] * HEADS, n, causal=False)
    )
    return (4 * n * D * D if part == "layer" else 0) + 2 * pairs * (D // HEADS)


def _memory_kb(field: str) -> int:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _worker(runtime: str, part: str, kind: str, n: int, repeats: int, model_path: str | None) -> dict:
    """Runs in a fresh process; prints one JSON line."""
    import statistics
    import time

    inputs = _inputs(part, n)
    if runtime == "pytorch":
        import torch
    else:
        from ai_edge_litert.interpreter import Interpreter
    # libraries loaded, nothing built: reset the peak so only the layer's weights and buffers count
    # (ru_maxrss cannot be reset, and an import's transient peak would hide small layers)
    Path("/proc/self/clear_refs").write_text("5")
    before = _memory_kb("VmRSS")
    if runtime == "pytorch":
        torch.set_num_threads(1)
        module = _module(part, kind)
        tensors = [torch.from_numpy(x) for x in inputs]

        def call():
            with torch.no_grad():
                module(*tensors)
    else:
        interpreter = Interpreter(model_path=model_path, num_threads=1)
        interpreter.allocate_tensors()
        details = sorted(interpreter.get_input_details(), key=lambda d: d["index"])

        def call():
            for d, x in zip(details, inputs):
                interpreter.set_tensor(d["index"], x)
            interpreter.invoke()

    call()  # warm-up: first allocations, lazy library set-up, the layout compiled for this length
    # reset the peak again: what counts is the module's lasting state plus the peak of a call
    Path("/proc/self/clear_refs").write_text("5")
    settled = _memory_kb("VmRSS")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    peak = _memory_kb("VmHWM")
    return {"ms": statistics.median(times), "peak_mb": (peak - before) / 1024, "call_mb": (peak - settled) / 1024}


def _convert(part: str, kind: str, n: int, path: Path) -> None:
    import litert_torch
    import torch

    litert_torch.config.show_progress = False
    example = tuple(torch.from_numpy(x) for x in _inputs(part, n))
    litert_torch.convert(_module(part, kind), example).export(str(path))


def measure(runtime: str, part: str, kind: str, n: int, repeats: int, tmp: Path) -> dict:
    model = None
    if runtime == "tflite":
        model = tmp / f"{part}-{kind}-{n}.tflite"
        _convert(part, kind, n, model)
    cmd = [sys.executable, __file__, "--worker", runtime, part, kind, str(n), str(repeats), str(model or "")]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise RuntimeError(f"{runtime} {part} {kind} n={n} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = sorted({r["part"] for r in rows}, reverse=True)  # layer, then core
    fig, axes = plt.subplots(len(parts), 4, figsize=(20, 4.2 * len(parts)), squeeze=False)
    for row_axes, part in zip(axes, parts):
        for ax, key, label in zip(
            row_axes,
            ("ms", "peak_mb", "call_mb", "macs"),
            ("wall time (ms, 1 thread)", "peak memory added (MB)", "memory of one call (MB)", "MACs"),
        ):
            for runtime in sorted({r["runtime"] for r in rows}):
                for kind, style in (("dense", "o--"), ("local+global", "s-")):
                    pts = [
                        (r["n"], r[key])
                        for r in rows
                        if r["part"] == part and r["runtime"] == runtime and r["kind"] == kind and r[key] > 0
                    ]
                    if pts and not (key == "macs" and runtime != "pytorch"):
                        ax.plot(*zip(*pts), style, label=f"{kind}" + ("" if key == "macs" else f" ({runtime})"))
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length n")
            ax.set_title(f"{part}: {label}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(
        f"attention, d={D}, {HEADS} heads, local w={WINDOW} + {len(GLOBALS)} global tokens vs dense "
        "(layer: with the q/k/v/out projections; core: softmax(q k^T) v only)"
    )
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runtimes", nargs="+", default=["pytorch", "tflite"], choices=["pytorch", "tflite"])
    parser.add_argument("--parts", nargs="+", default=["layer", "core"], choices=["layer", "core"])
    parser.add_argument("--out", type=Path, default=RESULTS / "attention_scaling.json")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        runtime, part, kind, n, repeats, model = args.worker
        print(json.dumps(_worker(runtime, part, kind, int(n), int(repeats), model or None)))
        return
    from lite.files import write_json_atomic
    from lite.provenance import stamped

    rows = []
    print(f"{'part':6} {'runtime':8} {'n':>5} {'kind':>13} {'ms':>9} {'peak MB':>9} {'call MB':>9} {'MACs':>15}")
    with tempfile.TemporaryDirectory(prefix="attn-scaling-") as tmp:
        for part in args.parts:
            for runtime in args.runtimes:
                for n in args.sizes:
                    for kind in ("dense", "local+global"):
                        row = {
                            "part": part,
                            "runtime": runtime,
                            "n": n,
                            "kind": kind,
                            "macs": macs(part, kind, n),
                            **measure(
                                runtime, part, "dense" if kind == "dense" else "sparse", n, args.repeats, Path(tmp)
                            ),
                        }
                        rows.append(row)
                        print(
                            f"{part:6} {runtime:8} {n:>5} {kind:>13} {row['ms']:>9.1f} {row['peak_mb']:>9.1f} "
                            f"{row['call_mb']:>9.1f} {row['macs']:>15,}",
                            flush=True,
                        )
    ratios = {}
    for part in args.parts:
        for runtime in args.runtimes:
            for n in args.sizes:
                pair = {r["kind"]: r for r in rows if (r["part"], r["runtime"], r["n"]) == (part, runtime, n)}
                ratios[f"{part}/{runtime}/{n}"] = {
                    "speedup": pair["dense"]["ms"] / pair["local+global"]["ms"],
                    "memory": pair["dense"]["peak_mb"] / max(pair["local+global"]["peak_mb"], 0.1),
                    # TFLite allocates its arena before the first call, so a call adds nothing: no ratio
                    "call_memory": (
                        pair["dense"]["call_mb"] / pair["local+global"]["call_mb"]
                        if min(pair["dense"]["call_mb"], pair["local+global"]["call_mb"]) > 0.5
                        else None
                    ),
                    "macs": pair["dense"]["macs"] / pair["local+global"]["macs"],
                }
    for key, r in ratios.items():
        per_call = "" if r["call_memory"] is None else f" ({r['call_memory']:.1f}x per call)"
        print(
            f"{key}: {r['speedup']:.1f}x faster, {r['memory']:.1f}x less peak memory{per_call}, "
            f"{r['macs']:.1f}x fewer MACs"
        )
    record = {
        "command": "python benchmarks/attention_scaling.py " + " ".join(sys.argv[1:]),
        "setup": {
            "d": D,
            "heads": HEADS,
            "window": WINDOW,
            "global_tokens": GLOBALS,
            "batch": 1,
            "threads": 1,
            "repeats": args.repeats,
            "memory": "VmHWM over the timed calls (peak reset after the warm-up) minus VmRSS before the module "
            "was built",
        },
        "rows": rows,
        "ratios": ratios,
    }
    write_json_atomic(stamped(record, threads=1), args.out)
    plot(rows, args.out.with_suffix(".png"))
    print(f"saved {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
