"""Shared fixtures: the real docs-en-de corpus (built once, cached in data/) and small slices of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lite.config import TokenizerConfig
from lite.data.corpus import data_root
from lite.data.libreoffice import build_docs_corpus
from lite.data.parallel import load_split
from lite.tokenizer import Tokenizer, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def tiny_model(**overrides):
    """A tiny EncoderDecoder (vocabulary 60, width 32, 2+2 layers, 2 heads), seeded, in eval mode."""
    import torch

    from lite.config import ModelConfig
    from lite.models.seq2seq import EncoderDecoder

    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=60,
        embed_dim=32,
        ffn_dim=48,
        encoder_layers=2,
        decoder_layers=2,
        attention_heads=2,
        encoder_kernels=[3, 4],
        decoder_kernels=[5, 3],
        max_positions=64,
        **overrides,
    )
    return EncoderDecoder(cfg).eval()


def lite(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """The `lite` command in a subprocess, from the repo root."""
    return subprocess.run(
        [sys.executable, "-m", "lite", *args], input=stdin, capture_output=True, cwd=ROOT, timeout=900
    )


@pytest.fixture(scope="session")
def docs_corpus() -> Path:
    """The real LibreOffice help en-de corpus (apt packages; cached after the first build)."""
    return build_docs_corpus("docs-en-de", data_root() / "docs-en-de", progress=False)


@pytest.fixture(scope="session")
def small_corpus(docs_corpus: Path, tmp_path_factory) -> Path:
    """A folder of plain parallel files with 800/60/60 real pairs: fast to train on."""
    out = tmp_path_factory.mktemp("small-corpus")
    for split, n in (("train", 800), ("valid", 60), ("test", 60)):
        pairs = load_split(docs_corpus, split, "en", "de")[:n]
        (out / f"{split}.en").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
        (out / f"{split}.de").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def small_tokenizer(small_corpus: Path, tmp_path_factory) -> Path:
    pairs = load_split(small_corpus, "train", "en", "de")
    out = tmp_path_factory.mktemp("spm") / "spm"
    return train_tokenizer([s for p in pairs for s in p], TokenizerConfig(vocab_size=400), out)


@pytest.fixture()
def tokenizer(small_tokenizer: Path) -> Tokenizer:
    return Tokenizer(small_tokenizer)


@pytest.fixture(scope="session")
def smoke_run(docs_corpus, tmp_path_factory) -> Path:
    """The smoke config through the real CLI: tokenizer -> train -> evaluate (greedy and beam)."""
    run = tmp_path_factory.mktemp("smoke") / "run"
    for args in (
        ["tokenizer", str(run), "--config", "configs/smoke.yaml"],
        ["train", str(run)],
        ["evaluate", str(run), "--beam", "1"],
        ["evaluate", str(run)],
    ):
        done = lite(*args, "--quiet")
        assert done.returncode == 0, done.stderr.decode()
    return run


@pytest.fixture(scope="session")
def exported(smoke_run):
    """The smoke run with fp32 and int8 folders of both formats, through the CLI."""
    done = lite("export", str(smoke_run), "--format", "tflite,onnx", "--precision", "fp32,int8", "--quiet")
    assert done.returncode == 0, done.stderr.decode()
    return smoke_run
