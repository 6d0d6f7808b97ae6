"""Training: exact resume, loss goes down on real pairs, checkpoints are plain data."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lite.config import load_config
from lite.data.corpus import load_pairs
from lite.errors import DataError, RunFolderError
from lite.files import sha256_file
from lite.provenance import config_sha256
from lite.run import RunPaths, open_run
from lite.tokenizer import train_tokenizer
from lite.train import learning_rate, train

ROOT = Path(__file__).resolve().parents[1]


def write_config(path: Path, corpus: Path, **train_overrides) -> Path:
    train = {
        "threads": 1,
        "max_tokens": 600,
        "lr": 0.003,
        "warmup_steps": 4,
        "max_steps": 10,
        "validate_every": 5,
        "checkpoint_every": 4,
        "average_last": 2,
        **train_overrides,
    }
    lines = "\n".join(f"  {k}: {v}" for k, v in train.items())
    path.write_text(
        f"""name: tiny
data:
  corpus: {corpus}
tokenizer:
  vocab_size: 400
model:
  embed_dim: 32
  ffn_dim: 64
  encoder_layers: 2
  decoder_layers: 2
  attention_heads: 2
  encoder_kernels: [3, 5]
  decoder_kernels: [3, 5]
  dropout: 0.2
  weight_dropout: 0.1
train:
{lines}
""",
        encoding="utf-8",
    )
    return path


def prepared_run(tmp_path: Path, name: str, corpus: Path, spm: Path, **overrides) -> tuple[RunPaths, object]:
    cfg_file = write_config(tmp_path / f"{name}.yaml", corpus, **overrides)
    paths, cfg = open_run(tmp_path / name, cfg_file)
    paths.tokenizer.parent.mkdir(parents=True)
    shutil.copy(spm, paths.tokenizer)
    return paths, cfg


def final_weights(paths: RunPaths) -> dict:
    return torch.load(paths.model, weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_corpus, small_tokenizer) -> dict:
    """Final weights of the reference run: 10 steps of 2 accumulated batches, validation every 5,
    checkpoints every 4, the average of the last 2 shipped if it validates best."""
    paths, cfg = prepared_run(tmp_path_factory.mktemp("full"), "full", small_corpus, small_tokenizer, update_freq=2)
    train(cfg, paths, progress=False)
    return final_weights(paths)


def signal_at(event: str, step: int, signum: int, times: int = 1):
    """A training hook that sends this process `signum` (`times` times) at the first `event` of `step`."""
    fired = []

    def hook(name: str, at: int) -> None:
        if name == event and at == step and not fired:
            fired.append(True)
            for _ in range(times):
                os.kill(os.getpid(), signum)

    return hook


# (where, step, Ctrl-C presses, the step last.pt holds afterwards): one press finishes the step (or the next
# one, when it comes after the stop check, as in a checkpoint write) and saves
# it; a second press stops at once and leaves the last checkpoint (step 4).
SIGINT_POINTS = [
    ("micro_batch", 6, 1, 6),
    ("optimizer_step", 6, 1, 6),
    ("validation", 5, 1, 5),
    ("checkpoint", 8, 1, 9),
    ("optimizer_step", 6, 2, 4),
    ("micro_batch", 7, 2, 4),
]


@pytest.mark.parametrize("event,step,presses,saved", SIGINT_POINTS)
def test_resume_after_sigint_is_exact(
    tmp_path, small_corpus, small_tokenizer, uninterrupted, event, step, presses, saved
):
    paths, cfg = prepared_run(tmp_path, "run", small_corpus, small_tokenizer, update_freq=2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, paths, progress=False, on_event=signal_at(event, step, signal.SIGINT, presses))
    assert torch.load(paths.last, weights_only=True)["state"]["step"] == saved
    with pytest.raises(RunFolderError, match="--resume"):
        train(cfg, paths, progress=False)
    summary = train(cfg, paths, resume=True, progress=False)
    assert summary["steps"] == 10 and summary["stop_reason"] == "max_steps"
    assert_same_weights(final_weights(paths), uninterrupted)
    steps = [json.loads(line).get("step") for line in paths.metrics.read_text().splitlines()]
    train_steps = [s for s in steps if s is not None]
    assert train_steps == sorted(train_steps)  # replayed steps are not logged twice


KILL_SCRIPT = """
import os, signal, sys
from dataclasses import replace
from pathlib import Path
from lite.config import load_config
from lite.run import RunPaths
from lite.train import train
event, step = sys.argv[2], int(sys.argv[3])
def hook(name, at):
    if name == event and at == step:
        os.kill(os.getpid(), signal.SIGKILL)
