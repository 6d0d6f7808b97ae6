"""Lite Transformer's compression chain on our data, measured on the exported artifacts.

    python benchmarks/compression.py [--transformer runs/default-transformer] [--lsra runs/default]
                                     [--compressed runs/default/compressed/default]

The paper: Transformer 176 MB -> Lite Transformer 69.2 MB -> 8-bit 17.3 MB -> + fine-grained pruning
9.7 MB, 18.2x smaller at -0.1 BLEU. Ours, one row per stage:
    baseline Transformer fp32   RUN_T/export/tflite-fp32
    LSRA fp32                   RUN_L/export/tflite-fp32
    LSRA + int8                 RUN_L/export/tflite-int8
    LSRA + int8 + pruning       RUN_C/export/tflite-int8 (structured + fine-grained, xz-packed)
each with the bytes of its graph files on disk, those bytes xz-packed (what the same packing would give
every row: the fair comparison for the last one), parameters, MACs (30+30 tokens) and test BLEU decoded
through the on-device runtime (greedy, from RUN/artifacts.json: `lite evaluate RUN --artifact all`).
Writes benchmarks/results/compression.json and prints a table. Reads measurements only: produce them
with `make compress` (CONFIG=configs/default.yaml and configs/default-transformer.yaml).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.manifest import read_manifest
from export.packing import pack_bytes, read_graph
from lite.artifacts import artifacts_path, read_rows
from lite.checkpoint import load_model
from lite.files import read_json, write_json_atomic
from lite.metrics.macs import count_macs
from lite.models.seq2seq import count_parameters
from lite.provenance import relative, stamped

RESULTS = ROOT / "benchmarks" / "results" / "compression.json"


def _row(stage: str, run: Path, artifact: str) -> dict:
    row = next((r for r in read_rows(run) if r.name == artifact), None)
    if row is None:
        raise SystemExit(
            f"{artifacts_path(run)}: no {artifact} row (run `lite export {run}` and "
            f"`lite evaluate {run} --artifact all --beam 1`, or `make compress`)"
        )
    bleu = (row.bleu or {}).get("test/greedy")
    if not bleu:
        raise SystemExit(
            f"{artifacts_path(run)}: {artifact} has no test BLEU (run `lite evaluate {run} "
            f"--artifact {artifact} --beam 1`)"
        )
    folder = run / row.path
    manifest = read_manifest(folder)
    graphs = [folder / name for name in manifest.graphs.values()]
    on_disk = sum(p.stat().st_size for p in graphs)
    unpacked = [read_graph(p) for p in graphs]
    model = load_model(run / "model.pt")
    return {
        "stage": stage,
        "run": relative(run),
        "artifact": artifact,
        "bytes_on_disk": on_disk,
        "bytes_unpacked": sum(len(b) for b in unpacked),
        "bytes_xz": sum(len(pack_bytes(b)) for b in unpacked),
        "params": count_parameters(model),
        "params_no_embed": count_parameters(model, False),
        "macs": count_macs(model.cfg)["macs"],
        "bleu": bleu["bleu"],
        "chrf": bleu.get("chrf"),
        "pack": manifest.pack or "none",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transformer", type=Path, default=ROOT / "runs/default-transformer")
    parser.add_argument("--lsra", type=Path, default=ROOT / "runs/default")
    parser.add_argument("--compressed", type=Path, default=None, help="default: LSRA/compressed/default")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    compressed = args.compressed or args.lsra / "compressed" / "default"
    chain = [
        _row("Transformer fp32", args.transformer, "tflite-fp32"),
        _row("LSRA fp32", args.lsra, "tflite-fp32"),
        _row("LSRA + int8", args.lsra, "tflite-int8"),
        _row("LSRA + int8 + pruning", compressed, "tflite-int8"),
    ]
    base, lsra = chain[0], chain[1]
    for row in chain:
        row["x_smaller"] = round(base["bytes_on_disk"] / row["bytes_on_disk"], 2)
        row["x_smaller_xz_both"] = round(base["bytes_xz"] / row["bytes_xz"], 2)
        row["bleu_vs_lsra"] = round(row["bleu"] - lsra["bleu"], 2)
    final = chain[-1]
    result = {
        "protocol": "bytes of the exported graph files on disk (model folders of `lite export`); xz = the same "
        "bytes packed with export/packing.py; BLEU on the whole test split, greedy, through "
        "export/runtime.py; MACs at 30+30 tokens (paper convention)",
        "command": "python benchmarks/compression.py",
        "chain": chain,
        "target": {"x_smaller": 18.2, "max_bleu_loss_vs_lsra": 0.3},
        "met": {"x_smaller": final["x_smaller"] >= 18.2, "bleu": -final["bleu_vs_lsra"] <= 0.3},
        "compress_record": read_json(compressed / "compress.json", {}).get("steps"),
    }
    write_json_atomic(stamped(result), args.out)
    print(
        f"{'stage':24} {'on disk':>10} {'xz':>10} {'params':>10} {'MACs':>12} {'BLEU':>6} "
        f"{'x smaller':>9} {'(xz both)':>9}"
    )
    for r in chain:
        print(
            f"{r['stage']:24} {r['bytes_on_disk'] / 1e6:9.2f}M {r['bytes_xz'] / 1e6:9.2f}M {r['params']:>10,} "
            f"{r['macs']:>12,} {r['bleu']:6.2f} {r['x_smaller']:9.1f} {r['x_smaller_xz_both']:9.1f}"
        )
    print(
        f"target 18.2x smaller at <= 0.3 BLEU below LSRA fp32: {final['x_smaller']}x, "
        f"{final['bleu_vs_lsra']:+.2f} BLEU -> {'met' if all(result['met'].values()) else 'NOT met'}"
    )
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
