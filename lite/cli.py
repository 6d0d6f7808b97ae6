"""`lite`: one command, one subcommand per pipeline stage. Stages talk through the run folder.

lite data build docs-en-de            build a real corpus (cached)
lite tokenizer RUN --config C         train the joint sentencepiece model
lite train RUN [--resume]             train the model of the run's config
lite train RUN --nproc 2              ... on 2 processes (DDP; or torchrun ... -m lite train RUN)
lite evaluate RUN [--beam 4]          translate the test split, score BLEU
lite evaluate RUN --target qemu:cortex-a72 | ssh://user@host   the TFLite folders on an ARM target
lite translate RUN [TEXT | -]         translate text with the trained model (PyTorch)
lite export RUN [--format tflite,onnx]  model folders for devices, each behind a parity gate
lite compress RUN --recipe R          prune / distil / quantize by a recipe, export and measure
lite translate --model DIR [TEXT | -] the on-device translator on an exported folder (no torch)
lite macs --config C [--json]         analytic MACs and parameters (paper convention)
lite fit --family lsra --macs 100M    the widest config under a MAC budget, as YAML
lite report RUN [RUN...]              MAC/BLEU budget report from saved measurements
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EPILOG = "Every RUN stage reads RUN/config.yaml; pass --config FILE the first time to put it there."


def _cmd_data(args: argparse.Namespace) -> int:
    from lite.data.corpus import data_root
    from lite.data.libreoffice import build_docs_corpus

    out = build_docs_corpus(args.name, Path(args.out) if args.out else data_root() / args.name, progress=not args.quiet)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    print(f"{out}: " + ", ".join(f"{k} {v}" for k, v in manifest.get("counts", {}).items()))
    return 0


def _cmd_tokenizer(args: argparse.Namespace) -> int:
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


def _cmd_train(args: argparse.Namespace) -> int:
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


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from eval.evaluate import evaluate
    from lite.run import open_run

    paths, cfg = open_run(Path(args.run), args.config)
    if args.target:
        from eval.targets.evaluate import evaluate_on_target
        from eval.targets.target import parse_target

        target = parse_target(args.target, args.remote_python, args.ssh_option)
        for r in evaluate_on_target(
            cfg,
            paths,
            target,
            args.artifact,
            args.split,
            args.limit,
            not args.no_reference,
            args.repeats,
            progress=not args.quiet,
        ):
            t, line = r["translation"], f"{'(cached) ' if r.get('cached') else ''}{target.name} {r['artifact']}: "
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
            print(line)
        return 0
    if args.artifact:
        from eval.evaluate import evaluate_artifact
        from lite.files import read_json

        names = args.artifact
        if names == ["all"]:
            names = [r["name"] for r in read_json(paths.root / "artifacts.json", []) if r.get("format") != "pytorch"]
        for name in names:
            record = evaluate_artifact(cfg, paths, name, args.split, args.beam, args.lenpen, progress=not args.quiet)
            print(
                f"{'(cached) ' if record.get('cached') else ''}{name} {record['split']} {record['decoding']}: "
                f"BLEU {record['bleu']} chrF {record['chrf']} ({record['sentences']} sentences)"
            )
        return 0
    record = evaluate(cfg, paths, args.split, args.beam, args.lenpen, progress=not args.quiet, force=args.force)
    print(
        f"{'(cached) ' if record.get('cached') else ''}{record['split']} {record['decoding']}: "
        f"BLEU {record['bleu']} chrF {record['chrf']} "
        f"(BP {record['brevity_penalty']}, {record['sentences']} sentences) {record['bleu_signature']}"
    )
    return 0


def _read_lines(source: str) -> list[str]:
    """Lines of a file or stdin ('-'), as UTF-8; a bad byte is reported with its line number."""
    from export.runtime import read_lines

    if source == "-":
        return list(read_lines(sys.stdin.buffer, "stdin"))
    with open(source, "rb") as stream:
        return list(read_lines(stream, source))


def _cmd_translate(args: argparse.Namespace) -> int:
    if len(args.positional) > (1 if args.model else 2):
        raise ValueError(f"too many arguments: {' '.join(args.positional)} (quote a sentence with spaces)")
    if args.model:  # the exported folder through the torch-free runtime
        from export.runtime import run

        return run(
            args.model, args.positional[0] if args.positional else None, args.file, args.beam, args.lenpen, args.threads
        )
    if not args.positional:
        raise ValueError("give a RUN folder, or --model DIR for an exported model folder")
    args.run, args.text = args.positional[0], (args.positional[1:] or [None])[0]
    from dataclasses import replace

    from lite.checkpoint import load_model
    from lite.decode import translate
    from lite.run import open_run
    from lite.tokenizer import Tokenizer

    paths, cfg = open_run(Path(args.run), None)
    lines = [args.text] if args.text not in (None, "-") and not args.file else _read_lines(args.file or "-")
    dcfg = replace(
        cfg.decode,
        beam=args.beam or cfg.decode.beam,
        lenpen=args.lenpen if args.lenpen is not None else cfg.decode.lenpen,
    )
    for out in translate(load_model(paths.model), Tokenizer(paths.tokenizer), lines, dcfg):
        print(out)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lite.config import FORMATS, PRECISIONS
    from lite.run import open_run

    def listed(value: str | None, allowed: tuple[str, ...], flag: str) -> list[str] | None:
        if value is None:
            return None
        items = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise ValueError(f"{flag}: expected a comma-separated list from {', '.join(allowed)}, got {value!r}")
        return items

    formats = listed(args.format, FORMATS, "--format")
    precisions = listed(args.precision, PRECISIONS, "--precision")
    paths, cfg = open_run(Path(args.run), args.config)
    from export.errors import ExportError
    from export.stage import export_run

    try:
        export_run(cfg, paths, formats, precisions, force=args.force, progress=not args.quiet)
    except ExportError as exc:
        print(f"lite export: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_compress(args: argparse.Namespace) -> int:
    from lite.run import open_run

    paths, cfg = open_run(Path(args.run), args.config)
    from compress.pipeline import compress_run, output_paths
    from compress.recipe import load_recipe
    from export.errors import ExportError

    recipe = load_recipe(args.recipe)
    try:
        record = compress_run(cfg, paths, recipe, force=args.force, progress=not args.quiet)
    except ExportError as exc:
        print(f"lite compress: error: {exc}", file=sys.stderr)
        return 1
    out = output_paths(paths, recipe).root
    print(
        f"{out}: {record['model']['params']:,} parameters, greedy BLEU {record['model']['bleu_greedy']:.2f}; "
        f"artifacts: "
        + ", ".join(f"{r['name']} {r['size_bytes'] / 1e6:.2f} MB BLEU {r['bleu']:.2f}" for r in record["artifacts"])
    )
    return 0


def _cmd_macs(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from lite.config import load_config
    from lite.metrics.macs import model_summary

    cfg = load_config(args.config)
    # the vocabulary only changes the parameter count with embeddings; it comes from the tokenizer section
    model = replace(cfg.model, vocab_size=cfg.model.vocab_size or cfg.tokenizer.vocab_size)
    summary = model_summary(model, args.src_len, args.tgt_len)
    if args.json:
        print(json.dumps(summary | {"config": str(args.config)}, indent=2))
        return 0
    parts = [k for k in dict.fromkeys(k for layer in summary["layers"] for k in layer) if k not in ("name", "total")]
    print(
        f"{args.config}: {summary['macs']:,} MACs ({args.src_len}+{args.tgt_len} tokens), "
        f"{summary['params']:,} params, {summary['params_no_embed']:,} without embeddings "
        f"(vocabulary {summary['vocab_size']})"
    )
    print(f"{'layer':12s}" + "".join(f"{p:>14s}" for p in parts) + f"{'total':>14s}")
    for layer in summary["layers"]:
        print(f"{layer['name']:12s}" + "".join(f"{layer.get(p, 0):14,d}" for p in parts) + f"{layer['total']:14,d}")
    print(f"{'encoder':12s}{summary['encoder']:,}\n{'decoder':12s}{summary['decoder']:,}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from eval.fit import as_yaml, fit, parse_count, parse_layers
    from lite.files import write_text_atomic

    budget = parse_count(args.macs)
    cfg, macs = fit(args.family, budget, parse_layers(args.layers), args.heads, args.conv_type)
    text = as_yaml(cfg, macs, args.family, budget)
    if args.out:
        write_text_atomic(text, Path(args.out))
        print(f"{args.out}: {args.family} width {cfg.embed_dim}, {macs:,} MACs (budget {budget:,})")
    else:
        print(text, end="")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from eval.report import summarize, write_report

    report = write_report([Path(r) for r in args.runs], Path(args.out) if args.out else None)
    print(summarize(report))
    for name, path in report["files"].items():
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lite", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="build a built-in real corpus (LibreOffice help translations via apt)")
    data_sub = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = data_sub.add_parser("build", help="fetch, align, split and cache a corpus")
    build.add_argument("name", help="docs-en-de or docs-en-fr")
    build.add_argument("--out", help="output folder (default: $LITE_DATA_DIR/NAME or data/NAME)")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(func=_cmd_data)

    def run_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG)
        p.add_argument("run", metavar="RUN", help="run folder, e.g. runs/default")
        p.add_argument("--config", type=Path, help="YAML config; copied into RUN/config.yaml on first use")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        return p

    tok = run_parser("tokenizer", "train the joint sentencepiece vocabulary on the training split")
    tok.add_argument("--force", action="store_true", help="retrain even if RUN/tokenizer/spm.model exists")
    tok.set_defaults(func=_cmd_tokenizer)

    tr = run_parser("train", "train the model; checkpoints in RUN/checkpoints, final weights in RUN/model.pt")
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
    tr.set_defaults(func=_cmd_train)

    ev = run_parser("evaluate", "translate a split with RUN/model.pt and score BLEU/chrF into RUN/results.json")
    ev.add_argument("--split", default="test", choices=["test", "valid"])
    ev.add_argument("--beam", type=int, help="beam size (default: decode.beam of the config; 1 = greedy)")
    ev.add_argument("--lenpen", type=float, help="length penalty exponent (default: decode.lenpen)")
    ev.add_argument(
        "--force", action="store_true", help="decode again even if results.json has this decoding of this model"
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
    ev.set_defaults(func=_cmd_evaluate)

    tl = sub.add_parser(
        "translate",
        help="translate TEXT, a file (--file) or stdin ('-') with a run or an exported folder",
        usage="lite translate (RUN | --model DIR) [TEXT | -] [--file F] [--beam K]",
        description="With RUN: PyTorch and RUN/model.pt. With --model DIR: the exported folder "
        "through the on-device runtime (numpy + TFLite/ONNX interpreter, no torch). "
        "One output line per input line; empty lines stay empty; sources longer than "
        "the exported graphs take are truncated with a warning.",
    )
    tl.add_argument(
        "positional",
        nargs="*",
        metavar="RUN / TEXT",
        help="RUN folder (without --model), then a sentence or '-' for stdin (default)",
    )
    tl.add_argument("--model", metavar="DIR", help="exported model folder, e.g. runs/default/export/tflite-int8")
    from export.runtime import add_arguments

    add_arguments(tl)
    tl.set_defaults(func=_cmd_translate)

    xp = run_parser("export", "export RUN/model.pt to TFLite/ONNX model folders, each gated on parity with PyTorch")
    xp.add_argument("--format", help="comma-separated: tflite,onnx (default: export.formats of the config)")
    xp.add_argument("--precision", help="comma-separated: fp32,fp16,dynamic-int8,int8 (default: export.precisions)")
    xp.add_argument("--force", action="store_true", help="rebuild folders that are up to date")
    xp.set_defaults(func=_cmd_export)

    cp = run_parser(
        "compress",
        "apply a compression recipe (structured/fine-grained pruning, distillation, "
        "quantization) to RUN/model.pt; writes RUN/compressed/<recipe name>/, a run folder "
        "with the compressed model, its exported artifacts and their measurements",
    )
    cp.add_argument(
        "--recipe",
        type=Path,
        default=Path("configs/compress/default.yaml"),
        help="recipe YAML (default: configs/compress/default.yaml; format: compress/recipe.py)",
    )
    cp.add_argument("--force", action="store_true", help="start over instead of resuming after the last finished step")
    cp.set_defaults(func=_cmd_compress)

    mc = sub.add_parser(
        "macs",
        help="analytic MACs (30+30 tokens, no embeddings/output projection) and parameters",
        description="Mult-adds of one forward pass under the Lite Transformer convention, per layer and branch.",
    )
    mc.add_argument("--config", type=Path, required=True)
    mc.add_argument("--src-len", type=int, default=30)
    mc.add_argument("--tgt-len", type=int, default=30)
    mc.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    mc.set_defaults(func=_cmd_macs)

    ft = sub.add_parser(
        "fit",
        help="the widest LSRA or Transformer config under a MAC budget",
        description="Search the embedding width of a family (fixed shape rules, see eval/fit.py) "
        "for the config closest under the budget; prints or writes YAML.",
    )
    ft.add_argument("--family", required=True, choices=["lsra", "transformer"])
    ft.add_argument("--macs", required=True, help="budget, e.g. 100M, 1.5G")
    ft.add_argument("--layers", default="6+6", help="encoder+decoder layers (default 6+6)")
    ft.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    ft.add_argument("--conv-type", default="dynamic", choices=["dynamic", "lightweight"], help="LSRA convolution")
    ft.add_argument("--out", help="write the YAML here instead of stdout")
    ft.set_defaults(func=_cmd_fit)

    rp = sub.add_parser(
        "report",
        help="MAC/BLEU budget report (md, html, json, plots) from saved measurements",
        description="Reads only what the stages saved in each run folder (config, results.json, "
        "train.json, model.pt, artifacts.json); never retrains or re-decodes.",
    )
    rp.add_argument("runs", nargs="+", metavar="RUN")
    rp.add_argument("--out", help="output folder (default: the first RUN)")
    rp.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lite.errors import LiteError

    try:
        return args.func(args)
    except (LiteError, FileNotFoundError, ValueError) as exc:  # ValueError: until every user error is a LiteError
        print(f"lite {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, LiteError) else 2
    except KeyboardInterrupt:
        print(
            f"lite {args.command}: interrupted (training: rerun with --resume; it continues exactly "
            "from the last saved step)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
