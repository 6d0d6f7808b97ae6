"""The exported graphs' inputs and outputs, declared once: names, shapes, types and cache layout.

The exporters trace graphs with these names (export/graphs.py), to_tflite checks a written file's
signatures against tflite_signatures, to_onnx names its dynamic axes after decoder_axes, calibration
records samples under these names, and the runtime (export/runtime.py) feeds and reads them.

    encoder       src [1, S] int32  ->  src_keep [1, S] (1.0 at real tokens), cross_k_i, cross_v_i [Hc, S, Dc]
    decoder step  token [B, 1] int32, pos [1] int32 (one position for every hypothesis),
                  the memory: src_keep [B, S], cross_k_i, cross_v_i [B*Hc, S, Dc],
                  the caches: self_k_i, self_v_i [B*H, T, Dh], conv_i [B, K-1, C] (LSRA only)
                  ->  logits [B, V] and the cache updates: self_k_i, self_v_i [B*H, 1, Dh] (slot pos
                  only), conv_i [B, K-1, C] (the whole window)
    hidden step   the decoder step's inputs  ->  hidden [B, D] (the final decoder state, before the
                  output projection) and the cache updates: with a vocabulary shortlist
                  (lite/shortlist.py) the runtime projects it onto the candidates' rows itself

A step returns only the slot it writes of a self-attention cache: the caller stores it at slot pos
(update_caches). Returning whole caches made every step rewrite and copy them (a SELECT over all T
slots, not run by XNNPACK, and in static int8 a quantize/dequantize of every slot: a fifth of an int8
step's instructions on Cortex-A76, benchmarks/results/profile.json). Folders exported before return
whole caches; update_caches tells the two apart by the slot count.

per decoder layer i; S source tokens, T cache slots (slot t = position t), V the vocabulary. Layout:
every tensor but pos is batch-major, its first axis batch x rows per hypothesis (the heads of an
attention tensor, else 1), hypothesis-major (at_batch); only self-attention caches have a slot axis
(axis 1, has_slots). Every tensor is float32 except the int32 ids and position (INT32).

TFLite: one file with signatures encode_<S>, decode_<B> and decode_<B>_hidden; inputs are named GRAPH_ARGUMENT + "_" +
name (the traced forward's argument is a dict of named tensors), outputs by name. ONNX: encoder.onnx
and decoder.onnx with inputs and outputs by name, except the updated caches: "<name>_next", since an
ONNX output cannot reuse its input's name.

Standard library only: it ships with the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

SRC, SRC_KEEP, TOKEN, POS, LOGITS, HIDDEN = "src", "src_keep", "token", "pos", "logits", "hidden"
INT32 = (SRC, TOKEN, POS)  # every other tensor is float32
GRAPH_ARGUMENT = "inputs"  # the graphs' forward takes one dict of named tensors under this name
TFLITE_INPUT_PREFIX = GRAPH_ARGUMENT + "_"
ONNX_CACHE_SUFFIX = "_next"
# the dynamic axes of the ONNX graphs
BATCH, SRC_LEN, CACHE_LEN = "batch", "src_len", "cache_len"

Shape = tuple[int, ...]


def cross_k(layer: int) -> str:
    return f"cross_k_{layer}"


def cross_v(layer: int) -> str:
    return f"cross_v_{layer}"


def self_k(layer: int) -> str:
    return f"self_k_{layer}"


def self_v(layer: int) -> str:
    return f"self_v_{layer}"


def conv_window(layer: int) -> str:
    return f"conv_{layer}"


def is_cache(name: str) -> bool:
    """A decoder-step input the step returns updated (self_*, conv_*): state carried step to step."""
    return name.startswith(("self_", "conv_"))


def has_slots(name: str) -> bool:
    """A self-attention cache: axis 1 holds the cache slots."""
    return name.startswith("self_")


def update_caches(state: dict, outputs: dict, pos: int) -> None:
    """Fold a decoder step's cache outputs into `state` (numpy arrays or torch tensors): a self-attention
    cache becomes a copy with slot `pos` written (never in place: the previous array may still be an
    input the runtime passed, and passed inputs are immutable), a convolution window is replaced. An
    output with as many slots as the cache (a folder exported before steps returned one slot) replaces
    the cache whole."""
    for name, value in outputs.items():
        if not is_cache(name):
            continue
        old = state[name]
        if has_slots(name) and value.shape[1] != old.shape[1]:
            new = old.clone() if hasattr(old, "clone") else old.copy()
            new[:, pos : pos + 1] = value
            state[name] = new
        else:
            state[name] = value


def dtype(name: str) -> str:
    return "int32" if name in INT32 else "float32"


def at_batch(shape: Shape, batch: int) -> Shape:
    """A batch-1 shape of a batch-major tensor at `batch` hypotheses."""
    return (shape[0] * batch, *shape[1:])


def encode_signature(src_len: int) -> str:
    return f"encode_{src_len}"


def decode_signature(batch: int, hidden: bool = False) -> str:
    """decode_<B>, or decode_<B>_hidden for the step that stops before the output projection."""
    return f"decode_{batch}_hidden" if hidden else f"decode_{batch}"


def tflite_input(name: str) -> str:
    return TFLITE_INPUT_PREFIX + name


def onnx_output(name: str) -> str:
    """ONNX name of a graph output: an updated cache gets ONNX_CACHE_SUFFIX; the others keep theirs."""
    return name + ONNX_CACHE_SUFFIX if is_cache(name) else name


def from_onnx_output(name: str) -> str:
    return name.removesuffix(ONNX_CACHE_SUFFIX)


@dataclass(frozen=True)
class DecoderLayer:
    """The widths of one decoder layer that shape graph tensors (pruning may give layers different ones)."""

    cross_heads: int
    cross_head_dim: int
    heads: int  # self-attention heads (LSRA: of the attention branch)
    head_dim: int
    conv_kernel: int = 0  # LSRA: convolution kernel size; 0: no convolution branch
    conv_channels: int = 0  # LSRA: channels of the convolution branch


@dataclass(frozen=True)
class GraphIO:
    """The inputs and outputs of a model's encoder and decoder-step graphs: {name: shape}, in graph order."""

    layers: tuple[DecoderLayer, ...]
    vocab_size: int
    embed_dim: int = 0  # width of the hidden output (the hidden step)

    def memory(self, batch: int, src_len: int) -> dict[str, Shape]:
        """What the encoder computes once per sentence and every decoder step reads."""
        shapes = {SRC_KEEP: (batch, src_len)}
        for i, layer in enumerate(self.layers):
            shapes[cross_k(i)] = shapes[cross_v(i)] = (batch * layer.cross_heads, src_len, layer.cross_head_dim)
        return shapes

    def caches(self, batch: int, slots: int) -> dict[str, Shape]:
        """The decoder state the step reads and returns updated."""
        shapes = {}
        for i, layer in enumerate(self.layers):
            shapes[self_k(i)] = shapes[self_v(i)] = (batch * layer.heads, slots, layer.head_dim)
            if layer.conv_kernel:
                shapes[conv_window(i)] = (batch, layer.conv_kernel - 1, layer.conv_channels)
        return shapes

    def encoder_inputs(self, src_len: int) -> dict[str, Shape]:
        return {SRC: (1, src_len)}

    def encoder_outputs(self, src_len: int) -> dict[str, Shape]:
        return self.memory(1, src_len)

    def decoder_inputs(self, batch: int, src_len: int, slots: int) -> dict[str, Shape]:
        return {TOKEN: (batch, 1), POS: (1,), **self.memory(batch, src_len), **self.caches(batch, slots)}

    def decoder_outputs(self, batch: int, slots: int, hidden: bool = False) -> dict[str, Shape]:
        """The logits (or hidden state) and the cache updates: one slot of each self-attention cache."""
        first = {HIDDEN: (batch, self.embed_dim)} if hidden else {LOGITS: (batch, self.vocab_size)}
        updates = {name: (s[0], 1, *s[2:]) if has_slots(name) else s for name, s in self.caches(batch, slots).items()}
        return {**first, **updates}

    def decoder_axes(self) -> dict[str, dict[int, tuple[str, int]] | None]:
        """Per decoder-step input, its dynamic axes: {axis: (BATCH | SRC_LEN | CACHE_LEN, factor)}, the
        axis being factor x that size (head-folded axes: heads x batch); None: a fixed shape."""
        axes: dict[str, dict[int, tuple[str, int]] | None] = {TOKEN: {0: (BATCH, 1)}, POS: None}
        for name, shape in self.decoder_inputs(1, 1, 1).items():
            if name in (TOKEN, POS):
                continue
            rows = shape[0]  # at batch 1: the rows per hypothesis
            if not is_cache(name):  # the memory: src_keep, cross_*
                axes[name] = {0: (BATCH, rows), 1: (SRC_LEN, 1)}
            elif has_slots(name):
                axes[name] = {0: (BATCH, rows), 1: (CACHE_LEN, 1)}
            else:
                axes[name] = {0: (BATCH, rows)}
        return axes

    def encoder_axes(self) -> dict[str, dict[int, tuple[str, int]]]:
        return {SRC: {1: (SRC_LEN, 1)}}


def tflite_signatures(
    io: GraphIO, src_lens: list[int], slots: int, batches: list[int], hidden: bool = False
) -> dict[str, dict[str, dict[str, list]]]:
    """{signature: {"inputs": {name: [shape, dtype]}, "outputs": ...}} of the .tflite file: encode_<S> per
    source length, decode_<B> per batch size at the longest source length, and with `hidden`
    decode_<B>_hidden per batch size."""

    def spec(shapes: dict[str, Shape], prefix: str = "") -> dict[str, list]:
        return {prefix + name: [list(shape), dtype(name)] for name, shape in shapes.items()}

    out = {}
    for s in src_lens:
        out[encode_signature(s)] = {
            "inputs": spec(io.encoder_inputs(s), TFLITE_INPUT_PREFIX),
            "outputs": spec(io.encoder_outputs(s)),
        }
    for b in batches:
        for h in (False, True) if hidden else (False,):
            out[decode_signature(b, h)] = {
                "inputs": spec(io.decoder_inputs(b, max(src_lens), slots), TFLITE_INPUT_PREFIX),
                "outputs": spec(io.decoder_outputs(b, slots, h)),
            }
    return out
