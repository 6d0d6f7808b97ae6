"""Graph-based MAC count of one signature of a .tflite file, from the static tensor shapes stored in it.

The TFLite counterpart of export/macs_onnx.py (same convention, docs/design.md): only ops that
multiply matrices count; elementwise work, normalisation, softmax, gathers and embedding lookups
count zero, and bias additions are not counted. Works on float, fp16-weight and int8 files alike
(QUANTIZE / DEQUANTIZE count zero, int8 weights have the float shapes). A counted tensor with an
unknown or dynamic dimension raises GraphShapeError naming the op, never a silent zero.

Per op (MACs):
- FULLY_CONNECTED: output elements * K, K the last dimension of the weights [units, K].
- BATCH_MATMUL: output elements * K, K the contracted dimension of the left operand (adj_x respected).
- CONV_2D: output elements * KH * KW * Cin/groups = prod(out) * prod(filter[1:]) (filter [Cout, KH, KW, Cin/g]).
- DEPTHWISE_CONV_2D: output elements * KH * KW (filter [1, KH, KW, Cout]).
- CONV_3D: output elements * prod(filter[:-1]) (filter [KD, KH, KW, Cin, Cout]).
- TRANSPOSE_CONV / CONV_3D_TRANSPOSE: input elements * the filter size except its input-channel axis.
- MUL whose result is only reduced by SUM (through QUANTIZE/DEQUANTIZE at most): a contraction
  written out elementwise (what a one-token depthwise convolution step, or an einsum, lowers to);
  one MAC per product, i.e. the MUL's output elements. Any other MUL counts zero.
Ops that multiply matrices in a way not counted here (recurrent cells, StableHLO dot/convolution,
custom ops, control flow or composites calling subgraphs that hold matrix ops) raise UnsupportedOpError.

Output (vocabulary) projection: the counted op whose result reaches the signature output named
"logits" through nothing but shape/type ops (RESHAPE, SQUEEZE, EXPAND_DIMS, TRANSPOSE, CAST,
QUANTIZE, DEQUANTIZE) or an ADD/SUB/MUL of a constant, and whose own last dimension equals that
output's last dimension (the vocabulary size). Without such an op (or a "logits" output),
macs_excluding_output_projection == macs_total.
"""

from __future__ import annotations

from math import prod
from pathlib import Path

from lite.errors import UnsupportedModelError, UsageError


class GraphShapeError(UnsupportedModelError):
    """A counted op's tensor shapes are unknown or dynamic, so its MACs cannot be counted."""


class UnsupportedOpError(UnsupportedModelError):
    """An op multiplies matrices in a way this counter has no formula for."""


_PASSTHROUGH = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "CAST", "QUANTIZE", "DEQUANTIZE"}
_CONSTANT_ARITHMETIC = {"ADD", "SUB", "MUL"}
_PROJECTIONS = {"FULLY_CONNECTED", "BATCH_MATMUL"}
_UNSUPPORTED = {
    "LSTM",
    "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "BIDIRECTIONAL_SEQUENCE_LSTM",
    "RNN",
    "UNIDIRECTIONAL_SEQUENCE_RNN",
    "BIDIRECTIONAL_SEQUENCE_RNN",
    "SVDF",
    "CUSTOM",
    "STABLEHLO_DOT_GENERAL",
    "STABLEHLO_CONVOLUTION",
}
_CALLS_SUBGRAPHS = {
    "WHILE",
    "IF",
    "CALL_ONCE",
    "STABLEHLO_COMPOSITE",
    "STABLEHLO_WHILE",
    "STABLEHLO_CASE",
    "STABLEHLO_REDUCE",
    "STABLEHLO_SCATTER",
    "STABLEHLO_SORT",
    "STABLEHLO_REDUCE_WINDOW",
}
_MATRIX_OPS = {
    "FULLY_CONNECTED",
    "BATCH_MATMUL",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "CONV_3D",
    "TRANSPOSE_CONV",
    "CONV_3D_TRANSPOSE",
} | _UNSUPPORTED


