"""The `lite` command: config errors, bad input, and the smoke pipeline end to end on real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import lite

from lite.cli import main
from lite.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "text, message",
    [
        ("model:\n  embed_dims: 128\n", "model: unknown key(s) embed_dims"),
        ("train:\n  lr: fast\n", "train.lr: expected float, got 'fast'"),
        ("model:\n  encoder_layers: 2\n", "model.encoder_kernels must be 2 kernel sizes"),
        ("model:\n  arch: rnn\n", "model.arch must be lsra or transformer"),
        ("decode: [1, 2]\n", "decode: expected a mapping"),
        ("model: {embed_dim: 10\n", "not valid YAML"),
        (
            "export:\n  parity:\n    int8: {max_bleu_drop_vs_fp32: -0.5}\n",
            "export.parity.int8.max_bleu_drop_vs_fp32 must be null or >= 0 (BLEU points)",
        ),
        (
            "export:\n  parity:\n    fp32: {max_bleu_drop_vs_fp32: 0.5}\n",
            "export.parity.fp32.max_bleu_drop_vs_fp32 must be null (fp32 is the reference",
        ),
        (
            "export:\n  parity:\n    dynamic_int8: {min_top1: 97}\n",
            "export.parity.dynamic_int8.min_top1 must be a share in [0, 1]",
        ),
        (
            "export:\n  parity:\n    int8: {max_bleu_drop_vs_fp: 0.5}\n",
            "export.parity.int8: unknown key(s) max_bleu_drop_vs_fp",
        ),
        ("export:\n  parity_sentences: 0\n", "export.parity_sentences must be >= 1"),
    ],
)
def test_config_errors_name_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_every_shipped_config_loads():
    from compress.recipe import load_recipe

    recipes = sorted((ROOT / "configs" / "compress").glob("*.yaml"))
    configs = sorted(set((ROOT / "configs").rglob("*.yaml")) - set(recipes))
    assert len(configs) >= 11 and len(recipes) >= 2
    for path in configs:
        load_config(path)
    for path in recipes:
        assert load_recipe(path).steps


def test_cli_reports_bad_config_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian: {}\n")
    assert main(["train", str(tmp_path / "run"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown key(s) trian" in err and str(bad) in err


def test_cli_missing_run_config(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "no config in the run folder" in capsys.readouterr().err


def test_cli_rejects_a_config_that_contradicts_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["tokenizer", str(run), "--config", str(ROOT / "configs/paper/transformer-base.yaml"), "--quiet"]) == 2
    capsys.readouterr()  # the corpus folder of the paper config does not exist here: that error is fine
    assert main(["train", str(run), "--config", str(ROOT / "configs/smoke.yaml")]) == 2
    assert "differs from" in capsys.readouterr().err


def test_smoke_pipeline_writes_scored_results(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    assert set(results) == {"test/greedy", "test/beam2-lenpen1"}
    for record in results.values():
        assert record["sentences"] == 200 and record["bleu_signature"].startswith("nrefs:1|case:mixed")
        # Measured (2 threads, 400 steps): greedy BLEU 1.40 chrF 12.52, beam 2 BLEU 1.45 chrF 13.46. The
        # smoke model is not meant to translate, so these floors (half the BLEU, 80% of the chrF) only catch
        # a collapse: the 100-step model scores BLEU 0.0 chrF 0.1, and one constant German sentence for
        # every line BLEU 0.09 (but chrF 17, hence the BLEU floor too). The margin absorbs numeric drift.
        assert 0.7 <= record["bleu"] <= 100.0 and record["chrf"] >= 10.0
    hyps = (smoke_run / "eval" / "test.greedy.hyp").read_text(encoding="utf-8").splitlines()
    assert len(hyps) == 200 and sum(bool(h) for h in hyps) > 150
    summary = json.loads((smoke_run / "train.json").read_text())
    assert summary["steps"] == 400 and summary["final_valid_loss"] < 5.0  # uniform guessing: ln(1000) = 6.9
    assert torch.load(smoke_run / "model.pt", weights_only=True)["model_config"]["arch"] == "lsra"


def test_translate_lines_and_bad_utf8(smoke_run, tmp_path):
    done = lite("translate", str(smoke_run), "-", stdin="Click OK.\n\nSave the document.\n".encode())
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode().split("\n")
    assert len(out) == 4 and out[1] == "" and out[0] and out[2]  # one line per input, empty stays empty
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nbroken \xff here\n")
    done = lite("translate", str(smoke_run), "--file", str(bad))
    assert done.returncode == 2
    assert f"{bad}: line 2 is not valid UTF-8" in done.stderr.decode()


def test_train_again_is_a_no_op_and_resume_after_finish(smoke_run):
    before = (smoke_run / "model.pt").read_bytes()
    for extra in ([], ["--resume"]):  # make compress passes --resume whenever last.pt exists
        done = lite("train", str(smoke_run), *extra)
        assert done.returncode == 0 and "already trained" in done.stdout.decode()
    assert (smoke_run / "model.pt").read_bytes() == before
