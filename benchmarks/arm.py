"""The ARM matrix: every emulated core x every exported TFLite precision of a run (`make bench-arm`).

Per (core, artifact), through `lite evaluate RUN --target qemu:<core>` (eval/targets/evaluate.py):
aarch64 instructions of the protocol sentence (30-token docs-en-de test source: encoder + 30 greedy
decoder steps, after one warm-up run, one thread, XNNPACK as shipped), greedy BLEU from the target's
own outputs on the first --limit test sentences against the host runtime's BLEU on the same sentences,
the share of identical output lines, reference-kernel bit-identity, and the wall time the emulated
evaluation took. Instruction counts are a property of the emulated core model and the code it runs;
wall time under emulation is NOT the core's speed and is reported only as the cost of this benchmark.

    python benchmarks/arm.py [--run runs/default] [--cores cortex-a53,...] [--limit 200]
                             [--out benchmarks/results/arm.json]
Resumes: records already made from the same folders with the same settings are reused.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.readme import arm_table
from eval.targets.cores import CORES
from eval.targets.evaluate import evaluate_on_target
from eval.targets.qemu import QemuTarget
from lite.files import write_json_atomic, write_text_atomic
from lite.provenance import command_line, relative, stamped
from lite.run import open_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs/default")
    parser.add_argument("--cores", default=",".join(CORES), help=f"comma-separated (default: {','.join(CORES)})")
    parser.add_argument("--artifacts", help="comma-separated artifact names (default: every TFLite folder of the run)")
    parser.add_argument("--limit", type=int, default=100, help="test sentences translated on each target (default 100)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/arm.json")
    args = parser.parse_args()
    paths, cfg = open_run(args.run, None)
    names = args.artifacts.split(",") if args.artifacts else None
    rows = []
    started = time.monotonic()
    for core in args.cores.split(","):
        target = QemuTarget(core)
        for record in evaluate_on_target(cfg, paths, target, names, "test", args.limit, progress=True):
            rows.append(record)
            i = record["instructions"]
            print(
                f"{core:12s} {record['artifact']:20s} {i['sentence'] / 1e6:8.1f}M instructions/sentence  "
                f"BLEU {record['translation']['bleu']:.2f} (host {record['translation']['host_bleu']:.2f})",
                flush=True,
            )
    text = arm_table({"results": rows})
    print("\n" + text)
    qemu = subprocess.run(["qemu-aarch64", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    result = {
        "benchmark": "arm",
        "command": command_line(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"arch": platform.machine(), "python": platform.python_version()},
        "qemu": qemu,
        "run": relative(args.run),
        "limit": args.limit,
        "wall_seconds": round(time.monotonic() - started, 1),
        "protocol": {
            "src_tokens": 30,
            "decoder_steps": 30,
            "threads": 1,
            "warmup_runs": 1,
            "counted": "aarch64 guest instructions, TCG plugin eval/targets/insn_count.c",
        },
        "results": [
            {k: v for k, v in r.items() if k != "settings"} | {"sentences": r["settings"]["sentences"]} for r in rows
        ],
    }
    write_json_atomic(stamped(result, threads=1), args.out)
    write_text_atomic(text, args.out.with_suffix(".md"))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
