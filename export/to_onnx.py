"""Export the encoder and the cached decoder step (export/graphs.py) to ONNX, in four precisions.

    convert_onnx(model, out_dir, precision=..., max_src_len=..., target_slots=...) -> info dict
        out_dir/encoder.onnx   {"src": int32 [1, src_len]} -> {"src_keep", "cross_k_i", "cross_v_i"}
        out_dir/decoder.onnx   {"token" int32 [batch, 1], "pos" int32 [1], "src_keep", "cross_*",
                                "self_k_i", "self_v_i", "conv_i"} -> {"logits", "<cache>_next"}
        (names, shapes and dynamic axes: export/graph_io.py)
    check_onnx_ops(path) -> {op: count}, ExportError on a non-standard op.

Route (measured on this machine; docs/design.md, "Export routes"):
1. torch.onnx.export(dynamo=True, external_data=False) traces each graph with torch.export and writes
   ONE self-contained .onnx (weights embedded; the models are a few MB, far below protobuf's 2 GB).
   The graphs take one dict of named tensors, passed as the `inputs` keyword (a trailing dict in
   `args` would be read as keyword arguments), and the graph inputs carry the dict keys. Dynamic
   axes are torch.export Dims: encoder "src_len"; decoder "batch", "src_len", "cache_len" (head-folded
   axes become derived dims such as "4*batch"). No fallback to the TorchScript exporter: it silently
   bakes the traced `pos` into the graph (docs/design.md), and a wrong graph is worse than an error.
2. The updated caches are outputs "<name>_next" (graph_io.onnx_output): ONNX is single-assignment, so an
   output named like its input is an invalid model that onnxruntime refuses to load.
3. Two clean-ups of the exported file: the exporter's per-node metadata (stack traces with local
   paths, ~0.8 kB a node) is dropped, and the tied embedding is stored once (_share_tied_embedding).
4. Precisions are applied to the fp32 files with onnxruntime's own tools:
   - "dynamic-int8": quantize_dynamic on MatMul and Gather (8-bit weights, embeddings included;
     activations quantized at run time: DynamicQuantizeLinear + MatMulInteger). Conv stays float.
   - "int8": quantize_static in QDQ format (QOperator was unreliable), per-channel int8 weights,
     uint8 activations calibrated (MinMax) on real teacher-forced samples (export/calibration.py);
     settings and the one excluded node: STATIC_OP_TYPES and _quantize_static.
   - "fp16": onnxruntime.transformers.float16 with float32 graph inputs/outputs (keep_io_types), run
     once in onnxruntime CPU; ExportError if it cannot.
Every written file passes check_onnx_ops (standard ONNX domains only) before convert_onnx returns.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch

from export.graph_io import BATCH, CACHE_LEN, GRAPH_ARGUMENT, SRC_LEN, onnx_output
from export.graphs import DecoderStepGraph, EncoderGraph, decoder_sample, encoder_sample, graph_io
from lite.config import PRECISIONS
from lite.errors import ConversionError, UsageError
from lite.models.seq2seq import EncoderDecoder

STANDARD_DOMAINS = ("", "ai.onnx")
GRAPHS = ("encoder", "decoder")
# traced with batch 2: torch.export specialises a dimension whose sample size is 1
SAMPLE_BATCH = 2


def check_onnx_ops(path: Path, *, allow_onnxruntime_contrib: bool = False) -> dict[str, int]:
    """Op counts of an .onnx file {op type: count} (ops of another domain keyed "domain::op").

    Raises ExportError naming the file and the op if a node (subgraphs included) or a local function
    is outside the standard ONNX domains ("" / "ai.onnx").

    Decision on com.microsoft (onnxruntime contrib ops): rejected by default. They are builtin for
    onnxruntime, but the .onnx files are also the input of other runtimes and converters, and every
    route convert_onnx uses (fp32 dynamo export, quantize_dynamic on MatMul/Gather, QDQ quantize_static,
    float16 conversion) produces standard ops only, so a contrib op means something changed and must be
    looked at. allow_onnxruntime_contrib=True accepts "com.microsoft" for onnxruntime-only artifacts.
    """
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    allowed = set(STANDARD_DOMAINS) | ({"com.microsoft"} if allow_onnxruntime_contrib else set())
    local = {(f.domain, f.name) for f in model.functions}
    counts: Counter[str] = Counter()

    def visit(nodes) -> None:
        for node in nodes:
            key = node.op_type if node.domain in STANDARD_DOMAINS else f"{node.domain}::{node.op_type}"
            if node.domain not in allowed and (node.domain, node.op_type) not in local:
                raise ConversionError(
                    f"{path}: node {node.name or '(unnamed)'!r} uses op {node.domain}::{node.op_type}, "
                    f"outside the standard ONNX domains"
                )
            counts[key] += 1
            for attr in node.attribute:
                visit(
                    [n for g in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs) for n in g.node]
                )

    visit(model.graph.node)
    for function in model.functions:  # a local function's body must itself be standard
        visit(function.node)
    return dict(sorted(counts.items()))


def convert_onnx(
    model: EncoderDecoder,
    out_dir: Path,
    *,
    precision: str,
    max_src_len: int,
    target_slots: int,
    calibration: tuple[list[dict], list[dict]] | None = None,
) -> dict:
    """Write out_dir/encoder.onnx and out_dir/decoder.onnx (self-contained) in `precision`.

    max_src_len / target_slots: the source length and cache slots the graphs are traced at; both
    stay dynamic axes ("src_len", "cache_len"), bounded by model.cfg.max_positions, and the runtime
    chooses them per sentence (its manifest records the caps). calibration: (encoder samples,
    decoder-step samples) from export.calibration.calibration_inputs; required for "int8".
    Returns {"precision", "route", "opset", "files": {graph: path}, "bytes": {graph: size},
    "seconds": {"export", "quantize", "total"}, "quantization": {...}, "ops": {graph: op counts}}.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown ONNX precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "int8" and not calibration:
        raise UsageError("int8 ONNX export needs calibration samples (export.calibration.calibration_inputs)")
    limit = model.cfg.max_positions
    if not (1 <= max_src_len <= limit and 1 <= target_slots <= limit):
        raise UsageError(
            f"max_src_len={max_src_len} and target_slots={target_slots} must lie in 1..{limit} "
            "(model.cfg.max_positions)"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {name: out_dir / f"{name}.onnx" for name in GRAPHS}
    for path in files.values():  # a weights file of an earlier export must not pass for ours
        path.with_name(path.name + ".data").unlink(missing_ok=True)
    # sizes of the traced samples only (the axes stay dynamic); a sample size of 1 would be specialised
    src_len, slots = max(max_src_len, 2), max(target_slots, 2)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnx-fp32-") as tmp:
        fp32 = files if precision == "fp32" else {name: Path(tmp) / f"{name}.onnx" for name in GRAPHS}
        declared = graph_io(model)
        _export(
            EncoderGraph(model).eval(),
            encoder_sample(model, src_len),
            _dims(declared.encoder_axes(), limit),
            fp32["encoder"],
        )
        _export(
            DecoderStepGraph(model).eval(),
            decoder_sample(model, SAMPLE_BATCH, src_len, slots),
            _dims(declared.decoder_axes(), limit),
            fp32["decoder"],
        )
        exported = time.perf_counter()
        quantization: dict = {"method": "none"}
        if precision == "dynamic-int8":
            quantization = {name: _quantize_dynamic(fp32[name], files[name]) for name in GRAPHS}
        elif precision == "int8":
            quantization = {
                name: _quantize_static(fp32[name], files[name], samples) for name, samples in zip(GRAPHS, calibration)
            }
        elif precision == "fp16":
            samples = {
                "encoder": encoder_sample(model, src_len),
                "decoder": decoder_sample(model, SAMPLE_BATCH, src_len, slots),
            }
            quantization = {
                name: _to_float16(fp32[name], files[name], {k: v.numpy() for k, v in samples[name].items()})
                for name in GRAPHS
            }
    done = time.perf_counter()
    for path in files.values():
        stray = path.with_name(path.name + ".data")
        if stray.exists():
            raise ConversionError(f"{stray}: external weight file written; the .onnx must be self-contained")
    ops = {name: check_onnx_ops(path) for name, path in files.items()}
    opset = next(
        o.version
        for o in onnx.load(str(files["decoder"]), load_external_data=False).opset_import
        if o.domain in STANDARD_DOMAINS
    )
    return {
        "precision": precision,
        "route": "torch.onnx.export(dynamo=True, external_data=False)",
        "opset": opset,
        "files": {k: str(v) for k, v in files.items()},
        "bytes": {k: v.stat().st_size for k, v in files.items()},
        "seconds": {
            "export": round(exported - start, 2),
            "quantize": round(done - exported, 2),
            "total": round(done - start, 2),
        },
        "quantization": quantization,
        "ops": ops,
    }


# ---- fp32 export -------------------------------------------------------------------------------


def _dims(axes: dict[str, dict[int, tuple[str, int]] | None], limit: int) -> dict:
    """torch.export Dims for GraphIO's dynamic axes: batch up to 1024, lengths up to `limit`; a head-folded
    axis is heads * batch."""
    dim = torch.export.Dim
    named = {BATCH: dim(BATCH, min=1, max=1024), SRC_LEN: dim(SRC_LEN, min=1, max=limit)}
    named[CACHE_LEN] = dim(CACHE_LEN, min=1, max=limit)
    return {
        name: None if spec is None else {axis: named[n] if k == 1 else k * named[n] for axis, (n, k) in spec.items()}
        for name, spec in axes.items()
    }


def _export(graph: torch.nn.Module, inputs: dict, axes: dict, path: Path) -> None:
    with torch.no_grad():
        output_names = [onnx_output(name) for name in graph(inputs)]
    try:
        # the exporter prints its progress to stdout and warns that equal derived axes share a name
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape")
            torch.onnx.export(
                graph,
                (),
                str(path),
                kwargs={GRAPH_ARGUMENT: inputs},
                dynamo=True,
                external_data=False,
                input_names=list(inputs),
                output_names=output_names,
                dynamic_shapes={GRAPH_ARGUMENT: axes},
                verbose=False,
            )
    except Exception as exc:  # noqa: BLE001 - any exporter failure is an export failure of this file
        raise ConversionError(
            f"{path}: torch.onnx.export(dynamo=True) failed: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    model = onnx.load(str(path))
    for node in model.graph.node:
        # the exporter's per-node stack traces and FX dumps: ~0.8 kB a node, and build-machine paths
        del node.metadata_props[:]
    _share_tied_embedding(model)
    onnx.save(model, str(path))


def _share_tied_embedding(model: onnx.ModelProto) -> None:
    """Store a tied embedding once, as the output projection's constant weight W^T [D, V].

    The exporter reads the tied matrix W [V, D] twice: Gather(W, ids) for the tokens and, for the
    output MatMul, either a folded copy W^T (8 MB more at 8k x 256) or Transpose(W) computed at run
    time (a weight the quantizers take for an activation: per-tensor, calibrated). Make W^T an
    initializer read directly by the MatMul, rewrite the lookup as Transpose(Gather(W^T, ids, axis=1)),
    and drop W when nothing else reads it.
    """
    from onnx import helper, numpy_helper, shape_inference

    graph = model.graph
    typed = shape_inference.infer_shapes(model, data_prop=True).graph
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in list(typed.input) + list(typed.value_info)
        if v.type.tensor_type.HasField("shape")
    }
    inits = {init.name: init for init in graph.initializer}
    arrays: dict[str, np.ndarray] = {}

    def array(name: str) -> np.ndarray:
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(inits[name])
        return arrays[name]

    def readers(name: str) -> list[onnx.NodeProto]:
        return [n for n in graph.node if name in n.input]

    gathered = {
        n.input[0]
        for n in graph.node
        if n.op_type == "Gather"
        and n.input[0] in inits
        and len(inits[n.input[0]].dims) == 2
        and all(a.name != "axis" or a.i == 0 for a in n.attribute)
    }
    # 1. MatMul(x, Transpose(W)) of a gathered W -> MatMul(x, W^T) with W^T stored under the Transpose's output name
    for node in list(graph.node):
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [1, 0])
        if (
            node.op_type == "Transpose"
            and node.input[0] in gathered
            and perm == [1, 0]
            and all(r.op_type == "MatMul" and r.input[1] == node.output[0] for r in readers(node.output[0]))
        ):
            folded = numpy_helper.from_array(np.ascontiguousarray(array(node.input[0]).T), node.output[0])
            graph.initializer.append(folded)
            inits[folded.name] = folded
            graph.node.remove(node)
    # 2. Gather(W, ids) -> Transpose(Gather(W^T, ids, axis=1)) where some MatMul reads W^T
    matmul_b = {n.input[1] for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits}
    for node in list(graph.node):
        if node.op_type != "Gather" or node.input[0] not in gathered:
            continue
        w = node.input[0]
        twin = next(
            (
                b
                for b in sorted(matmul_b)
                if list(inits[b].dims) == list(inits[w].dims)[::-1] and np.array_equal(array(b), array(w).T)
            ),
            None,
        )
        rank = ranks.get(node.input[1])  # output rank = rank(ids) + 1; the Transpose moves D to the end
        if twin is None or rank is None:
            continue
        picked = node.output[0] + "_by_column"
        gather = helper.make_node("Gather", [twin, node.input[1]], [picked], name=node.name + "_by_column", axis=1)
        move = helper.make_node(
            "Transpose", [picked], [node.output[0]], name=node.name + "_to_rows", perm=list(range(1, rank + 1)) + [0]
        )
        position = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(position, move)
        graph.node.insert(position, gather)
        if not readers(w):
            graph.initializer.remove(inits[w])


