"""`lite compress RUN --recipe R` end to end on the smoke run: every step kind, the exported and measured
artifact, resuming, and clear errors for bad recipes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from compress.magnitude import prunable_layers
from conftest import ROOT, lite
from lite.checkpoint import load_model
from lite.config import load_config


@pytest.fixture(scope="module")
def compressed(smoke_run: Path, tmp_path_factory) -> tuple[Path, Path, str]:
    run = tmp_path_factory.mktemp("compress") / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("export", "artifacts.json", "checkpoints"))
    done = lite("compress", str(run), "--recipe", str(ROOT / "configs/compress/smoke.yaml"), "--quiet")
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return run, run / "compressed" / "smoke", done.stdout.decode()


def test_recipe_steps_leave_a_smaller_measured_model(compressed):
    run, out, _ = compressed
    record = json.loads((out / "compress.json").read_text())
    assert [s["kind"] for s in record["steps"]] == ["structured", "magnitude", "quant_report"]
    # structured step: heads 0.5 / ffn 0.25 / conv 0.25 of the smoke widths (2 heads, FFN 128, 32 channels)
    cfg = load_config(out / "config.yaml").model
    assert cfg.encoder_heads == [1, 1] and cfg.encoder_ffn == [96, 96]
    assert [sum(c) for c in cfg.encoder_conv] == [24, 24]
    model = load_model(out / "model.pt")  # weights_only=True inside
    assert model.cfg == cfg
    # fine-grained masks survived fine-tuning: the chosen sparsities are real zeros in the saved weights
    chosen = record["steps"][1]["sparsities"]
    layers = prunable_layers(model)
    for name, sparsity in chosen.items():
        zeros = (layers[name] == 0).float().mean().item()
        assert zeros >= sparsity - 0.01, (name, zeros, sparsity)
    assert record["model"]["params"] < record["source"]["params"]
    # the artifact was exported from this model, packed, and scored through the runtime
    (row,) = [r for r in json.loads((out / "artifacts.json").read_text()) if r["name"] == "tflite-dynamic-int8"]
    manifest = json.loads((out / row["path"] / "manifest.json").read_text())
    assert manifest["pack"] == "xz" and manifest["graphs"] == {"tflite": "model.tflite.xz"}
    assert row["size_bytes"] == sum(manifest["files"][g]["bytes"] for g in manifest["graphs"].values())
    assert "test/greedy" in row["bleu"]
    assert record["artifacts"][0]["bleu"] == row["bleu"]["test/greedy"]["bleu"]


def test_sensitivity_has_one_entry_per_prunable_layer(compressed):
    _, out, _ = compressed
    sweep = json.loads((out / "sensitivity.json").read_text())
    model = load_model(out / "model.pt")
    assert [l["name"] for l in sweep["layers"]] == list(prunable_layers(model))
    assert all(set(l["drop"]) == {"0.5", "0.8"} for l in sweep["layers"])


def test_a_rerun_resumes_after_the_finished_steps(compressed):
    run, out, _ = compressed
    before = (out / "steps" / "02-quant_report.pt").stat().st_mtime_ns
    done = lite("compress", str(run), "--recipe", str(ROOT / "configs/compress/smoke.yaml"), "--quiet")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "resuming after step 3" in done.stdout.decode()
    assert (out / "steps" / "02-quant_report.pt").stat().st_mtime_ns == before
    torch.load(out / "model.pt", weights_only=True)


@pytest.mark.parametrize("text, field", [
    ("steps:\n  - prune: {}\n", "steps[0]"),
    ("steps:\n  - structured: {ffn: 1.5}\n", "structured.ffn"),
    ("steps:\n  - magnitude: {sparsities: [1.2]}\n", "steps[0].magnitude"),
    ("export: {pack: zip}\n", "export.pack"),
    ("qat: {when_bleu_drop_over: 0.3, bogus: 1}\n", "qat: unknown key"),
])
def test_bad_recipes_name_the_field(smoke_run: Path, tmp_path: Path, text: str, field: str):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    done = lite("compress", str(smoke_run), "--recipe", str(recipe))
    err = done.stderr.decode().strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1, err
    assert str(recipe) in err and field in err, err
