"""export.pack: xz on the smoke run: the packed folder passes the gate as it ships, translates exactly
like its unpacked twin (also without torch), its manifest and artifacts.json count the bytes on disk,
pruned zeros shrink on disk, and a damaged .xz is a one-line error naming the file."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT

from export.manifest import read_manifest, write_manifest
from export.packing import PACKINGS, pack_file, read_graph
from export.runtime import Translator
from export.stage import _settings, export_run
from lite.checkpoint import load_model
from lite.config import ConfigError, load_config
from lite.errors import ModelFolderError
from lite.run import RunPaths

FOLDER = "export/onnx-fp32"  # ONNX: two graph files to pack, and the faster of the two converters


@pytest.fixture(scope="module")
def packed_run(smoke_run, tmp_path_factory):
    """A copy of the smoke run whose config says export.pack: xz, exported as onnx-fp32 by the stage."""
    run = tmp_path_factory.mktemp("packed") / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("export", "artifacts.json", "checkpoints"))
    raw = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    raw.setdefault("export", {})["pack"] = "xz"
    (run / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    export_run(load_config(run / "config.yaml"), RunPaths(run), ["onnx"], ["fp32"], progress=False, log=lambda *_: None)
    return run


def unpacked_twin(folder, out):
    """The same folder with plain graph files (decompressed from the packed ones) and its own manifest."""
    shutil.copytree(folder, out)
    manifest = read_manifest(out)
    graphs = {}
    for role, name in manifest.graphs.items():
        graphs[role] = name.removesuffix(".xz")
        (out / graphs[role]).write_bytes(read_graph(out / name))
        (out / name).unlink()
    write_manifest(
        out, dataclasses.replace(manifest, graphs=graphs, pack=None, graph_bytes_unpacked=None, pack_seconds=None)
    )
    return out


def test_packed_folder_ships_xz_graphs_and_counts_their_bytes(packed_run):
    folder = packed_run / FOLDER
    manifest = read_manifest(folder)
    assert manifest.pack == "xz"
    assert manifest.graphs == {"encoder": "encoder.onnx.xz", "decoder": "decoder.onnx.xz"}
    assert sorted(p.name for p in folder.iterdir()) == [
        "decoder.onnx.xz",
        "encoder.onnx.xz",
        "manifest.json",
        "spm.model",
    ]
    for role, name in manifest.graphs.items():
        on_disk = (folder / name).stat().st_size
        assert manifest.files[name].bytes == on_disk
        assert manifest.graph_bytes_unpacked[role] == len(read_graph(folder / name)) > on_disk
    # the gate ran through the runtime on the packed files: still exact
    p = manifest.parity
    assert p["max_logit_diff"] < 1e-3 and p["top1"] >= 0.995
    # artifacts.json and the report count the packed bytes, the unpacked figure is in the notes
    packed = manifest.graph_bytes()
    row = next(r for r in json.loads((packed_run / "artifacts.json").read_text()) if r["name"] == "onnx-fp32")
    assert row["size_bytes"] == packed
    assert f"{sum(manifest.graph_bytes_unpacked.values()):,} unpacked" in row["notes"]
    from eval.report import collect_run

    report_row = next(r for r in collect_run(packed_run)["rows"] if r["artifact"] == "onnx-fp32")
    assert report_row["size_bytes"] == packed


def test_packed_folder_translates_exactly_like_the_unpacked_one(packed_run, docs_corpus, tmp_path):
    packed = packed_run / FOLDER
    plain = unpacked_twin(packed, tmp_path / "plain")
    lines = (docs_corpus / "test.en").read_text(encoding="utf-8").splitlines()[:12]
    ours, theirs = Translator(packed), Translator(plain)
    for beam in (1, 2):
        assert list(ours.translate(lines, beam=beam)) == list(theirs.translate(lines, beam=beam))
    # the same numbers, not just the same argmax: encoder outputs and teacher-forced decoder logits
    for line in lines[:3]:
        ids = ours.source_ids(line)
        memory = [t.encode(ids) for t in (ours, theirs)]
        assert all(np.array_equal(memory[0][k], memory[1][k]) for k in memory[0])
        states = [t.initial_state(m, 1, len(ids) + 1) for t, m in zip((ours, theirs), memory)]
        for pos, token in enumerate([ours.bos] + ids[:-1]):
            logits = [t.step(state, np.array([token]), pos) for t, state in zip((ours, theirs), states)]
            assert np.array_equal(*logits)
    # the torch-free command reads the packed folder too (lzma is standard library)
    code = "import sys; sys.modules['torch'] = None\nfrom lite.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    done = subprocess.run(
        [sys.executable, "-c", code, "translate", "--model", str(packed), "--beam", "1", "-"],
        input="\n".join(lines[:4]).encode() + b"\n",
        capture_output=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines() == list(Translator(plain).translate(lines[:4], beam=1))


def test_pruned_zeros_shrink_on_disk_only_when_packed(packed_run, tmp_path):
    """80% of every block Linear weight zeroed: the plain graphs stay as large, the packed ones do not."""
    from export.to_onnx import convert_onnx

    ex = load_config(packed_run / "config.yaml").export
    model = load_model(packed_run / "model.pt")
    with torch.no_grad():
        for stack in (model.encoder, model.decoder):
            for module in stack.modules():
                if isinstance(module, torch.nn.Linear):
                    w = module.weight
                    cut = w.abs().flatten().kthvalue(int(0.8 * w.numel())).values
                    w[w.abs() <= cut] = 0
    convert_onnx(model, tmp_path, precision="fp32", max_src_len=ex.max_src_len, target_slots=ex.max_target_len)
    unpacked = sum((tmp_path / f"{g}.onnx").stat().st_size for g in ("encoder", "decoder"))
    packed = sum(pack_file(tmp_path / f"{g}.onnx").stat().st_size for g in ("encoder", "decoder"))
    dense = read_manifest(packed_run / FOLDER)
    dense_unpacked = sum(dense.graph_bytes_unpacked.values())
    dense_packed = dense.graph_bytes()
    assert abs(unpacked - dense_unpacked) < 0.01 * dense_unpacked  # stored densely: zeros cost full size
    # measured on the smoke model: dense 0.85 of its size, pruned 0.55 (the embedding stays dense)
    assert packed / unpacked < 0.75 * dense_packed / dense_unpacked


def test_damaged_xz_is_a_one_line_error_naming_the_file(packed_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(packed_run / FOLDER, broken)
    graph = broken / "decoder.onnx.xz"
    good = graph.read_bytes()
    for damaged in (good[: len(good) // 2], good[:4000] + bytes([good[4000] ^ 0x10]) + good[4001:]):
        graph.write_bytes(damaged)
        with pytest.raises(ModelFolderError, match="decoder.onnx.xz: checksum mismatch"):
            Translator(broken)
        with pytest.raises(ModelFolderError, match="decoder.onnx.xz: not a valid xz file") as err:
            Translator(broken, verify=False)  # the xz check itself (CRC64) still catches it
        assert "\n" not in str(err.value)
    graph.unlink()
    with pytest.raises(ModelFolderError, match="decoder.onnx.xz: cannot read it"):
        Translator(broken, verify=False)


def test_pack_file_and_read_graph(tmp_path):
    data = bytes(100_000) + bytes(range(256)) * 40
    plain = tmp_path / "model.tflite"
    plain.write_bytes(data)
    assert read_graph(plain) == data  # a plain file is read as it is
    out = pack_file(plain)
    assert out.name == "model.tflite.xz" and not plain.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite.xz"]  # no temp file left
    assert read_graph(out) == data and out.stat().st_size < len(data) // 20


def test_pack_setting_is_validated_and_part_of_the_reuse_settings(tmp_path):
    raw = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text(encoding="utf-8"))
    for bad, message in (("zip", "export.pack must be none or xz"), (9, "export.pack: expected str")):
        raw["export"]["pack"] = bad
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / "c.yaml")
    cfg = load_config(ROOT / "configs/smoke.yaml")
    assert cfg.export.pack == "none" and PACKINGS == ("none", "xz")
    plain = _settings(cfg, "onnx", "fp32", "sha")
    # folders exported before these options existed stay reusable
    assert "pack" not in plain["export"] and "hidden_steps" not in plain["export"]
    assert "shortlist" not in plain["decode"] and "shortlist_sha256" not in plain
    assert _settings(cfg, "onnx", "fp32", "sha", "shortlist-sha")["shortlist_sha256"] == "shortlist-sha"
    xz = _settings(dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, pack="xz")), "onnx", "fp32", "sha")
    assert xz["export"]["pack"] == "xz" and xz != plain  # switching packing rebuilds the folder


def test_second_export_reuses_the_packed_folder(packed_run):
    before = (packed_run / FOLDER / "manifest.json").read_bytes()
    logged: list[str] = []
    export_run(
        load_config(packed_run / "config.yaml"),
        RunPaths(packed_run),
        ["onnx"],
        ["fp32"],
        progress=False,
        log=logged.append,
    )
    assert any("up to date" in line for line in logged)
    assert (packed_run / FOLDER / "manifest.json").read_bytes() == before
