"""Translation latency and throughput of PyTorch, every exported artifact and CTranslate2, side by side.

Latency (the HAT protocol), per model (--runs) and engine: batch 1, ONE thread, a real 30-token
docs-en-de test source (29 pieces + eos, the run's tokenizer), the encoder once, then exactly 30 greedy
decoder steps (argmax fed back, eos ignored). Warm-up runs of every engine, then `repeats` rounds in
which every engine of every run runs once in turn (a slow spell of the machine hits all alike);
median/p10/p90 of each engine's timed runs, time.perf_counter. Tokenization is outside the timed region.

Engines:
- pytorch-eager-fp32: runs/<run>/model.pt, eval, no_grad.
- each folder among runs/<run>/export/{onnx-*,tflite-*} through export.runtime.Translator(num_threads=1),
  as shipped; a folder with a vocabulary shortlist also runs as "<name>+shortlist" (the sentence's
  candidates computed inside the timed region).
- for a baseline Transformer run converted by `lite ctranslate2 RUN` (runs/<run>/ctranslate2/<type>/):
  ctranslate2-float32, ctranslate2-int8 and ctranslate2-int8+vmap (its vocabulary map = our shortlist),
  Translator(inter_threads=1, intra_threads=1), translate_batch with min = max decoding length 30.

Bounds per engine, from measurements on this machine:
- compute: the MACs the engine really does (the paper's MACs of 30 + 30 tokens, plus 30 output
  projections over the vocabulary or the sentence's candidates) / peak single-core fp32 matmul rate
  (torch.mm and numpy @, n = 512..2048, best run).
- memory traffic: the weight bytes one sentence reads (encoder and cross-attention keys/values once, the
  rest of the decoder and the projection rows every step; matrices at the engine's bytes per weight,
  vectors fp32) / single-core read bandwidth (numpy sum over 256 MB). Caches can beat it: a small
  model's weights stay in L2/L3 between steps, so this bound is what a model too big for them would pay.
Targets (the TFLite artifacts): >= 3x faster than PyTorch eager and <= 3x the compute bound.

Throughput (--throughput, default on): the whole test split, text in, text out, one thread: PyTorch
(lite.decode, length-sorted batches of 32), our runtime (one sentence at a time, greedy, as `lite
translate --model` runs) and CTranslate2 (length-sorted batches of 32, greedy, our length limit):
sentences/s and BLEU.

    python benchmarks/latency.py [--runs runs/default runs/default-transformer] [--warmup 5] [--repeats 50]
                                 [--quick] [--no-throughput] [--out benchmarks/results/latency.json] [--record]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy/torch start pools
    os.environ[_var] = "1"

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.latency import HOST_TARGET, pytorch_protocol  # noqa: E402 - after the thread settings above
from export.manifest import read_manifest
from export.on_device import alternate, run_protocol  # the protocol every target runs
from export.runtime import Translator
from lite.checkpoint import load_model
from lite.config import DecodeConfig
from lite.data.corpus import load_pairs
from lite.data.parallel import load_split
from lite.decode import translate
from lite.files import write_json_atomic
from lite.metrics.bleu import score
from lite.metrics.macs import count_macs
from lite.provenance import command_line, cpu_model, relative, stamped
from lite.run import open_run
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
CT2_ENGINES = {"ctranslate2-float32": ("float32", False), "ctranslate2-int8": ("int8", False)}
CT2_ENGINES["ctranslate2-int8+vmap"] = ("int8", True)
THROUGHPUT_BATCH = 32
TARGET_SPEEDUP = TARGET_BOUND = 3.0


def bytes_per_weight(engine: str) -> int:
    """Bytes one weight of a matrix occupies when the engine reads it. TFLite fp16 stores 2 bytes, but its
    CPU kernels dequantize fp16 weights to fp32 once at load, so a step reads 4."""
    return 1 if "int8" in engine else 4


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


def read_bandwidth(repeats: int) -> dict:
    """Single-thread read bandwidth (bytes/s): the best of `repeats` sums over a 256 MB array, far larger
    than any cache, so every byte comes from memory."""
    a = np.ones(64 * 2**20, dtype=np.float32)
    a.sum()
    best = min(_timed(a.sum) for _ in range(repeats))
    return {"bytes_per_s": a.nbytes / best, "array_bytes": a.nbytes, "method": "numpy float32 sum, best run"}


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


def ctranslate2_folder(run_dir: Path, quantization: str, use_vmap: bool) -> Path | None:
    """RUN/ctranslate2/<quantization> when `lite ctranslate2 RUN` made it (with its vocabulary map if asked)."""
    folder = run_dir / "ctranslate2" / quantization
    if not (folder / "model.bin").is_file() or (use_vmap and not (folder / "vmap.txt").is_file()):
        return None
    return folder


def ctranslate2_translator(folder: Path):
    import ctranslate2

    return ctranslate2.Translator(str(folder), device="cpu", inter_threads=1, intra_threads=1)


def ctranslate2_engine(translator, pieces: list[str], ids: list[int], use_vmap: bool):
    index = {p: i for i, p in enumerate(pieces)}
    source = [[pieces[i] for i in ids]]

    def run() -> list[int]:  # min = max length: exactly STEPS steps, eos cannot end it early
        result = translator.translate_batch(
            source, beam_size=1, min_decoding_length=STEPS, max_decoding_length=STEPS, use_vmap=use_vmap
        )
        return [index[p] for p in result[0].hypotheses[0]]

    return run


def weight_bytes(model, bpw: int, projection_rows: int) -> dict:
    """Weight bytes one protocol sentence reads: the encoder and the cross-attention key/value projections
    once; the rest of the decoder and `projection_rows` rows of the output projection every step. Token and
    position tables are looked up one row at a time (ignored); matrices at `bpw` bytes, vectors at 4."""
    once = per_step = 0
    for name, p in model.named_parameters():
        if "embed." in name or name.startswith("output."):
            continue
        size = p.numel() * (bpw if p.dim() >= 2 else 4)
        if name.startswith("encoder") or ".cross.k_proj." in name or ".cross.v_proj." in name:
            once += size
        else:
            per_step += size
    per_step += projection_rows * model.cfg.embed_dim * bpw
    return {"once": once, "per_step": per_step, "per_sentence": once + STEPS * per_step}


def engines_of(run_dir: Path, source: dict) -> tuple[dict, dict]:
    """The run's engines as protocol callables, and what each needs for its bounds."""
    model = load_model(run_dir / "model.pt").eval()
    cfg = model.cfg
    tokenizer = Tokenizer(run_dir / "tokenizer/spm.model")
    pieces = tokenizer.encode(source["text"])
    ids = pieces[: SRC_LEN - 1] + [cfg.eos_id]
    runs = {"pytorch-eager-fp32": pytorch_protocol(model, ids, STEPS)}
    meta: dict[str, dict] = {"pytorch-eager-fp32": {"projection_rows": cfg.vocab_size}}
    for name in EXPORTS:
        folder = run_dir / "export" / name
        if not (folder / "manifest.json").is_file():
            meta[name] = {"status": "not exported"}
            continue
        try:  # with the folder's shortlist loaded where it has one; run_protocol chooses per run
            has_shortlist = read_manifest(folder).shortlist is not None
            translator = Translator(folder, num_threads=1, shortlist=has_shortlist)
        except Exception as exc:  # noqa: BLE001 - a broken artifact is a result, not a crash
            meta[name] = {"status": f"error: {exc}"}
            continue
        m = translator.manifest
        common = {
            "same_tokenizer": translator.sp.encode(source["text"]) == pieces,
            "graph_shapes": {k: getattr(m, k) for k in ("src_lens", "max_src_len", "target_slots")},
        }
        runs[name] = lambda t=translator: run_protocol(t, ids, STEPS)
        meta[name] = common | {"projection_rows": cfg.vocab_size}
        if has_shortlist:
            runs[f"{name}+shortlist"] = lambda t=translator: run_protocol(t, ids, STEPS, shortlist=True)
            # TFLite projects onto the candidates' rows; ONNX computes every logit and keeps the candidates'
            rows = len(translator.candidates(ids)) if translator.backend.hidden else cfg.vocab_size
            meta[f"{name}+shortlist"] = common | {"projection_rows": rows}
    if cfg.arch == "transformer":
        vocab = [tokenizer.sp.id_to_piece(i) for i in range(tokenizer.vocab_size)]
        for name, (quantization, use_vmap) in CT2_ENGINES.items():
            folder = ctranslate2_folder(run_dir, quantization, use_vmap)
            if folder is None:
                meta[name] = {"status": f"not converted (lite ctranslate2 {relative(run_dir)})"}
                continue
            runs[name] = ctranslate2_engine(ctranslate2_translator(folder), vocab, ids, use_vmap)
            rows = cfg.vocab_size
            if use_vmap:  # CTranslate2's candidates: the map's union plus unk, bos and eos
                rows = len(
                    set(_vmap_candidates(folder / "vmap.txt", [vocab[i] for i in ids])) | {"<unk>", "<s>", "</s>"}
                )
            meta[name] = {"projection_rows": rows}
    return runs, {"model": model, "ids": ids, "meta": meta}


