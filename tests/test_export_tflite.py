"""export/to_tflite.py and export/macs_tflite.py on tiny randomly initialised models (LSRA and Transformer):
the TFLite signatures against the PyTorch graphs they were converted from, the builtin-op gate, the
quantized precisions (size, agreement, caches that do not drift) and the graph MAC count against the
analytic one."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from export.calibration import calibration_inputs
from export.graph_io import update_caches
from export.graphs import DecoderStepGraph, EncoderGraph, graph_io, own_key_macs
from export.macs_tflite import tflite_macs
from export.to_tflite import check_builtin_ops, convert_tflite
from lite.config import ModelConfig
from lite.errors import ExportError, UsageError
from lite.metrics.macs import count_macs
from lite.models.seq2seq import EncoderDecoder

SRC_LENS, SLOTS, BATCHES = [8, 16], 12, [1, 2]
TINY = dict(
    embed_dim=32, ffn_dim=64, encoder_layers=2, decoder_layers=2, attention_heads=2, vocab_size=200, max_positions=64
)


def tiny_model(arch: str) -> EncoderDecoder:
    torch.manual_seed(0)
    kernels = {"encoder_kernels": [3, 5], "decoder_kernels": [3, 5]} if arch == "lsra" else {}
    return EncoderDecoder(ModelConfig(arch=arch, **TINY, **kernels)).eval()


def interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path), num_threads=1)


def source(n: int, length: int, seed: int = 0) -> np.ndarray:
    """[1, length] int32: n ordinary tokens ending in eos, then padding."""
    rng = np.random.default_rng(seed)
    src = np.zeros((1, length), dtype=np.int32)
    src[0, : n - 1] = rng.integers(3, 200, n - 1)
    src[0, n - 1] = 2
    return src


def empty_caches(model: EncoderDecoder, batch: int) -> dict[str, np.ndarray]:
    return {k: np.zeros(v, dtype=np.float32) for k, v in graph_io(model).caches(batch, SLOTS).items()}


def run_steps(runner, memory: dict, caches: dict, tokens: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Teacher-forced decoder steps: tokens [steps, B]; outputs of every step (cache updates folded in)."""
    outs = []
    caches = dict(caches)
    for pos, token in enumerate(tokens):
        feed = {"token": token[:, None].astype(np.int32), "pos": np.array([pos], dtype=np.int32), **memory, **caches}
        out = runner(**{f"inputs_{k}": v for k, v in feed.items()})
        update_caches(caches, out, pos)
        outs.append(out)
    return outs


@torch.no_grad()
def torch_steps(model: EncoderDecoder, memory: dict, caches: dict, tokens: np.ndarray) -> list[dict[str, np.ndarray]]:
    step = DecoderStepGraph(model)
    outs = []
    state = {k: torch.from_numpy(v) for k, v in caches.items()}
    mem = {k: torch.from_numpy(v) for k, v in memory.items()}
    for pos, token in enumerate(tokens):
        out = step(
            {
                "token": torch.from_numpy(token[:, None].astype(np.int32)),
                "pos": torch.tensor([pos], dtype=torch.int32),
                **mem,
                **state,
            }
        )
        update_caches(state, out, pos)
        outs.append({k: v.numpy() for k, v in out.items()})
    return outs


