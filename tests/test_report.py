"""The MAC/BLEU budget report, on run folders built by hand: values, "not measured", PASS/FAIL margins,
the Pareto frontier, the plots and the HTML."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from eval.kernels import FAMILIES
from eval.report import collect_run, write_report
from lite.checkpoint import model_record, save_atomic
from lite.config import load_config, to_dict
from lite.errors import RunFolderError
from lite.metrics.macs import count_macs, model_summary
from lite.models.seq2seq import EncoderDecoder

ROOT = Path(__file__).resolve().parents[1]
SIG = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
PNG = b"\x89PNG\r\n\x1a\n"


def _record(bleu: float, decoding: str, beam: int, sentences: int = 1245) -> dict:
    """A results.json record as eval/evaluate.py writes it."""
    return {
        "bleu": bleu,
        "bleu_signature": SIG,
        "brevity_penalty": 0.98,
        "length_ratio": 0.98,
        "chrf": 45.1,
        "chrf_signature": "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0",
        "sentences": sentences,
        "split": "test",
        "decoding": decoding,
        "beam": beam,
        "lenpen": 1.0,
        "corpus": "docs-en-de",
        "pairs": {"split": "test", "read": 1245, "used": sentences},
        "decode_seconds": 60.0,
        "seconds_per_sentence": 0.05,
        "threads": 2,
    }


def _write_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Run "lite" (LSRA, default.yaml + a latency budget): a real small model.pt, results.json, train.json,
    artifacts.json with an int8 TFLite (no latency) and a pruned int8 ONNX (+ .data sidecar, host latency).
    Run "base" (Transformer, default-transformer.yaml): results.json only (not trained here)."""
    base = tmp_path_factory.mktemp("runs")
    lite, tf = base / "lite", base / "base"
    lite.mkdir()
    tf.mkdir()
    raw = yaml.safe_load((ROOT / "configs/default.yaml").read_text(encoding="utf-8"))
    raw["budget"]["max_latency_ms"] = 10
    raw["decode"] = {"beam": 4, "lenpen": 1.0}  # the fixture's headline decoding, whatever the shipped config says
    (lite / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    raw_tf = yaml.safe_load((ROOT / "configs/default-transformer.yaml").read_text(encoding="utf-8"))
    raw_tf["decode"] = {"beam": 4, "lenpen": 1.0}
    (tf / "config.yaml").write_text(yaml.safe_dump(raw_tf, sort_keys=False), encoding="utf-8")

    cfg = load_config(lite / "config.yaml")
    mcfg = replace(cfg.model, vocab_size=300)  # small vocabulary: a small file, the same MACs
    save_atomic(model_record(EncoderDecoder(mcfg)), lite / "model.pt")
    _write_json(
        {"test/greedy": _record(15.87, "greedy", 1), "test/beam4-lenpen1": _record(16.23, "beam4-lenpen1", 4)},
        lite / "results.json",
    )
    _write_json(
        {
            "stop_reason": "max_minutes",
            "steps": 1234,
            "epochs": 3.5,
            "wall_seconds": 1200.0,
            "target_tokens_per_s": 2900.0,
            "final_model": "average of 3",
            "final_valid_ppl": 14.4,
            "params": model_summary(mcfg)["params"],
        },
        lite / "train.json",
    )
    pruned = replace(mcfg, ffn_dim=256)
    (lite / "export").mkdir()
    (lite / "export/model.int8.tflite").write_bytes(b"\0" * 3_000_000)
    (lite / "export/pruned.onnx").write_bytes(b"\0" * 1_000)
    (lite / "export/pruned.onnx.data").write_bytes(b"\0" * 2_000_000)
    _write_json(
        [
            {
                "name": "int8-tflite",
                "path": "export/model.int8.tflite",
                "format": "tflite",
                "precision": "int8",
                "size_bytes": 3_000_000,
                "bleu": {"test/greedy": 15.9},
                "latency_ms": {"host-x86": None},
            },
            {
                "name": "pruned-int8-onnx",
                "path": "export/pruned.onnx",
                "format": "onnx",
                "precision": "int8",
                "model_config": to_dict(pruned),
                "bleu": {"test/beam4-lenpen1": {"bleu": 14.2, "bleu_signature": SIG, "sentences": 1245}},
                "latency_ms": {"host-x86": 8.5, "pixel7-cpu": None},
                "instructions": {"qemu:cortex-a72": 41_234_567},
            },
        ],
        lite / "artifacts.json",
    )

    fam = {f: {"step_ms": 0.0, "encoder_ms": 0.0, "step": 0, "encoder": 0} for f in FAMILIES}
    fam["fp32 matmul"] |= {"step_ms": 0.6, "step": 1_500_000}
    fam["packing dynamic matmul operands"] |= {"step_ms": 0.2, "step": 300_000}
    fam["numpy"] |= {"step_ms": 0.2, "step": 200_000}
    arm = {"step_mean": 2_000_000, "families": fam}
    _write_json(
        {"results": [{"artifact": "tflite-fp32", "host": {"step_ms": 1.0, "families": fam}, "cores": {"a76": arm}}]},
        lite / "profile.json",
    )
    _write_json({"test/beam4-lenpen1": _record(14.5, "beam4-lenpen1", 4)}, tf / "results.json")
    return {
        "lite": lite,
        "base": tf,
        "lite_cfg": mcfg,
        "pruned_cfg": pruned,
        "base_cfg": replace(load_config(tf / "config.yaml").model, vocab_size=8000),
    }


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("report")
    return write_report([runs["lite"], runs["base"]], out), out


def _rows(rep: dict) -> dict:
    return {r["id"]: r for r in rep["rows"]}


def test_values_in_markdown_and_json(runs, report):
    rep, out = report
    saved = json.loads((out / "report.json").read_text(encoding="utf-8"))
    rows = _rows(saved)
    assert list(rows) == ["lite/model.pt", "lite/int8-tflite", "lite/pruned-int8-onnx", "base/model.pt"]
    md = (out / "report.md").read_text(encoding="utf-8")
    lite_macs = count_macs(runs["lite_cfg"])["macs"]
    for rid, mcfg in (
        ("lite/model.pt", runs["lite_cfg"]),
        ("lite/int8-tflite", runs["lite_cfg"]),
        ("lite/pruned-int8-onnx", runs["pruned_cfg"]),
        ("base/model.pt", runs["base_cfg"]),
    ):
        assert rows[rid]["macs"] == count_macs(mcfg)["macs"]
        assert f"{rows[rid]['macs']:,}" in md
    summary = model_summary(runs["lite_cfg"])
    assert (rows["lite/model.pt"]["params"], rows["lite/model.pt"]["params_no_embed"]) == (
        summary["params"],
        summary["params_no_embed"],
    )
    assert rows["lite/pruned-int8-onnx"]["macs"] < lite_macs
    # BLEU: the config's decoding (beam 4) is the headline; the int8 row only has greedy
    assert rows["lite/model.pt"]["bleu"]["bleu"] == 16.23 and rows["lite/model.pt"]["bleu"]["signature"] == SIG
    assert rows["lite/model.pt"]["bleu"]["key"] == "test/beam4-lenpen1"
    assert rows["lite/int8-tflite"]["bleu"]["bleu"] == 15.9 and rows["lite/int8-tflite"]["bleu"]["signature"] is None
    assert rows["base/model.pt"]["bleu"]["bleu"] == 14.5
    for text in (
        "16.23",
        "15.87",
        "15.90",
        "14.50",
        "docs-en-de test, 1,245 sentences, beam4-lenpen1",
        SIG.replace("|", "\\|"),
        "signature not recorded",
    ):
        assert text in md
    # sizes: model.pt and files on disk; the ONNX row adds its .data sidecar
    assert rows["lite/model.pt"]["size_bytes"] == (runs["lite"] / "model.pt").stat().st_size
    assert rows["lite/int8-tflite"]["size_bytes"] == 3_000_000
    assert rows["lite/pruned-int8-onnx"]["size_bytes"] == 2_001_000
    assert rows["lite/pruned-int8-onnx"]["instructions"] == {"qemu:cortex-a72": 41_234_567}
    assert "41,234,567" in md
    assert rows["lite/model.pt"]["sources"]["macs"] == "lite.metrics.macs.count_macs(model.pt model_config)"
    assert rows["base/model.pt"]["sources"]["macs"].startswith("lite.metrics.macs.count_macs(config.yaml model")
    assert saved["runs"][0]["train"]["steps"] == 1234 and saved["runs"][1]["train"] is None
    assert "max_minutes (stopped by the clock: not reproducible)" in md


def test_profile_section(report):
    """RUN/profile.json's folders, host and cores, with each column's share of a step."""
    md = (report[1] / "report.md").read_text()
    assert "## Where a decoder step goes" in md
    assert "| lite | tflite-fp32 | host | 1.000 ms | 60% | 0% | 0% | 20% | 0% | 0% | 20% | 0% |" in md
    assert "| lite | tflite-fp32 | a76 | 2.00M instructions | 75% |" in md


def test_missing_values_are_not_measured(report):
    rep, out = report
    rows = _rows(json.loads((out / "report.json").read_text(encoding="utf-8")))
    int8, base = rows["lite/int8-tflite"], rows["base/model.pt"]
    assert int8["latency_ms"] == {"host-x86": None}
    assert int8["budget"]["max_latency_ms"]["status"] == "unknown"
    assert base["size_bytes"] is None and base["budget"]["max_size_mb"]["status"] == "unknown"
    md = (out / "report.md").read_text(encoding="utf-8")
    line = next(row for row in md.splitlines() if row.startswith("| lite | lsra | int8-tflite |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    head = next(row for row in md.splitlines() if row.startswith("| run | family |"))
    names = [c.strip() for c in head.strip("|").split("|")]
    assert cells[names.index("latency host-x86 (ms)")] == "not measured"
    assert cells[names.index("latency pixel7-cpu (ms)")] == "not measured"
    base_line = next(row for row in md.splitlines() if row.startswith("| base | transformer | model.pt |"))
    assert [c.strip() for c in base_line.strip("|").split("|")][names.index("size on disk")] == "not measured"


def test_budget_pass_fail_and_margins(runs, report):
    rep, _ = report
    rows = _rows(rep)
    model = rows["lite/model.pt"]["budget"]
    lite_macs = count_macs(runs["lite_cfg"])["macs"]
    assert model["max_macs"]["status"] == "PASS" and model["max_macs"]["margin"] == lite_macs - 100_000_000
    assert model["max_macs"]["text"] == f"-{(100_000_000 - lite_macs) / 1e6:.1f}M MACs under"
    assert model["min_bleu"]["status"] == "PASS" and model["min_bleu"]["text"] == "+1.23 BLEU over"
    assert model["max_size_mb"]["status"] == "PASS"
    assert rows["lite/model.pt"]["verdict"] == "unknown"  # latency budget, latency not measured
    base = rows["base/model.pt"]
    assert base["budget"]["min_bleu"]["status"] == "FAIL"
    assert base["budget"]["min_bleu"]["margin"] == pytest.approx(-0.5)
    assert base["budget"]["min_bleu"]["text"] == "-0.50 BLEU under"
    assert base["budget"]["max_latency_ms"]["status"] == "no budget" and base["verdict"] == "FAIL"
    pruned = rows["lite/pruned-int8-onnx"]["budget"]
    assert pruned["max_latency_ms"]["status"] == "PASS" and pruned["max_latency_ms"]["margin"] == pytest.approx(-1.5)
    assert pruned["max_latency_ms"]["text"] == "-1.5 ms under (worst: host-x86); not measured on pixel7-cpu"
    assert pruned["min_bleu"]["status"] == "FAIL" and pruned["min_bleu"]["text"] == "-0.80 BLEU under"
    assert pruned["max_size_mb"]["text"] == "-23.00 MB under"
    md = report[1].joinpath("report.md").read_text(encoding="utf-8")
    assert "FAIL: -0.50 BLEU under" in md and "PASS: +1.23 BLEU over" in md


def test_pareto_frontier(report):
    rep, out = report
    saved = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [p["id"] for p in saved["pareto"]] == ["lite/pruned-int8-onnx", "lite/model.pt"]
    assert [r["id"] for r in saved["rows"] if r["pareto"]] == ["lite/model.pt", "lite/pruned-int8-onnx"]


def test_plots_and_html(report):
    rep, out = report
    for name in ("bleu_vs_macs.png", "macs_per_layer.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 20_000
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and "<th>BLEU</th>" in page
    assert "16.23" in page and SIG in page and 'src="bleu_vs_macs.png"' in page and 'class="FAIL"' in page
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # nothing half-written left behind
    assert sorted(rep["files"]) == sorted(
        ["report.md", "report.html", "report.json", "bleu_vs_macs.png", "macs_per_layer.png"]
    )


def test_default_out_dir_is_first_run(runs, tmp_path):
    run = tmp_path / "base"
    shutil.copytree(runs["base"], run)
    rep = write_report([run])
    assert (run / "report.md").is_file() and (run / "report.json").is_file() and (run / "macs_per_layer.png").is_file()
    assert rep["rows"][0]["bleu"]["bleu"] == 14.5


def test_errors_name_the_file(runs, tmp_path):
    with pytest.raises(RunFolderError, match=r"missing: not a run folder"):
        collect_run(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunFolderError, match=r"config\.yaml"):
        collect_run(empty)
    bad = tmp_path / "bad"
    shutil.copytree(runs["base"], bad)
    (bad / "results.json").write_text('{"test/greedy": ', encoding="utf-8")
    with pytest.raises(RunFolderError, match=r"results\.json: not valid JSON"):
        collect_run(bad)
    (bad / "results.json").write_text("{}", encoding="utf-8")
    _write_json(
        [{"name": "x", "path": "x.tflite", "format": "tflite", "precision": "int8", "latency": {}}],
        bad / "artifacts.json",
    )
    with pytest.raises(RunFolderError, match=r"artifacts\.json: artifact 0: unknown key\(s\) latency"):
        collect_run(bad)
