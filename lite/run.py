"""The run folder: where every stage reads its inputs and writes its outputs.

runs/<name>/
  config.yaml            the resolved config the stages use
  tokenizer/spm.model    joint sentencepiece model (+ spm.vocab)
  checkpoints/           step_XXXXXX.pt, last.pt (resume), best.pt (lowest valid loss)
  model.pt               the trained model (config + state_dict)
  metrics.jsonl          one JSON object per log line (train and valid)
  train.json             training summary (steps, time, tokens/s, best valid loss)
  eval/                  hypotheses per split and decoding
  results.json           BLEU and friends per split and decoding
  shortlist.npz          the vocabulary shortlist (`lite shortlist RUN`; lite/shortlist.py)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from lite.config import ConfigError, RunConfig, load_config, to_dict
from lite.errors import RunFolderError
from lite.files import atomic_path
from lite.shortlist import Shortlist, load_shortlist


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer" / "spm.model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def profile(self) -> Path:
        """Where a decoder step of each exported folder goes, per kernel family (benchmarks/profile.py)."""
        return self.root / "profile.json"

    @property
    def train_summary(self) -> Path:
        return self.root / "train.json"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def shortlist(self) -> Path:
        return self.root / "shortlist.npz"


def open_run(run_dir: Path, config: Path | None) -> tuple[RunPaths, RunConfig]:
    """Resolve a run's config: an explicit --config is copied into the run folder (and must not
    contradict one already there); otherwise the run folder's own config.yaml is used."""
    paths = RunPaths(Path(run_dir))
    if config is not None:
        cfg = load_config(config)
        if paths.config.is_file():
            existing = load_config(paths.config)
            if to_dict(existing) != to_dict(cfg):
                raise ConfigError(
                    f"{config}: differs from {paths.config} already in the run folder "
                    "(use a new run folder, or delete it to start over)"
                )
        else:
            with atomic_path(paths.config) as tmp:
                shutil.copyfile(config, tmp)
        return paths, cfg
    if not paths.config.is_file():
        raise ConfigError(f"{paths.config}: no config in the run folder (pass --config FILE)")
    return paths, load_config(paths.config)


def run_shortlist(paths: RunPaths, vocab_size: int) -> Shortlist:
    """The run's vocabulary shortlist, checked against the tokenizer's vocabulary; a run without one is a
    one-line error saying how to make it."""
    if not paths.shortlist.is_file():
        raise RunFolderError(f"{paths.shortlist}: no shortlist in this run; run `lite shortlist {paths.root}` first")
    return load_shortlist(paths.shortlist, vocab_size)
