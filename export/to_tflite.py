"""PyTorch -> one .tflite file: the encoder at several source lengths and the decoder step at several
batch sizes, as named signatures sharing one copy of the weights, at one of four precisions.

Route (measured; docs/design.md, "Export routes"):
1. litert-torch (torch.export -> TFLite, builtin ops only, exact in fp32) converts the static-shape
   graphs of export/graphs.py, one signature per shape (names, shapes and types: export/graph_io.py,
   tflite_signatures):
       encode_<S>   inputs_src [1, S] int32                   -> src_keep, cross_k_i, cross_v_i
       decode_<B>   inputs_token [B, 1], inputs_pos [1] int32,
                    inputs_<cache> (src_keep, cross_*, self_*, conv_*) -> logits [B, V] and the updated caches
   Signature input names are the graph's dict keys prefixed with "inputs_" (the forward argument's
   name); output names are the dict keys.
2. ai-edge-quantizer rewrites that float file:
       fp32          as converted
       fp16          weights stored as float16 and dequantized inside the graph (float_casting recipe)
       dynamic-int8  int8 per-channel weights, float activations quantized on the fly (dynamic_wi8_afp32)
       int8          int8 weights and activations (static_wi8_ai8), activation ranges the min/max
                     over real inputs (export/calibration.py; see _calibrate), every signature input
                     and output kept float32: the graph quantizes and dequantizes inside (INT8_FLOAT_OPS)
   The convolution kernels are constants in the traced graphs (export/graphs.py, export_copy).

check_builtin_ops() is the gate every file passes: no CUSTOM and no Flex (select TensorFlow) op.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from export.graph_io import (
    GRAPH_ARGUMENT,
    POS,
    SRC,
    SRC_KEEP,
    decode_signature,
    encode_signature,
    self_k,
    tflite_input,
    tflite_signatures,
)
from export.graphs import DecoderStepGraph, EncoderGraph, decoder_sample, encoder_sample, graph_io
from lite.config import PRECISIONS
from lite.errors import ConversionError, ExportError, UsageError
from lite.files import atomic_path
from lite.models.seq2seq import EncoderDecoder

# Ops kept float in the int8 file (ai-edge-quantizer "no_quantize"); everything else it supports is
# static int8. INPUT / OUTPUT are the signature's own tensors: callers keep feeding float caches and
# reading float logits, and the graph quantizes/dequantizes inside (with int8 graph inputs/outputs a
# cache would carry one scale in and another out, docs/design.md). The attention core over the caches
# and the memory (TRANSPOSE, BATCH_MATMUL, SOFTMAX) and LayerNorm's SQUARED_DIFFERENCE stay float:
# XNNPACK runs none of them in int8, and TFLite's reference int8 kernels plus quantizing every cache
# slot per step made static int8 cost 1.3-1.7x fp32's instructions on Cortex-A76; in float the weight
# matmuls alone are int8 and a sentence takes 0.55x fp32's instructions (benchmarks/results/profile.json).
# (SELECT_V2 kept float hits an ai-edge-quantizer 0.10 bug: the subgraph output list then names an
# internal int8 tensor while the signature names a float one; _check_signature_tensors catches that.)
INT8_FLOAT_OPS = ("INPUT", "OUTPUT", "TRANSPOSE", "BATCH_MATMUL", "SOFTMAX", "SQUARED_DIFFERENCE")


def int8_recipe() -> list[dict]:
    """static_wi8_ai8, plus int8 embedding tables (static int8 has no EMBEDDING_LOOKUP; a float table
    tied to the int8 output projection would be stored again in float, once per signature), minus
    INT8_FLOAT_OPS."""
    from ai_edge_quantizer import recipe

    embeddings = recipe.dynamic_wi8_afp32()[0] | {"operation": "EMBEDDING_LOOKUP"}
    keep_float = [
        {"regex": ".*", "operation": op, "algorithm_key": "no_quantize", "op_config": {}} for op in INT8_FLOAT_OPS
    ]
    return recipe.static_wi8_ai8() + [embeddings] + keep_float


def _check_args(precision: str, src_lens: list[int], target_slots: int, batches: list[int]) -> None:
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if not src_lens or any(s < 1 for s in src_lens) or len(set(src_lens)) != len(src_lens):
        raise UsageError(f"src_lens {src_lens}: expected distinct positive lengths")
    if not batches or any(b < 1 for b in batches) or len(set(batches)) != len(batches):
        raise UsageError(f"batches {batches}: expected distinct positive batch sizes")
    if target_slots < 1:
        raise UsageError(f"target_slots {target_slots}: expected a positive slot count")


class _SharedWeightWarnings(logging.Filter):
    """Signatures share weight buffers, so ai-edge-quantizer rewrites each shared buffer once per user
    (with the same values) and logs a warning every time: nothing is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is overriding other previously quantized data" not in record.getMessage()


