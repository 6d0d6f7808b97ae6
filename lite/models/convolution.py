"""The convolution branch of an LSRA block: Linear or GLU -> depthwise convolution -> Linear.

Both convolutions are depthwise with softmax-normalised kernels shared by the channels of a
head (Wu et al., "Pay Less Attention with Lightweight and Dynamic Convolutions"):
- lightweight: one learned kernel per head, applied with a grouped Conv1d;
- dynamic: the kernel of each time step is predicted from that step's input.
Written with padding + Conv1d / stacked shifted slices, which export to builtin ONNX and
TFLite ops. A T x T band matrix built with `as_strided` (the reference implementation's way)
exports to ONNX silently wrong, so it is not used; the export checks parity either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lite.errors import ConfigError


class GLU(nn.Module):
    """Gated linear unit with its value and gate as two Linears (torch-pruning maps them; F.glu it does not)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.value = nn.Linear(in_dim, out_dim)
        self.gate = nn.Linear(in_dim, out_dim)
        nn.init.xavier_uniform_(self.value.weight)
        nn.init.xavier_uniform_(self.gate.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.value(x) * torch.sigmoid(self.gate(x))


def _padding(kernel_size: int, causal: bool) -> tuple[int, int]:
    """(left, right) padding: causal sees only the past; otherwise centred on the step."""
    if causal:
        return kernel_size - 1, 0
    left = kernel_size // 2 if kernel_size % 2 else (kernel_size - 1) // 2
    return left, kernel_size - 1 - left


class _HeadedConv(nn.Module):
    """What both convolutions share: C channels in `heads` groups, a kernel size, causal or centred,
    DropConnect on the normalised kernels.

    Channels are grouped head by head: `head_channels[h]` consecutive channels use kernel h (C / heads
    each unless pruning removed some; a head may keep none)."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        heads: int,
        causal: bool,
        weight_dropout: float,
        head_channels: list[int] | None = None,
    ):
        super().__init__()
        if head_channels is None:
            if channels % heads:
                raise ConfigError(f"channels {channels} not divisible by heads {heads}")
            head_channels = [channels // heads] * heads
        if len(head_channels) != heads or sum(head_channels) != channels:
            raise ConfigError(f"head_channels {head_channels} must be {heads} counts summing to {channels}")
        self.channels, self.kernel_size, self.heads, self.causal = channels, kernel_size, heads, causal
        self.head_channels = list(head_channels)
        self.weight_dropout = weight_dropout
        # derived from head_channels (in the config), so not persistent: a state_dict holds learned weights only
        self.register_buffer(
            "head_of_channel",
            torch.repeat_interleave(torch.arange(heads), torch.tensor(head_channels)),
            persistent=False,
        )


class LightweightConv(_HeadedConv):
    """Depthwise convolution whose softmax-normalised kernel is shared within each of `heads` channel groups."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        heads: int,
        causal: bool,
        weight_dropout: float = 0.0,
        head_channels: list[int] | None = None,
    ):
        super().__init__(channels, kernel_size, heads, causal, weight_dropout, head_channels)
        self.weight = nn.Parameter(torch.empty(heads, kernel_size))
        nn.init.xavier_uniform_(self.weight)

    def channel_kernels(self) -> Tensor:
        """[C, K] normalised kernels, channel c using kernel head_of_channel[c]."""
        w = F.softmax(self.weight, dim=-1)
        w = F.dropout(w, p=self.weight_dropout, training=self.training)
        return w.index_select(0, self.head_of_channel)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, T, C] -> [B, T, C]."""
        left, right = _padding(self.kernel_size, self.causal)
        xt = F.pad(x.transpose(1, 2), (left, right))
        return F.conv1d(xt, self.channel_kernels().unsqueeze(1), groups=self.channels).transpose(1, 2)

    def step(self, window: Tensor) -> Tensor:
        """One causal step: window [B, K, C] holds the last K inputs (oldest first) -> [B, 1, C]."""
        return (window * self.channel_kernels().t().unsqueeze(0)).sum(dim=1, keepdim=True)


class DynamicConv(_HeadedConv):
    """Depthwise convolution whose per-head kernel at step t is predicted from the input at t."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        heads: int,
        causal: bool,
        weight_dropout: float = 0.0,
        head_channels: list[int] | None = None,
    ):
        super().__init__(channels, kernel_size, heads, causal, weight_dropout, head_channels)
        self.weight_linear = nn.Linear(channels, heads * kernel_size)
        nn.init.xavier_uniform_(self.weight_linear.weight)
        nn.init.zeros_(self.weight_linear.bias)

    def kernels(self, x: Tensor) -> Tensor:
        """[B, T, H, K] normalised kernels predicted from x [B, T, C]."""
        b, t, _ = x.shape
        w = F.softmax(self.weight_linear(x).view(b, t, self.heads, self.kernel_size), dim=-1)
        return F.dropout(w, p=self.weight_dropout, training=self.training)

    def _combine(self, windows: Tensor, w: Tensor) -> Tensor:
        """windows [B, T, K, C], w [B, T, H, K] -> [B, T, C]."""
        b, t, k, c = windows.shape
        if self.head_channels == [c // self.heads] * self.heads:
            windows = windows.view(b, t, k, self.heads, c // self.heads)
            return torch.einsum("btkhr,bthk->bthr", windows, w).reshape(b, t, c)
        # pruned heads of unequal widths: each channel picks its head's kernel
        return torch.einsum("btkc,btck->btc", windows, w.index_select(2, self.head_of_channel))

    def forward(self, x: Tensor) -> Tensor:
        left, right = _padding(self.kernel_size, self.causal)
        t = x.shape[1]
        xp = F.pad(x, (0, 0, left, right))
        windows = torch.stack([xp[:, k : k + t] for k in range(self.kernel_size)], dim=2)
        return self._combine(windows, self.kernels(x))

    def step(self, window: Tensor) -> Tensor:
        return self._combine(window.unsqueeze(1), self.kernels(window[:, -1:]))


class ConvBranch(nn.Module):
    """Linear (or GLU) -> lightweight/dynamic depthwise convolution -> Linear: `dim` in and out, sum(head_channels)
    channels inside (dim unless pruned)."""

    def __init__(
        self,
        dim: int,
        kernel_size: int,
        heads: int,
        conv_type: str,
        glu: bool,
        causal: bool,
        weight_dropout: float = 0.0,
        head_channels: list[int] | None = None,
    ):
        super().__init__()
        inner = dim if head_channels is None else sum(head_channels)  # channel-pruned branches are narrower
        self.input = GLU(dim, inner) if glu else nn.Linear(dim, inner)
        conv_cls = {"lightweight": LightweightConv, "dynamic": DynamicConv}[conv_type]
        self.conv = conv_cls(inner, kernel_size, heads, causal, weight_dropout, head_channels)
        self.output = nn.Linear(inner, dim)
        self.kernel_size = kernel_size

    def forward(self, x: Tensor, padding_mask: Tensor | None = None, cache: dict[str, Tensor] | None = None) -> Tensor:
        """x [B, T, C]; padding_mask [B, T] True at pads (zeroed so they do not leak into neighbours).

        With `cache` (causal decoding, T == 1) the last K-1 inputs live in cache["window"].
        """
        h = self.input(x)
        if padding_mask is not None:
            h = h.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        if cache is None:
            return self.output(self.conv(h))
        if "window" not in cache:
            cache["window"] = h.new_zeros(h.shape[0], self.kernel_size - 1, h.shape[2])
        window = torch.cat([cache["window"], h], dim=1)
        cache["window"] = window[:, 1:]
        return self.output(self.conv.step(window))
