"""CFMUNet: the velocity network of the CFM low-field enhancement model (arXiv 2510.12408; docs/README.md, Method).

v_theta(x, t) with x = [x_t, x_low] (B, 2, H, W) and t in [0, 1] (B,) -> velocity (B, 1, H, W).

Layout (defaults; channel counts for dim=64, dim_mults=(1, 2, 4)):

    t -> sinusoid(64) -> Linear(64, 256) -> GELU -> Linear(256, 256) = temb        (fed to every ResBlock)
    x -> MultiScaleInput: Conv k=1,3,7,15 (2 -> 16 each), concatenated -> 64
    encoder: Res(64->64)=h1 -> Down -> Res(64->128)=h2 -> Down -> Res(128->256)=h3 -> Down      (H/8, W/8)
    bottleneck: TransformerBlock(256): GN(1) -> MHSA -> +,  same GN(1) -> FF(256->512->256) -> +
    decoder: Up(256->256) || h3 -> Res(512->256); Up(256->128) || h2 -> Res(256->128); Up(128->64) || h1 -> Res(128->64)
    Conv1x1(64 -> 1)

ResBlock: Conv3x3 -> GN(8) -> SiLU -> + Linear(SiLU(temb)) -> Conv3x3 -> GN(8) -> SiLU -> SE -> + residual.
Down: pixel-unshuffle x2 then Conv1x1 (4C -> C). Up: Conv1x1 (C_in -> 4 C_out) then pixel-shuffle x2 (the authors'), or
bilinear x2 then Conv1x1 (C_in -> C_out) with ``upsample="resize"`` (no checkerboard; :class:`Upsample`).

Parameter counts [COMPUTED, checked in tests/test_cfm_model.py]: 4 heads x 32 (default here) = 5,253,249, the paper's
"5.25M"; the authors' repository default 8 heads x 32 = 5,384,321 (``heads=8``). The pixel (un)shuffle channel order
(c, 2, 2) and the q/k/v channel split (3, heads, dim_head) are those of the authors' einops patterns, so their
tensors have the same shapes and meaning here (the state-dict key names differ).

What is MONAI's and what is written here (MONAI 1.6.1):
- ``monai.networks.blocks.SubpixelUpsample`` (conv_block = our 1x1 conv, ``apply_pad_pool=False``) computes exactly
  Up, but its shuffle turns channels_last tensors into NCHW ones and is ~2x slower there than
  ``torch.nn.PixelShuffle``, so Up is written here with the latter (same values, same channel order).
- ``monai.networks.blocks.SubpixelDownsample`` applies its conv *before* the unshuffle (C -> C at full resolution);
  the authors' Down convolves *after* it (4C -> C at half resolution), so Down is written here with
  ``torch.nn.PixelUnshuffle``.
- ``monai.networks.blocks.ChannelSELayer`` has biases in both linear layers (the authors' SE has none: 5.25M needs
  that), so SE is written here (4 lines).
- MONAI's ``monai.networks.nets.diffusion_model_unet.DiffusionUNetResnetBlock`` is pre-activation
  (GN -> SiLU -> Conv -> + temb -> GN -> SiLU -> Conv) without SE; the authors' block is post-activation
  (Conv -> GN -> SiLU -> + temb -> Conv -> GN -> SiLU -> SE), so ResBlock is written here.
- ``monai.networks.blocks.SpatialAttentionBlock`` ties the attention inner width to the channel count (256, we need
  heads x dim_head = 128), uses GN eps 1e-6 and owns its norm (the authors reuse one GN(1) before attention and FF),
  so the transformer block is written here; the attention product itself is
  ``torch.nn.functional.scaled_dot_product_attention``.

Performance notes: every op works on NCHW or channels_last tensors (call ``network.to(memory_format=
torch.channels_last)`` and pass channels_last inputs); the attention reshapes are views for channels_last; the
time-frequency table is a buffer (no per-forward allocation); activations, time and residual additions and (without
autograd) the SE scaling work in place on temporaries, which autograd allows (no backward formula reads them).
Scriptable with ``torch.jit.script`` (output identical to eager).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared_transforms.engine.flops import flop_counter

__all__ = [
    "CFMUNet",
    "count_flops",
    "SinusoidalTimeEmbedding",
    "ResBlock",
    "TransformerBlock",
    "Upsample",
    "Downsample",
    "resize_state_from_pixel_shuffle",
]


class SinusoidalTimeEmbedding(nn.Module):
    """Sinusoidal embedding of the raw flow time t in [0, 1] (no x1000 scaling; docs/README.md, Method).

    emb(t) = [sin(t w_0..w_{h-1}), cos(t w_0..w_{h-1})], w_i = exp(-i log(10000) / (h - 1)), h = dim // 2.

    Args:
        dim: embedding size (even, >= 4).

    Shapes: t (B,) -> (B, dim).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2 != 0 or dim < 4:
            raise ValueError(f"Sinusoidal embedding size must be even and >= 4, got {dim}.")
        half = dim // 2
        frequencies = torch.exp(torch.arange(half, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
        # a buffer, not a parameter: follows .to(device) and costs nothing per forward; not saved in checkpoints
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.to(self.frequencies.dtype)[:, None] * self.frequencies[None, :]
        return torch.cat([args.sin(), args.cos()], dim=-1)


class MultiScaleInput(nn.Module):
    """Parallel convolutions with kernel sizes ``kernel_sizes`` ('same' padding), concatenated on channels.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W); each branch gives out_channels / len(kernel_sizes).
    (A single k=15 conv with zero-padded smaller kernels
    would save the concatenation but cost ~4x the arithmetic.)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int]) -> None:
        super().__init__()
        if len(kernel_sizes) == 0 or out_channels % len(kernel_sizes) != 0:
            raise ValueError(
                f"dim ({out_channels}) must be divisible by the number of input kernel sizes ({len(kernel_sizes)})."
            )
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"Input kernel sizes must be odd to keep the image size, got {list(kernel_sizes)}.")
        per_branch = out_channels // len(kernel_sizes)
        self.branches = nn.ModuleList(nn.Conv2d(in_channels, per_branch, k, padding=k // 2) for k in kernel_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: List[torch.Tensor] = []
        for conv in self.branches:
            outputs.append(conv(x))
        return torch.cat(outputs, dim=1)


class SqueezeExcitation(nn.Module):
    """Channel squeeze-and-excitation without biases: x * sigmoid(W2 SiLU(W1 mean_hw(x))), W1: C -> C/r, W2: C/r -> C.

    Written here because ``monai.networks.blocks.ChannelSELayer`` has biases (the paper's 5.25M count has none).
    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=[2, 3])  # (B, C): global average pool, works for any memory format
        s = torch.sigmoid(self.fc2(F.silu(self.fc1(s))))[:, :, None, None]
        if x.requires_grad or s.requires_grad:
            return x * s  # autograd needs both factors
        return x.mul_(s)  # inference: no graph, scale in place (the caller passes a temporary)


class ResBlock(nn.Module):
    """Residual block with an additive time embedding and SE (docs/README.md, Method).

    Conv3x3 -> GN -> SiLU -> + Linear(SiLU(temb)) -> Conv3x3 -> GN -> SiLU -> SE -> + residual (1x1 conv if C changes).
    Written here: MONAI's diffusion ResBlocks add the time term at a different place and have no SE.

    Shapes: x (B, in_channels, H, W), temb (B, time_dim) -> (B, out_channels, H, W).
    """

    def __init__(
        self, in_channels: int, out_channels: int, time_dim: int, norm_groups: int = 8, se_reduction: int = 8
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(norm_groups, out_channels)
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, out_channels))
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(norm_groups, out_channels)
        self.se = SqueezeExcitation(out_channels, se_reduction)
        self.residual = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # in-place activations and additions overwrite temporaries that no backward formula reads (for the in-place
        # silu autograd keeps what it needs), so training gives the same gradients and inference allocates less
        h = F.silu(self.norm1(self.conv1(x)), inplace=True)
        h += self.time_proj(temb)[:, :, None, None]
        h = F.silu(self.norm2(self.conv2(h)), inplace=True)
        h = self.se(h)
        h += self.residual(x)
        return h


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions with 1x1-conv projections (docs/README.md, Method).

    q, k, v = split(Conv1x1(C -> 3 heads dim_head, no bias)); softmax(q k^T / sqrt(dim_head)) v; Conv1x1 back to C.
    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner = heads * dim_head
        self.to_qkv = nn.Conv2d(channels, 3 * inner, 1, bias=False)
        self.to_out = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        # (B, 3*inner, H, W) -> (B, 3, heads, N, dim_head): a view for NCHW and for channels_last
        qkv = self.to_qkv(x).reshape(b, 3, self.heads, self.dim_head, h * w).transpose(-1, -2)
        q, k, v = qkv.unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, dim_head), scale 1/sqrt(dim_head)
        out = out.transpose(-1, -2).reshape(b, self.heads * self.dim_head, h, w)
        return self.to_out(out)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block at the bottleneck; ONE GroupNorm(1) module is used before both sub-layers, as in
    the authors' code (docs/README.md, Method).

    x = x + Attn(GN(x)); x = x + FF(GN(x)), FF = Conv1x1(C -> ff_mult C) -> GELU -> Conv1x1(ff_mult C -> C).
    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, heads: int, dim_head: int, ff_mult: int = 2) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)
        self.attn = Attention(channels, heads, dim_head)
        self.ff = nn.Sequential(
            nn.Conv2d(channels, channels * ff_mult, 1), nn.GELU(), nn.Conv2d(channels * ff_mult, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm(x)) + x
        x = self.ff(self.norm(x)) + x
        return x


class Downsample(nn.Module):
    """Pixel-unshuffle x2 then Conv1x1 (4C -> C_out). Shapes: (B, C, H, W) -> (B, C_out, H/2, W/2).

    Written here: ``monai.networks.blocks.SubpixelDownsample`` convolves before the unshuffle, the authors after.
    """

    def __init__(self, channels: int, out_channels: Optional[int] = None) -> None:
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(2)
        self.conv = nn.Conv2d(4 * channels, out_channels or channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.unshuffle(x))


class Upsample(nn.Module):
    """x2 upsampling. Shapes: (B, C_in, H, W) -> (B, C_out, 2H, 2W). Two modes:

    - ``"pixel_shuffle"`` (the authors'): Conv1x1 (C_in -> 4 C_out) then pixel-shuffle x2. Each of the four output
      pixels of a 2 x 2 cell has its own kernel, so any difference between them prints a period-2 grid
      (``tests/test_checkerboard.py``). ``monai.networks.blocks.SubpixelUpsample(conv_block=Conv1x1,
      apply_pad_pool=False)`` computes the same values, but its reshape-based shuffle returns an NCHW tensor for a
      channels_last input and is ~2x slower there than ``torch.nn.PixelShuffle``; so it is written here.
    - ``"resize"`` (a resize-convolution, Odena et al., "Deconvolution and checkerboard artifacts", Distill 2016):
      bilinear x2 (``torch.nn.Upsample``) then Conv1x1 (C_in -> C_out): one kernel for every pixel, no grid. The
      same FLOPs (the 1x1 convolution runs on 4x the pixels with a quarter of the output channels).
      :func:`resize_state_from_pixel_shuffle` carries pixel-shuffle weights over.
    """

    MODES = ("pixel_shuffle", "resize")

    def __init__(self, in_channels: int, out_channels: int, mode: str = "pixel_shuffle") -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"upsample must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        if mode == "pixel_shuffle":
            self.conv = nn.Conv2d(in_channels, 4 * out_channels, 1)
            self.shuffle: nn.Module = nn.PixelShuffle(2)
        else:
            self.shuffle = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "pixel_shuffle":
            return self.shuffle(self.conv(x))
        return self.conv(self.shuffle(x))


def resize_state_from_pixel_shuffle(state: dict) -> dict:
    """A pixel-shuffle CFMUNet's state dict made into a ``upsample="resize"`` one: each Up's 1x1 kernel and bias
    (4 C_out, C_in) become the mean of the four sub-pixel kernels of each output channel (channel order (c, 2, 2),
    ``torch.nn.PixelShuffle``'s): the resize-convolution that is closest to the old Up on a smooth input. Every
    other tensor is copied. A start for fine-tuning, not a replacement."""
    out = {}
    for key, value in state.items():
        if key.startswith("upsamples.") and key.endswith((".conv.weight", ".conv.bias")):
            value = value.reshape(value.shape[0] // 4, 4, *value.shape[1:]).mean(dim=1)
        out[key] = value
    return out


class CFMUNet(nn.Module):
    """Velocity network v_theta([x_t, x_low], t) of the CFM low-field enhancement model (docs/README.md, Method).

    Args:
        in_channels: input channels, 2 = [x_t, x_low] (conditioning by concatenation; docs/README.md, Method).
        out_channels: output channels, 1 (the velocity of x_t).
        dim: channels after the multi-scale input block (64).
        dim_mults: channel multipliers of the encoder levels ((1, 2, 4) -> 64, 128, 256). One downsampling per
            level, so H and W must be divisible by 2 ** len(dim_mults) (8).
        time_dim: width of the time MLP (None: 4 * dim = 256, as the authors).
        heads: attention heads at the bottleneck (4: 5,253,249 parameters = the paper's 5.25M; the authors'
            repository default is 8: 5,384,321).
        dim_head: channels per attention head (32).
        kernel_sizes: kernel sizes of the parallel input convolutions ((1, 3, 7, 15)).
        norm_groups: GroupNorm groups in the ResBlocks (8).
        se_reduction: SE reduction ratio (8).
        ff_mult: bottleneck feed-forward expansion (2).
        sinusoid_dim: size of the sinusoidal time embedding (None: dim = 64, as the authors).
        upsample: the decoder's x2 upsampling, ``"pixel_shuffle"`` (the authors') or ``"resize"`` (bilinear then
            Conv1x1; no checkerboard): :class:`Upsample`.

    Forward:
        x: (B, in_channels, H, W) = [x_t, x_low] in the model range [-1, 1]; float32 (NCHW or channels_last).
        t: flow time in [0, 1], shape (B,), (1,) or () (broadcast over the batch); None means t = 0 (so MONAI's
            ``verify_net_in_out``, which calls ``net(x)``, works).
        returns: velocity (B, out_channels, H, W).
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        dim: int = 64,
        dim_mults: Sequence[int] = (1, 2, 4),
        time_dim: Optional[int] = None,
        heads: int = 4,
        dim_head: int = 32,
        kernel_sizes: Sequence[int] = (1, 3, 7, 15),
        norm_groups: int = 8,
        se_reduction: int = 8,
        ff_mult: int = 2,
        sinusoid_dim: Optional[int] = None,
        upsample: str = "pixel_shuffle",
    ) -> None:
        super().__init__()
        if len(dim_mults) == 0:
            raise ValueError("dim_mults must name at least one level.")
        time_dim = 4 * dim if time_dim is None else time_dim
        sinusoid_dim = dim if sinusoid_dim is None else sinusoid_dim
        widths = [dim * m for m in dim_mults]
        self.in_channels = in_channels
        self.size_divisor = 2 ** len(widths)

        self.time_mlp = nn.Sequential(
            SinusoidalTimeEmbedding(sinusoid_dim),
            nn.Linear(sinusoid_dim, time_dim),
            nn.GELU(),
            nn.Linear(time_dim, time_dim),
        )
        self.input_block = MultiScaleInput(in_channels, dim, kernel_sizes)

        self.encoder = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        channels = dim
        for width in widths:
            self.encoder.append(ResBlock(channels, width, time_dim, norm_groups, se_reduction))
            self.downsamples.append(Downsample(width))
            channels = width

        self.bottleneck = TransformerBlock(channels, heads, dim_head, ff_mult)

        self.upsamples = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(widths):
            self.upsamples.append(Upsample(channels, width, upsample))
            self.decoder.append(ResBlock(2 * width, width, time_dim, norm_groups, se_reduction))
            channels = width

        self.final_conv = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"CFMUNet expects x of shape (B, {self.in_channels}, H, W) = [x_t, x_low], got {list(x.shape)}."
            )
        b, h, w = x.shape[0], x.shape[2], x.shape[3]
        if h % self.size_divisor != 0 or w % self.size_divisor != 0:
            raise ValueError(
                f"CFMUNet needs H and W divisible by {self.size_divisor}, got {h}x{w}: "
                f"pad the image first (e.g. monai.transforms.DivisiblePad(k={self.size_divisor}))."
            )
        if t is None:
            t_vec = torch.zeros(b, dtype=x.dtype, device=x.device)
        else:
            t_vec = t.reshape(-1)
            if t_vec.shape[0] == 1:
                t_vec = t_vec.expand(b)
            elif t_vec.shape[0] != b:
                raise ValueError(f"t must have 1 or B={b} values, got shape {list(t.shape)}.")
        temb = self.time_mlp(t_vec)

        x = self.input_block(x)
        skips: List[torch.Tensor] = []
        for block, down in zip(self.encoder, self.downsamples, strict=False):
            x = block(x, temb)
            skips.append(x)
            x = down(x)

        x = self.bottleneck(x)

        for up, block in zip(self.upsamples, self.decoder, strict=False):
            x = torch.cat([up(x), skips.pop()], dim=1)
            x = block(x, temb)
        return self.final_conv(x)


def count_flops(network: nn.Module, h: int, w: int) -> float:
    """Floating-point operations of one forward pass for ONE slice of h x w (one ODE step), as 2 x multiply-adds.

    Counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, linear layers, matrix products) plus
    the attention products q k^T and (softmax) v, which the counter does not know for the CPU kernel
    (``aten._scaled_dot_product_flash_attention_for_cpu``: :func:`shared_transforms.engine.flops.flop_counter` adds it).
    Normalisation, activations, SE scaling and additions are not counted (they are O(C H W), < 1 %).
    h, w are rounded up to the network's size divisor (the pipeline pads the slice, e.g. 233x189 -> 240x192).

    Args:
        network: a CFMUNet (anything with ``in_channels`` and ``size_divisor`` attributes, or 2 channels / 8).
        h, w: slice size in pixels.

    Returns:
        FLOPs (float) for batch 1; divide by 1e9 for GFLOP.
    """
    divisor = int(getattr(network, "size_divisor", 8))
    in_channels = int(getattr(network, "in_channels", 2))
    h_pad = -(-h // divisor) * divisor
    w_pad = -(-w // divisor) * divisor
    param = next(network.parameters())
    x = torch.zeros(1, in_channels, h_pad, w_pad, dtype=param.dtype, device=param.device)
    t = torch.zeros(1, dtype=param.dtype, device=param.device)
    counter = flop_counter()
    with torch.no_grad(), counter:
        network(x, t)
    return float(counter.get_total_flops())
