"""Graph-based MAC count: read an exported .onnx file (one a user may not have built) and count
the multiply-accumulates of every node from its tensor shapes.

The third, independent cross-check of the MAC convention (docs/design.md): only ops that
multiply matrices count; elementwise work, normalisation, softmax and gathers (embedding lookups)
count zero. Shapes come from the file and onnx.shape_inference; a node whose shapes cannot be
determined raises GraphShapeError naming the node, never a silent zero.

Per node (MACs; bias additions are not counted):
- MatMul / MatMulInteger / QLinearMatMul (batched, broadcast, 1-D operands):
  output elements * K, K the shared (last) dimension of A.
- Gemm: M * N * K (transA/transB respected).
- Conv / ConvInteger / QLinearConv (grouped and depthwise included):
  output elements * (Cin / groups) * prod(kernel) = prod(Y) * prod(W.shape[1:]).
- ConvTranspose: input elements * (Cout / groups) * prod(kernel) = prod(X) * prod(W.shape[1:]).
- Einsum (one or two operands, explicit or implicit output, ellipsis): the product of the sizes of
  every index (and of the broadcast ellipsis dims), i.e. output elements * summed-over sizes.
  A one-operand einsum is a sum or transpose: 0 MACs.
Ops that multiply matrices in a way not counted here (RNNs, contrib attention/fused kernels,
control flow with matrix ops in its body) raise UnsupportedOpError naming the node.

Output (vocabulary) projection rule: a counted MatMul/Gemm node is the output projection when its
result reaches a graph output through nothing but shape/type ops (Reshape, Transpose, Identity,
Cast, Squeeze, Unsqueeze, Flatten, (De)QuantizeLinear) or an Add/Sub/Mul of a constant or of a scalar
(a bias, a scale, a dynamic-quantization scale), and its own last dimension equals that graph output's
last dimension (the vocabulary size). `onnx_macs(..., logits=[names])` restricts the rule to those
graph outputs: a graph whose other outputs come straight from a projection (an encoder's
cross-attention keys with one head) would otherwise match too.
If no node qualifies, macs_excluding_output_projection == macs_total.
"""

from __future__ import annotations

import ast
import operator
import warnings
from collections.abc import Collection
from math import prod
from pathlib import Path

import onnx
from onnx import shape_inference

from lite.errors import UnsupportedModelError, UsageError


class GraphShapeError(UnsupportedModelError):
    """A node's tensor shapes are unknown or symbolic, so its MACs cannot be counted."""


class UnsupportedOpError(UnsupportedModelError):
    """A node multiplies matrices in a way this counter has no formula for."""


# op type -> (index of the first operand, index of the second operand)
_MATMUL_INPUTS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
_CONV_INPUTS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3), "ConvTranspose": (0, 1)}
_PROJECTION_TYPES = {"MatMul", "MatMulInteger", "QLinearMatMul", "Gemm"}
_PASSTHROUGH = {
    "Reshape",
    "Transpose",
    "Identity",
    "Cast",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "QuantizeLinear",
    "DequantizeLinear",
}
_CONSTANT_ARITHMETIC = {"Add", "Sub", "Mul"}
_UNSUPPORTED = {
    "LSTM",
    "GRU",
    "RNN",
    "Attention",
    "MultiHeadAttention",
    "GroupQueryAttention",
    "QAttention",
    "FusedMatMul",
    "DynamicQuantizeMatMul",
    "MatMulNBits",
    "FusedConv",
    "DeformConv",
    "QGemm",
    "MatMulIntegerToFloat",
    "QLinearAttention",
}