# ---- precisions --------------------------------------------------------------------------------


def _quantize_dynamic(src: Path, dst: Path) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Conv is left in float: onnxruntime's CPU ConvInteger has no int8-weight kernel, and the
    # depthwise convolution weights are a few hundred floats per layer.
    ops = ["MatMul", "Gather"]
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=False, op_types_to_quantize=ops)
    return {"method": "onnxruntime.quantize_dynamic", "weight_type": "int8", "op_types": ops}


class _Reader:
    """onnxruntime CalibrationDataReader over a list of input dicts (numpy arrays)."""

    def __init__(self, samples: list[dict]):
        self.samples = [{k: np.asarray(v) for k, v in s.items()} for s in samples]
        self._next = 0

    def get_next(self) -> dict | None:
        if self._next >= len(self.samples):
            return None
        self._next += 1
        return self.samples[self._next - 1]

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.samples)


# Static int8 settings, measured on runs/default (20 real test sentences, per-step top-1 vs PyTorch):
# - op types: only the weight-carrying ops and their activation inputs. Every QDQ-capable op (also
#   Where = the cache update, LayerNormalization, Reshape/Transpose) gave 0.960 and was slower.
# - per-channel vs per-tensor weights and int8 vs uint8 activations all gave 0.978-0.982 (within one
#   or two steps of 324); uint8 activations (U8S8) take onnxruntime's fast x86 kernels (decoder step
#   ~3x faster than S8S8 per-channel here), ARM runs both. Per-channel is kept for pruned/uneven layers.
STATIC_OP_TYPES = ["MatMul", "Gather", "Conv"]
STATIC_PER_CHANNEL = True


