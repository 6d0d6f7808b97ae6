"""Single-sentence translation latency (the HAT protocol) of PyTorch eager and every exported artifact.

Per model (--runs) and per engine: batch 1, ONE thread, a real 30-token docs-en-de test source
(29 pieces + eos, the run's tokenizer), the encoder once, then exactly 30 greedy decoder steps
(argmax fed back, eos ignored). Warm-up runs, then median/p10/p90 of the timed runs of
(encode + 30 steps), time.perf_counter. Tokenization is outside the timed region for every engine.

Engines: pytorch-eager-fp32 (runs/<run>/model.pt, eval, no_grad) and each folder present among
runs/<run>/export/{onnx-fp32,onnx-dynamic-int8,onnx-int8,tflite-fp32,tflite-fp16,tflite-dynamic-int8,tflite-int8}
(run through export.runtime.Translator(num_threads=1), exactly as shipped: static TFLite graphs use
their encoder bucket and cache slots). Missing folders are reported as "not exported".

Compute limit: peak single-core fp32 matmul rate (torch.mm and numpy @, n = 512..2048, best run,
MAC/s = n^3 / s). Lower bounds per sentence = MACs / peak, with the paper MACs (manifest "macs":
30+30 tokens, no embeddings or output projection) and with the work the protocol really needs
(+ 30 steps x embed_dim x vocab output projection). Targets: each TFLite artifact >= 3x
faster than PyTorch eager and <= 3x the lower bound with output projection; PASS/FAIL as measured.

    python benchmarks/latency.py [--runs runs/default runs/default-transformer] [--warmup 5] [--repeats 50]
                                 [--quick] [--out benchmarks/results/latency.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy/torch start pools
    os.environ[_var] = "1"

import argparse
import datetime
import importlib.metadata
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.on_device import measure, run_protocol  # noqa: E402 - the protocol every target runs
from export.runtime import Translator
from lite.checkpoint import load_model
from lite.data.parallel import load_split
from lite.files import write_json_atomic
from lite.metrics.macs import count_macs
from lite.provenance import command_line, relative, stamped
from lite.tokenizer import Tokenizer

SRC_LEN = STEPS = 30  # the paper's convention: 30 source tokens (eos included) and 30 target tokens
EXPORTS = [
    "onnx-fp32",
    "onnx-dynamic-int8",
    "onnx-int8",
    "tflite-fp32",
    "tflite-fp16",
    "tflite-dynamic-int8",
    "tflite-int8",
]
TARGET_SPEEDUP = TARGET_BOUND = 3.0


def peak_matmul(repeats: int) -> dict:
    """Best single-thread fp32 MAC/s of square matmuls: what one core can do at most."""
    rates = {}
    for n in (512, 1024, 2048):
        a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        for name, fn in (("torch.mm", lambda: torch.mm(ta, tb)), ("numpy", lambda: a @ b)):
            fn()  # first call pays for allocation and packing
            best = min(_timed(fn) for _ in range(repeats))
            rates[f"{name} n={n}"] = n**3 / best
    return {"macs_per_s": max(rates.values()), "best": max(rates, key=rates.get), "all": rates}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def pick_source(runs: list[Path]) -> dict:
    """The first test sentence that is exactly SRC_LEN tokens (eos incl.) under every run's tokenizer,
    so all models translate the same sentence; else the first longer one, truncated (and said so)."""
    pairs = load_split(ROOT / "data/docs-en-de", "test", "en", "de")
    toks = [Tokenizer(r / "tokenizer/spm.model") for r in runs]
    for i, (src, _) in enumerate(pairs):
        if all(len(t.encode(src)) + 1 == SRC_LEN for t in toks):
            return {"index": i, "text": src, "truncated": False}
    for i, (src, _) in enumerate(pairs):
        if all(len(t.encode(src)) + 1 > SRC_LEN for t in toks):
            return {"index": i, "text": src, "truncated": True}
    raise SystemExit("no test sentence of >= 30 tokens in data/docs-en-de")


def pytorch_engine(model):
    bos = model.cfg.bos_id

    @torch.no_grad()
    def run(ids: list[int]) -> list[int]:
        memory, pad = model.encode(torch.tensor([ids]))
        cache: dict = {}
        prev, out = torch.tensor([[bos]]), []
        for _ in range(STEPS):  # always STEPS steps: eos does not stop the timing
            prev = model.decode(prev, memory, pad, cache)[:, -1].argmax(-1, keepdim=True)
            out.append(int(prev))
        return out

    return run


def bench_run(run_dir: Path, source: dict, peak: float, args) -> dict:
    model = load_model(run_dir / "model.pt")
    cfg = model.cfg
    pieces = Tokenizer(run_dir / "tokenizer/spm.model").encode(source["text"])
    ids = pieces[: SRC_LEN - 1] + [cfg.eos_id]
    paper = count_macs(cfg, SRC_LEN, STEPS)["macs"]
    full = paper + STEPS * cfg.embed_dim * cfg.vocab_size  # output projection, once per decoder step
    bounds = {
        "paper_macs": paper,
        "paper_bound_ms": paper / peak * 1e3,
        "with_output_macs": full,
        "with_output_bound_ms": full / peak * 1e3,
    }
    engines = {"pytorch-eager-fp32": measure(pytorch_engine(model), ids, args.warmup, args.repeats)}
    print(f"  {run_dir.name}: pytorch-eager-fp32 {engines['pytorch-eager-fp32']['median_ms']:.2f} ms", flush=True)
    for name in EXPORTS:
        folder = run_dir / "export" / name
        if not (folder / "manifest.json").is_file():
            engines[name] = {"status": "not exported"}
            continue
        try:
            translator = Translator(folder, num_threads=1)
        except Exception as exc:  # noqa: BLE001 - a broken artifact is a result, not a crash
            engines[name] = {"status": f"error: {exc}"}
            continue
        if translator.manifest.macs != paper:
            print(f"  warning: {name} manifest macs {translator.manifest.macs} != analytic {paper}", file=sys.stderr)
        try:
            engines[name] = measure(lambda x: run_protocol(translator, x, STEPS), ids, args.warmup, args.repeats)
        except Exception as exc:  # noqa: BLE001
            engines[name] = {"status": f"error: {type(exc).__name__}: {exc}"}
            continue
        # the exported tokenizer must give the same ids, or the artifact would translate another input
        engines[name]["same_tokenizer"] = translator.sp.encode(source["text"]) == pieces
        m = translator.manifest  # static graphs do work sized by these, not by the sentence
        engines[name]["graph_shapes"] = {k: getattr(m, k) for k in ("src_lens", "max_src_len", "target_slots")}
        print(f"  {run_dir.name}: {name} {engines[name]['median_ms']:.2f} ms", flush=True)
    eager = engines["pytorch-eager-fp32"]
    for name, e in engines.items():
        if e["status"] != "ok":
            continue
        e["speedup_vs_eager"] = eager["median_ms"] / e["median_ms"]
        e["x_paper_bound"] = e["median_ms"] / bounds["paper_bound_ms"]
        e["x_with_output_bound"] = e["median_ms"] / bounds["with_output_bound_ms"]
        # greedy outputs as a sanity check: steps before the first token that differs from eager
        e["tokens_agree_with_eager"] = next(
            (i for i, (a, b) in enumerate(zip(e["tokens"], eager["tokens"])) if a != b), STEPS
        )
        if name.startswith("tflite"):
            e["target_speedup"] = "PASS" if e["speedup_vs_eager"] >= TARGET_SPEEDUP else "FAIL"
            e["target_bound"] = "PASS" if e["x_with_output_bound"] <= TARGET_BOUND else "FAIL"
    return {
        "run": relative(run_dir),
        "arch": cfg.arch,
        "embed_dim": cfg.embed_dim,
        "vocab_size": cfg.vocab_size,
        "source_ids": ids,
        "bounds": bounds,
        "engines": engines,
    }


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "numpy", "onnxruntime", "ai-edge-litert"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


TARGET_NAME = "host-x86-1thread"  # the latency_ms key in artifacts.json (eval/report/)


def record_latency(results: list[dict]) -> None:
    """Put each measured median into RUN/artifacts.json (latency_ms[TARGET_NAME]) so the budget report
    shows it; PyTorch eager goes on a row for model.pt, which the report merges into its own row."""
    from lite.artifacts import ArtifactRow, artifacts_path, read_rows, write_rows

    for r in results:
        run = ROOT / r["run"]
        rows = read_rows(run)
        for engine, e in r["engines"].items():
            if e["status"] != "ok":
                continue
            name = "pytorch-fp32" if engine == "pytorch-eager-fp32" else engine
            row = next((x for x in rows if x.name == name), None)
            if row is None and name == "pytorch-fp32":
                row = ArtifactRow(name=name, path="model.pt", format="pytorch", precision="fp32")
                rows.append(row)
            if row is not None:
                row.latency_ms = (row.latency_ms or {}) | {TARGET_NAME: round(e["median_ms"], 2)}
        write_rows(run, rows)
        print(f"recorded latency in {artifacts_path(run)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs", nargs="+", type=Path, default=[ROOT / "runs/default", ROOT / "runs/default-transformer"]
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per engine (>= 50 for the protocol)")
    parser.add_argument("--quick", action="store_true", help="smoke check: 2 warm-ups, 5 timed runs, fewer peak runs")
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON path (default: benchmarks/results/latency.json; /tmp/latency-quick.json with --quick)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="also write each median into RUN/artifacts.json (latency_ms.host-x86-1thread) for the report",
    )
    parser.add_argument(
        "--record-from",
        type=Path,
        metavar="JSON",
        help="only record the medians of an earlier result file (no measuring)",
    )
    args = parser.parse_args()
    if args.record_from:
        record_latency(json.loads(args.record_from.read_text())["results"])
        return
    if args.quick:
        args.warmup, args.repeats = 2, 5
    out = args.out or (Path("/tmp/latency-quick.json") if args.quick else ROOT / "benchmarks/results/latency.json")
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)

    peak = peak_matmul(2 if args.quick else 7)
    print(f"peak single-core fp32 matmul: {peak['macs_per_s'] / 1e9:.1f} GMAC/s ({peak['best']})", flush=True)
    source = pick_source(args.runs)
    print(
        f"source: test line {source['index']}{' (truncated to 30 tokens)' if source['truncated'] else ''}: "
        f"{source['text']}",
        flush=True,
    )
    results = [bench_run(r, source, peak["macs_per_s"], args) for r in args.runs]

    print(
        f"\n{'run':22s} {'engine':20s} {'median':>8s} {'p10':>7s} {'p90':>7s} {'vs eager':>8s} "
        f"{'x paper':>8s} {'x +out':>7s} {'agree':>5s}  targets (>=3x eager, <=3x bound+out)"
    )
    for r in results:
        b = r["bounds"]
        print(
            f"{Path(r['run']).name:22s} {'lower bound':20s} {'':>8s} {'':>7s} {'':>7s} {'':>8s} "
            f"{b['paper_bound_ms']:7.2f}ms {b['with_output_bound_ms']:5.2f}ms "
            f"({b['paper_macs'] / 1e6:.1f}M / {b['with_output_macs'] / 1e6:.1f}M MACs)"
        )
        for name, e in r["engines"].items():
            if e["status"] != "ok":
                print(f"{'':22s} {name:20s} {e['status']}")
                continue
            flags = f"{e['target_speedup']} {e['target_bound']}" if "target_speedup" in e else ""
            print(
                f"{'':22s} {name:20s} {e['median_ms']:7.2f}ms {e['p10_ms']:7.2f} {e['p90_ms']:7.2f} "
                f"{e['speedup_vs_eager']:7.2f}x {e['x_paper_bound']:7.1f}x {e['x_with_output_bound']:6.1f}x "
                f"{e['tokens_agree_with_eager']:2d}/{STEPS}  {flags}"
            )
    result = {
        "benchmark": "latency",
        "command": command_line(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"arch": platform.machine(), "cpu": cpu_model(), "cores": os.cpu_count()},
        "versions": versions(),
        "protocol": {
            "batch": 1,
            "threads": 1,
            "src_tokens": SRC_LEN,
            "decoder_steps": STEPS,
            "warmup": args.warmup,
            "timed_runs": args.repeats,
            "quick": args.quick,
            "timer": "time.perf_counter",
            "timed": "encode + 30 greedy steps (tokenization excluded)",
        },
        "source": source | {"tokens": SRC_LEN},
        "peak": peak,
        "targets": {"speedup_vs_eager_min": TARGET_SPEEDUP, "x_with_output_bound_max": TARGET_BOUND},
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stamped(result, threads=1), out)
    print(f"wrote {out}")
    if args.record and not args.quick:
        record_latency(results)


if __name__ == "__main__":
    main()
