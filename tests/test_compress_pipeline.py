"""`lite compress RUN --recipe R` end to end on the smoke run: every step kind, the exported and measured
artifact, resuming, and clear errors for bad recipes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import ROOT, lite

from compress.magnitude import prunable_layers
from lite.checkpoint import load_model
from lite.config import load_config
from lite.files import sha256_file


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
    assert [layer["name"] for layer in sweep["layers"]] == list(prunable_layers(model))
    assert all(set(layer["drop"]) == {"0.5", "0.8"} for layer in sweep["layers"])


def test_a_rerun_resumes_after_the_finished_steps(compressed):
    run, out, _ = compressed
    before = (out / "steps" / "02-quant_report.pt").stat().st_mtime_ns
    done = lite("compress", str(run), "--recipe", str(ROOT / "configs/compress/smoke.yaml"), "--quiet")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "resuming after step 3" in done.stdout.decode()
    assert (out / "steps" / "02-quant_report.pt").stat().st_mtime_ns == before
    torch.load(out / "model.pt", weights_only=True)


@pytest.mark.parametrize(
    "text, field",
    [
        ("steps:\n  - prune: {}\n", "steps[0]"),
        ("steps:\n  - structured: {ffn: 1.5}\n", "structured.ffn"),
        ("steps:\n  - magnitude: {sparsities: [1.2]}\n", "steps[0].magnitude"),
        ("export: {pack: zip}\n", "export.pack"),
        ("qat: {when_bleu_drop_over: 0.3, bogus: 1}\n", "qat: unknown key"),
    ],
)
def test_bad_recipes_name_the_field(smoke_run: Path, tmp_path: Path, text: str, field: str):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    done = lite("compress", str(smoke_run), "--recipe", str(recipe))
    err = done.stderr.decode().strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1, err
    assert str(recipe) in err and field in err, err


GATED = "tflite-dynamic-int8"  # the smoke recipe's one artifact


def _compress_with_gate(compressed, tmp_path: Path, thresholds: str) -> tuple[Path, subprocess.CompletedProcess]:
    """The compressed smoke run copied (its recipe steps done, nothing exported), with `thresholds` as
    the run config's export.parity.dynamic_int8, compressed again: the steps resume and the export gates."""
    run = tmp_path / "run"
    shutil.copytree(compressed[0], run, ignore=shutil.ignore_patterns("export", "artifacts.json", "checkpoints"))
    config = run / "config.yaml"
    config.write_text(config.read_text() + f"  parity:\n    dynamic_int8: {thresholds}\n")
    done = lite("compress", str(run), "--recipe", str(ROOT / "configs/compress/smoke.yaml"), "--quiet")
    assert "resuming after step 3" in done.stdout.decode(), done.stderr.decode()[-2000:]
    return run / "compressed" / "smoke", done