def _quantize_static(src: Path, dst: Path, samples: list[dict]) -> dict:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not samples:
        raise ConversionError(f"{dst}: no calibration samples for static int8")
    reader = type("Reader", (_Reader, CalibrationDataReader), {})(samples)
    # The tied embedding lookup reads the output projection's weight W^T (see _share_tied_embedding).
    # Quantized as a Gather, onnxruntime gives its output the weight's per-channel parameters and the
    # graph fails at run time ("scale must be 1D tensor with size 1"); so it is excluded here and then
    # made to gather int8 rows itself (_gather_quantized_columns).
    graph = onnx.load(str(src), load_external_data=False).graph
    tied = [
        n.name for n in graph.node if n.op_type == "Gather" and any(a.name == "axis" and a.i == 1 for a in n.attribute)
    ]
    # The decoder's lightweight-conv step is a MatMul with a 3-D constant kernel [C, K, 1]
    # (export/graphs.py); its per-channel zero point is not one onnxruntime's QLinearMatMul accepts,
    # and it holds C*K weights only: kept in float.
    weights = {i.name: len(i.dims) for i in graph.initializer}
    conv_steps = [n.name for n in graph.node if n.op_type == "MatMul" and weights.get(n.input[1], 2) > 2]
    quantize_static(
        str(src),
        str(dst),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=STATIC_PER_CHANNEL,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        op_types_to_quantize=STATIC_OP_TYPES,
        nodes_to_exclude=tied + conv_steps,
    )
    model = onnx.load(str(dst))
    rewritten = _gather_quantized_columns(model.graph)
    onnx.save(model, str(dst))
    return {
        "method": "onnxruntime.quantize_static",
        "format": "QDQ",
        "per_channel": STATIC_PER_CHANNEL,
        "activations": "uint8",
        "weights": "int8",
        "calibration": "MinMax",
        "samples": len(samples),
        "op_types": STATIC_OP_TYPES,
        "excluded_nodes": tied + conv_steps,
        "int8_lookups": rewritten,
    }


