"""Training: exact resume, loss goes down on real pairs, checkpoints are plain data."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from lite.config import load_config
from lite.run import RunPaths, open_run
from lite.train import learning_rate, train


def write_config(path: Path, corpus: Path, **train_overrides) -> Path:
    train = {"threads": 1, "max_tokens": 600, "lr": 0.003, "warmup_steps": 4, "max_steps": 10,
             "validate_every": 5, "checkpoint_every": 4, "average_last": 2, **train_overrides}
    lines = "\n".join(f"  {k}: {v}" for k, v in train.items())
    path.write_text(f"""name: tiny
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
""", encoding="utf-8")
    return path


def prepared_run(tmp_path: Path, name: str, corpus: Path, spm: Path, **overrides) -> tuple[RunPaths, object]:
    cfg_file = write_config(tmp_path / f"{name}.yaml", corpus, **overrides)
    paths, cfg = open_run(tmp_path / name, cfg_file)
    paths.tokenizer.parent.mkdir(parents=True)
    shutil.copy(spm, paths.tokenizer)
    return paths, cfg


def test_resume_equals_uninterrupted(tmp_path, small_corpus, small_tokenizer):
    full_paths, cfg = prepared_run(tmp_path, "full", small_corpus, small_tokenizer)
    train(cfg, full_paths, progress=False)

    paths, cfg = prepared_run(tmp_path, "killed", small_corpus, small_tokenizer)
    assert train(cfg, paths, progress=False, stop_at_step=7) == {"interrupted_at": 7}
    assert torch.load(paths.last, weights_only=True)["state"]["step"] == 4  # steps 5-7 were lost
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, paths, progress=False)
    summary = train(cfg, paths, resume=True, progress=False)

    assert summary["steps"] == 10
    a = torch.load(full_paths.model, weights_only=True)["model"]
    b = torch.load(paths.model, weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0


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
    assert sorted(p.name for p in paths.checkpoints.glob("step_*.pt")) == [
        "step_000008.pt", "step_000012.pt", "step_000016.pt", "step_000020.pt", "step_000024.pt", "step_000028.pt",
        "step_000030.pt"][-5:]


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
    paths, cfg = prepared_run(tmp_path, "stuck", small_corpus, small_tokenizer, lr=1e-12, warmup_init_lr=1e-12,
                              max_steps=50, validate_every=3, patience=1)
    summary = train(cfg, paths, progress=False)
    assert summary["stop_reason"] == "early_stopping" and summary["steps"] == 6
