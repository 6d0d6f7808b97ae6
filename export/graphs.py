"""Static-shape graphs of a trained model, the form both exporters trace: the encoder and one decoder step.

On-device interpreters want fixed shapes and no Python control flow (docs/design.md, "Export routes"):
- `EncoderGraph`: source ids [1, S] (int32, right-padded) -> the cross-attention keys and values of
  every decoder layer (computed once per sentence) and the source keep-mask (1.0 at real tokens).
- `DecoderStepGraph`: one token per hypothesis [B, 1] and its position `pos` [1] (int32), plus fixed-size
  caches -> logits [B, V] and the cache updates (or, built with hidden=True, the final decoder state
  [B, D] before the output projection: a runtime with a vocabulary shortlist projects it onto the
  candidates' rows itself). The self-attention cache has max_target_len slots; a step reads slots
  before `pos`, attends to its own new key and value apart, and returns them as the one slot the caller
  writes at `pos` (graph_io.update_caches). Writing the slot inside the graph would mean rewriting
  the whole cache every step (index_put/scatter becomes STABLEHLO_SCATTER in TFLite and breaks static
  int8, slicing at a runtime index does not export at all, and a torch.where over all slots is a
  SELECT that XNNPACK does not run).

Graph inputs and outputs are dicts of named tensors, declared in export/graph_io.py (graph_io(model)
gives this model's): one tensor per decoder layer (pruning may give layers different head counts,
widths and kernel sizes), every tensor at most 4-D so int8 kernels take it. The self-attention caches
have one slot per position (the longest output + 1); conv_i holds the last K_i-1 GLU outputs of the
LSRA convolution branch, oldest first. The decoder step returns the logits and the cache updates.
Sparse decoder heads read which slots they see from a constant per-head table at row `pos`.
Masked scores use a bounded fill (EXPORT_MASK_FILL): large constants ruin int8 score scales
(docs/design.md).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from export.graph_io import (
    HIDDEN,
    LOGITS,
    POS,
    SRC,
    SRC_KEEP,
    TOKEN,
    DecoderLayer,
    GraphIO,
    conv_window,
    cross_k,
    cross_v,
    self_k,
    self_v,
)
from lite.errors import UnsupportedModelError
from lite.models.attention import MultiheadAttention
from lite.models.blocks import LSRAMixer
from lite.models.convolution import ConvBranch, DynamicConv, LightweightConv
from lite.models.seq2seq import EncoderDecoder

# exp(-30) ~ 1e-13 of the largest real score's weight, and int8 can still represent real scores.
EXPORT_MASK_FILL = -30.0


class ConstantKernelConv(LightweightConv):
    """A LightweightConv whose softmax-normalised kernels are a stored constant (eval mode, export only).

    The converters do not fold a softmax of constant weights: the convolution filter would be a runtime
    tensor, computed on every call, and static int8 would quantize it like an activation (that broke
    the convolution outright on the default model: relative error > 1)."""

    def channel_kernels(self) -> Tensor:
        return self.constant_kernels


def export_copy(model: EncoderDecoder) -> EncoderDecoder:
    """An eval-mode copy with the bounded export mask fill and constant lightweight-conv kernels."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, MultiheadAttention):
            module.mask_fill = EXPORT_MASK_FILL
        if isinstance(module, ConvBranch) and type(module.conv) is LightweightConv:
            conv = module.conv
            frozen = ConstantKernelConv(
                conv.channels, conv.kernel_size, conv.heads, conv.causal, head_channels=conv.head_channels
            )
            frozen.load_state_dict(conv.state_dict())
            frozen.register_buffer("constant_kernels", conv.channel_kernels().detach().clone())
            module.conv = frozen.eval()
    return model


class EncoderGraph(nn.Module):
    """{"src": [1, S] int32} -> {"src_keep": [1, S], "cross_k_i", "cross_v_i": [Hc, S, Dh]}."""

    def __init__(self, model: EncoderDecoder):
        super().__init__()
        self.model = export_copy(model)

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        memory, pad = self.model.encode(inputs[SRC])
        out = {SRC_KEEP: (~pad).float()}
        for i, block in enumerate(self.model.decoder):
            k, v = block.cross.project_kv(memory)  # [B, Hc, S, Dh]
            out[cross_k(i)], out[cross_v(i)] = k.flatten(0, 1), v.flatten(0, 1)
        return out


def _attend(q: Tensor, k: Tensor, v: Tensor, visible: Tensor) -> Tensor:
    """q [B*H, 1, Dh], k/v [B*H, N, Dh], visible broadcastable to [B*H, 1, N] -> [B*H, 1, Dh]."""
    scores = torch.where(visible, q @ k.transpose(-1, -2), EXPORT_MASK_FILL)
    return F.softmax(scores, dim=-1) @ v