def batch_memory(memory: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    return {k: np.concatenate([v] * batch, axis=0) for k, v in memory.items()}


def weight_bytes(path: Path) -> int:
    """Bytes of stored constant data (weights), each shared buffer once."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    return sum(model.Buffers(i).DataLength() for i in range(model.BuffersLength()))


@pytest.fixture(scope="module")
def lsra():
    return tiny_model("lsra")


@pytest.fixture(scope="module")
def exports(lsra, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The LSRA model at every precision, converted once for the whole module."""
    out = tmp_path_factory.mktemp("tflite")
    rng = np.random.default_rng(1)
    pairs = [
        (list(rng.integers(3, 200, n)) + [2], list(rng.integers(3, 200, m)) + [2])
        for n, m in zip(rng.integers(4, 15, 24), rng.integers(3, SLOTS - 2, 24))
    ]
    calibration = calibration_inputs(lsra, pairs, max(SRC_LENS), SLOTS, max_decoder_samples=96)
    made = {}
    for precision in ("fp32", "dynamic-int8", "fp16", "int8"):
        path = out / f"{precision}.tflite"
        # every signature costs seconds to convert: the weight-only precisions get one of each kind;
        # int8 keeps them all (re-padded encoder samples, decoder samples tiled to batch 2)
        full = precision in ("fp32", "int8")
        info = convert_tflite(
            lsra,
            path,
            precision=precision,
            src_lens=SRC_LENS if full else SRC_LENS[-1:],
            target_slots=SLOTS,
            batches=BATCHES if full else [1],
            calibration=calibration if precision == "int8" else None,
        )
        made[precision] = (path, info)
    return made


def test_signatures_names_shapes_and_types(lsra, exports):
    path, info = exports["fp32"]
    sigs = info["signatures"]
    assert set(sigs) == {"encode_8", "encode_16", "decode_1", "decode_2"}
    assert set(interpreter(path).get_signature_list()) == set(sigs)
    assert sigs["encode_8"]["inputs"] == {"inputs_src": [[1, 8], "int32"]}
    assert sigs["encode_16"]["outputs"]["cross_k_1"] == [[2, 16, 16], "float32"]  # [heads, S, head dim]
    assert sigs["encode_16"]["outputs"]["src_keep"] == [[1, 16], "float32"]
    dec = sigs["decode_2"]
    assert dec["inputs"]["inputs_token"] == [[2, 1], "int32"] and dec["inputs"]["inputs_pos"] == [[1], "int32"]
    assert dec["inputs"]["inputs_cross_v_0"] == [[4, 16, 16], "float32"]  # decoder step at the longest source
    assert dec["inputs"]["inputs_self_k_1"] == [[4, SLOTS, 8], "float32"]  # LSRA: 2 heads of 8 on 16 channels
    assert dec["inputs"]["inputs_conv_1"] == [[2, 4, 16], "float32"]  # kernel 5: the last 4 GLU outputs
    assert dec["outputs"]["logits"] == [[2, 200], "float32"]
    assert set(dec["outputs"]) == {"logits"} | set(graph_io(lsra).caches(2, SLOTS))
    # every precision keeps the same float32/int32 signature tensors: int8 quantizes inside the graph
    for precision, (_, other) in exports.items():
        assert other["signatures"] == {k: v for k, v in sigs.items() if k in other["signatures"]}, precision
    int8 = exports["int8"][1]
    assert set(int8["signatures"]) == set(sigs)
    assert int8["calibration_samples"]["decode_2"] == int8["calibration_samples"]["decode_1"] > 0
    assert info["ops"]["FULLY_CONNECTED"] > 0 and info["seconds"] > 0


def test_fp32_equals_the_torch_graphs(lsra, exports):
    runners = {
        name: interpreter(exports["fp32"][0]).get_signature_runner(name)
        for name in ("encode_8", "encode_16", "decode_1", "decode_2")
    }
    encoder = EncoderGraph(lsra)
    for s in SRC_LENS:
        src = source(6, s)
        got = runners[f"encode_{s}"](inputs_src=src)
        with torch.no_grad():
            want = {k: v.numpy() for k, v in encoder({"src": torch.from_numpy(src)}).items()}
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_allclose(got[k], want[k], atol=1e-4, rtol=0, err_msg=f"encode_{s} {k}")
    memory = runners["encode_16"](inputs_src=source(11, 16, seed=3))
    tokens = np.random.default_rng(4).integers(3, 200, (6, 2))
    for batch in BATCHES:
        mem = batch_memory(memory, batch)
        got = run_steps(runners[f"decode_{batch}"], mem, empty_caches(lsra, batch), tokens[:, :batch])
        want = torch_steps(lsra, mem, empty_caches(lsra, batch), tokens[:, :batch])
        for t, (g, w) in enumerate(zip(got, want)):
            assert g.keys() == w.keys()
            for k in w:
                np.testing.assert_allclose(g[k], w[k], atol=1e-4, rtol=0, err_msg=f"decode_{batch} step {t} {k}")


def test_quantized_files_are_smaller(exports):
    fp32 = weight_bytes(exports["fp32"][0])
    assert 3.3 < fp32 / weight_bytes(exports["dynamic-int8"][0]) < 4.1  # int8 weights; biases stay float
    assert 1.9 < fp32 / weight_bytes(exports["fp16"][0]) < 2.05
    assert 3.0 < fp32 / weight_bytes(exports["int8"][0]) < 4.1  # int32 biases, embeddings int8 and shared
    sizes = {p: path.stat().st_size for p, (path, _) in exports.items()}
    # whole files: a tiny model's are mostly graph structure. Static int8 adds quantization parameters
    # and the quantize/dequantize ops around its float attention core to it: its file outgrows fp32's
    # here (430 kB against 404 kB), so only its weights are compared above (default model: 8.6 MB vs 24 MB)
    assert sizes["dynamic-int8"] < sizes["fp16"] < sizes["fp32"]
    assert all(info["size_bytes"] == sizes[p] for p, (_, info) in exports.items())


@pytest.mark.parametrize(
    "precision, min_agreement, logit_tol", [("fp16", 1.0, 0.01), ("dynamic-int8", 0.95, 0.2), ("int8", 0.85, None)]
)
def test_quantized_decoding_agrees(lsra, exports, precision, min_agreement, logit_tol):
    """Top-1 of each teacher-forced decoder step against PyTorch, on sources of every bucket."""
    path, info = exports[precision]
    buckets = [s for s in SRC_LENS if f"encode_{s}" in info["signatures"]]
    runners = {name: interpreter(path).get_signature_runner(name) for name in info["signatures"]}
    rng = np.random.default_rng(5)
    agree = steps = 0
    worst = 0.0
    for i, n in enumerate([5, 7, 9, 12, 15]):
        bucket = next(s for s in buckets if s >= n)
        memory = runners[f"encode_{bucket}"](inputs_src=source(n, bucket, seed=10 + i))
        memory = {k: np.pad(v, [(0, 0), (0, 16 - bucket)] + [(0, 0)] * (v.ndim - 2)) for k, v in memory.items()}
        tokens = rng.integers(3, 200, (SLOTS, 1))
        got = run_steps(runners["decode_1"], memory, empty_caches(lsra, 1), tokens)
        want = torch_steps(lsra, memory, empty_caches(lsra, 1), tokens)
        for g, w in zip(got, want):
            agree += int(g["logits"].argmax() == w["logits"].argmax())
            steps += 1
            worst = max(worst, float(np.abs(g["logits"] - w["logits"]).max()))
    assert agree / steps >= min_agreement, (precision, agree, steps)
    if logit_tol is not None:
        assert worst < logit_tol, (precision, worst)


def test_steps_return_one_cache_slot(lsra, exports):
    """A step returns only the slot it writes (the caller stores it: cached slots never pass through the
    graph, so an int8 graph cannot re-quantize them), and the convolution window shifted by one."""
    runners = interpreter(exports["int8"][0])
    memory = runners.get_signature_runner("encode_16")(inputs_src=source(10, 16))
    outs = run_steps(
        runners.get_signature_runner("decode_1"),
        memory,
        empty_caches(lsra, 1),
        np.random.default_rng(6).integers(3, 200, (SLOTS, 1)),
    )
    for name in ("self_k_0", "self_v_1"):
        attn = lsra.decoder[0].mixer.attn
        assert all(out[name].shape == (attn.num_heads, 1, attn.head_dim) for out in outs)
        assert not np.array_equal(outs[0][name], outs[1][name]) and np.abs(outs[0][name]).max() > 0
    for conv in ("conv_0", "conv_1"):  # the convolution window shifts by one per step
        np.testing.assert_array_equal(outs[5][conv][:, :-1], outs[4][conv][:, 1:])


def test_check_builtin_ops_rejects_custom_and_flex_ops(exports, tmp_path):
    from ai_edge_litert.tools import flatbuffer_utils

    path = exports["fp32"][0]
    ops = check_builtin_ops(path)
    assert ops["FULLY_CONNECTED"] >= 4 * 2 and ops["SOFTMAX"] > 0 and "CUSTOM" not in ops
    for custom in ("FlexErf", "MyFusedAttention"):
        model = flatbuffer_utils.read_model_from_bytearray(path.read_bytes())
        code = next(c for c in model.operatorCodes if c.builtinCode == flatbuffer_utils.BuiltinOperator.SOFTMAX)
        code.builtinCode = code.deprecatedBuiltinCode = flatbuffer_utils.BuiltinOperator.CUSTOM
        code.customCode = custom
        crafted = tmp_path / f"{custom}.tflite"
        crafted.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
        with pytest.raises(ExportError, match=rf"{crafted.name}.*{custom}") as err:
            check_builtin_ops(crafted)
        assert ("Flex" in str(err.value)) == custom.startswith("Flex")
    not_tflite = tmp_path / "model.tflite"
    not_tflite.write_bytes(b"\0" * 64)
    with pytest.raises(ExportError, match="not a TFLite flatbuffer"):
        check_builtin_ops(not_tflite)


@pytest.mark.parametrize("precision", ["fp32", "dynamic-int8", "fp16", "int8"])
def test_graph_macs_equal_analytic_lsra(lsra, exports, precision):
    """encode_S + T decoder steps over T cache slots = the analytic count at S source and T target tokens,
    S the longest bucket (the step's cross-attention always spans max(src_lens) keys): the step attends
    over all T slots (T steps x T keys, the analytic square) and its own key (own_key_macs), the
    cross-attention keys/values are projected once in the encoder graph, and the one-token convolution
    step counts K*C per step."""
    path = exports[precision][0]
    s, d, vocab = max(SRC_LENS), lsra.cfg.embed_dim, lsra.cfg.vocab_size
    dec = tflite_macs(path, "decode_1")
    assert dec["macs_total"] - dec["macs_excluding_output_projection"] == d * vocab  # the projection, per step
    assert "logits" in dec["output_projection"]["op"]
    for bucket in [b for b in SRC_LENS if f"encode_{b}" in exports[precision][1]["signatures"]]:
        enc = tflite_macs(path, f"encode_{bucket}")
        assert enc["macs_total"] == enc["macs_excluding_output_projection"] and enc["output_projection"] is None
        graph = enc["macs_total"] + SLOTS * dec["macs_excluding_output_projection"]
        # a shorter bucket's memory is padded to s keys: scores and values over s - bucket more keys
        padded = 2 * SLOTS * (s - bucket) * d * lsra.cfg.decoder_layers
        assert graph == count_macs(lsra.cfg, bucket, SLOTS)["macs"] + own_key_macs(lsra, SLOTS) + padded
    if precision in ("fp32", "int8"):
        assert tflite_macs(path, "decode_2")["macs_total"] == 2 * dec["macs_total"]


def test_a_mul_reduced_by_sum_is_a_contraction(tmp_path):
    """(x * w).sum(1), what a one-token convolution step can lower to, counts one MAC per product; a MUL
    whose result is not only summed counts zero."""
    import litert_torch

    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.rand(1, 7, 32))
            self.register_buffer("v", torch.rand(1, 7, 32))

        def forward(self, x):
            return (x * self.w).sum(dim=1), x * self.v + 1.0

    path = tmp_path / "step.tflite"
    litert_torch.signature("step", Step().eval(), (torch.rand(1, 7, 32),)).convert().export(str(path))
    macs = tflite_macs(path, "step")
    assert macs["macs_total"] == 7 * 32 and macs["output_projection"] is None
    assert set(macs["by_op"]) <= {"MUL+SUM", "BATCH_MATMUL", "FULLY_CONNECTED"}