class _Graph:
    """One subgraph of a flatbuffer: op names, tensor shapes, producers and consumers."""

    def __init__(self, schema, model, index: int):
        self.schema, self.model = schema, model
        self.subgraph = sg = model.Subgraphs(index)
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        self.ops = []  # (name, inputs, outputs, flatbuffer operator)
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "UNKNOWN")
            inputs = [op.Inputs(j) for j in range(op.InputsLength())]
            outputs = [op.Outputs(j) for j in range(op.OutputsLength())]
            self.ops.append((name, inputs, outputs, op))
        self.producer = {t: i for i, (_, _, outs, _) in enumerate(self.ops) for t in outs}
        self.consumers: dict[int, list[int]] = {}
        for i, (_, ins, _, _) in enumerate(self.ops):
            for t in ins:
                self.consumers.setdefault(t, []).append(i)
        self.outputs = {int(sg.Outputs(j)) for j in range(sg.OutputsLength())}

    def label(self, i: int) -> str:
        name, _, outs, _ = self.ops[i]
        tensor = self.subgraph.Tensors(outs[0]).Name().decode(errors="replace") if outs else ""
        return f"op {i} ({name}{', ' + tensor[-80:] if tensor else ''})"

    def shape(self, i: int, t: int) -> list[int]:
        if t < 0:
            raise GraphShapeError(f"{self.label(i)}: a required input is missing")
        tensor = self.subgraph.Tensors(t)
        dims = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
        signature = [int(d) for d in tensor.ShapeSignatureAsNumpy()] if tensor.ShapeSignatureLength() else dims
        if any(d < 0 for d in signature) or any(d <= 0 for d in dims):
            raise GraphShapeError(
                f"{self.label(i)}: tensor {tensor.Name().decode(errors='replace')!r} has a dynamic "
                f"or unknown dimension {signature}; export with static shapes"
            )
        return dims

    def is_constant(self, t: int) -> bool:
        """Stored data, or a DEQUANTIZE of stored data (fp16 / int8 weights)."""
        if t < 0:
            return False
        buffer = self.subgraph.Tensors(t).Buffer()
        if buffer and (self.model.Buffers(buffer).DataLength() or self.model.Buffers(buffer).Size()):
            return True
        p = self.producer.get(t)
        return p is not None and self.ops[p][0] == "DEQUANTIZE" and self.is_constant(self.ops[p][1][0])

    def batch_matmul_adj_x(self, op) -> bool:
        options = self.schema.BatchMatMulOptions()
        table = op.BuiltinOptions()
        if table is None:
            return False
        options.Init(table.Bytes, table.Pos)
        return bool(options.AdjX())

    def reduced_only_by_sum(self, t: int) -> bool:
        """True when every path from tensor t ends in a SUM (through QUANTIZE/DEQUANTIZE) and t is no output."""
        if t in self.outputs or not self.consumers.get(t):
            return False
        for c in self.consumers[t]:
            name, _, outs, _ = self.ops[c]
            if name == "SUM":
                continue
            if name in ("QUANTIZE", "DEQUANTIZE") and self.reduced_only_by_sum(outs[0]):
                continue
            return False
        return True


def _op_macs(g: _Graph, i: int, matrix_subgraphs: list[str]) -> int:
    name, ins, outs, op = g.ops[i]
    if name == "FULLY_CONNECTED":
        return prod(g.shape(i, outs[0])) * g.shape(i, ins[1])[-1]
    if name == "BATCH_MATMUL":
        lhs = g.shape(i, ins[0])
        k = lhs[-2] if g.batch_matmul_adj_x(op) else lhs[-1]
        return prod(g.shape(i, outs[0])) * k
    if name == "CONV_2D":
        return prod(g.shape(i, outs[0])) * prod(g.shape(i, ins[1])[1:])
    if name == "DEPTHWISE_CONV_2D":
        return prod(g.shape(i, outs[0])) * prod(g.shape(i, ins[1])[1:3])
    if name == "CONV_3D":
        return prod(g.shape(i, outs[0])) * prod(g.shape(i, ins[1])[:-1])
    if name == "TRANSPOSE_CONV":  # inputs: output_shape, filter [Cout, KH, KW, Cin], input
        return prod(g.shape(i, ins[2])) * prod(g.shape(i, ins[1])[:3])
    if name == "CONV_3D_TRANSPOSE":  # inputs: output_shape, filter [KD, KH, KW, Cout, Cin], input
        return prod(g.shape(i, ins[2])) * prod(g.shape(i, ins[1])[:-1])
    if name == "MUL" and g.reduced_only_by_sum(outs[0]):
        return prod(g.shape(i, outs[0]))
    if name in _UNSUPPORTED:
        raise UnsupportedOpError(f"{g.label(i)} multiplies matrices; export/macs_tflite.py has no formula for it")
    if name in _CALLS_SUBGRAPHS and matrix_subgraphs:
        raise UnsupportedOpError(
            f"{g.label(i)} calls subgraphs and the file has matrix ops outside the "
            f"signatures ({', '.join(matrix_subgraphs[:3])}); control flow is not counted"
        )
    return 0


