"""ListOps (LRA rules) with the LSRA classifier: dense vs sparse attention heads on the same training budget
(a count of examples, so the same updates on any machine; `--minutes` is only an optional cap).

    python benchmarks/listops.py [--preset lra|short] [--examples N] [--jobs 2] [--variants dense ...]

Generates ListOps once (lite/data/listops.py: 4000 train / 500 test expressions of 500-2000 tokens,
cached under data/listops/), then trains every variant on the same examples in the same batches
(one epoch by default; one thread each, `--jobs` variants at a time), binarises the learned patterns
and scores test accuracy. The CPU minutes each variant took are reported, and MACs per example are
counted by torch's flop counter over the kernels that run. Variants:

  dense              2 LSRA layers, every head dense
  local+global       the same 2 layers, heads see a window of 128 tokens (short: 16) + the <cls> token (global)
  local+global-4L    4 such layers: about the dense model's MACs (the equal-MAC comparison)
  local+global+SAR   local+global trained with ERNIE-Sparse's SAR towards the dense topology
  dam                SparseBERT's learned block mask (64-token blocks; short: 8), binarised after training
  degree             Breaking BERT's learned band radius per head (starts at 64; short: 8), binarised
  dam-p0.01, -p1     the same with sparsity penalty 0.01 / 1 instead of 0.1 (on request: --variants)
  degree-p0.01, -p1

Writes benchmarks/results/listops.json and prints a table. LRA reports 36.4% for a dense Transformer
trained far longer (5,000 steps of 32 sequences, 160,000 examples, on accelerators).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.listops import ClassifierTraining, train_and_score
from lite.config import ModelConfig
from lite.data.corpus import data_root
from lite.data.listops import NUM_CLASSES, VOCAB, ListOpsSpec, build_listops, read_split
from lite.files import read_json, write_json_atomic
from lite.provenance import stamped
from lite.sparse.patterns import HeadPattern

RESULTS = ROOT / "benchmarks" / "results"
BASE = ModelConfig(
    arch="lsra",
    embed_dim=64,
    ffn_dim=128,
    encoder_layers=2,
    decoder_layers=0,
    attention_heads=2,
    encoder_kernels=[7, 15],
    decoder_kernels=[],
    dropout=0.1,
    max_positions=2048,
    vocab_size=len(VOCAB),
    pad_id=0,
)
# preset -> (data, local window, DAM block, default training examples). "lra" is the task as LRA
# defines it; "short" is a deviation (expressions of 50-150 tokens) that this CPU budget can learn.
PRESETS = {
    "lra": (ListOpsSpec(), 128, 64, 4000),
    "short": (ListOpsSpec(min_len=50, max_len=150, train=8000, test=500), 16, 8, 40000),
}


def variants(preset: str) -> dict[str, tuple[ModelConfig, dict]]:
    _, window, block, _ = PRESETS[preset]
    local = HeadPattern(kind="local", window=window, global_tokens=[0])
    table = {
        "dense": (BASE, {}),
        "local+global": (replace(BASE, encoder_patterns=[[local]]), {}),
        "local+global-4L": (
            replace(BASE, encoder_layers=4, encoder_kernels=[7, 15, 7, 15], encoder_patterns=[[local]]),
            {},
        ),
        "local+global+SAR": (replace(BASE, encoder_patterns=[[local]]), {"sar_weight": 0.1}),
    }
    for penalty, suffix in ((0.1, ""), (0.01, "-p0.01"), (1.0, "-p1")):  # the sparsity/accuracy trade-off
        table[f"dam{suffix}"] = (
            replace(BASE, encoder_patterns=[[HeadPattern(kind="dam", block=block, penalty=penalty)]]),
            {},
        )
        table[f"degree{suffix}"] = (
            replace(
                BASE, encoder_patterns=[[HeadPattern(kind="degree", window=window, penalty=penalty, temperature=1.0)]]
            ),
            {},
        )
    return table


def run_variant(name: str, preset: str, data: Path, examples: int, minutes: float | None) -> tuple[str, dict]:
    cfg, training = variants(preset)[name]
    result = train_and_score(
        cfg,
        read_split(data / "train.tsv"),
        read_split(data / "test.tsv"),
        ClassifierTraining(examples=examples, minutes=minutes, **training),
        NUM_CLASSES,
        progress=False,
        label=name,
    )
    print(
        f"{name}: accuracy {result['test_accuracy']:.3f}, {result['macs_per_example'] / 1e6:.0f}M MACs, "
        f"{result['steps']} steps, {result['train_cpu_minutes']:.1f} CPU minutes",
        flush=True,
    )
    return name, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="lra",
        help="lra: 500-2000 tokens as LRA; short: 50-150 tokens, window 16 (a deviation)",
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=None,
        help="training examples per variant (default: lra 4000 = one epoch, short 40000 = five)",
    )
    parser.add_argument("--minutes", type=float, default=None, help="optional wall-clock cap per variant")
    parser.add_argument("--jobs", type=int, default=2, help="variants trained at once (one thread each)")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(variants("lra")),
        default=["dense", "local+global", "local+global-4L", "local+global+SAR", "dam", "degree"],
        help="default: all but the penalty sweep (dam-p0.01, dam-p1, degree-p0.01, degree-p1)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/listops[-short].json")
    parser.add_argument("--force", action="store_true", help="rerun variants already saved in --out")
    args = parser.parse_args()
    spec, _, _, default_examples = PRESETS[args.preset]
    examples = args.examples or default_examples
    out = args.out or RESULTS / ("listops.json" if args.preset == "lra" else f"listops-{args.preset}.json")
    budget = {"examples_per_variant": examples, "minutes_cap": args.minutes, "threads_per_variant": 1}
    # resumable: results are saved after every variant; a rerun with the same preset and budget keeps them
    saved = read_json(out, default={})
    same = (saved.get("preset"), saved.get("budget")) == (args.preset, budget)
    if saved and not same:
        print(f"{out}: its preset or budget differs from this run's; its results are replaced")
    results = saved.get("results", {}) if same else {}
    todo = [v for v in args.variants if args.force or v not in results]
    if len(todo) < len(args.variants):
        print(f"{out}: keeping {', '.join(v for v in args.variants if v not in todo)} (--force reruns them)")
    data = build_listops(data_root() / ("listops" if args.preset == "lra" else f"listops-{args.preset}"), spec)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        jobs = [pool.submit(run_variant, v, args.preset, data, examples, args.minutes) for v in todo]
        for job in as_completed(jobs):
            name, result = job.result()
            results[name] = result
            models = {
                name: {
                    "encoder_layers": cfg.encoder_layers,
                    "embed_dim": cfg.embed_dim,
                    "patterns": [[asdict(p) for p in row] for row in cfg.encoder_patterns or []],
                    "training": training,
                }
                for name, (cfg, training) in variants(args.preset).items()
                if name in results
            }
            write_json_atomic(
                stamped(
                    {
                        "command": "python benchmarks/listops.py " + " ".join(sys.argv[1:]),
                        "data": asdict(spec),
                        "preset": args.preset,
                        "budget": budget,
                        "models": models,
                        "results": results,
                    }
                ),
                out,
            )
    print(f"\n{'variant':18} {'accuracy':>9} {'MACs/example':>13} {'kept share':>11} {'steps':>6} {'CPU min':>8}")
    for name, r in results.items():
        share = f"{r['mean_kept_share']:.3f}" if "mean_kept_share" in r else "1"
        print(
            f"{name:18} {r['test_accuracy']:>9.3f} {r['macs_per_example'] / 1e6:>12.0f}M {share:>11} "
            f"{r['steps']:>6} {r['train_cpu_minutes']:>8.1f}"
        )
    print(f"saved {out}")


if __name__ == "__main__":
    main()