train(load_config(Path(sys.argv[1]) / "config.yaml"), RunPaths(Path(sys.argv[1])), progress=False, on_event=hook)
"""


@pytest.mark.parametrize(
    "event,step", [("micro_batch", 6), ("optimizer_step", 7), ("validation", 10), ("checkpoint", 8)]
)
def test_resume_after_sigkill_is_exact(tmp_path, small_corpus, small_tokenizer, uninterrupted, event, step):
    """SIGKILL (nothing saved) mid-accumulation, mid-step, during the last validation, and between the
    step checkpoint and last.pt: --resume replays from the last checkpoint to the same weights."""
    paths, cfg = prepared_run(tmp_path, "run", small_corpus, small_tokenizer, update_freq=2)
    done = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(paths.root), event, str(step)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert not paths.model.exists()
    summary = train(cfg, paths, resume=True, progress=False)
    assert summary["steps"] == 10
    assert_same_weights(final_weights(paths), uninterrupted)


def test_resume_after_the_last_step_trains_no_more(tmp_path, small_corpus, small_tokenizer, uninterrupted):
    """Killed after the final checkpoint, before model.pt: --resume finishes without another step."""
    paths, cfg = prepared_run(tmp_path, "run", small_corpus, small_tokenizer, update_freq=2)
    train(cfg, paths, progress=False)
    paths.model.unlink()
    summary = train(cfg, paths, resume=True, progress=False)
    assert summary["steps"] == 10
    assert_same_weights(final_weights(paths), uninterrupted)


def test_same_config_gives_identical_bytes(tmp_path, small_corpus):
    """Tokenizer and model.pt from the same config, seed and thread count: the same bytes, twice."""
    digests = []
    for name in ("a", "b"):
        cfg_file = write_config(tmp_path / f"{name}.yaml", small_corpus, threads=2, max_steps=6)
        paths, cfg = open_run(tmp_path / name, cfg_file)
        pairs, _ = load_pairs(cfg.data, "train")
        train_tokenizer(
            [s for p in pairs for s in p],
            cfg.tokenizer,
            paths.tokenizer.with_suffix(""),
            cfg.train.seed,
            cfg.train.threads,
        )
        train(cfg, paths, progress=False)
        digests.append((sha256_file(paths.tokenizer), sha256_file(paths.model)))
    assert digests[0] == digests[1]


def test_clock_stopped_run_is_marked_and_provenance_saved(tmp_path, small_corpus, small_tokenizer):
    paths, cfg = prepared_run(tmp_path, "clock", small_corpus, small_tokenizer, max_minutes=1e-6)
    summary = train(cfg, paths, progress=False)
    assert summary["stop_reason"] == "max_minutes" and summary["steps"] == 1
    saved = json.loads(paths.train_summary.read_text())
    assert saved["reproducible"] is False
    prov = saved["provenance"]
    assert len(prov["commit"]) == 40 and isinstance(prov["dirty"], bool)
    assert prov["seed"] == 1 and prov["threads"] == 1 and prov["config_sha256"] == config_sha256(cfg)
    assert prov["versions"]["torch"].startswith("2.13.0") and prov["cpu"] and prov["date"][:2] == "20"


def test_loss_goes_down_and_summary_is_written(tmp_path, small_corpus, small_tokenizer):
    paths, cfg = prepared_run(tmp_path, "run", small_corpus, small_tokenizer, max_steps=30, validate_every=10)
    summary = train(cfg, paths, progress=False)
    records = [json.loads(line) for line in paths.metrics.read_text().splitlines()]
    valid = [r["loss"] for r in records if r["event"] == "valid"]
    assert len(valid) == 3 and valid[-1] < valid[0] - 0.3 < math.log(400)  # uniform guessing: ln(vocab)
    assert json.loads(paths.train_summary.read_text())["steps"] == 30 == summary["steps"]
    assert summary["final_valid_loss"] <= min(valid) + 1e-6  # the shipped weights are the best candidate
    info = summary["train_pairs"]
    assert info["read"] == 800 and info["used"] + info["dropped_too_long"] == 800
    assert (
        sorted(p.name for p in paths.checkpoints.glob("step_*.pt"))
        == [
            "step_000008.pt",
            "step_000012.pt",
            "step_000016.pt",
            "step_000020.pt",
            "step_000024.pt",
            "step_000028.pt",
            "step_000030.pt",
        ][-5:]
    )


def test_learning_rate_schedules():
    cfg = load_config(Path("configs/default.yaml")).train
    assert learning_rate(cfg.warmup_steps, cfg) == pytest.approx(cfg.lr)
    assert learning_rate(4 * cfg.warmup_steps, cfg) == pytest.approx(cfg.lr / 2)
    assert learning_rate(1, cfg) < cfg.lr / 50
    cfg.schedule, cfg.max_steps = "cosine", 1000
    assert learning_rate(1000, cfg) == pytest.approx(cfg.min_lr)
    assert learning_rate(550, cfg) == pytest.approx((cfg.lr + cfg.min_lr) / 2)


def test_early_stopping_on_validation_loss(tmp_path, small_corpus, small_tokenizer):
    """With a learning rate too small to move the loss, the second validation does not improve
    on the first, and patience 1 stops the run there."""
    paths, cfg = prepared_run(
        tmp_path,
        "stuck",
        small_corpus,
        small_tokenizer,
        lr=1e-12,
        warmup_init_lr=1e-12,
        max_steps=50,
        validate_every=3,
        patience=1,
    )
    summary = train(cfg, paths, progress=False)
    assert summary["stop_reason"] == "early_stopping" and summary["steps"] == 6


def test_unusable_inputs_are_typed_errors(tmp_path, small_corpus, small_tokenizer):
    """No training pair left, a damaged last.pt, a malformed state in it: one-line errors of their kind."""
    paths, cfg = prepared_run(tmp_path, "bad", small_corpus, small_tokenizer)
    with pytest.raises(DataError, match="no training pairs left after filtering"):
        train(replace(cfg, data=replace(cfg.data, max_chars=1)), paths, progress=False)
    paths.checkpoints.mkdir()
    paths.last.write_bytes(b"not a checkpoint")
    with pytest.raises(RunFolderError, match=r"last\.pt: not a readable checkpoint"):
        train(cfg, paths, resume=True, progress=False)
    torch.save({"model": {}, "optimizer": {}}, paths.last)
    with pytest.raises(RunFolderError, match=r"last\.pt: not a checkpoint of this pipeline \(no state\)"):
        train(cfg, paths, resume=True, progress=False)
