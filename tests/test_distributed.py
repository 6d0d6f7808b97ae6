"""Several training processes: torchrun + DistributedDataParallel (gloo on loopback) on real pairs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, lite
from test_train import prepared_run

from lite.config import load_config
from lite.train import train

STEPS = dict(update_freq=2, max_steps=4, validate_every=100, checkpoint_every=2, average_last=1)


def _weights(path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, small_corpus, small_tokenizer):
    """The reference: one process accumulating update_freq=2 batches per step, 4 steps."""
    paths, cfg = prepared_run(tmp_path_factory.mktemp("ddp"), "one", small_corpus, small_tokenizer, **STEPS)
    train(cfg, paths, progress=False)
    return paths


def test_two_gloo_processes_equal_one_process_accumulating_two(one_process, tmp_path, small_corpus, small_tokenizer):
    paths, _ = prepared_run(tmp_path, "two", small_corpus, small_tokenizer, **STEPS)
    done = lite("train", str(paths.root), "--nproc", "2", "--quiet")
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    diff = _max_diff(_weights(one_process.last), _weights(paths.last))
    print(f"max |param difference| after 4 steps, 2 processes vs 1: {diff:.3g}")
    assert diff < 1e-6
    summary = json.loads(paths.train_summary.read_text())
    reference = json.loads(one_process.train_summary.read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4
    assert summary["target_tokens"] == reference["target_tokens"]  # the same batches, split in two
    events = [json.loads(line)["event"] for line in paths.metrics.read_text().splitlines()]
    assert events.count("start") == 1 and events.count("end") == 1  # rank 0 alone logs
    assert sorted(p.name for p in paths.checkpoints.iterdir()) == ["last.pt", "step_000002.pt", "step_000004.pt"]


def test_resume_with_another_process_count(one_process, tmp_path, small_corpus, small_tokenizer):
    """Steps 1-2 on two processes, steps 3-4 resumed on one: the same weights as one process throughout."""
    paths, _ = prepared_run(tmp_path, "mixed", small_corpus, small_tokenizer, **(STEPS | {"max_steps": 2}))
    done = lite("train", str(paths.root), "--nproc", "2", "--quiet")
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    paths.model.unlink()  # finished at step 2; continue the same run to step 4
    paths.config.write_text(paths.config.read_text().replace("max_steps: 2", "max_steps: 4"))
    summary = train(load_config(paths.config), paths, resume=True, progress=False)
    assert summary["steps"] == 4 and summary["processes"] == 1
    assert _max_diff(_weights(one_process.last), _weights(paths.last)) < 1e-6


def test_effective_batch_must_split_evenly(tmp_path, small_corpus, small_tokenizer):
    paths, _ = prepared_run(tmp_path, "odd", small_corpus, small_tokenizer, **(STEPS | {"update_freq": 3}))
    done = lite("train", str(paths.root), "--nproc", "2", "--quiet")
    err = done.stderr.decode()
    assert done.returncode != 0
    assert "train.update_freq 3 is not a multiple of the 2 processes" in err and "set train.update_freq to 4" in err
    assert "rerun with --resume" in err.strip().splitlines()[-1]  # the launcher's own last line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_killed_rank_ends_the_job_with_a_clear_error(tmp_path, small_corpus, small_tokenizer):
    """Rank 1 is SIGKILLed mid-training: rank 0 must not hang in the gradient all-reduce."""
    paths, _ = prepared_run(
        tmp_path, "killed", small_corpus, small_tokenizer, **(STEPS | {"max_steps": 100000, "dist_timeout_s": 30})
    )
    port = _free_port()
    procs = []
    for rank in (0, 1):  # what torchrun does: the same command with the rendezvous in the environment
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "lite", "train", str(paths.root), "--quiet"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    deadline = time.monotonic() + 300
    while not (paths.metrics.is_file() and '"event": "train"' in paths.metrics.read_text()):
        assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].stderr.read().decode()[-2000:]
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    started = time.monotonic()
    try:
        _, err = procs[0].communicate(timeout=120)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        pytest.fail("rank 0 still running 120 s after rank 1 was killed")
    waited = time.monotonic() - started
    print(f"rank 0 exited {waited:.1f} s after rank 1 was killed")
    lines = err.decode().strip().splitlines()
    assert procs[0].returncode == 2, err.decode()[-2000:]
    assert lines[-1].startswith("lite train: error: rank 0: a collective with the other 1 process(es) failed")
    assert "--resume" in lines[-1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_device(tmp_path, small_corpus, small_tokenizer):
    paths, cfg = prepared_run(tmp_path, "cuda", small_corpus, small_tokenizer, **STEPS)
    summary = train(cfg, paths, progress=False, device="cuda")
    assert summary["device"] == "cuda" and summary["steps"] == 4
    assert all(v.device.type == "cpu" for v in _weights(paths.model).values())
