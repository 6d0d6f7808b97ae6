"""`lite tokenizer RUN`, `lite shortlist RUN` and `lite train RUN`: the vocabulary, its shortlist and
the model of a run."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from lite.cli.common import run_parser


def run_tokenizer(args: argparse.Namespace) -> int:
    from lite.data.corpus import load_pairs
    from lite.run import open_run
    from lite.tokenizer import Tokenizer, train_tokenizer

    paths, cfg = open_run(Path(args.run), args.config)
    if paths.tokenizer.is_file() and not args.force:
        print(f"{paths.tokenizer}: exists (vocabulary {Tokenizer(paths.tokenizer).vocab_size}); --force retrains")
        return 0
    pairs, _ = load_pairs(cfg.data, "train")
    model = train_tokenizer(
        [s for p in pairs for s in p], cfg.tokenizer, paths.tokenizer.with_suffix(""), cfg.train.seed, cfg.train.threads
    )
    print(f"{model}: vocabulary {Tokenizer(model).vocab_size} trained on {len(pairs)} pairs")
    return 0


def run_shortlist(args: argparse.Namespace) -> int:
    from lite.data.lexicon import build_run_shortlist
    from lite.run import open_run

    paths, cfg = open_run(Path(args.run), args.config)
    if not paths.tokenizer.is_file():
        from lite.errors import RunFolderError

        raise RunFolderError(f"{paths.tokenizer}: not found; run `lite tokenizer {args.run}` first")
    s = build_run_shortlist(cfg, paths, progress=not args.quiet, force=args.force)
    print(
        f"{'(cached) ' if s.get('cached') else ''}{paths.shortlist}: {s['entries']} entries from "
        f"{s['train_pairs']} pairs; valid: {s['valid_candidates_mean']} candidates per sentence "
        f"(max {s['valid_candidates_max']}) of {s['vocab_size']}, covering "
        f"{s['valid_reference_coverage']:.2%} of the reference tokens"
    )
    return 0


def run_train(args: argparse.Namespace) -> int:
    from lite.run import open_run
    from lite.train import train

    paths, cfg = open_run(Path(args.run), args.config)
    if paths.model.is_file():  # written only when training finished; --resume is for interrupted runs
        print(f"{paths.model}: already trained (delete it, or the run folder, to train again)")
        return 0
    if args.nproc > 1 and "RANK" not in os.environ:  # not yet under torchrun: start it on this machine
        from lite.distributed import launch

        return launch(
            args.nproc,
            [
                "train",
                args.run,
                *(["--resume"] if args.resume else []),
                *(["--quiet"] if args.quiet else []),
                "--device",
                args.device,
            ],
        )
    summary = train(cfg, paths, resume=args.resume, progress=not args.quiet, device=args.device)
    if "rank" in summary:  # ranks other than 0 say nothing: rank 0 prints the summary
        return 0
    print(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "stop_reason",
                    "steps",
                    "wall_seconds",
                    "target_tokens_per_s",
                    "final_valid_loss",
                    "final_valid_ppl",
                    "params",
                    "processes",
                )
            },
            indent=2,
        )
    )
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    tok = run_parser(sub, "tokenizer", "train the joint sentencepiece vocabulary on the training split")
    tok.add_argument("--force", action="store_true", help="retrain even if RUN/tokenizer/spm.model exists")
    tok.set_defaults(func=run_tokenizer)

    sl = run_parser(
        sub,
        "shortlist",
        "learn the vocabulary shortlist (IBM model 1 on the training split; shortlist section of the "
        "config) into RUN/shortlist.npz; exported folders then carry it and decoding can use it "
        "(decode.shortlist, or --shortlist on evaluate and translate)",
    )
    sl.add_argument("--force", action="store_true", help="learn again even if RUN/shortlist.npz is current")
    sl.set_defaults(func=run_shortlist)

    tr = run_parser(sub, "train", "train the model; checkpoints in RUN/checkpoints, final weights in RUN/model.pt")
    tr.add_argument("--resume", action="store_true", help="continue exactly from RUN/checkpoints/last.pt")
    tr.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="N training processes on this machine (DistributedDataParallel via torchrun --standalone; "
        "for several machines run torchrun yourself: see README). train.update_freq batches per step "
        "are split across them, so the effective batch does not change",
    )
    tr.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="cpu (gloo between processes) or cuda (one GPU per process, nccl)",
    )
    tr.set_defaults(func=run_train)
