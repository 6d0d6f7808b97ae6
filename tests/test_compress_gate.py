"""What `lite compress` does when an export fails, by error kind: a missed int8 parity gate (GateError)
leads to quantization-aware fine-tuning when the recipe has a qat section; any other failure stops the
run as it is. Fast: export and fine-tuning are stubbed (tests/test_compress_pipeline.py runs them)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from compress import pipeline
from compress.recipe import QATStep
from lite.errors import ConversionError, GateError
from lite.run import RunPaths

MISSED = ["max logit difference 0.5 > 0"]


def _gate_error(out: RunPaths, precision: str) -> GateError:
    artifact = out.root / "export" / f"tflite-{precision}"
    figures = {"sentences": 40, "max_logit_diff": 0.5, "thresholds": {"max_logit_diff": 0.0}}
    return GateError(f"{artifact}: parity gate failed", artifact, precision, figures, MISSED)


class _Exports:
    """Stands in for _export_all: raises or returns the given outcomes in turn, and records `force`."""

    def __init__(self, *outcomes):
        self.outcomes, self.forced = list(outcomes), []

    def __call__(self, cfg, out, progress, log, force):
        self.forced.append(force)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.fixture()
def setup(tmp_path: Path, monkeypatch):
    out = RunPaths(tmp_path / "compressed" / "r")
    out.root.mkdir(parents=True)
    tuned = []

    def qat_finetune(ctx, cfg, out, model, record, entry, progress):
        tuned.append(entry)
        record["qat"] = entry

    monkeypatch.setattr(pipeline, "_qat_finetune", qat_finetune)

    def measure(exports: _Exports, qat: QATStep | None) -> dict:
        monkeypatch.setattr(pipeline, "_export_all", exports)
        ctx = SimpleNamespace(recipe=SimpleNamespace(qat=qat))
        record: dict = {"model": {"bleu_greedy": 20.0}}
        rows = pipeline._export_and_measure(ctx, None, out, None, record, False, lambda line: None)
        return record | {"rows": rows}

    return out, tuned, measure


ROW = {"name": "tflite-int8", "precision": "int8", "bleu": 19.9, "size_bytes": 1, "notes": ""}
PASSED = {"tflite-int8": {"passed": True, "failed": []}}


def test_a_missed_int8_gate_runs_qat_and_exports_again(setup):
    out, tuned, measure = setup
    exports = _Exports(_gate_error(out, "int8"), ([ROW], PASSED))
    record = measure(exports, QATStep())
    assert exports.forced == [False, True] and record["rows"] == [ROW]
    assert tuned[0]["trigger"] == "parity gate" and tuned[0]["ran"] is True
    assert tuned[0]["first_gate"]["tflite-int8"]["failed"] == MISSED
    assert record["qat"]["second_gate"] == PASSED


def test_a_second_missed_gate_is_a_gate_error_with_both_gates(setup):
    out, tuned, measure = setup
    exports = _Exports(_gate_error(out, "dynamic-int8"), _gate_error(out, "dynamic-int8"))
    with pytest.raises(GateError, match="parity gate failed again after QAT on 40 test sentences") as err:
        measure(exports, QATStep())
    assert "(thresholds: export.parity.dynamic_int8; before QAT: tflite-dynamic-int8: max logit" in str(err.value)
    assert err.value.precision == "dynamic-int8" and err.value.missed == MISSED
    assert len(tuned) == 1 and '"second_gate"' in (out.root / "compress.json").read_text()


def test_without_a_qat_section_a_missed_gate_stops_the_run(setup):
    out, tuned, measure = setup
    with pytest.raises(GateError, match="the recipe has no qat section to fine-tune with and try again"):
        measure(_Exports(_gate_error(out, "int8")), None)
    assert tuned == []


@pytest.mark.parametrize("error", ["fp32 gate", "conversion"])
def test_other_failures_pass_through_without_qat(setup, error):
    out, tuned, measure = setup
    exc = _gate_error(out, "fp32") if error == "fp32 gate" else ConversionError("model.tflite: conversion failed")
    with pytest.raises(type(exc)) as raised:
        measure(_Exports(exc), QATStep())
    assert raised.value is exc and tuned == []


def test_a_bleu_loss_over_the_limit_runs_qat(setup):
    out, tuned, measure = setup
    losing = ROW | {"bleu": 19.0}
    exports = _Exports(([losing], PASSED), ([ROW], PASSED))
    record = measure(exports, QATStep(when_bleu_drop_over=0.3))
    assert tuned[0]["trigger"] == "test BLEU loss" and tuned[0]["triggered_by"] == {"tflite-int8": 1.0}
    assert record["rows"] == [ROW] and exports.forced == [False, True]
    assert measure(_Exports(([ROW], PASSED)), QATStep(when_bleu_drop_over=0.3))["rows"] == [ROW]