@contextlib.contextmanager
def _quiet(log_path: Path) -> Iterator[None]:
    """Send the converters' progress output, import-time and C++ log lines and expected warnings to
    `log_path`.

    The C++ converter writes to file descriptor 2 directly, so the descriptor is redirected, not just
    sys.stderr; a caller reporting an error appends the log's tail (_log_tail).
    """
    root, quiet_logs = logging.getLogger(), _SharedWeightWarnings()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    show_progress = None
    try:
        with open(log_path, "wb") as log, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.export's pytree deprecations
            warnings.simplefilter("ignore", UserWarning)  # the calibrator's "preserve all tensors" notice
            os.dup2(log.fileno(), 2)
            root.addFilter(quiet_logs)
            import litert_torch  # imported here: its import logs (absl, torchao) go to the log as well

            show_progress, litert_torch.config.show_progress = litert_torch.config.show_progress, False
            yield
    finally:
        if show_progress is not None:
            litert_torch.config.show_progress = show_progress
        root.removeFilter(quiet_logs)
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _log_tail(log_path: Path, lines: int = 15) -> str:
    try:
        text = log_path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return ("\nconverter log (last lines):\n" + "\n".join(text.splitlines()[-lines:])) if text else ""


def _convert_float(
    model: EncoderDecoder, src_lens: list[int], target_slots: int, batches: list[int], hidden: bool
) -> bytes:
    """The float32 file from litert-torch, one signature per encoder length and decoder batch size (and
    with `hidden`, one more per batch size: the step without the output projection)."""
    import litert_torch

    converter = litert_torch.Converter()
    encoder = EncoderGraph(model).eval()
    steps = {False: DecoderStepGraph(model).eval(), True: DecoderStepGraph(model, hidden=True).eval()}
    with torch.no_grad():
        for s in src_lens:
            converter.signature(encode_signature(s), encoder, sample_kwargs={GRAPH_ARGUMENT: encoder_sample(model, s)})
        for b in batches:
            for h in (False, True) if hidden else (False,):
                sample = decoder_sample(model, b, max(src_lens), target_slots)
                converter.signature(decode_signature(b, h), steps[h], sample_kwargs={GRAPH_ARGUMENT: sample})
        return bytes(converter.convert().model_content())


def _encoder_samples(
    samples: list[dict[str, np.ndarray]], src_len: int, pad_id: int, eos_id: int
) -> list[dict[str, np.ndarray]]:
    """Calibration sources re-padded (or cut, ending in eos) to `src_len`."""
    out = []
    for sample in samples:
        ids = sample[SRC][0]
        ids = ids[ids != pad_id]
        if len(ids) > src_len:
            ids = np.concatenate([ids[: src_len - 1], [eos_id]])
        src = np.full((1, src_len), pad_id, dtype=np.int32)
        src[0, : len(ids)] = ids
        out.append({tflite_input(SRC): src})
    return out


def _decoder_samples(samples: list[dict[str, np.ndarray]], batch: int) -> list[dict[str, np.ndarray]]:
    """Batch-1 decoder steps tiled to `batch` hypotheses (every input but the shared position is batch-major)."""
    return [
        {
            tflite_input(k): v if k == POS or batch == 1 else np.concatenate([v] * batch, axis=0)
            for k, v in sample.items()
        }
        for sample in samples
    ]


def _calibration_data(
    model: EncoderDecoder,
    calibration,
    src_lens: list[int],
    target_slots: int,
    batches: list[int],
    hidden: bool,
) -> dict[str, list[dict[str, np.ndarray]]]:
    """{signature: samples named like its inputs} from calibration_inputs()' (encoder, decoder) samples;
    a hidden step takes the full step's."""
    enc, dec = calibration
    if not enc or not dec:
        raise UsageError("int8 calibration needs encoder and decoder samples (export.calibration.calibration_inputs)")
    recorded = (dec[0][SRC_KEEP].shape[1], dec[0][self_k(0)].shape[1])
    if recorded != (max(src_lens), target_slots):
        raise UsageError(
            f"decoder calibration samples were recorded at src_len {recorded[0]} with {recorded[1]} "
            f"cache slots; this export needs src_len {max(src_lens)} and {target_slots} slots"
        )
    data = {encode_signature(s): _encoder_samples(enc, s, model.cfg.pad_id, model.cfg.eos_id) for s in src_lens}
    data |= {decode_signature(b): _decoder_samples(dec, b) for b in batches}
    if hidden:
        data |= {decode_signature(b, True): data[decode_signature(b)] for b in batches}
    return data


