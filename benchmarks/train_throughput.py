"""Training throughput (target tokens/s) of LSRA and the baseline Transformer at equal MACs.

Real batches from the configs' corpus (token-count batching as in training), forward +
backward + Adam step, after warm-up steps that are not timed. Prints a table and writes
benchmarks/results/train_throughput.json.

    python benchmarks/train_throughput.py [--configs configs/default.yaml configs/default-transformer.yaml]
                                          [--steps 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lite.batching import collate, encode_pairs, make_batches
from lite.config import load_config
from lite.data.corpus import load_pairs
from lite.files import write_json_atomic
from lite.metrics.macs import count_macs
from lite.models.seq2seq import EncoderDecoder, count_parameters
from lite.provenance import command_line, relative, stamped
from lite.tokenizer import Tokenizer, train_tokenizer
from lite.train import batch_loss


def measure(config: Path, steps: int, warmup: int, threads: int, tokenizer: Tokenizer, examples) -> dict:
    cfg = load_config(config)
    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(threads)
    mcfg = replace(cfg.model, vocab_size=tokenizer.vocab_size)
    model = EncoderDecoder(mcfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batches = make_batches(examples, cfg.train.max_tokens, seed=0)
    times, tokens = [], []
    for i in range(warmup + steps):
        batch = collate(examples, batches[i % len(batches)], mcfg.pad_id, mcfg.bos_id)
        start = time.perf_counter()
        opt.zero_grad()
        loss, _ = batch_loss(model, batch, cfg.train.label_smoothing)
        (loss / batch.ntokens).backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
            tokens.append(batch.ntokens)
    return {
        "config": relative(config),
        "arch": mcfg.arch,
        "macs": count_macs(mcfg)["macs"],
        "params": count_parameters(model),
        "params_no_embed": count_parameters(model, False),
        "max_tokens": cfg.train.max_tokens,
        "steps": steps,
        "threads": threads,
        "target_tokens_per_s": sum(tokens) / sum(times),
        "median_step_seconds": statistics.median(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs",
        nargs="+",
        type=Path,
        default=[ROOT / "configs/default.yaml", ROOT / "configs/default-transformer.yaml"],
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/train_throughput.json")
    args = parser.parse_args()

    first = load_config(args.configs[0])
    pairs, _ = load_pairs(first.data, "train")
    with tempfile.TemporaryDirectory() as tmp:  # one tokenizer for every model, so batches are identical
        sample = [s for p in pairs[:20000] for s in p]
        tokenizer = Tokenizer(train_tokenizer(sample, first.tokenizer, Path(tmp) / "spm"))
        examples, _ = encode_pairs(pairs[:20000], tokenizer, first.model.max_positions)
    rows = [measure(c, args.steps, args.warmup, args.threads, tokenizer, examples) for c in args.configs]
    print(f"{'config':45s} {'arch':12s} {'MACs':>8s} {'params':>9s} {'tok/s':>8s}")
    for r in rows:
        print(
            f"{r['config'][-45:]:45s} {r['arch']:12s} {r['macs'] / 1e6:7.1f}M {r['params'] / 1e6:8.2f}M "
            f"{r['target_tokens_per_s']:8.0f}"
        )
    result = {
        "benchmark": "train_throughput",
        "command": command_line(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "results": rows,
    }
    write_json_atomic(stamped(result, threads=args.threads), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
