"""A local + global attention layer (one head with ERNIE-Sparse representatives) exports to TFLite and
ONNX without any n x n tensor, and matches PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from lite.models.attention import MultiheadAttention
from lite.sparse.patterns import HeadPattern

N, D, HEADS = 2048, 256, 4


class AttentionLayer(torch.nn.Module):
    def __init__(self, patterns):
        super().__init__()
        self.attn = MultiheadAttention(D, HEADS, patterns=patterns)
        self.attn.mask_fill = -30.0  # the export bound (export/graphs.py)

    def forward(self, x):
        return self.attn(x)


@pytest.fixture(scope="module")
def layer_and_input():
    torch.manual_seed(0)
    local = HeadPattern(kind="local", window=128, global_tokens=[0, 1])
    layer = AttentionLayer(
        [HeadPattern(kind="local", window=128, global_tokens=[0, 1], representatives=True)] + [local] * (HEADS - 1)
    ).eval()
    return layer, torch.randn(1, N, D)


def test_tflite_graph_has_no_n_by_n_tensor(layer_and_input, tmp_path: Path):
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    layer, x = layer_and_input
    path = tmp_path / "layer.tflite"
    litert_torch.convert(layer, (x,)).export(str(path))
    interpreter = Interpreter(str(path))
    interpreter.allocate_tensors()
    sizes = [int(np.prod(t["shape"])) for t in interpreter.get_tensor_details()]
    assert max(sizes) < N * N / 2  # the largest is the gathered score block [B*H*nb, b, 3b/2.. + g]
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "BATCH_MATMUL" in ops and not any(op.startswith(("CUSTOM", "FLEX", "STABLEHLO")) for op in ops)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.numpy())
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    with torch.no_grad():
        assert np.abs(out - layer(x).numpy()).max() < 1e-4


def test_onnx_graph_has_no_n_by_n_tensor(layer_and_input, tmp_path: Path):
    import onnxruntime as ort

    layer, x = layer_and_input
    path = tmp_path / "layer.onnx"
    torch.onnx.export(layer, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=True, external_data=False)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    sizes = []
    for value in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.initializer):
        dims = (
            value.dims
            if isinstance(value, onnx.TensorProto)
            else [d.dim_value for d in value.type.tensor_type.shape.dim]
        )
        sizes.append(int(np.prod(dims)) if dims else 1)
    assert len(sizes) > 50 and max(sizes) < N * N / 2
    out = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(out - layer(x).numpy()).max() < 1e-4


def test_export_refuses_what_its_graphs_would_not_reproduce():
    from export.stage import _check_sparse_support
    from lite.config import ModelConfig
    from lite.errors import ExportError

    local = [[HeadPattern(kind="local", window=8)]]
    _check_sparse_support(ModelConfig(decoder_patterns=local), ["tflite", "onnx"], Path("run/config.yaml"))
    with pytest.raises(ExportError, match=r"TFLite \(fixed source lengths\) only"):
        _check_sparse_support(ModelConfig(encoder_patterns=local), ["tflite", "onnx"], Path("run/config.yaml"))
    _check_sparse_support(ModelConfig(encoder_patterns=local), ["tflite"], Path("run/config.yaml"))
    with pytest.raises(ExportError, match="still has learned attention patterns"):
        _check_sparse_support(
            ModelConfig(encoder_patterns=[[HeadPattern(kind="dam", block=8)]]), ["tflite"], Path("run/config.yaml")
        )