def _calibrate(float_model: bytes, recipe: list[dict], data: dict[str, list[dict[str, np.ndarray]]]) -> dict:
    """Activation ranges over every calibration sample: the global min/max, not ai-edge-quantizer's
    default moving average of per-sample ranges. That average follows the latest samples, and for the
    caches those include early steps whose caches are still mostly empty: the cache ranges came out
    clipped and per-step top-1 agreement on the default model fell from 0.975 to 0.87."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    calib = calibrator.Calibrator(
        float_model, num_threads=os.cpu_count() or 1, qsv_update_func=qsv_utils.min_max_update
    )
    calib.calibrate(data, manager)
    return calib.get_model_qsvs()


def _quantize(float_model: bytes, precision: str, calibration_data: dict | None) -> tuple[bytes, str]:
    """(quantized file, recipe name) from the float file."""
    from ai_edge_quantizer import qtyping, quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ranges = None
    if precision == "fp16":
        q = quantizer.Quantizer(bytearray(float_model))
        q.add_weight_only_config(
            regex=".*",
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            num_bits=16,
            algorithm_key=AlgorithmName.FLOAT_CASTING,
        )
        name = "float_casting fp16 weights (weight-only)"
    elif precision == "dynamic-int8":
        q = quantizer.Quantizer(bytearray(float_model), recipe.dynamic_wi8_afp32())
        name = "dynamic_wi8_afp32"
    else:
        int8 = int8_recipe()
        q = quantizer.Quantizer(bytearray(float_model), int8)
        ranges = _calibrate(float_model, int8, calibration_data)
        name = "static_wi8_ai8 + int8 embedding tables, float32 signature inputs/outputs, min/max calibration"
    result = q.quantize(ranges, enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model), name


def convert_tflite(
    model: EncoderDecoder,
    path: Path,
    *,
    precision: str,
    src_lens: list[int],
    target_slots: int,
    batches: list[int],
    calibration: tuple[list[dict], list[dict]] | None = None,
    hidden: bool = False,
) -> dict:
    """Write one .tflite file at `path` with signatures encode_<S> (S in src_lens) and decode_<B>
    (B in batches; decoder step at src_len max(src_lens) with `target_slots` cache slots), and
    with `hidden` decode_<B>_hidden (the step up to the output projection, for shortlist decoding).

    precision: fp32 | fp16 | dynamic-int8 | int8. int8 needs `calibration`: (encoder samples, decoder
    samples) from export.calibration.calibration_inputs at src_len max(src_lens) and target_slots.
    Returns {"precision", "recipe", "signatures": {name: {"inputs": {name: [shape, dtype]}, "outputs": ...}},
    "ops": {op: count}, "size_bytes", "seconds"} (+ "calibration_samples": {signature: n} for int8).
    Raises UsageError for bad arguments, and ExportError naming `path` if a converter fails, the file
    holds a non-builtin op, or a signature tensor is missing or has another shape or a type other than
    float32/int32 (the file is then removed).
    """
    path = Path(path)
    _check_args(precision, src_lens, target_slots, batches)
    src_lens, batches = sorted(src_lens), sorted(batches)
    if precision == "int8" and calibration is None:
        raise UsageError("precision int8 needs calibration samples (export.calibration.calibration_inputs)")
    calibration_data = (
        _calibration_data(model, calibration, src_lens, target_slots, batches, hidden) if precision == "int8" else None
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "converter.log"
        try:
            with _quiet(log):
                data = _convert_float(model, src_lens, target_slots, batches, hidden)
                recipe = "none (litert-torch float32)"
                if precision != "fp32":
                    data, recipe = _quantize(data, precision, calibration_data)
        except Exception as exc:  # noqa: BLE001 - any converter failure becomes one error naming the file
            raise ConversionError(
                f"{path}: TFLite {precision} conversion failed "
                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
                + _log_tail(log)
            ) from exc
    with atomic_path(path) as tmp_path:
        tmp_path.write_bytes(data)
    try:  # the file's own gate; a file that fails it is removed, so nothing invalid stays under `path`
        ops = check_builtin_ops(path)
        _check_signature_tensors(path)
        signatures = read_signatures(path)
        expected = tflite_signatures(graph_io(model), src_lens, target_slots, batches, hidden)
        _check_signatures(path, signatures, expected)
    except ExportError:
        path.unlink(missing_ok=True)
        raise
    info = {
        "precision": precision,
        "recipe": recipe,
        "signatures": signatures,
        "ops": ops,
        "size_bytes": path.stat().st_size,
        "seconds": round(time.monotonic() - started, 1),
    }
    if calibration_data:
        info["calibration_samples"] = {name: len(samples) for name, samples in calibration_data.items()}
    return info


def _check_signatures(path: Path, got: dict, expected: dict) -> None:
    """Every signature tensor the runtime relies on (graph_io.tflite_signatures) present with its shape
    and float32/int32 type (int8 graphs quantize inside: callers feed caches back unchanged), and no other."""
    problems = [f"signature {name} missing" for name in expected if name not in got]
    for name, want in expected.items():
        for kind in ("inputs", "outputs"):
            have = got.get(name, {}).get(kind, {})
            for tensor, spec in want[kind].items():
                if name in got and have.get(tensor) != spec:
                    problems.append(f"{name} {kind[:-1]} {tensor}: {have.get(tensor, 'missing')} instead of {spec}")
            problems += [f"{name} has an unexpected {kind[:-1]} {t}" for t in have if t not in want[kind]]
    if problems:
        raise ConversionError(
            f"{path}: signatures differ from the graphs: "
            + "; ".join(problems[:8])
            + (f" (+{len(problems) - 8} more)" if len(problems) > 8 else "")
        )


# ---------------------------------------------------------------- reading the flatbuffer


def _read(path: Path):
    """(schema, flatbuffer root) of a .tflite file (export/macs_tflite.py reads it), a failure as ExportError."""
    from export.macs_tflite import read_flatbuffer

    try:
        return read_flatbuffer(path)
    except UsageError as exc:
        raise ConversionError(str(exc)) from None


def _names(enum_class) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


def check_builtin_ops(path: Path) -> dict[str, int]:
    """Operator counts of every subgraph {op name: count}; raises ExportError naming the file and the
    op if any operator is CUSTOM, which includes Flex (select TensorFlow) ops: a stock LiteRT
    runtime cannot run them."""
    schema, model = _read(path)
    op_names = _names(schema.BuiltinOperator)
    counts: dict[str, int] = {}
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for i in range(subgraph.OperatorsLength()):
            code = model.OperatorCodes(subgraph.Operators(i).OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # schema v3a keeps both fields
            name = op_names.get(builtin, f"BUILTIN_{builtin}")
            if builtin == schema.BuiltinOperator.CUSTOM:
                custom = (code.CustomCode() or b"").decode(errors="replace")
                kind = "a Flex (select TensorFlow) op" if custom.startswith("Flex") else "a custom op"
                where = (subgraph.Name() or b"").decode() or f"subgraph {g}"
                raise ConversionError(
                    f"{path}: {kind} {custom!r} in {where} (operator {i}); only builtin ops "
                    "run on a stock LiteRT runtime"
                )
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _signature_tensors(sig, kind: str) -> dict[str, int]:
    """{signature tensor name: subgraph tensor index} of a SignatureDef's "inputs" or "outputs"."""
    n, get = (sig.InputsLength(), sig.Inputs) if kind == "inputs" else (sig.OutputsLength(), sig.Outputs)
    return {get(j).Name().decode(): get(j).TensorIndex() for j in range(n)}


