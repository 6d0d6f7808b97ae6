"""Quantization-aware fine-tuning whose fake quantization is the TFLite exporter's own int8 arithmetic,
so that the int8 artifact computes with exactly the weights the fine-tuned model was trained with.

What ai-edge-quantizer 0.10 does to weights (dynamic_wi8_afp32 and static_wi8_ai8 alike; read from its
naive_min_max_quantize.py and uniform_quantize_tensor.py, and checked on exported files):
- per output channel: axis 0 of FULLY_CONNECTED [out, in] and of EMBEDDING_LOOKUP tables [rows, dim];
- symmetric, zero point 0, narrow range: scale = max(max |w| over the row, 1e-9) / 127 in float32,
  q = rint(w / scale) (a numpy division, ties to even) clipped to [-127, 127], dequantized as q * scale.
static_wi8_ai8 quantizes activations per tensor, asymmetric, [-128, 127], from ranges it calibrates
itself (export/to_tflite.py): `QATConfig.activations` teaches the model to live with that; the artifact
does not reuse the ranges tracked here.

What the converter (litert-torch 0.10) hands the quantizer, read from float conversions of our graphs:
- every Linear weight as is, except q_proj weights arrive multiplied by head_dim ** -0.5 (the attention
  scale folded in): a per-row constant, so the same integers and scales times that constant;
- a LayerNorm gain folded into the Linear that reads the norm's output, in some graphs: post-norm, the
  encoder graph gets W diag(gamma) for each FFN fc1 and for the decoder's cross-attention k/v projections
  of the memory. The file then quantizes W diag(gamma) per row, a different grid from W's, so the fake
  quantizer quantizes that product too. Which Linears are folded is read from a float conversion of the
  model (exporter_folds) rather than assumed: decoder steps at batch 1 fold nothing but at batch > 1 (beam)
  fold decoder fc1 and cross q_proj. QAT follows the encoder and the batch-1 step (greedy decoding and
  the parity gate); beam steps round those few layers the ordinary way;
- the token table (EMBEDDING_LOOKUP, shared by both graphs), the tied output projection (FULLY_CONNECTED
  in the decoder step) and the decoder's position table (EMBEDDING_LOOKUP) are all int8 per row; the
  encoder's positions are folded into a float constant.
Not covered: the lightweight-convolution kernels. They are softmax(weights), constants the exporter
quantizes too (per channel in the encoder, per tensor in the decoder step), but no float weight can
make a softmax land exactly on an int8 grid; they are a few hundred values, so the artifact rounds
them as usual. The ONNX exporter's int8 schemes (onnxruntime) differ and are not matched here.

What remains between a converted QAT model and its dynamic-int8 artifact is the runtime's own rounding
of activations (measured on the smoke model: XNNPACK quantizes each FULLY_CONNECTED input per token,
asymmetric int8, and the depthwise-convolution input per tensor) and those conv kernels: about 60% of
the plain model's artifact error, where the rest was the weights.
"""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from lite.config import to_dict
from lite.models.seq2seq import EncoderDecoder

QMAX = 127  # narrow symmetric int8: [-127, 127]
MIN_BOUND = 1e-9  # the quantizer's floor on a row's range (an all-zero row gets scale 1e-9 / 127)
ACT_QMIN, ACT_QMAX = -128, 127  # asymmetric int8 activations
ACT_MOMENTUM = 0.01  # weight of each training batch in the running activation min/max


@dataclass
class QATConfig:
    """Options of quantization-aware fine-tuning (a recipe's `qat` section maps onto it)."""

    activations: bool = False  # also fake-quantize Linear inputs (per tensor, tracked ranges): static int8
    exporter_folds: bool = True  # quantize W diag(gamma) where the converter folds a LayerNorm into a Linear


# ---------------------------------------------------------------- the quantizer's arithmetic


