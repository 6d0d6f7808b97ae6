"""Training throughput with 1 and 2 processes (`lite train --nproc N`, DDP over gloo) on this machine.

The default config (LSRA, docs-en-de, its tokenizer from runs/default or a fresh one), update_freq 2
(the same effective batch for every N), `--steps` optimizer steps, no validation, with the machine's
cores split evenly between the processes (threads = cores / N). Throughput = target tokens of all
processes / training-loop wall time, as `train.json` reports it (start-up and final model selection
excluded). Prints a table and writes benchmarks/results/ddp_throughput.json.

    python benchmarks/ddp_throughput.py [--nprocs 1 2] [--steps 40]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lite.files import write_json_atomic
from lite.provenance import command_line, stamped


def run(nproc: int, steps: int, threads: int, workdir: Path, tokenizer: Path) -> dict:
    cfg = yaml.safe_load((ROOT / "configs/default.yaml").read_text())
    cfg["train"] |= {
        "update_freq": 2,
        "max_steps": steps,
        "validate_every": 10**6,
        "checkpoint_every": 10**6,
        "average_last": 1,
        "threads": threads,
        "max_minutes": None,
    }
    run_dir = workdir / f"nproc{nproc}"
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "tokenizer").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    shutil.copy(tokenizer, run_dir / "tokenizer" / "spm.model")
    cmd = [sys.executable, "-m", "lite", "train", str(run_dir), "--quiet", "--nproc", str(nproc)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"nproc {nproc}: {done.stderr.strip().splitlines()[-1]}")
    summary = json.loads((run_dir / "train.json").read_text())
    return {
        "processes": nproc,
        "threads_per_process": threads,
        "steps": summary["steps"],
        "target_tokens": summary["target_tokens"],
        "wall_seconds": round(summary["wall_seconds"], 1),
        "target_tokens_per_s": round(summary["target_tokens_per_s"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=ROOT / "runs/default/tokenizer/spm.model",
        help="the run tokenizer to use (default: runs/default's)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ddp_throughput.json")
    args = parser.parse_args()
    if not args.tokenizer.is_file():
        raise SystemExit(f"{args.tokenizer}: not found (run `make train` first, or pass --tokenizer)")
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.nprocs:
            rows.append(run(n, args.steps, max(1, cores // n), Path(tmp), args.tokenizer))
            r = rows[-1]
            print(
                f"{n} process(es) x {r['threads_per_process']} thread(s): "
                f"{r['target_tokens_per_s']:.0f} target tokens/s "
                f"({r['target_tokens']} tokens in {r['wall_seconds']} s)",
                flush=True,
            )
    result = {
        "benchmark": "ddp_throughput",
        "command": command_line(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"arch": platform.machine(), "cores": cores},
        "config": "configs/default.yaml",
        "update_freq": 2,
        "backend": "gloo",
        "results": rows,
    }
    write_json_atomic(stamped(result), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
