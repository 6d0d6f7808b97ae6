"""The README's headline: the default LSRA and its equal-MAC Transformer through every `make compress`
stage, timed, and the figures each stage produced.

For each config the stages run the same commands as the Makefile's targets (tokenizer, train,
evaluate, export, compress), one stage for every model before the next stage, so the comparison
table is complete before the long compression stages start. A stage whose outputs exist is not run
again; its wall time is kept from the previous headline.json when that record was made from the same
config (sha256 of the resolved config), otherwise it shows as null (not measured). A run folder is
reused only if its stored config has the requested config's sha256; a folder with another config is
moved aside (runs/<name>.config-<sha8>) and the model is trained again.

Writes benchmarks/results/headline.json after every stage (so an interrupted run resumes), with
per model: steps, stop reason, target tokens/s, valid ppl, test BLEU greedy and beam, chrF, MACs,
params, each stage's wall time, and the provenance of the run's own files.

    python benchmarks/headline.py [--configs configs/default.yaml configs/default-transformer.yaml]
                                  [--recipe configs/compress/default.yaml] [--stages tokenizer,train,...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.evaluate import decoding_name
from lite.artifacts import read_rows
from lite.config import load_config
from lite.files import read_json, write_json_atomic
from lite.metrics.macs import count_macs, model_summary
from lite.provenance import config_sha256, relative, stamped
from lite.run import RunPaths
from lite.tokenizer import Tokenizer

OUT = ROOT / "benchmarks" / "results" / "headline.json"
STAGES = ("tokenizer", "train", "evaluate", "export", "compress")


def stage_commands(stage: str, run: Path, config: Path, recipe: Path) -> list[list[str]]:
    """The commands of one Makefile target (keep in step with the Makefile)."""
    lite = [sys.executable, "-m", "lite"]
    r = relative(run)  # commands run from the repository root; saved records hold no machine paths
    if stage == "tokenizer":
        return [lite + ["tokenizer", r, "--config", str(config)]]
    if stage == "train":
        return [lite + ["train", r, "--config", str(config), *(["--resume"] if RunPaths(run).last.is_file() else [])]]
    if stage == "evaluate":
        return [lite + ["evaluate", r, "--beam", "1"], lite + ["evaluate", r]]
    if stage == "export":
        return [lite + ["export", r], lite + ["evaluate", r, "--artifact", "all", "--beam", "1"]]
    return [
        lite + ["compress", r, "--recipe", str(recipe)],
        lite + ["report", r, relative(run / "compressed" / recipe.stem)],
    ]


def stage_done(stage: str, run: Path, recipe: Path) -> bool:
    """Whether the stage's outputs exist already (then it is not run, nor timed, again)."""
    paths = RunPaths(run)
    if stage == "tokenizer":
        return paths.tokenizer.is_file()
    if stage == "train":
        return paths.model.is_file()
    if stage == "evaluate":
        cfg = load_config(paths.config)
        results = read_json(paths.results, {})
        return {"test/greedy", f"test/{decoding_name(cfg.decode.beam, cfg.decode.lenpen)}"} <= results.keys()
    if stage == "export":
        rows = [r for r in read_rows(run) if r.format != "pytorch"]
        return bool(rows) and all("test/greedy" in (r.bleu or {}) for r in rows)
    return (run / "compressed" / recipe.stem / "model.pt").is_file() and (run / "report.json").is_file()


def prepare_run(config: Path) -> Path:
    """runs/<config name>, reused only when its config has the same sha256 as `config`."""
    cfg = load_config(config)
    run = ROOT / "runs" / cfg.name
    stored = RunPaths(run).config
    if stored.is_file() and config_sha256(load_config(stored)) != config_sha256(cfg):
        aside = run.with_name(f"{run.name}.config-{config_sha256(load_config(stored))[:8]}")
        while aside.exists():
            aside = aside.with_name(aside.name + "-old")
        run.rename(aside)
        print(f"{relative(run)}: made from another config; moved to {relative(aside)}, training again", flush=True)
    return run