def _row_scales(w: Tensor) -> Tensor:
    """[rows, 1] float32 scales as the quantizer computes them from the weights it is given, moved to
    their fixed point: the exporter recomputes the scale from the stored q * s, i.e. fl(fl(127 s) / 127),
    which differs from s in the last bit for ~0.7% of rows. After one such step s stays put, so weights
    stored with it come back from the exporter bit for bit."""
    scale = w.detach().abs().amax(dim=1, keepdim=True).clamp(min=MIN_BOUND) / QMAX
    for _ in range(4):
        again = (scale * QMAX) / QMAX
        if torch.equal(again, scale):
            break
        scale = again
    return scale


def quantize_rows(w: Tensor) -> tuple[Tensor, Tensor]:
    """(integers [rows, cols] as float, scales [rows, 1]) of a 2-D weight, per row as the exporter does.
    torch.fake_quantize_per_channel_affine multiplies by 1/scale, which rounds differently from the
    quantizer's division on about 1e-5 of the weights, so the division is written out here."""
    scale = _row_scales(w)
    return torch.round(w.detach() / scale).clamp(-QMAX, QMAX), scale


class FakeQuantWeight(nn.Module):
    """Parametrization: a weight as the int8 artifact will hold it, with a straight-through gradient.

    With `gain` (a LayerNorm weight the converter folds into this Linear), the artifact quantizes
    W diag(gain): the value is quantize(W diag(gain)) / diag(gain)."""

    def __init__(self, gain: nn.Parameter | None = None):
        super().__init__()
        self._gain = (gain,)  # a tuple: not registered, the LayerNorm keeps owning its parameter

    @property
    def gain(self) -> nn.Parameter | None:
        return self._gain[0]

    def grid_value(self, w: Tensor) -> Tensor:
        """The on-grid float weight (no gradient)."""
        with torch.no_grad():
            gain = self.gain
            if gain is None:
                q, scale = quantize_rows(w)
                return q * scale
            g = gain.detach().to(w.dtype)
            q, scale = quantize_rows(w * g)
            # a zero gain zeroes its column in the artifact whatever W holds there: keep W
            return torch.where(g == 0, w, q * scale / torch.where(g == 0, torch.ones_like(g), g))

    def forward(self, w: Tensor) -> Tensor:
        # straight-through: d(out)/dw = 1, and the value is exactly the grid's (w - w is exactly 0,
        # where w + (grid - w) could round off the grid by a bit)
        return self.grid_value(w) + (w - w.detach())


class InputFakeQuant:
    """Forward pre-hook fake-quantizing a Linear's input like static int8 does: per tensor, asymmetric,
    [-128, 127], range including 0. The range is tracked as a running min/max while training (momentum),
    or, while `calibrating`, as the global min/max over everything seen (the exporter's calibration),
    without quantizing."""

    def __init__(self, momentum: float = ACT_MOMENTUM):
        self.momentum = momentum
        self.low: Tensor | None = None
        self.high: Tensor | None = None
        self.calibrating = False

    def _observe(self, x: Tensor) -> None:
        low, high = x.detach().min().float(), x.detach().max().float()
        if self.low is None:
            self.low, self.high = low, high
        elif self.calibrating:
            self.low, self.high = torch.minimum(self.low, low), torch.maximum(self.high, high)
        else:
            self.low = self.low + self.momentum * (low - self.low)
            self.high = self.high + self.momentum * (high - self.high)

    def qparams(self) -> tuple[Tensor, Tensor]:
        """(scale, zero point) as ai-edge-quantizer derives them from a min/max."""
        low, high = torch.clamp(self.low, max=0.0), torch.clamp(self.high, min=0.0)
        scale = torch.clamp(high - low, min=MIN_BOUND) / (ACT_QMAX - ACT_QMIN)
        zero_point = torch.round(ACT_QMIN - low / scale).to(torch.int32)
        return scale, zero_point

    def __call__(self, module: nn.Module, args: tuple) -> tuple | None:
        x = args[0]
        if self.calibrating or module.training or self.low is None:
            self._observe(x)
        if self.calibrating:
            return None
        scale, zero_point = self.qparams()
        return (torch.fake_quantize_per_tensor_affine(x, scale, zero_point, ACT_QMIN, ACT_QMAX),) + tuple(args[1:])


