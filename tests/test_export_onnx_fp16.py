"""ONNX fp16 end to end: the converted graphs are valid ONNX (topologically sorted), the graph MAC count
reads them, and on the smoke run the folder passes the parity gate and translates through `lite translate
--model`."""

from __future__ import annotations

import shutil

import onnx
import pytest
from conftest import lite, tiny_model

from export.macs_onnx import onnx_macs
from export.manifest import read_manifest
from export.stage import export_run
from export.to_onnx import _sort_topologically, convert_onnx
from lite.config import load_config
from lite.errors import ExportError
from lite.run import RunPaths

pytest.importorskip("onnxruntime")

DIMS = {"encoder": {"src_len": 9}, "decoder": {"batch": 1, "src_len": 9, "cache_len": 11}}


def test_fp16_graphs_are_sorted_and_countable(tmp_path):
    model = tiny_model()
    infos = {
        p: convert_onnx(model, tmp_path / p, precision=p, max_src_len=12, target_slots=16) for p in ("fp32", "fp16")
    }
    for part in ("encoder", "decoder"):
        fp16 = onnx.load(infos["fp16"]["files"][part])
        onnx.checker.check_model(fp16)  # refuses nodes that read a tensor before its producer
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in fp16.graph.initializer)
        assert all(i.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for i in fp16.graph.input)
        weights = [
            sum(len(i.raw_data) for i in onnx.load(infos[p]["files"][part]).graph.initializer) for p in ("fp32", "fp16")
        ]
        assert weights[1] < 0.55 * weights[0]  # float16 weights (a few small int64 constants stay)
        counts = [
            onnx_macs(infos[p]["files"][part], dims=DIMS[part], logits=["logits"] if part == "decoder" else [])
            for p in ("fp32", "fp16")
        ]
        assert counts[0]["macs_total"] == counts[1]["macs_total"] > 0
        assert counts[0]["macs_excluding_output_projection"] == counts[1]["macs_excluding_output_projection"]


def test_sort_keeps_a_sorted_graph_and_names_a_missing_input(tmp_path):
    nodes = [
        onnx.helper.make_node("Relu", ["x"], ["a"], name="first"),
        onnx.helper.make_node("Neg", ["a"], ["b"], name="second"),
        onnx.helper.make_node("Abs", ["b"], ["y"], name="third"),
    ]
    graph = onnx.helper.make_graph(
        nodes[::-1],
        "g",
        [onnx.helper.make_tensor_value_info("x", 1, [2])],
        [onnx.helper.make_tensor_value_info("y", 1, [2])],
    )
    _sort_topologically(graph, tmp_path / "g.onnx")
    assert [n.name for n in graph.node] == ["first", "second", "third"]
    _sort_topologically(graph, tmp_path / "g.onnx")
    assert [n.name for n in graph.node] == ["first", "second", "third"]
    graph.node[0].input[0] = "nowhere"
    with pytest.raises(ExportError, match=r"g\.onnx: node 'first' reads 'nowhere', which no node"):
        _sort_topologically(graph, tmp_path / "g.onnx")


@pytest.fixture(scope="module")
def fp16_run(smoke_run, tmp_path_factory):
    """A copy of the smoke run with its onnx-fp16 folder, exported by the stage behind the gate."""
    run = tmp_path_factory.mktemp("fp16") / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("export", "artifacts.json", "checkpoints"))
    export_run(load_config(run / "config.yaml"), RunPaths(run), ["onnx"], ["fp16"], progress=False, log=lambda *_: None)
    return run


def test_onnx_fp16_passes_the_gate_and_translates(fp16_run):
    folder = fp16_run / "export" / "onnx-fp16"
    manifest = read_manifest(folder)
    p, limits = manifest.parity, manifest.parity["thresholds"]
    # measured on the smoke run: top-1 0.9987, max logit diff 0.005, the same greedy BLEU as PyTorch
    assert p["max_logit_diff"] <= limits["max_logit_diff"] and p["top1"] >= limits["min_top1"]
    assert p["bleu_drop"] <= limits["max_bleu_drop"]
    assert manifest.graph_macs.graph == manifest.graph_macs.analytic > 0
    done = lite(
        "translate", "--model", str(folder), "--beam", "1", "-", stdin=b"Click the Save button.\n\nOpen the file.\n"
    )
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode().split("\n")
    assert len(out) == 4 and out[1] == "" and out[0] and out[2]