def _vmap_candidates(path: Path, source_pieces: list[str]) -> list[str]:
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, targets = line.partition("\t")
        table[key] = targets.split()
    return [t for key in ["", *source_pieces] for t in table.get(key, [])]


def finish_run(run_dir: Path, measured: dict, info: dict, peak: float, bandwidth: float) -> dict:
    """One run's engines with their figures against eager and against both bounds."""
    model, meta = info["model"], info["meta"]
    cfg = model.cfg
    paper = count_macs(cfg, SRC_LEN, STEPS)["macs"]
    engines = {}
    eager = measured["pytorch-eager-fp32"]
    for name, m in meta.items():
        if "status" in m:
            engines[name] = m
            continue
        e = measured[name] | m
        macs = paper + STEPS * cfg.embed_dim * m["projection_rows"]
        traffic = weight_bytes(model, bytes_per_weight(name), m["projection_rows"])
        e["computed_macs"] = macs
        e["compute_bound_ms"] = macs / peak * 1e3
        e["weight_bytes"] = traffic
        e["traffic_bound_ms"] = traffic["per_sentence"] / bandwidth * 1e3
        e["speedup_vs_eager"] = eager["median_ms"] / e["median_ms"]
        e["x_compute_bound"] = e["median_ms"] / e["compute_bound_ms"]
        e["x_traffic_bound"] = e["median_ms"] / e["traffic_bound_ms"]
        # greedy outputs as a sanity check: steps before the first token that differs from eager
        e["tokens_agree_with_eager"] = next(
            (i for i, (a, b) in enumerate(zip(e["tokens"], eager["tokens"])) if a != b), STEPS
        )
        if name.startswith("tflite"):
            e["target_speedup"] = "PASS" if e["speedup_vs_eager"] >= TARGET_SPEEDUP else "FAIL"
            e["target_bound"] = "PASS" if e["x_compute_bound"] <= TARGET_BOUND else "FAIL"
        engines[name] = e
    return {
        "run": relative(run_dir),
        "arch": cfg.arch,
        "embed_dim": cfg.embed_dim,
        "vocab_size": cfg.vocab_size,
        "source_ids": info["ids"],
        "paper_macs": paper,
        "engines": engines,
    }