@pytest.fixture(scope="module")
def gate_fails_twice(compressed, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    # no int8 artifact has exactly its model's logits, before QAT or after
    return _compress_with_gate(compressed, tmp_path_factory.mktemp("gate-twice"), "{max_logit_diff: 0.0}")


def test_a_failed_int8_gate_runs_qat_and_a_second_failure_stops_in_one_line(gate_fails_twice):
    out, done = gate_fails_twice
    # the TFLite runtime announces its XNNPACK delegate on stderr itself; ours is the one other line
    lines = [line for line in done.stderr.decode().splitlines() if not line.startswith("INFO: Created TensorFlow Lite")]
    assert done.returncode == 1 and len(lines) == 1, lines
    err = lines[0]
    assert err.startswith(
        f"lite compress: error: {out / 'export' / GATED}: parity gate failed again after QAT "
        "on 40 test sentences: max logit difference "
    ), err
    assert "(thresholds: export.parity.dynamic_int8; before QAT: " in err
    assert "quantization-aware fine-tuning, then export again" in done.stdout.decode()
    qat = json.loads((out / "compress.json").read_text())["qat"]
    assert qat["trigger"] == "parity gate" and qat["ran"] is True
    assert qat["finetune"]["steps"] == 10  # the smoke recipe's qat.finetune
    for gate in (qat["first_gate"][GATED], qat["second_gate"][GATED]):
        assert gate["passed"] is False and gate["sentences"] == 40 and gate["thresholds"]["max_logit_diff"] == 0.0
        assert gate["max_logit_diff"] > 0
        assert gate["failed"] == [f"max logit difference {gate['max_logit_diff']:.3g} > 0"]
    assert f"max logit difference {qat['second_gate'][GATED]['max_logit_diff']:.3g} > 0 " in err
    # QAT trained on the weights the artifact holds: its logits move less than before
    assert qat["second_gate"][GATED]["max_logit_diff"] < qat["first_gate"][GATED]["max_logit_diff"]
    # nothing that failed its gate was published
    assert not (out / "export" / GATED).exists()
    rows = json.loads((out / "artifacts.json").read_text()) if (out / "artifacts.json").exists() else []
    assert [r["name"] for r in rows if r["format"] != "pytorch"] == []  # model.pt's row holds its latency


def test_a_failed_int8_gate_runs_qat_and_ships_what_passes_the_second(compressed, gate_fails_twice, tmp_path):
    # a limit between the max logit differences before and after QAT of the same model and recipe
    # (the fixture measured both): the first gate fails, the one after QAT passes
    qat_twice = json.loads((gate_fails_twice[0] / "compress.json").read_text())["qat"]
    before = qat_twice["first_gate"][GATED]["max_logit_diff"]
    after = qat_twice["second_gate"][GATED]["max_logit_diff"]
    limit = round((before + after) / 2, 4)
    out, done = _compress_with_gate(compressed, tmp_path, f"{{max_logit_diff: {limit}, max_bleu_drop_vs_fp32: 0.5}}")
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert (
        f"{out / 'export' / GATED}: parity gate failed on 40 test sentences: max logit difference"
        in done.stdout.decode()
    )

    record = json.loads((out / "compress.json").read_text())
    qat = record["qat"]
    assert qat["trigger"] == "parity gate" and qat["ran"] is True and qat["finetune"]["steps"] == 10
    first, second = qat["first_gate"][GATED], qat["second_gate"][GATED]
    assert first["passed"] is False and first["max_logit_diff"] == pytest.approx(before, rel=1e-3)
    assert first["failed"] == [f"max logit difference {first['max_logit_diff']:.3g} > {limit:g}"]
    assert second["passed"] is True and second["failed"] == [] and second["max_logit_diff"] <= limit
    # the fp32 comparison ran on both gates, against an fp32 folder built for it and not published
    for gate in (first, second):
        assert gate["fp32_reference"] == {
            "artifact": "tflite-fp32",
            "bleu": gate["bleu_fp32"],
            "sentences": 40,
            "source": "built for the gate, not published",
        }
        assert gate["bleu_drop_vs_fp32"] == round(gate["bleu_fp32"] - gate["bleu_artifact"], 2)
    assert sorted(p.name for p in (out / "export").iterdir()) == [GATED]

    # what shipped is the second gate's artifact, made from the QAT model now in model.pt
    manifest = json.loads((out / "export" / GATED / "manifest.json").read_text())
    assert {k: manifest["parity"][k] for k in second if k not in ("passed", "failed")} == {
        k: v for k, v in second.items() if k not in ("passed", "failed")
    }
    assert manifest["settings"]["source_sha256"] == sha256_file(out / "model.pt")
    step = load_model(out / "steps" / "02-quant_report.pt").state_dict()
    tuned = load_model(out / "model.pt").state_dict()
    assert list(step) == list(tuned) and any(not torch.equal(step[k], tuned[k]) for k in step)
    (row,) = [r for r in json.loads((out / "artifacts.json").read_text()) if r["format"] != "pytorch"]
    assert row["name"] == GATED and record["artifacts"][0]["bleu"] == row["bleu"]["test/greedy"]["bleu"]
    assert row["latency_ms"]["host-1thread"] > 0  # timed on the protocol when it was scored
