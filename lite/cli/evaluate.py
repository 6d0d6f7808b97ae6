"""`lite evaluate RUN`: BLEU/chrF of the model, of exported folders, or of the TFLite folders on an ARM target."""

from __future__ import annotations

import argparse
from pathlib import Path

from lite.cli.common import run_parser


def run_evaluate(args: argparse.Namespace) -> int:
    from lite.run import open_run

    paths, cfg = open_run(Path(args.run), args.config)
    if args.target:
        return _on_target(args, cfg, paths)
    if args.artifact:
        return _artifacts(args, cfg, paths)
    from eval.evaluate import evaluate

    record = evaluate(
        cfg,
        paths,
        args.split,
        args.beam,
        args.lenpen,
        progress=not args.quiet,
        force=args.force,
        shortlist=args.shortlist,
    )
    print(
        f"{'(cached) ' if record.get('cached') else ''}{record['split']} {record['decoding']}: "
        f"BLEU {record['bleu']} chrF {record['chrf']} "
        f"(BP {record['brevity_penalty']}, {record['sentences']} sentences) {record['bleu_signature']}"
    )
    return 0


def _artifacts(args: argparse.Namespace, cfg, paths) -> int:
    """--artifact NAME...: exported folders scored through the on-device runtime."""
    from eval.evaluate import evaluate_artifact
    from lite.artifacts import read_rows

    names = args.artifact
    if names == ["all"]:
        names = [r.name for r in read_rows(paths.root) if r.format != "pytorch"]
    for name in names:
        record = evaluate_artifact(
            cfg, paths, name, args.split, args.beam, args.lenpen, progress=not args.quiet, shortlist=args.shortlist
        )
        print(
            f"{'(cached) ' if record.get('cached') else ''}{name} {record['split']} {record['decoding']}: "
            f"BLEU {record['bleu']} chrF {record['chrf']} ({record['sentences']} sentences)"
        )
    return 0


def _on_target(args: argparse.Namespace, cfg, paths) -> int:
    """--target T: the TFLite folders on an emulated core or a board, one summary line per folder."""
    from eval.targets.evaluate import evaluate_on_target
    from eval.targets.registry import parse_target

    target = parse_target(args.target, args.remote_python, args.ssh_option)
    records = evaluate_on_target(
        cfg,
        paths,
        target,
        args.artifact,
        args.split,
        args.limit,
        not args.no_reference,
        args.repeats,
        progress=not args.quiet,
    )
    for r in records:
        print(_target_line(r, target.name))
    return 0


def _target_line(r: dict, target: str) -> str:
    t, line = r["translation"], f"{'(cached) ' if r.get('cached') else ''}{target} {r['artifact']}: "
    line += (
        f"BLEU {t['bleu']} on target vs {t['host_bleu']} on host ({t['sentences']} sentences, "
        f"{t['agreement']:.1%} identical lines)"
    )
    if "instructions" in r:
        i = r["instructions"]
        line += (
            f"; {i['sentence'] / 1e6:.1f}M instructions/sentence (encoder {i['encoder'] / 1e6:.1f}M"
            f" + {i['steps']} steps x {i['step_mean'] / 1e6:.2f}M)"
        )
    if "reference" in r:
        ref = r["reference"]
        same = "bit-identical" if ref["bit_identical"] else f"differ by {ref['max_abs_diff']:.2g}"
        line += f"; reference kernels {same}"
    if "latency" in r:
        line += f"; latency {r['latency']['median_ms']:.1f} ms"
    return line


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ev = run_parser(sub, "evaluate", "translate a split with RUN/model.pt and score BLEU/chrF into RUN/results.json")
    ev.add_argument("--split", default="test", choices=["test", "valid"])
    ev.add_argument("--beam", type=int, help="beam size (default: decode.beam of the config; 1 = greedy)")
    ev.add_argument("--lenpen", type=float, help="length penalty exponent (default: decode.lenpen)")
    ev.add_argument(
        "--force", action="store_true", help="decode again even if results.json has this decoding of this model"
    )
    ev.add_argument(
        "--shortlist",
        action=argparse.BooleanOptionalAction,
        help="score only each sentence's vocabulary shortlist candidates (RUN/shortlist.npz, `lite shortlist`; "
        "default: decode.shortlist); recorded as <decoding>-shortlist",
    )
    ev.add_argument(
        "--artifact",
        action="append",
        metavar="NAME",
        help="score an exported folder of RUN/artifacts.json (e.g. tflite-int8; 'all' for every one) "
        "through the on-device runtime instead of model.pt; repeatable",
    )
    ev.add_argument(
        "--target",
        metavar="T",
        help="run the TFLite artifacts on qemu:<core> (cortex-a53, cortex-a72, cortex-a76, neoverse-n1; "
        "emulated, with instruction counts) or ssh://user@host[:port] (a board, with latency; key "
        "authentication, and the board's host key must already be in your known_hosts: an unknown or "
        "changed key is refused, unless you pass e.g. --ssh-option StrictHostKeyChecking=accept-new; "
        "every ssh call has a timeout); results in RUN/targets/ and artifacts.json",
    )
    ev.add_argument(
        "--limit", type=int, help="with --target: only the first N sentences of the split (stated in the record)"
    )
    ev.add_argument(
        "--no-reference",
        action="store_true",
        help="with --target: skip the reference-kernel bit-identity check (slow under emulation)",
    )
    ev.add_argument("--repeats", type=int, default=50, help="with ssh:// targets: timed latency runs (default 50)")
    ev.add_argument(
        "--remote-python", default="python3", help="with ssh:// targets: the board's Python (default python3)"
    )
    ev.add_argument(
        "--ssh-option",
        action="append",
        metavar="KEY=VALUE",
        help="with ssh:// targets: an OpenSSH -o option, e.g. IdentityFile=~/.ssh/board or "
        "UserKnownHostsFile=FILE; repeatable; it overrides lite's defaults (BatchMode, "
        "StrictHostKeyChecking=yes, keep-alives)",
    )
    ev.set_defaults(func=run_evaluate)