# ---------------------------------------------------------------- what gets quantized


def weight_sites(model: EncoderDecoder) -> dict[str, list[nn.Module]]:
    """{layer name: the modules whose `weight` the exporter stores as int8}: every nn.Linear in the
    encoder/decoder blocks ("encoder.0.mixer.attn.q_proj"), "embedding" (the target token table and
    the tied output projection; also the source table when shared), "src_embedding" (an untied source
    table) and "tgt_embed.positions" (the decoder step looks positions up in an int8 table)."""
    sites: dict[str, list[nn.Module]] = {}
    for stack in ("encoder", "decoder"):
        for name, module in getattr(model, stack).named_modules():
            if isinstance(module, nn.Linear):
                sites[f"{stack}.{name}"] = [module]
    # the output projection first: where a tied matrix gets two quantizers, the table's grid is written last
    sites["embedding"] = [model.output, model.tgt_embed.tokens]
    if model.src_embed.tokens is not model.tgt_embed.tokens:
        sites["src_embedding"] = [model.src_embed.tokens]
    sites["tgt_embed.positions"] = [model.tgt_embed.positions]
    return sites


_FOLDS: dict[str, dict[str, str]] = {}  # exporter_folds per model structure (the weights do not matter)


def exporter_folds(model: EncoderDecoder) -> dict[str, str]:
    """{module name of a Linear: module name of the LayerNorm whose gain the TFLite converter folds
    into it}, read from a float conversion of the encoder (8 source tokens) and the batch-1 decoder
    step (export.to_tflite.convert_tflite, whose ExportError passes through). Cached per model
    structure: a conversion takes tens of seconds."""
    key = json.dumps(to_dict(model.cfg), sort_keys=True, default=str)
    if key not in _FOLDS:
        _FOLDS[key] = _probe_folds(model)
    return dict(_FOLDS[key])


def _probe_folds(model: EncoderDecoder) -> dict[str, str]:
    from export.to_tflite import convert_tflite

    probe = copy.deepcopy(model).eval()
    norms = {name: m for name, m in probe.named_modules() if isinstance(m, nn.LayerNorm)}
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # distinct gains, so every fold shows (a gain of all ones would hide one)
        for norm in norms.values():
            norm.weight.copy_(1.0 + torch.rand(norm.weight.shape, generator=generator))
    linears = {
        name: m.weight.detach().double().numpy() for name, m in probe.named_modules() if isinstance(m, nn.Linear)
    }
    gains = {name: m.weight.detach().double().numpy() for name, m in norms.items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.tflite"
        convert_tflite(probe, path, precision="fp32", src_lens=[8], target_slots=4, batches=[1])
        constants = _fully_connected_weights(path)
    folds = {}
    for name, w in linears.items():
        for f in constants:
            if f.shape != w.shape:
                continue
            column = _column_factors(f, w)
            if column is None:
                continue
            if np.allclose(column, column[0], rtol=1e-5):
                break  # the weight itself, or times a constant (q_proj): the same grid
            norm = next(
                (
                    n
                    for n, g in gains.items()
                    if g.shape == column.shape and np.allclose(column / g, column[0] / g[0], rtol=1e-5)
                ),
                None,
            )
            if norm is not None:
                folds[name] = norm
                break
    return folds


def _column_factors(f: np.ndarray, w: np.ndarray) -> np.ndarray | None:
    """v with f == w diag(v) (to float32 rounding), or None if f is not w with its columns scaled."""
    rows = np.abs(w).argmax(axis=0)  # per column the largest entry gives the best-conditioned ratio
    cols = np.arange(w.shape[1])
    pivot = w[rows, cols]
    if np.any(pivot == 0):
        return None
    v = f[rows, cols] / pivot
    return v if np.allclose(f, w * v, rtol=1e-5, atol=1e-6 * np.abs(f).max()) else None


def _fully_connected_weights(path: Path) -> list[np.ndarray]:
    """The float32 weight of every FULLY_CONNECTED op in a .tflite file (as float64)."""
    from export.macs_tflite import read_flatbuffer

    schema, fb = read_flatbuffer(path)
    data = path.read_bytes()
    fc = schema.BuiltinOperator.FULLY_CONNECTED
    out = []
    for g in range(fb.SubgraphsLength()):
        subgraph = fb.Subgraphs(g)
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            code = fb.OperatorCodes(op.OpcodeIndex())
            if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) != fc or op.InputsLength() < 2:
                continue
            tensor = subgraph.Tensors(op.Inputs(1))
            buffer = fb.Buffers(tensor.Buffer())
            # weights live inline, or after the flatbuffer at an offset (large models)
            raw = (
                buffer.DataAsNumpy().tobytes()
                if buffer.DataLength()
                else data[buffer.Offset() : buffer.Offset() + buffer.Size()]
            )
            if tensor.Type() != schema.TensorType.FLOAT32 or not raw:
                continue  # a computed (not constant) operand
            out.append(np.frombuffer(raw, dtype=np.float32).reshape(tensor.ShapeAsNumpy()).astype(np.float64))
    return out