def figures(run: Path) -> dict:
    """What the README's headline table shows, read from the run's own files."""
    paths = RunPaths(run)
    cfg = load_config(paths.config)
    train = read_json(paths.train_summary, {})
    results = read_json(paths.results, {})
    beam = results.get(f"test/{decoding_name(cfg.decode.beam, cfg.decode.lenpen)}", {})
    greedy = results.get("test/greedy", {})
    vocab = Tokenizer(paths.tokenizer).vocab_size if paths.tokenizer.is_file() else cfg.tokenizer.vocab_size
    vocab_cfg = replace(cfg.model, vocab_size=vocab)
    summary = model_summary(vocab_cfg)
    return {
        "config": relative(ROOT / "configs" / f"{cfg.name}.yaml"),
        "run": relative(run),
        "family": cfg.model.arch,
        "config_sha256": config_sha256(cfg),
        "steps": train.get("steps"),
        "stop_reason": train.get("stop_reason"),
        "reproducible": train.get("reproducible"),
        "train_wall_seconds": train.get("wall_seconds"),
        "target_tokens_per_s": train.get("target_tokens_per_s"),
        "valid_ppl": train.get("final_valid_ppl"),
        "bleu_greedy": greedy.get("bleu"),
        "bleu_beam": beam.get("bleu"),
        "chrf_beam": beam.get("chrf"),
        "decoding_beam": beam.get("decoding"),
        "bleu_signature": beam.get("bleu_signature"),
        "macs": count_macs(vocab_cfg)["macs"],
        "params": summary["params"],
        "params_no_embed": summary["params_no_embed"],
        "train_provenance": train.get("provenance"),
        "results_provenance": beam.get("provenance"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs",
        nargs="+",
        type=Path,
        default=[Path("configs/default.yaml"), Path("configs/default-transformer.yaml")],
    )
    parser.add_argument("--recipe", type=Path, default=Path("configs/compress/default.yaml"))
    parser.add_argument("--out", type=Path, default=OUT, help="the JSON written (default: %(default)s)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    args = parser.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"--stages: unknown stage(s) {', '.join(unknown)} (expected {', '.join(STAGES)})")

    previous = {m["config_sha256"]: m for m in (read_json(args.out, {}) or {}).get("models", [])}
    runs = [prepare_run(c) for c in args.configs]
    timings: dict[Path, dict] = {}
    for run, config in zip(runs, args.configs):
        old = previous.get(config_sha256(load_config(config)), {}).get("stage_seconds", {})
        timings[run] = {s: old.get(s) for s in STAGES}

    def save() -> None:
        models = []
        for run in runs:
            if RunPaths(run).config.is_file():
                models.append(figures(run) | {"stage_seconds": timings[run]})
        record = {
            "benchmark": "headline",
            "recipe": relative(args.recipe),
            "models": models,
            "stage_commands": {
                s: [" ".join(c[2:]) for c in stage_commands(s, Path("RUN"), Path("CONFIG"), Path("RECIPE"))]
                for s in STAGES
            },
        }
        write_json_atomic(stamped(record), args.out)

    for stage in stages:
        for run, config in zip(runs, args.configs):
            if RunPaths(run).config.is_file() and stage_done(stage, run, args.recipe):
                print(f"{relative(run)}: {stage} done already", flush=True)
                continue
            print(f"== {relative(run)}: {stage}", flush=True)
            started = time.monotonic()
            for command in stage_commands(stage, run, config, args.recipe):
                done = subprocess.run(command, cwd=ROOT)
                if done.returncode != 0:
                    save()
                    print(f"{' '.join(command[2:])}: exit {done.returncode}", file=sys.stderr)
                    return done.returncode
            timings[run][stage] = round(time.monotonic() - started, 1)
            save()
    save()
    for m in read_json(args.out)["models"]:
        print(
            f"{m['config']}: {m['steps']} steps, {m['target_tokens_per_s'] or 0:,.0f} tok/s, valid ppl "
            f"{m['valid_ppl']}, BLEU greedy {m['bleu_greedy']} / beam {m['bleu_beam']}, chrF {m['chrf_beam']}, "
            f"stages {m['stage_seconds']}"
        )
    print(f"wrote {relative(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
