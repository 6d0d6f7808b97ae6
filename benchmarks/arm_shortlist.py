"""What the vocabulary shortlist saves on ARM: guest instructions per protocol sentence and per decoder step,
full vocabulary against the shortlist's candidates, on every emulated core.

For each core and TFLite folder of RUN that carries a shortlist: `lite evaluate RUN --target qemu:<core>
--artifact NAME --limit N --no-reference`, which counts the latency protocol's instructions (30-token test
source, encoder + 30 greedy steps, the warm run of two) once over the whole vocabulary and once over the
sentence's candidates (computing them counts in the encoder part), then reads RUN/targets/<core>/<NAME>.json.

    python benchmarks/arm_shortlist.py [--run runs/default] [--cores cortex-a53,cortex-a72,cortex-a76,neoverse-n1]
                                       [--artifacts tflite-fp32,tflite-dynamic-int8] [--limit 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lite.files import write_json_atomic  # noqa: E402 - after the path insert
from lite.provenance import command_line, relative, stamped

CORES = "cortex-a53,cortex-a72,cortex-a76,neoverse-n1"
PARTS = ("sentence", "encoder", "step_mean", "tokens_equal_host")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs/default")
    parser.add_argument("--cores", default=CORES)
    parser.add_argument("--artifacts", default="tflite-fp32,tflite-dynamic-int8")
    parser.add_argument("--limit", type=int, default=5, help="test sentences translated on the target (BLEU check)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/arm_shortlist.json")
    args = parser.parse_args()
    names = args.artifacts.split(",")
    rows = []
    for core in args.cores.split(","):
        artifacts = [a for name in names for a in ("--artifact", name)]
        cmd = [sys.executable, "-m", "lite", "evaluate", str(args.run), "--target", f"qemu:{core}", *artifacts]
        done = subprocess.run([*cmd, "--limit", str(args.limit), "--no-reference", "--quiet"], cwd=ROOT)
        if done.returncode:
            raise SystemExit(f"{core}: lite evaluate --target failed ({done.returncode})")
        for name in names:
            record = json.loads((args.run / "targets" / f"qemu-{core}" / f"{name}.json").read_text())
            full, short = record["instructions"], record.get("instructions_shortlist")
            if short is None:
                raise SystemExit(f"{name}: no shortlisted count (the folder has no shortlist?)")
            row = {
                "core": core,
                "artifact": name,
                "full": {k: full[k] for k in PARTS},
                "shortlist": {k: short[k] for k in PARTS},
                "step_ratio": round(short["step_mean"] / full["step_mean"], 3),
                "sentence_ratio": round(short["sentence"] / full["sentence"], 3),
            }
            rows.append(row)
            print(
                f"{core} {name}: {full['sentence'] / 1e6:.1f}M -> {short['sentence'] / 1e6:.1f}M instructions per "
                f"sentence ({row['sentence_ratio']:.2f}x); per step {full['step_mean'] / 1e6:.2f}M -> "
                f"{short['step_mean'] / 1e6:.2f}M ({row['step_ratio']:.2f}x)",
                flush=True,
            )
    result = {
        "benchmark": "arm_shortlist",
        "run": relative(args.run),
        "command": command_line(),
        "protocol": "30-token test source, encoder + 30 greedy steps, warm run of 2, qemu-user instruction counts",
        "results": rows,
    }
    write_json_atomic(stamped(result, threads=1), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