def site_quantizers(
    model: EncoderDecoder, folds: dict[str, str] | None = None
) -> dict[str, list[tuple[nn.Module, FakeQuantWeight]]]:
    """Per layer name (weight_sites) its modules, each with the weight quantizer the exporter applies."""
    modules = dict(model.named_modules())
    folds = folds or {}  # Linear names only: the tied table keeps its lookup's grid (no fold there)
    return {
        name: [(m, FakeQuantWeight(modules[folds[name]].weight if name in folds else None)) for m in mods]
        for name, mods in weight_sites(model).items()
    }


# ---------------------------------------------------------------- prepare / convert


def remove_weight_quantizer(module: nn.Module) -> None:
    """Undo register_parametrization(module, "weight", ...), giving back the original Parameter object
    (with whatever values it holds). remove_parametrizations re-registers `weight` after the bias; it is
    moved back first, where nn.Linear and nn.Embedding declare it, so state_dict keys keep their order."""
    parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
    for name in [n for n in module._parameters if n != "weight"]:
        module._parameters[name] = module._parameters.pop(name)


def prepare_qat(model: EncoderDecoder, cfg: QATConfig) -> EncoderDecoder:
    """In place: fake-quant parametrizations (straight-through) on every weight the exporter stores as
    int8 (weight_sites), plus input fake quantization of every Linear if cfg.activations. The model
    trains as usual; convert_qat turns it back into a plain EncoderDecoder."""
    if getattr(model, "_qat_hooks", None) is not None or any(
        parametrize.is_parametrized(m, "weight") for m in model.modules()
    ):
        raise ValueError("model: already prepared for QAT (call convert_qat first)")
    folds = exporter_folds(model) if cfg.exporter_folds else {}
    hooks = []
    for name, pairs in site_quantizers(model, folds).items():
        for module, quantizer in pairs:
            parametrize.register_parametrization(module, "weight", quantizer)
            if cfg.activations and isinstance(module, nn.Linear):
                hooks.append(module.register_forward_pre_hook(InputFakeQuant()))
    model._qat_hooks = hooks  # removed by convert_qat
    return model


@torch.no_grad()
def convert_qat(model: EncoderDecoder) -> EncoderDecoder:
    """In place: remove the parametrizations and hooks, leaving float weights on the int8 grid
    (quantize -> dequantize), so the exporter's own quantization gives back the same numbers.
    The original Parameter objects come back (ties and optimizer references hold)."""
    parametrized = [m for m in model.modules() if parametrize.is_parametrized(m, "weight")]
    if not parametrized:
        raise ValueError("model: not prepared for QAT (call prepare_qat first)")
    for module in parametrized:
        plan = module.parametrizations["weight"]
        quantizer = plan[0]
        value = quantizer.grid_value(plan.original)
        remove_weight_quantizer(module)
        module.weight.copy_(value)
    for hook in getattr(model, "_qat_hooks", None) or []:
        hook.remove()
    if hasattr(model, "_qat_hooks"):
        del model._qat_hooks
    return model