def test_transformer_export_and_macs(tmp_path):
    model = tiny_model("transformer")
    path = tmp_path / "transformer.tflite"
    info = convert_tflite(model, path, precision="fp32", src_lens=[16], target_slots=SLOTS, batches=[1])
    assert set(info["signatures"]) == {"encode_16", "decode_1"}
    assert "conv_0" not in info["signatures"]["decode_1"]["outputs"]
    runners = {n: interpreter(path).get_signature_runner(n) for n in ("encode_16", "decode_1")}
    src = source(9, 16)
    memory = runners["encode_16"](inputs_src=src)
    with torch.no_grad():
        want = EncoderGraph(model)({"src": torch.from_numpy(src)})
    for k, v in want.items():
        np.testing.assert_allclose(memory[k], v.numpy(), atol=1e-4, rtol=0)
    tokens = np.random.default_rng(7).integers(3, 200, (5, 1))
    caches = {k: np.zeros(v, np.float32) for k, v in graph_io(model).caches(1, SLOTS).items()}
    for g, w in zip(run_steps(runners["decode_1"], memory, caches, tokens), torch_steps(model, memory, caches, tokens)):
        for k in w:
            np.testing.assert_allclose(g[k], w[k], atol=1e-4, rtol=0)
    enc, dec = tflite_macs(path, "encode_16"), tflite_macs(path, "decode_1")
    assert "MUL+SUM" not in dec["by_op"] and "DEPTHWISE_CONV_2D" not in enc["by_op"]
    graph = enc["macs_total"] + SLOTS * dec["macs_excluding_output_projection"]
    assert graph == count_macs(model.cfg, 16, SLOTS)["macs"] + own_key_macs(model, SLOTS)