def _gather_quantized_columns(graph: onnx.GraphProto) -> list[str]:
    """Gather(DequantizeLinear(Wq, scale, 0), ids, axis=1) -> Cast(Gather(Wq, ids, axis=1)) * Gather(scale, ids)

    Otherwise the whole int8 matrix is dequantized on every decoder step just to read B columns, and
    the dequantized weight has two readers, so onnxruntime cannot fuse it into the output MatMul
    (measured on the default model: a 5-8 ms decoder step instead of 0.4-0.5 ms). Needs a zero
    zero-point (symmetric int8 weights) and a scale per gathered column (or one scale). Returns the
    rewritten Gather nodes."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    done = []
    for node in list(graph.node):
        dq = producer.get(node.input[0])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if node.op_type != "Gather" or axis != 1 or dq is None or dq.op_type != "DequantizeLinear":
            continue
        if not all(name in inits for name in dq.input) or len(dq.input) < 3:
            continue
        q, scale, zero = (inits[name] for name in dq.input[:3])
        dq_axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        per_column = list(scale.dims) == [q.dims[1]] and dq_axis == 1
        per_tensor = list(scale.dims) in ([], [1])
        if len(q.dims) != 2 or not (per_column or per_tensor) or numpy_helper.to_array(zero).any():
            continue
        name, ids = node.output[0], node.input[1]
        new = [
            helper.make_node("Gather", [q.name, ids], [name + "_int8"], name=node.name + "_int8", axis=1),
            helper.make_node(
                "Cast", [name + "_int8"], [name + "_float"], name=node.name + "_cast", to=TensorProto.FLOAT
            ),
        ]
        column_scale = scale.name
        if per_column:  # [D, *ids] * [*ids]: one scale per gathered column, broadcast over D
            column_scale = name + "_scale"
            new.append(helper.make_node("Gather", [scale.name, ids], [column_scale], name=node.name + "_scale", axis=0))
        new.append(helper.make_node("Mul", [name + "_float", column_scale], [name], name=node.name + "_dequantize"))
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, n in enumerate(new):
            graph.node.insert(position + offset, n)
        done.append(node.name)
    return done


def _to_float16(src: Path, dst: Path, sample: dict[str, np.ndarray]) -> dict:
    """float16 weights and activations, float32 graph inputs/outputs; run once in onnxruntime CPU."""
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    # the converter appends the Casts of the float32 graph inputs after the nodes that read them;
    # onnxruntime reorders on load, but ONNX requires topological order and shape inference (the
    # graph MAC count) stops typing tensors at the first out-of-order read
    _sort_topologically(model.graph, dst)
    onnx.save(model, str(dst))
    try:
        session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
        session.run(None, sample)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ConversionError(
            f"{dst}: onnxruntime CPU cannot run the float16 graph: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    return {"method": "onnxruntime.transformers.float16.convert_float_to_float16", "io_types": "float32"}


def _sort_topologically(graph: onnx.GraphProto, where: Path) -> None:
    """Reorder graph.node so every node follows the producers of its inputs; a sorted graph is unchanged."""
    known = {v.name for v in graph.input} | {i.name for i in graph.initializer} | {""}  # "": an omitted optional input
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in known for name in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = next(i for i in rest[0].input if i not in known)
            raise ConversionError(
                f"{where}: node {rest[0].name or '(unnamed)'!r} reads {missing!r}, "
                "which no node, input or initializer of the graph provides"
            )
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