def _query(attn: MultiheadAttention, h: Tensor) -> Tensor:
    """[B, 1, D] -> the scaled queries [B*H, 1, Dh], heads folded into the batch axis like the caches:
    attention then reads the cache and memory inputs as they are (a 4-D view of them was a full copy
    per step in XNNPACK, benchmarks/results/profile.json)."""
    return (attn._heads(attn.q_proj(h)) * (attn.head_dim**-0.5)).flatten(0, 1)


def _merge_heads(out: Tensor, batch: int) -> Tensor:
    """[B*H, 1, Dh] -> [B, 1, H*Dh]."""
    return out.view(batch, -1, 1, out.shape[-1]).transpose(1, 2).reshape(batch, 1, -1)


def _per_head(mask: Tensor, batch: int, heads: int) -> Tensor:
    """A mask [1 or B, 1 or H, 1, N] as [B*H, 1, N], the folded layout."""
    return mask.expand(batch, heads, 1, mask.shape[-1]).reshape(batch * heads, 1, mask.shape[-1])


class DecoderStepGraph(nn.Module):
    """One incremental decoder step over fixed-size caches (names and shapes: module docstring); with
    `hidden`, returning the final decoder state instead of the logits."""

    def __init__(self, model: EncoderDecoder, hidden: bool = False):
        super().__init__()
        self.hidden = hidden
        self.model = export_copy(model)
        # Normalised lightweight kernels are constants: precompute them (the converter does not fold
        # a softmax of constant weights). Empty for layers without one.
        self.kernels = nn.ParameterList()
        for block in self.model.decoder:
            conv = block.mixer.conv.conv if isinstance(block.mixer, LSRAMixer) else None
            w = conv.channel_kernels().detach().unsqueeze(-1) if isinstance(conv, LightweightConv) else torch.zeros(0)
            self.kernels.append(nn.Parameter(w, requires_grad=False))  # [C, K, 1]
        # Sparse self-attention heads: which cache slots a step at `pos` may see, per head, as a constant
        # table [H, P, P] (P = max_positions, a few hundred) read at row `pos`; the same reference masks
        # the PyTorch decoder uses step by step (lite/sparse/core.py), so parity holds for every pattern.
        self.sparse_layers: list[int] = []
        for i, block in enumerate(self.model.decoder):
            attn = block.mixer.attn
            if attn.learned is not None:
                raise UnsupportedModelError(
                    f"decoder layer {i} still has learned attention patterns: binarise the model first"
                )
            if attn.sparse is not None:
                table = attn.sparse.mask(model.cfg.max_positions, causal=True)
                self.register_buffer(f"slot_table_{i}", table, persistent=False)
                self.sparse_layers.append(i)

    def _self_attention(
        self,
        attn: MultiheadAttention,
        h: Tensor,
        k_cache: Tensor,
        v_cache: Tensor,
        before: Tensor,
        itself: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Attention over the cached slots `before` (visible, earlier than pos) and the step's own new key
        (where `itself`; None: every head sees it); returns (output, new key, new value), the latter
        [B*H, 1, Dh].
        One softmax over both, so the result equals attending over a cache with slot pos written."""
        b, heads = h.shape[0], attn.num_heads
        q = _query(attn, h)  # [B*H, 1, Dh]
        k_new, v_new = (t.flatten(0, 1) for t in attn.project_kv(h))  # [B*H, 1, Dh]
        cached = torch.where(_per_head(before, b, heads), q @ k_cache.transpose(-1, -2), EXPORT_MASK_FILL)
        own = q @ k_new.transpose(-1, -2)  # [B*H, 1, 1]: one key more than the cache (own_key_macs)
        if itself is not None:
            own = torch.where(_per_head(itself, b, heads), own, EXPORT_MASK_FILL)
        probs = F.softmax(torch.cat([cached, own], dim=-1), dim=-1)
        slots = k_cache.shape[1]
        out = probs[..., :slots] @ v_cache + probs[..., slots:] @ v_new
        return attn.out_proj(_merge_heads(out, b)), k_new, v_new

    def _conv(self, layer: int, branch, h: Tensor, window: Tensor) -> tuple[Tensor, Tensor]:
        """branch: ConvBranch; window [B, K-1, C] -> (output [B, 1, C], the window shifted by one)."""
        full = torch.cat([window, branch.input(h)], dim=1)  # [B, K, C], oldest first
        if isinstance(branch.conv, DynamicConv):
            y = branch.conv.step(full)
        else:
            # per channel c: y[b, c] = sum_k full[b, k, c] * w[c, k], as a batched matmul over channels
            # (a Mul + ReduceSum would compute the same, but graph MAC counters only see matmuls)
            y = (full.permute(2, 0, 1) @ self.kernels[layer]).permute(1, 2, 0)
        return branch.output(y), full[:, 1:]

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        model = self.model
        token, pos = inputs[TOKEN], inputs[POS]
        b = token.shape[0]
        emb = model.tgt_embed
        x = emb.tokens(token) * emb.scale + emb.positions(pos).unsqueeze(0)  # [B, 1, D]
        # the slot count comes from the cache input: static in TFLite, a named dynamic axis in ONNX
        slots = torch.arange(inputs[self_k(0)].shape[1], dtype=torch.int32)
        before = (slots < pos).view(1, 1, 1, -1)  # the cache's valid slots; slot pos is this step's
        at_pos = (slots == pos).view(1, 1, 1, -1)
        src_visible = (inputs[SRC_KEEP] > 0.5)[:, None, None, :]
        out: dict[str, Tensor] = {}
        for i, block in enumerate(model.decoder):
            mixer = block.mixer
            k_cache, v_cache = inputs[self_k(i)], inputs[self_v(i)]
            seen, itself = before, None
            if i in self.sparse_layers:  # sparse heads: row `pos` of the pattern table, cut to the slot count
                table = getattr(self, f"slot_table_{i}")
                row = table.index_select(1, pos)[:, :, : slots.shape[0]].unsqueeze(0)  # [1, H, 1, T]
                seen = row & before
                itself = (row & at_pos).any(-1, keepdim=True)  # a pattern may hide a position from itself

            def mix(h: Tensor) -> Tensor:
                if isinstance(mixer, LSRAMixer):
                    ha, hc = h[..., : mixer.branch_dim], h[..., mixer.branch_dim :]
                    a, k, v = self._self_attention(mixer.attn, ha, k_cache, v_cache, seen, itself)
                    c, out[conv_window(i)] = self._conv(i, mixer.conv, hc, inputs[conv_window(i)])
                    y = torch.cat([a, c], dim=-1)
                else:
                    y, k, v = self._self_attention(mixer.attn, h, k_cache, v_cache, seen, itself)
                out[self_k(i)], out[self_v(i)] = k, v
                return y

            def cross(h: Tensor) -> Tensor:
                attn = block.cross
                visible = _per_head(src_visible, b, attn.num_heads)
                out = _attend(_query(attn, h), inputs[cross_k(i)], inputs[cross_v(i)], visible)
                return attn.out_proj(_merge_heads(out, b))

            x = block.mix_res(x, mix)
            x = block.cross_res(x, cross)
            x = block.ffn_res(x, block.ffn)
        if self.hidden:
            return {HIDDEN: model.decoder_norm(x).squeeze(1), **out}
        return {LOGITS: model.output(model.decoder_norm(x)).squeeze(1), **out}


def own_key_macs(model: EncoderDecoder, steps: int) -> int:
    """MACs the decoder step graph computes beyond the analytic count (lite.metrics.macs) over `steps`
    steps: each step scores and weighs its own new key and value apart from its T cache slots (slot
    pos among them, masked), so the graph's self-attention spans T + 1 keys where the count has T."""
    return steps * sum(2 * b.mixer.attn.num_heads * b.mixer.attn.head_dim for b in model.decoder)


def graph_io(model: EncoderDecoder) -> GraphIO:
    """The graphs' inputs and outputs for this model, from the widths of its decoder layers."""
    layers = []
    for block in model.decoder:
        cross, attn = block.cross, block.mixer.attn
        branch = block.mixer.conv if isinstance(block.mixer, LSRAMixer) else None
        layers.append(
            DecoderLayer(
                cross_heads=cross.num_heads,
                cross_head_dim=cross.head_dim,
                heads=attn.num_heads,
                head_dim=attn.head_dim,
                conv_kernel=branch.kernel_size if branch else 0,
                conv_channels=branch.output.in_features if branch else 0,
            )
        )
    return GraphIO(tuple(layers), model.cfg.vocab_size, model.cfg.embed_dim)


def encoder_sample(model: EncoderDecoder, src_len: int) -> dict[str, Tensor]:
    src = torch.full((1, src_len), model.cfg.pad_id, dtype=torch.int32)
    src[0, : max(1, src_len // 2)] = model.cfg.bos_id + 2  # some real tokens, the rest padding
    return {SRC: src}


def decoder_sample(model: EncoderDecoder, batch: int, src_len: int, max_target_len: int) -> dict[str, Tensor]:
    """Sample inputs of the decoder step (what the exporters trace with), in graph input order."""
    sample = {
        TOKEN: torch.full((batch, 1), model.cfg.bos_id, dtype=torch.int32),
        POS: torch.zeros(1, dtype=torch.int32),
    }
    for name, shape in graph_io(model).decoder_inputs(batch, src_len, max_target_len).items():
        if name not in sample:
            sample[name] = torch.ones(shape) if name == SRC_KEEP else torch.randn(shape) * 0.1
    return sample