def throughput(run_dir: Path, quick: bool) -> dict:
    """Whole test split (the first 64 sentences with --quick), text to text, one thread: sentences/s and BLEU
    per engine."""
    paths, cfg = open_run(run_dir, None)
    pairs, _ = load_pairs(cfg.data, "test")
    pairs = pairs[:64] if quick else pairs
    lines, refs = [s for s, _ in pairs], [t for _, t in pairs]
    engines: dict[str, dict] = {}

    def timed(name: str, fn, extra: dict | None = None) -> None:
        start = time.perf_counter()
        hyps = list(fn())
        seconds = time.perf_counter() - start
        engines[name] = {
            "sentences": len(lines),
            "seconds": round(seconds, 3),
            "sentences_per_s": round(len(lines) / seconds, 2),
            "bleu": score(hyps, refs)["bleu"],
        } | (extra or {})
        print(f"  {run_dir.name}: {name}: {engines[name]['sentences_per_s']} sentences/s, BLEU {engines[name]['bleu']}")

    model = load_model(paths.model).eval()
    tokenizer = Tokenizer(paths.tokenizer)
    greedy32 = DecodeConfig(
        beam=1, batch_size=THROUGHPUT_BATCH, max_len_a=cfg.decode.max_len_a, max_len_b=cfg.decode.max_len_b
    )
    timed(
        "pytorch-eager-fp32",
        lambda: translate(model, tokenizer, lines, greedy32, progress=False),
        {"batch": THROUGHPUT_BATCH},
    )
    for name in ("tflite-fp32", "tflite-dynamic-int8", "tflite-int8"):
        folder = paths.root / "export" / name
        if not (folder / "manifest.json").is_file():
            continue
        for shortlist in (False, True) if read_manifest(folder).shortlist is not None else (False,):
            translator = Translator(folder, num_threads=1, shortlist=shortlist)
            suffix = "+shortlist" if shortlist else ""
            timed(f"{name}{suffix}", lambda t=translator: t.translate(lines, beam=1), {"batch": 1})
    if cfg.model.arch == "transformer":
        from export.to_ctranslate2 import translate_ctranslate2

        vocab = [tokenizer.sp.id_to_piece(i) for i in range(tokenizer.vocab_size)]
        limit = model.cfg.max_positions - 1
        for name, (quantization, use_vmap) in CT2_ENGINES.items():
            folder = ctranslate2_folder(paths.root, quantization, use_vmap)
            if folder is None:
                continue
            translator = ctranslate2_translator(folder)

            def run(t=translator, v=use_vmap) -> list[str]:
                encoded = tokenizer.encode_batch(lines)
                sources = [ids[:limit] + [model.cfg.eos_id] for ids in encoded]
                return translate_ctranslate2(t, tokenizer, vocab, sources, greedy32, model, v)

            timed(name, run, {"batch": THROUGHPUT_BATCH})
    return {"run": relative(run_dir), "sentences": len(lines), "engines": engines}