def read_signatures(path: Path) -> dict[str, dict[str, dict[str, list]]]:
    """{signature: {"inputs": {name: [shape, dtype]}, "outputs": {name: [shape, dtype]}}} from the file."""
    schema, model = _read(path)
    types = {k: v.lower() for k, v in _names(schema.TensorType).items()}
    out = {}
    for i in range(model.SignatureDefsLength()):
        sig = model.SignatureDefs(i)
        subgraph = model.Subgraphs(sig.SubgraphIndex())
        out[sig.SignatureKey().decode()] = specs = {}
        for kind in ("inputs", "outputs"):
            specs[kind] = {}
            for name, index in sorted(_signature_tensors(sig, kind).items()):
                t = subgraph.Tensors(index)
                shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
                specs[kind][name] = [shape, types.get(t.Type(), str(t.Type()))]
    return out


def _check_signature_tensors(path: Path) -> None:
    """Each signature must name exactly its subgraph's input and output tensors: the runtime keeps only
    the subgraph's declared outputs alive, so a signature naming any other tensor reads reused memory."""
    _, model = _read(path)
    for i in range(model.SignatureDefsLength()):
        sig = model.SignatureDefs(i)
        subgraph = model.Subgraphs(sig.SubgraphIndex())
        declared = {
            "inputs": [subgraph.Inputs(j) for j in range(subgraph.InputsLength())],
            "outputs": [subgraph.Outputs(j) for j in range(subgraph.OutputsLength())],
        }
        for kind in ("inputs", "outputs"):
            named = sorted(_signature_tensors(sig, kind).values())
            if named != sorted(declared[kind]):
                raise ConversionError(
                    f"{path}: signature {sig.SignatureKey().decode()} names {kind} tensors {named} "
                    f"but its subgraph declares {sorted(declared[kind])}"
                )
