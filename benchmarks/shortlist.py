"""The vocabulary shortlist on a trained run: what it costs in BLEU and what it saves in time.

BLEU (whole test split, greedy): the PyTorch model with and without the shortlist (`lite evaluate
RUN --beam 1 [--shortlist]`) and each exported folder through the runtime (`lite evaluate RUN
--artifact NAME --beam 1 [--shortlist]`); both cached in the run's results.json / artifacts.json.

Time: the latency protocol of benchmarks/latency.py (batch 1, ONE thread, one real 30-token test
source, the encoder once + exactly 30 greedy steps, eos ignored), full against shortlisted decoding
of the same folder, alternated run by run, median of the timed runs. The shortlisted run includes
computing the sentence's candidates. The per-step figures time 30 steps on their own (encoder
outside the timer).

    python benchmarks/shortlist.py [--run runs/default] [--artifacts tflite-fp32,tflite-dynamic-int8]
                                   [--repeats 50] [--out benchmarks/results/shortlist.json]
Needs RUN trained, `lite shortlist RUN` and `lite export RUN` (the folders then carry the shortlist).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy/torch start pools
    os.environ[_var] = "1"

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.latency import SRC_LEN, STEPS, pick_source  # noqa: E402 - the same sentence and protocol
from eval.evaluate import evaluate, evaluate_artifact
from export.on_device import alternate, run_protocol
from export.runtime import Translator
from lite.data.corpus import load_pairs
from lite.files import read_json, write_json_atomic
from lite.run import open_run
from lite.tokenizer import Tokenizer


def candidate_stats(run: Path, cfg, translator: Translator) -> dict:
    """Candidates per test sentence, and the projection MACs per step they imply."""
    tokenizer = Tokenizer(run / "tokenizer" / "spm.model")
    pairs, _ = load_pairs(cfg.data, "test")
    sizes = np.array(
        [len(translator.candidates(ids + [cfg.model.eos_id])) for ids in tokenizer.encode_batch([s for s, _ in pairs])]
    )
    return {
        "sentences": int(sizes.size),
        "mean": round(float(sizes.mean()), 1),
        "median": float(np.median(sizes)),
        "max": int(sizes.max()),
        "vocab_size": translator.manifest.vocab_size,
        "projection_macs_per_step": {
            "full": translator.manifest.vocab_size * translator.manifest.model_config["embed_dim"],
            "shortlist_mean": round(float(sizes.mean()) * translator.manifest.model_config["embed_dim"]),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs/default")
    parser.add_argument("--artifacts", default="tflite-fp32,tflite-dynamic-int8")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/shortlist.json")
    args = parser.parse_args()
    from lite.provenance import stamped

    paths, cfg = open_run(args.run, None)
    if not paths.shortlist.is_file():
        raise SystemExit(f"{paths.shortlist}: missing; run `lite shortlist {args.run}` first")
    bleu = {}
    for shortlist in (False, True):
        record = evaluate(cfg, paths, "test", beam=1, progress=False, shortlist=shortlist)
        bleu[f"pytorch{'-shortlist' if shortlist else ''}"] = record["bleu"]
        print(f"pytorch greedy{' shortlist' if shortlist else ''}: BLEU {record['bleu']}", flush=True)
    source = pick_source([args.run])
    pieces = Tokenizer(paths.tokenizer).encode(source["text"])
    ids = pieces[: SRC_LEN - 1] + [cfg.model.eos_id]
    artifacts = {}
    for name in args.artifacts.split(","):
        row = {}
        for shortlist in (False, True):
            record = evaluate_artifact(cfg, paths, name, "test", beam=1, progress=False, shortlist=shortlist, threads=1)
            row[f"bleu{'_shortlist' if shortlist else ''}"] = record["bleu"]
        translator = Translator(paths.root / "export" / name, num_threads=1, shortlist=True)
        if translator.shortlist is None:
            raise SystemExit(f"{name}: exported without the shortlist; export the run again")
        row["candidates"] = candidate_stats(paths.root, cfg, translator)
        memory = translator.encode(ids)
        sentence = alternate(
            {
                "full": lambda: run_protocol(translator, ids, STEPS),
                "shortlist": lambda: run_protocol(translator, ids, STEPS, shortlist=True),
            },
            args.warmup,
            args.repeats,
        )
        steps = alternate(  # the 30 steps on their own, from a ready encoder output
            {
                "full": lambda: run_protocol(translator, ids, STEPS, memory=memory),
                "shortlist": lambda: run_protocol(translator, ids, STEPS, shortlist=True, memory=memory),
            },
            args.warmup,
            args.repeats,
        )
        row["source_candidates"] = len(translator.candidates(ids))
        row["bytes"] = translator.manifest.graph_bytes()
        row["hidden_steps"] = translator.backend.hidden
        row["sentence"] = sentence
        row["step_ms"] = {k: v["median_ms"] / STEPS for k, v in steps.items()}
        row["speedup_sentence"] = round(sentence["full"]["median_ms"] / sentence["shortlist"]["median_ms"], 3)
        row["speedup_step"] = round(row["step_ms"]["full"] / row["step_ms"]["shortlist"], 3)
        row["same_tokens"] = sentence["full"]["tokens"] == sentence["shortlist"]["tokens"]
        artifacts[name] = row
        print(
            f"{name}: BLEU {row['bleu']} -> {row['bleu_shortlist']} with the shortlist; per sentence "
            f"{sentence['full']['median_ms']:.2f} -> {sentence['shortlist']['median_ms']:.2f} ms "
            f"({row['speedup_sentence']:.2f}x), per step {row['step_ms']['full']:.3f} -> "
            f"{row['step_ms']['shortlist']:.3f} ms; candidates mean {row['candidates']['mean']} "
            f"(max {row['candidates']['max']}) of {row['candidates']['vocab_size']}",
            flush=True,
        )
    summary = read_json(paths.root / "shortlist.json", {})
    result = {
        "benchmark": "shortlist",
        "run": str(args.run.relative_to(ROOT)) if args.run.is_relative_to(ROOT) else str(args.run),
        "shortlist": {k: summary.get(k) for k in ("settings", "entries", "train_pairs", "seconds", "sha256")},
        "protocol": {
            "batch": 1,
            "threads": 1,
            "src_tokens": SRC_LEN,
            "decoder_steps": STEPS,
            "warmup": args.warmup,
            "timed_runs": args.repeats,
            "alternated": True,
        },
        "source": source,
        "bleu_test_greedy": bleu,
        "artifacts": artifacts,
    }
    write_json_atomic(stamped(result, config=cfg, seed=cfg.train.seed, threads=1), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