def record_latency(results: list[dict]) -> None:
    """Put each measured median into RUN/artifacts.json (latency_ms[HOST_TARGET]) so the budget report
    shows it; PyTorch eager goes on a row for model.pt, which the report merges into its own row."""
    from lite.artifacts import ArtifactRow, artifacts_path, read_rows, write_rows

    for r in results:
        run = ROOT / r["run"]
        rows = read_rows(run)
        for engine, e in r["engines"].items():
            if e.get("status") != "ok":
                continue
            name = "pytorch-fp32" if engine == "pytorch-eager-fp32" else engine
            row = next((x for x in rows if x.name == name), None)
            if row is None and name == "pytorch-fp32":
                row = ArtifactRow(name=name, path="model.pt", format="pytorch", precision="fp32")
                rows.append(row)
            if row is not None:
                row.latency_ms = (row.latency_ms or {}) | {HOST_TARGET: round(e["median_ms"], 2)}
        write_rows(run, rows)
        print(f"recorded latency in {artifacts_path(run)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs", nargs="+", type=Path, default=[ROOT / "runs/default", ROOT / "runs/default-transformer"]
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per engine (>= 50 for the protocol)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke check: 2 warm-ups, 5 timed runs, 64 throughput sentences"
    )
    parser.add_argument("--no-throughput", action="store_true", help="only the latency protocol")
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON path (default: benchmarks/results/latency.json; /tmp/latency-quick.json with --quick)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="also write each median into RUN/artifacts.json (latency_ms.host-1thread) for the report",
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
    bandwidth = read_bandwidth(3 if args.quick else 10)
    print(
        f"peak single-core fp32 matmul: {peak['macs_per_s'] / 1e9:.1f} GMAC/s ({peak['best']}); "
        f"read bandwidth {bandwidth['bytes_per_s'] / 1e9:.1f} GB/s",
        flush=True,
    )
    source = pick_source(args.runs)
    print(
        f"source: test line {source['index']}{' (truncated to 30 tokens)' if source['truncated'] else ''}: "
        f"{source['text']}",
        flush=True,
    )
    runs, infos = {}, {}
    for run_dir in args.runs:
        engines, infos[run_dir] = engines_of(run_dir, source)
        runs |= {(run_dir, name): fn for name, fn in engines.items()}
    print(f"{len(runs)} engines, alternated: {args.warmup} warm-up + {args.repeats} timed runs each", flush=True)
    measured = alternate(runs, args.warmup, args.repeats)
    results = [
        finish_run(
            r,
            {name: m for (run, name), m in measured.items() if run == r},
            infos[r],
            peak["macs_per_s"],
            bandwidth["bytes_per_s"],
        )
        for r in args.runs
    ]
    print_table(results)
    throughputs = [] if args.no_throughput else [throughput(r, args.quick) for r in args.runs]
    result = {
        "benchmark": "latency",
        "command": command_line(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"arch": platform.machine(), "cpu": cpu_model(), "cores": os.cpu_count()},
        "protocol": {
            "batch": 1,
            "threads": 1,
            "src_tokens": SRC_LEN,
            "decoder_steps": STEPS,
            "warmup": args.warmup,
            "timed_runs": args.repeats,
            "alternated": "every engine of every run once per round",
            "quick": args.quick,
            "timer": "time.perf_counter",
            "timed": "encode + 30 greedy steps (tokenization excluded)",
        },
        "throughput_protocol": {
            "split": "test (first 64)" if args.quick else "test",
            "threads": 1,
            "batch": {"pytorch": THROUGHPUT_BATCH, "ctranslate2": THROUGHPUT_BATCH, "runtime": 1},
            "decoding": "greedy, the run's max_len_a/b",
            "timed": "text in, text out (tokenization included)",
        },
        "source": source | {"tokens": SRC_LEN},
        "peak": peak,
        "bandwidth": bandwidth,
        "targets": {"speedup_vs_eager_min": TARGET_SPEEDUP, "x_compute_bound_max": TARGET_BOUND},
        "results": results,
        "throughput": throughputs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stamped(result, threads=1), out)
    print(f"wrote {out}")
    if args.record and not args.quick:
        record_latency(results)