def test_argument_and_signature_errors(lsra, exports, tmp_path):
    with pytest.raises(ValueError, match="precision"):
        convert_tflite(lsra, tmp_path / "x.tflite", precision="int4", src_lens=[8], target_slots=4, batches=[1])
    with pytest.raises(ValueError, match="calibration"):
        convert_tflite(lsra, tmp_path / "x.tflite", precision="int8", src_lens=[8], target_slots=4, batches=[1])
    assert not (tmp_path / "x.tflite").exists()
    with pytest.raises(UsageError, match="decode_3"):
        tflite_macs(exports["fp32"][0], "decode_3")
    copy = tmp_path / "copy.tflite"
    shutil.copyfile(exports["fp32"][0], copy)
    assert tflite_macs(copy, "decode_1") == tflite_macs(exports["fp32"][0], "decode_1")


def test_sparse_decoder_heads_export_like_incremental_decoding(tmp_path):
    """Sparse self-attention in both stacks: the decoder step reads its pattern table at `pos`. The
    TFLite steps match the step graph, and the step graph matches the model's own incremental decoding."""
    from lite.sparse.patterns import HeadPattern

    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="lsra",
        **TINY,
        encoder_kernels=[3, 5],
        decoder_kernels=[3, 5],
        encoder_patterns=[[HeadPattern(kind="local", window=4, global_tokens=[0])]],
        decoder_patterns=[
            [HeadPattern(kind="local", window=4)],
            [HeadPattern(kind="local", window=2, dilation=2), HeadPattern()],
        ],
    )
    model = EncoderDecoder(cfg).eval()
    path = tmp_path / "sparse.tflite"
    convert_tflite(model, path, precision="fp32", src_lens=[16], target_slots=SLOTS, batches=[1])
    runners = {n: interpreter(path).get_signature_runner(n) for n in ("encode_16", "decode_1")}
    src = source(11, 16)
    memory = runners["encode_16"](inputs_src=src)
    tokens = np.random.default_rng(3).integers(3, 200, (9, 1))
    caches = {k: np.zeros(v, np.float32) for k, v in graph_io(model).caches(1, SLOTS).items()}
    graph_steps = torch_steps(model, memory, caches, tokens)
    for got, want in zip(run_steps(runners["decode_1"], memory, caches, tokens), graph_steps):
        np.testing.assert_allclose(got["logits"], want["logits"], atol=1e-4, rtol=0)
    with torch.no_grad():  # the model itself, step by step over the unpadded source
        mem, pad = model.encode(torch.from_numpy(src[:, :11]).long())
        cache: dict = {}
        for pos, token in enumerate(tokens):
            logits = model.decode(torch.from_numpy(token[None].astype(np.int64)), mem, pad, cache)[:, -1]
            np.testing.assert_allclose(graph_steps[pos]["logits"], logits.numpy(), atol=1e-4, rtol=0)
    # and a dense decoder would differ: the table is really applied (window 4 at step 8 hides 0..5)
    dense = EncoderDecoder(dataclasses.replace(cfg, decoder_patterns=None)).eval()
    dense.load_state_dict(model.state_dict())
    assert np.abs(torch_steps(dense, memory, caches, tokens)[-1]["logits"] - graph_steps[-1]["logits"]).max() > 1e-3
