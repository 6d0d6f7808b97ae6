"""Dense vs local+global attention as the sequence grows: wall time, peak memory, MACs.

    python benchmarks/attention_scaling.py [--sizes 256 512 ... 8192] [--repeats 5] [--runtimes pytorch tflite]

One attention layer (d=256, 4 heads; local window w=128 with 2 global tokens vs dense), batch 1,
one thread. Every measurement runs in its own fresh process: the median wall time of `repeats` calls
after one warm-up, and the peak resident memory the calls added (ru_maxrss after minus before, so
the interpreter and libraries are not counted). TFLite: the layer converted with litert-torch (in
this process) and run under ai-edge-litert in a process that imports no torch.
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


def _layer(kind: str):
    import torch

    from lite.models.attention import MultiheadAttention
    from lite.sparse.patterns import HeadPattern

    patterns = None if kind == "dense" else [HeadPattern(kind="local", window=WINDOW, global_tokens=GLOBALS)] * HEADS

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = MultiheadAttention(D, HEADS, patterns=patterns)
            self.attn.mask_fill = -30.0  # as exported (export/graphs.py)

        def forward(self, x):
            return self.attn(x)

    torch.manual_seed(0)
    return Layer().eval()


def macs(kind: str, n: int) -> int:
    """Projections + scores + values of the layer at length n (what the kernel computes)."""
    from lite.sparse.patterns import HeadPattern, computed_pairs

    pairs = HEADS * n * n if kind == "dense" else computed_pairs(
        [HeadPattern(kind="local", window=WINDOW, global_tokens=GLOBALS)] * HEADS, n, causal=False)
    return 4 * n * D * D + 2 * pairs * (D // HEADS)


def _peak_kb() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _worker(runtime: str, kind: str, n: int, repeats: int, model_path: str | None) -> dict:
    """Runs in a fresh process; prints one JSON line."""
    import statistics
    import time

    import numpy as np

    x = np.random.default_rng(0).standard_normal((1, n, D), dtype=np.float32)
    if runtime == "pytorch":
        import torch
    else:
        from ai_edge_litert.interpreter import Interpreter
    before = _peak_kb()  # libraries loaded, nothing built: the layer's weights and buffers count
    if runtime == "pytorch":
        torch.set_num_threads(1)
        layer = _layer(kind)
        inp = torch.from_numpy(x)

        def call():
            with torch.no_grad():
                layer(inp)
    else:
        interpreter = Interpreter(model_path=model_path, num_threads=1)
        interpreter.allocate_tensors()
        index = interpreter.get_input_details()[0]["index"]

        def call():
            interpreter.set_tensor(index, x)
            interpreter.invoke()
    call()  # warm-up (and the first allocation of every buffer)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return {"ms": statistics.median(times), "peak_mb": (_peak_kb() - before) / 1024}


def _convert(kind: str, n: int, path: Path) -> None:
    import litert_torch
    import torch

    litert_torch.config.show_progress = False
    litert_torch.convert(_layer(kind), (torch.zeros(1, n, D),)).export(str(path))


def measure(runtime: str, kind: str, n: int, repeats: int, tmp: Path) -> dict:
    model = None
    if runtime == "tflite":
        model = tmp / f"{kind}-{n}.tflite"
        _convert(kind, n, model)
    cmd = [sys.executable, __file__, "--worker", runtime, kind, str(n), str(repeats), str(model or "")]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise RuntimeError(f"{runtime} {kind} n={n} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, label in zip(axes, ("ms", "peak_mb", "macs"), ("wall time (ms, 1 thread)", "peak memory added (MB)", "MACs")):
        for runtime in sorted({r["runtime"] for r in rows}):
            for kind, style in (("dense", "o--"), ("local+global", "s-")):
                pts = [(r["n"], r[key]) for r in rows if r["runtime"] == runtime and r["kind"] == kind]
                if pts and not (key == "macs" and runtime != "pytorch"):
                    ax.plot(*zip(*pts), style, label=f"{kind}" + ("" if key == "macs" else f" ({runtime})"))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length n")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"one attention layer, d={D}, {HEADS} heads, local w={WINDOW} + {len(GLOBALS)} global tokens vs dense")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runtimes", nargs="+", default=["pytorch", "tflite"], choices=["pytorch", "tflite"])
    parser.add_argument("--out", type=Path, default=RESULTS / "attention_scaling.json")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        runtime, kind, n, repeats, model = args.worker
        print(json.dumps(_worker(runtime, kind, int(n), int(repeats), model or None)))
        return
    from lite.files import write_json_atomic

    rows = []
    print(f"{'runtime':8} {'n':>5} {'kind':>13} {'ms':>9} {'peak MB':>9} {'MACs':>15}")
    with tempfile.TemporaryDirectory(prefix="attn-scaling-") as tmp:
        for runtime in args.runtimes:
            for n in args.sizes:
                for kind in ("dense", "local+global"):
                    row = {"runtime": runtime, "n": n, "kind": kind, "macs": macs(kind, n),
                           **measure(runtime, "dense" if kind == "dense" else "sparse", n, args.repeats, Path(tmp))}
                    rows.append(row)
                    print(f"{runtime:8} {n:>5} {kind:>13} {row['ms']:>9.1f} {row['peak_mb']:>9.1f} {row['macs']:>15,}", flush=True)
    ratios = {}
    for runtime in args.runtimes:
        for n in args.sizes:
            pair = {r["kind"]: r for r in rows if r["runtime"] == runtime and r["n"] == n}
            ratios[f"{runtime}/{n}"] = {"speedup": pair["dense"]["ms"] / pair["local+global"]["ms"],
                                        "memory": pair["dense"]["peak_mb"] / max(pair["local+global"]["peak_mb"], 1e-3)}
    for key, r in ratios.items():
        print(f"{key}: {r['speedup']:.1f}x faster, {r['memory']:.1f}x less memory")
    record = {"command": "python benchmarks/attention_scaling.py " + " ".join(sys.argv[1:]),
              "setup": {"d": D, "heads": HEADS, "window": WINDOW, "global_tokens": GLOBALS, "batch": 1, "threads": 1,
                        "repeats": args.repeats},
              "rows": rows, "ratios": ratios}
    write_json_atomic(record, args.out)
    plot(rows, args.out.with_suffix(".png"))
    print(f"saved {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