def print_table(results: list[dict]) -> None:
    print(
        f"\n{'run':22s} {'engine':28s} {'median':>8s} {'p10':>7s} {'p90':>7s} {'vs eager':>8s} {'MACs':>7s} "
        f"{'x comp':>6s} {'MB read':>7s} {'x traf':>6s} {'agree':>5s}  targets (>=3x eager, <=3x compute)"
    )
    for r in results:
        for name, e in r["engines"].items():
            if e.get("status") != "ok":
                print(f"{Path(r['run']).name:22s} {name:28s} {e.get('status')}")
                continue
            flags = f"{e['target_speedup']} {e['target_bound']}" if "target_speedup" in e else ""
            print(
                f"{Path(r['run']).name:22s} {name:28s} {e['median_ms']:7.2f}ms {e['p10_ms']:7.2f} "
                f"{e['p90_ms']:7.2f} {e['speedup_vs_eager']:7.2f}x {e['computed_macs'] / 1e6:6.1f}M "
                f"{e['x_compute_bound']:5.1f}x {e['weight_bytes']['per_sentence'] / 1e6:7.1f} "
                f"{e['x_traffic_bound']:5.1f}x {e['tokens_agree_with_eager']:2d}/{STEPS}  {flags}"
            )


if __name__ == "__main__":
    main()
