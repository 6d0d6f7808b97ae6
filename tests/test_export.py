"""`lite export` end to end on the smoke run: parity gate (pass and a forced failure), the model folder,
and the torch-free on-device translator with its bad-input cases."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, lite

from export.manifest import read_manifest
from export.runtime import Translator
from lite.checkpoint import load_model
from lite.config import DecodeConfig, load_config
from lite.decode import beam_search, greedy
from lite.errors import ExportError, ModelFolderError
from lite.run import RunPaths

FORMATS = ("tflite", "onnx")


def test_fp32_folders_pass_the_gate_with_exact_logits(exported):
    for fmt in FORMATS:
        manifest = read_manifest(exported / "export" / f"{fmt}-fp32")
        p = manifest.parity
        assert p["sentences"] == 40 and p["steps"] > 200
        assert p["max_logit_diff"] < 1e-3 and p["top1"] >= 0.995 and abs(p["bleu_drop"]) <= 0.2
        # the graph MAC counter read the files and agreed with the analytic count
        assert manifest.graph_macs.graph == manifest.graph_macs.analytic > 0
        assert set(manifest.files) == {"spm.model", *manifest.graphs.values()}


def weight_bytes(folder) -> int:
    """Bytes of the constant tensors (weights) in a folder's graphs; the rest of a file is graph
    structure (for the tiny smoke model, tensor names and quantization parameters are most of it)."""
    if (folder / "model.tflite").is_file():
        from export.macs_tflite import read_flatbuffer

        _, model = read_flatbuffer(folder / "model.tflite")
        buffers = [model.Buffers(i) for i in range(model.BuffersLength())]
        return sum(b.DataLength() or b.Size() for b in buffers)  # inline data, or stored after the flatbuffer
    import onnx

    return sum(
        len(t.raw_data)
        for part in ("encoder", "decoder")
        for t in onnx.load(str(folder / f"{part}.onnx")).graph.initializer
    )


def test_int8_folders_store_int8_weights_and_still_translate(exported):
    for fmt in FORMATS:
        fp32, int8 = exported / "export" / f"{fmt}-fp32", exported / "export" / f"{fmt}-int8"
        assert weight_bytes(int8) < 0.35 * weight_bytes(fp32)  # 1 byte per weight instead of 4, plus scales
        graphs = [m.graph_bytes() for m in map(read_manifest, (fp32, int8))]
        assert graphs[1] < graphs[0]
        p = read_manifest(int8).parity
        assert p["top1"] >= p["thresholds"]["min_top1"] and p["max_logit_diff"] > 1e-4  # really quantized
    rows = {r["name"]: r for r in json.loads((exported / "artifacts.json").read_text())}
    # model.pt's row: its host latency, timed by `lite evaluate` on the latency protocol
    assert rows.pop("pytorch-fp32")["latency_ms"]["host-1thread"] > 0
    assert set(rows) == {"tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"}
    assert rows["tflite-int8"]["precision"] == "int8" and rows["tflite-int8"]["size_bytes"] > 0
    for row in rows.values():  # each row says which code, config and machine made it
        prov = row["provenance"]
        assert len(prov["commit"]) == 40 and prov["seed"] == 1 and len(prov["config_sha256"]) == 64
        assert prov["command"].startswith("lite export ")


def test_second_export_reuses_up_to_date_folders(exported):
    before = (exported / "export" / "tflite-fp32" / "manifest.json").read_bytes()
    done = lite("export", str(exported), "--format", "tflite", "--precision", "fp32", "--quiet")
    assert done.returncode == 0 and "up to date" in done.stdout.decode()
    assert (exported / "export" / "tflite-fp32" / "manifest.json").read_bytes() == before


def test_perturbed_weights_fail_the_gate_and_leave_no_artifact(exported, tmp_path, monkeypatch):
    """The exported graph gets weights that differ from model.pt: the gate must catch it."""
    import export.to_tflite as to_tflite
    from export.stage import export_run

    run = tmp_path / "run"
    shutil.copytree(exported, run, ignore=shutil.ignore_patterns("export", "artifacts.json", "checkpoints"))
    real = to_tflite.convert_tflite

    def perturbed(model, *args, **kwargs):
        model = type(model)(model.cfg)
        model.load_state_dict(load_model(run / "model.pt").state_dict())
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "fc2.weight" in name:
                    p.add_(torch.randn_like(p) * 0.05)
        return real(model.eval(), *args, **kwargs)

    monkeypatch.setattr(to_tflite, "convert_tflite", perturbed)
    cfg = load_config(run / "config.yaml")
    with pytest.raises(ExportError, match="parity gate failed"):
        export_run(cfg, RunPaths(run), ["tflite"], ["fp32"], progress=False, log=lambda *_: None)
    assert not (run / "export" / "tflite-fp32").exists()
    assert [p.name for p in (run / "export").iterdir()] == []  # no temp folder left either
    assert not (run / "artifacts.json").exists()


def test_gate_names_each_missed_criterion_including_the_fp32_comparison():
    from export.parity import failures
    from lite.config import ParityThresholds

    figures = {
        "max_logit_diff": 1.9,
        "top1": 0.9612,
        "bleu_drop": 0.4,
        "bleu_fp32": 22.3,
        "bleu_drop_vs_fp32": 0.6,
        "fp32_reference": {"artifact": "tflite-fp32"},
    }
    assert failures(figures, ParityThresholds(2.5, 0.95, 0.7, 0.5)) == ["BLEU drop vs tflite-fp32 0.60 > 0.5"]
    assert failures(figures, ParityThresholds(1.5, 0.97, 0.3, 0.6)) == [
        "max logit difference 1.9 > 1.5",
        "top-1 agreement 0.9612 < 0.97",
        "BLEU drop 0.40 > 0.3",
    ]
    assert failures(figures, ParityThresholds(2.5, 0.95, 0.7)) == []  # no fp32 criterion: not checked
    # a threshold that compares with fp32 but no comparison was made must not pass
    unmeasured = {k: v for k, v in figures.items() if not k.startswith(("bleu_fp32", "bleu_drop_vs", "fp32"))}
    assert failures(unmeasured, ParityThresholds(2.5, 0.95, 0.7, 0.5)) == [
        "BLEU drop vs the fp32 artifact not measured"
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_runtime_greedy_and_beam_search_match_pytorch(exported, docs_corpus, fmt):
    model = load_model(exported / "model.pt")
    translator = Translator(exported / "export" / f"{fmt}-fp32")
    lines = (docs_corpus / "test.en").read_text(encoding="utf-8").splitlines()[:8]
    for line in lines:
        ids = translator.source_ids(line)
        ours = translator.beam_search(ids, 2, 1.0)
        theirs = beam_search(model, torch.tensor([ids]), DecodeConfig(beam=2, lenpen=1.0))[0]
        assert ours == theirs, line
        assert translator.greedy(ids) == greedy(model, torch.tensor([ids]), DecodeConfig())[0], line


TORCH_FREE = (
    "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
    "from lite.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules if sys.modules[m]), 'torch loaded'\n"
    "sys.exit(code)\n"
)


def torch_free(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", TORCH_FREE, "translate", *args], input=stdin, capture_output=True, cwd=ROOT, timeout=300
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_torch_free_translation_matches_the_in_process_runtime(exported, docs_corpus, fmt):
    folder = exported / "export" / f"{fmt}-int8"
    lines = (docs_corpus / "test.en").read_text(encoding="utf-8").splitlines()[:5]
    text = "\n".join([lines[0], "", *lines[1:]]) + "\n"
    done = torch_free("--model", str(folder), "--beam", "1", "-", stdin=text.encode())
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode().split("\n")
    assert len(out) == 7 and out[1] == "" and out[-1] == ""  # one line per input, the empty one stays empty
    expected = list(Translator(folder).translate([lines[0], "", *lines[1:]], beam=1))
    assert out[:-1] == expected and all(expected[i] for i in (0, 2, 3))


def test_the_shipped_runtime_files_translate_on_their_own(exported, tmp_path):
    """RUNTIME_FILES is all the runtime needs: copied alone, with torch and PyYAML unimportable, it translates."""
    from eval.targets.target import stage_runtime

    stage_runtime(ROOT, tmp_path)
    folder = exported / "export" / "onnx-int8"
    code = (
        "import sys\n"
        "sys.modules['torch'] = sys.modules['yaml'] = None  # any import of them raises ImportError\n"
        "from export.runtime import main\n"
        "sys.exit(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "--model", str(folder), "--beam", "1", "Click OK."],
        cwd=tmp_path / "runtime",
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines() == list(Translator(folder).translate(["Click OK."], beam=1))


def test_bad_input_and_damaged_folders(exported, tmp_path):
    folder = exported / "export" / "tflite-fp32"
    # invalid UTF-8 names the line; nothing is a traceback
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"Click OK.\nbroken \xff here\n")
    done = torch_free("--model", str(folder), "--file", str(bad))
    assert done.returncode == 2 and f"{bad}: line 2 is not valid UTF-8" in done.stderr.decode()
    # an over-long source is truncated to the graphs' length, with a warning, and still translated
    long = " ".join(["Click the Save button to keep the document."] * 20)
    done = torch_free("--model", str(folder), "--beam", "1", long)
    assert done.returncode == 0 and done.stdout.decode().strip()
    assert "truncated to fit the exported graphs" in done.stderr.decode()
    # a modified file fails the checksum, a missing one is named, a garbage graph is a clear error
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    with open(broken / "model.tflite", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    done = torch_free("--model", str(broken), "Hello")
    assert done.returncode == 2 and "model.tflite: checksum mismatch" in done.stderr.decode()
    shutil.copyfile(folder / "model.tflite", broken / "model.tflite")
    (broken / "spm.model").unlink()
    with pytest.raises(ModelFolderError, match="spm.model: listed in manifest.json but missing"):
        Translator(broken)
    shutil.copyfile(folder / "spm.model", broken / "spm.model")
    (broken / "model.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelFolderError, match="the interpreter cannot load it"):
        Translator(broken, verify=False)
    done = torch_free("--model", str(tmp_path / "nowhere"), "Hello")
    assert done.returncode == 2 and "model folder not found" in done.stderr.decode()