class _Shapes:
    """Static shapes of every named tensor: graph inputs/outputs, initializers, inferred value_info."""

    def __init__(self, graph: onnx.GraphProto):
        self.dims: dict[str, list] = {}
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            t = value.type.tensor_type
            if t.HasField("shape"):
                self.dims[value.name] = [
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
                ]
        for init in graph.initializer:
            self.dims[init.name] = list(init.dims)
        self.constants = {init.name for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                self.constants.update(node.output)

    def of(self, node: onnx.NodeProto, name: str) -> list[int]:
        label = f"node {node.name or '(unnamed)'!r} ({node.op_type})"
        if not name:
            raise GraphShapeError(f"{label}: a required input is missing")
        if name not in self.dims:
            raise GraphShapeError(
                f"{label}: shape of tensor {name!r} is unknown after shape inference; export with static shapes"
            )
        dims = self.dims[name]
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            raise GraphShapeError(
                f"{label}: tensor {name!r} has a dynamic or unknown dimension {dims}; export with static shapes"
            )
        return dims


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _matmul_macs(node, shapes: _Shapes) -> int:
    ia, _ = _MATMUL_INPUTS[node.op_type]
    a = shapes.of(node, node.input[ia])
    y = shapes.of(node, node.output[0])
    return prod(y) * a[-1]  # 1-D A: K = a[0]; the output then has no M dimension, still elems * K


def _gemm_macs(node, shapes: _Shapes) -> int:
    a = shapes.of(node, node.input[0])
    y = shapes.of(node, node.output[0])
    k = a[0] if _attr(node, "transA", 0) else a[1]
    return prod(y) * k


def _conv_macs(node, shapes: _Shapes) -> int:
    ix, iw = _CONV_INPUTS[node.op_type]
    w = shapes.of(node, node.input[iw])
    if node.op_type == "ConvTranspose":
        return prod(shapes.of(node, node.input[ix])) * prod(w[1:])
    return prod(shapes.of(node, node.output[0])) * prod(w[1:])


def _einsum_macs(node, shapes: _Shapes) -> int:
    equation = _attr(node, "equation")
    equation = equation.decode() if isinstance(equation, bytes) else equation
    lhs = equation.replace(" ", "").split("->")[0].split(",")
    if len(lhs) != len(node.input):
        raise GraphShapeError(
            f"node {node.name!r} (Einsum): equation {equation!r} does not match {len(node.input)} inputs"
        )
    if len(lhs) == 1:
        return 0
    if len(lhs) > 2:
        raise UnsupportedOpError(
            f"node {node.name!r} (Einsum): {len(lhs)}-operand equation {equation!r}; "
            "the cost depends on a contraction order ONNX does not fix"
        )
    sizes: dict[str, int] = {}
    ellipsis: list[int] = []
    for letters, name in zip(lhs, node.input):
        dims = shapes.of(node, name)
        named = letters.replace("...", "")
        n_ell = len(dims) - len(named)
        if "..." in letters:
            pos = letters.index("...")
            ell, dims = dims[pos : pos + n_ell], dims[:pos] + dims[pos + n_ell :]
            # broadcast the ellipsis dims right-aligned
            width = max(len(ellipsis), len(ell))
            ellipsis = [
                max(x, y) for x, y in zip([1] * (width - len(ellipsis)) + ellipsis, [1] * (width - len(ell)) + ell)
            ]
        elif n_ell:
            raise GraphShapeError(
                f"node {node.name!r} (Einsum): operand {name!r} has rank {len(dims)} "
                f"but {letters!r} names {len(named)} dims"
            )
        for letter, size in zip(named, dims):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return prod(sizes.values()) * prod(ellipsis)


def _node_macs(node: onnx.NodeProto, shapes: _Shapes) -> int:
    op = node.op_type
    if op in _MATMUL_INPUTS:
        return _matmul_macs(node, shapes)
    if op == "Gemm":
        return _gemm_macs(node, shapes)
    if op in _CONV_INPUTS:
        return _conv_macs(node, shapes)
    if op == "Einsum":
        return _einsum_macs(node, shapes)
    if op in _UNSUPPORTED:
        raise UnsupportedOpError(
            f"node {node.name!r} ({node.domain or 'ai.onnx'}::{op}) multiplies matrices; "
            "export/macs_onnx.py has no formula for it"
        )
    for a in node.attribute:  # If / Loop / Scan: a matrix op inside a body runs an unknown number of times
        bodies = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for body in bodies:
            inner = [
                n
                for n in body.node
                if n.op_type in _MATMUL_INPUTS
                or n.op_type in _CONV_INPUTS
                or n.op_type in ("Gemm", "Einsum")
                or n.op_type in _UNSUPPORTED
            ]
            if inner:
                raise UnsupportedOpError(
                    f"node {node.name!r} ({op}) has matrix ops in its body "
                    f"({inner[0].op_type} {inner[0].name!r}); control flow is not counted"
                )
    return 0


def _output_projections(graph: onnx.GraphProto, shapes: _Shapes, logits: Collection[str] | None) -> set[int]:
    """Indices of the MatMul/Gemm nodes that are the vocabulary projection (rule in the module docstring)."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    found: set[int] = set()
    for output in graph.output:
        if logits is not None and output.name not in logits:
            continue
        vocab = (shapes.dims.get(output.name) or [None])[-1]
        name = output.name
        while name in producer:
            node = graph.node[producer[name]]
            if node.op_type in _PROJECTION_TYPES:
                if vocab and (shapes.dims.get(node.output[0]) or [None])[-1] == vocab:
                    found.add(producer[name])
                break
            if node.op_type in _PASSTHROUGH:
                name = node.input[0]
            elif node.op_type in _CONSTANT_ARITHMETIC:
                data = [i for i in node.input if i not in shapes.constants]
                if len(data) > 1:  # a runtime scale (dynamic quantization): follow the one tensor that is not a scalar
                    data = [i for i in data if i not in shapes.dims or prod(d or 2 for d in shapes.dims[i]) > 1]
                if len(data) != 1:
                    break
                name = data[0]
            else:
                break
    return found


_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}


def _dim_value(param: str, dims: dict[str, int]) -> int | None:
    """A symbolic dimension ("batch", or an exporter's expression such as "4*batch") evaluated with
    `dims`; None when it names something not in `dims` or is not plain integer arithmetic."""
    if param in dims:
        return dims[param]

    def value(node) -> int:
        if isinstance(node, ast.Name):
            return dims[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
            return _ARITHMETIC[type(node.op)](value(node.left), value(node.right))
        raise KeyError(param)

    try:
        return value(ast.parse(param.strip(), mode="eval").body)
    except (SyntaxError, KeyError, ZeroDivisionError):
        return None


def _fix_dims(graph: onnx.GraphProto, dims: dict[str, int]) -> None:
    """Replace the symbolic dims of the graph inputs and outputs that `dims` resolves by their values."""
    for value in list(graph.input) + list(graph.output):
        t = value.type.tensor_type
        for d in t.shape.dim if t.HasField("shape") else []:
            if d.HasField("dim_param") and (v := _dim_value(d.dim_param, dims)) is not None:
                d.dim_value = v  # clears dim_param (one-of)


def _load(path: Path, fold: bool, dims: dict[str, int] | None = None) -> onnx.ModelProto:
    """The model with functions inlined, `dims` fixed, and every tensor shape inferred from scratch.

    fold=False: the file as written (weights are not read). fold=True: small constant subgraphs
    (shape arithmetic such as the TorchScript exporter's computed Pad amounts, ConstantOfShape
    included) are folded first with onnxscript's constant folder, so shape inference can see them.
    """
    if fold:
        from onnxscript import ir
        from onnxscript.optimizer import fold_constants, remove_unused_nodes

        ir_model = ir.load(str(path))  # external weights are read lazily, only if a fold needs them
        if dims:
            for value in list(ir_model.graph.inputs) + list(ir_model.graph.outputs):
                if value.shape is not None:
                    fixed = [
                        d if isinstance(d, int) or d.value is None else _dim_value(d.value, dims) or d
                        for d in value.shape
                    ]
                    value.shape = ir.Shape(fixed)
        fold_constants(
            ir_model,
            onnx_shape_inference=True,
            should_fold=lambda node: True if node.op_type == "ConstantOfShape" else None,
        )
        remove_unused_nodes(ir_model)
        model = ir.to_proto(ir_model)
    else:
        model = onnx.load(str(path), load_external_data=False)  # shapes only: weights are not needed
        if dims:
            _fix_dims(model.graph, dims)
    if model.functions:
        from onnx import inliner

        model = inliner.inline_local_functions(model)
    del model.graph.value_info[:]  # exporters may leave symbolic guesses ("unk__0"); infer afresh
    return shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)


def _count(model: onnx.ModelProto, logits: Collection[str] | None) -> dict:
    graph = model.graph
    shapes = _Shapes(graph)
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    macs = {i: m for i, node in enumerate(graph.node) if (m := _node_macs(node, shapes))}
    by_op: dict[str, int] = {}
    for i, m in macs.items():
        by_op[graph.node[i].op_type] = by_op.get(graph.node[i].op_type, 0) + m
    projection = _output_projections(graph, shapes, logits)
    total = sum(macs.values())
    return {
        "macs_total": total,
        "macs_excluding_output_projection": total - sum(macs.get(i, 0) for i in projection),
        "by_op_type": by_op,
        "nodes": [{"name": graph.node[i].name, "op_type": graph.node[i].op_type, "macs": m} for i, m in macs.items()],
        "output_projection": sorted(graph.node[i].name for i in projection),
    }


def onnx_macs(path: Path, dims: dict[str, int] | None = None, logits: Collection[str] | None = None) -> dict:
    """MACs of an .onnx file, counted per node from static tensor shapes.

    dims: values for symbolic (dynamic-axis) dimensions of the graph inputs and outputs, by name,
    e.g. {"batch": 1, "src_len": 30, "cache_len": 30}; derived dims the exporter writes as
    expressions ("4*batch") are evaluated with them. They are fixed before shape inference, so a
    graph exported with dynamic axes can be counted at given sizes. Names the graph does not use
    are ignored; a dimension left symbolic in a counted node still raises GraphShapeError.
    logits: the graph outputs that hold vocabulary logits (the projection rule looks only at these);
    None looks at every output, for files whose output names are not known.

    Returns {"macs_total", "macs_excluding_output_projection", "by_op_type": {op type: macs},
    "nodes": [{"name", "op_type", "macs"}] (every node with MACs > 0), "output_projection": [node
    names excluded by the rule in the module docstring], "constant_folded": bool}.
    Shapes are inferred from the file as written; if some counted node's shapes stay unknown, small
    constant subgraphs are folded and inference runs again (constant_folded=True). A node whose
    shapes are still unknown or symbolic raises GraphShapeError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such ONNX file")
    try:
        return _count(_load(path, fold=False, dims=dims), logits) | {"constant_folded": False}
    except GraphShapeError as first:
        try:
            model = _load(path, fold=True, dims=dims)
        except Exception as exc:  # noqa: BLE001 - folding is a second chance; report the shape problem
            raise GraphShapeError(f"{first} (constant folding to resolve it failed: {exc})") from exc
        return _count(model, logits) | {"constant_folded": True}


def export_for_counting(model, src_len: int, tgt_len: int, path: Path, *, dynamo: bool | None = None) -> str:
    """Export the full forward (src [1, src_len], prev [1, tgt_len]) -> logits [1, tgt_len, V] of an
    EncoderDecoder to ONNX with static shapes and int64 token inputs; return the route used.

    dynamo=None (default): torch.onnx.export(dynamo=True) first (it may also write `path`.data with
    the weights), falling back to dynamo=False (TorchScript) with a warning saying why.
    dynamo=True / False: that exporter only. Returns "dynamo" or "torchscript".
    """
    import torch

    path = Path(path)
    cfg = model.cfg
    first = max(cfg.pad_id, cfg.bos_id, cfg.eos_id) + 1  # ordinary tokens: no padding
    high = max(cfg.vocab_size, first + 1)
    g = torch.Generator().manual_seed(0)
    src = torch.randint(first, high, (1, src_len), generator=g)
    prev = torch.randint(first, high, (1, tgt_len), generator=g)
    kwargs = dict(input_names=["src", "prev"], output_names=["logits"])
    was_training = model.training
    model.eval()
    try:
        if dynamo is not False:
            try:
                torch.onnx.export(model, (src, prev), str(path), dynamo=True, verbose=False, **kwargs)
                return "dynamo"
            except Exception as exc:  # noqa: BLE001 - any dynamo failure falls back to TorchScript
                if dynamo:
                    raise
                warnings.warn(
                    f"torch.onnx dynamo export failed ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); falling back to dynamo=False",
                    stacklevel=2,
                )
        torch.onnx.export(model, (src, prev), str(path), dynamo=False, **kwargs)
        return "torchscript"
    finally:
        model.train(was_training)