def _output_projection(g: _Graph, logits: int | None, macs: dict[int, int]) -> int | None:
    """Index of the op that is the vocabulary projection (rule in the module docstring), or None."""
    if logits is None:
        return None
    vocab = g.subgraph.Tensors(logits).ShapeAsNumpy()[-1]
    t = logits
    while t in g.producer:
        i = g.producer[t]
        name, ins, outs, _ = g.ops[i]
        if name in _PROJECTIONS:
            last = g.subgraph.Tensors(outs[0]).ShapeAsNumpy()[-1]
            return i if i in macs and last == vocab else None
        if name in _PASSTHROUGH:
            t = ins[0]
        elif name in _CONSTANT_ARITHMETIC:
            data = [x for x in ins if not g.is_constant(x)]
            if len(data) != 1:
                return None
            t = data[0]
        else:
            return None
    return None


def read_flatbuffer(path: Path):
    """(schema module, flatbuffer root) of a .tflite file, read lazily (tensors and weights are not
    copied). UsageError if it is absent or not a TFLite flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such TFLite file")
    data = path.read_bytes()
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise UsageError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
    return schema, schema.Model.GetRootAs(data, 0)


def tflite_macs(path: Path, signature: str) -> dict:
    """MACs of one signature's subgraph of a .tflite file, counted per op from static tensor shapes.

    Returns {"macs_total", "macs_excluding_output_projection", "by_op": {op name: macs} (the
    elementwise contraction counted as "MUL+SUM"), "output_projection": {"op", "macs", "weight" (its
    weight's tensor index in the subgraph)} or None,
    "signature", "subgraph"}. Raises UsageError for a missing file or an unknown signature (listing
    the file's), GraphShapeError or UnsupportedOpError naming the op.
    """
    path = Path(path)
    schema, model = read_flatbuffer(path)
    signatures = {
        model.SignatureDefs(i).SignatureKey().decode(): model.SignatureDefs(i)
        for i in range(model.SignatureDefsLength())
    }
    if signature not in signatures:
        raise UsageError(f"{path}: no signature {signature!r} (has {', '.join(signatures) or 'none'})")
    sig = signatures[signature]
    index = sig.SubgraphIndex()
    main = {s.SubgraphIndex() for s in signatures.values()}
    others = [_Graph(schema, model, k) for k in range(model.SubgraphsLength()) if k not in main]
    matrix_subgraphs = [
        (o.subgraph.Name() or b"").decode() or "unnamed" for o in others if any(op[0] in _MATRIX_OPS for op in o.ops)
    ]
    g = _Graph(schema, model, index)
    macs = {i: m for i in range(len(g.ops)) if (m := _op_macs(g, i, matrix_subgraphs))}
    by_op: dict[str, int] = {}
    for i, m in macs.items():
        name = "MUL+SUM" if g.ops[i][0] == "MUL" else g.ops[i][0]
        by_op[name] = by_op.get(name, 0) + m
    outputs = {sig.Outputs(j).Name().decode(): sig.Outputs(j).TensorIndex() for j in range(sig.OutputsLength())}
    projection = _output_projection(g, outputs.get("logits"), macs)
    total = sum(macs.values())
    excluded = macs[projection] if projection is not None else 0
    return {
        "macs_total": total,
        "macs_excluding_output_projection": total - excluded,
        "by_op": dict(sorted(by_op.items())),
        "output_projection": None
        if projection is None
        else {"op": g.label(projection), "macs": excluded, "weight": int(g.ops[projection][1][1])},
        "signature": signature,
        "subgraph": index,
    }
