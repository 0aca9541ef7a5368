"""DiffusionIQT's 3D U-Net (Kim et al., "A 3D Conditional Diffusion Model for Image Quality Transfer - An
Application to Low-Field MRI", arXiv 2311.06631): the denoiser ``x_0 = D([x_t, x_low], logSNR(t))``.

Written from the authors' code (github.com/edshkim98/DiffusionIQT, commit fad36d5: ``SRUnet256`` of
``imagen_pytorch3D.py`` as ``train.py`` builds it, itself adapted from lucidrains/imagen-pytorch), at their defaults:
dim 64, multipliers (1, 2, 4), two residual blocks a level, GroupNorm(8), Mish, FiLM time modulation,
squeeze-and-excitation, 3D pixel-unshuffle / pixel-shuffle down and up sampling, efficient linear attention in the
encoder (8 heads x 64, patch sizes 8/4/2), and the cross-batch mechanism (:mod:`scripts.cross_batch`). Parameters:
14,450,441 with the encoder attention, 13,606,665 without (``tests/test_diffusion_iqt_network.py``).

Shapes: the input is ``(B, in_channels, f*S, f*S, f*S)`` big patches (the paper: 96³, ``f = cross_batch_factor =
3``, ``S = 32``) and ``time`` is ``(B,)`` (the diffusion's logSNR); inside, each big patch is cut into its ``f³``
sub-patches of ``S³``, which form the mini-batch (:func:`scripts.cross_batch.split`), and the output is merged back
to ``(B, out_channels, f*S, f*S, f*S)``. ``S`` must be divisible by 4 (two downsamplings) and, with attention,
``f * S / 4`` by the last patch size. Taking whole patches keeps the network a plain image-to-image module for
the bundle's exports (traced TorchScript; ONNX with a dynamic batch at a fixed patch size: the cross-batch
border's ``unfold`` takes its sizes as constants) and for MONAI's ``verify_net_in_out``. No einops: the reshapes
are ``reshape`` / ``permute``.

What is MONAI's: the ICNR initialisation of the upsampling convolution (``icnr_init``; the authors repeat the kernel x4, a
leftover of the 2D code, where 3D needs x8). MONAI's ``DiffusionModelUNet`` has none of the cross-batch layers,
patchified linear attention or pixel-shuffle sampling, and its ``ChannelSELayer`` has biases where the authors'
squeeze-and-excitation has none, so the blocks are written here, each named after the authors' class. The 3D pixel
shuffle and unshuffle are :func:`pixel_shuffle_3d` / :func:`pixel_unshuffle_3d`, a reshape and a permute each, in the
channel order of MONAI's ``monai.networks.utils.pixelshuffle`` / ``pixelunshuffle`` (the weights are the same; the
test compares them): MONAI's compute the shapes with list arithmetic that ``torch.jit.script`` cannot compile.

Two details of the authors' code kept on purpose: the encoder attention's output is added to its input twice (the
transformer block is residual inside, and the U-Net adds the input again), and ``deep_feature = False`` (their
configuration) leaves the 256-channel bottleneck block built but unused; both are in the parameter counts above.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from monai.networks.utils import icnr_init
from torch import nn

from .cross_batch import boundary_pad, merge, split

__all__ = ["DiffusionIQTUNet", "count_flops"]


class ChanLayerNorm(nn.Module):
    """Layer norm over the channel axis of ``(B, C, X, Y, Z)``, a gain and no bias (the authors' ``LayerNorm``)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * (var + self.eps).rsqrt() * self.g


class LearnedSinusoidalEmbedding(nn.Module):
    """``(B,)`` -> ``(B, dim + 1)``: ``[t, sin(2 pi w t), cos(2 pi w t)]`` with ``dim / 2`` learned frequencies."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"the sinusoidal embedding size must be even, got {dim}")
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t[:, None]
        freqs = t * self.weights[None] * 2 * math.pi
        return torch.cat((t, freqs.sin(), freqs.cos()), dim=-1)


class SubPatchConv3d(nn.Module):
    """A 3³ convolution over sub-patches: padded with the neighbours' voxels (``boundary``, the cross-batch padding)
    or with zeros (``padding = 1``)."""

    def __init__(self, in_channels: int, out_channels: int, boundary: bool, factor: int, bias: bool = True):
        super().__init__()
        self.boundary, self.factor = bool(boundary), int(factor)
        self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=0 if self.boundary else 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(boundary_pad(x, self.factor) if self.boundary else x)


class Block(nn.Module):
    """GroupNorm -> FiLM (``x (1 + scale) + shift``) -> Mish -> 3³ convolution."""

    def __init__(self, dim: int, dim_out: int, groups: int, boundary: bool, factor: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, dim)
        self.act = nn.Mish()
        self.project = SubPatchConv3d(dim, dim_out, boundary, factor)

    def forward(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.norm(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.project(self.act(x))


class SqueezeExcitation3D(nn.Module):
    """Channel gates from the global mean: ``x * sigmoid(W2 relu(W1 mean(x)))``, no biases (the authors' ``SE3D``)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3, 4)))[:, :, None, None, None]


class ResnetBlock(nn.Module):
    """Two :class:`Block` s (FiLM from the time embedding on the second), squeeze-and-excitation, 1³ residual."""

    def __init__(self, dim: int, dim_out: int, time_dim: int, groups: int, use_se: bool, boundary: bool, factor: int):
        super().__init__()
        self.time_mlp = nn.Sequential(nn.Mish(), nn.Linear(time_dim, dim_out * 2))
        self.block1 = Block(dim, dim_out, groups, boundary, factor)
        self.block2 = Block(dim_out, dim_out, groups, boundary, factor)
        self.se = SqueezeExcitation3D(dim_out) if use_se else nn.Identity()
        self.res_conv = nn.Conv3d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.time_mlp(time_emb)[:, :, None, None, None].chunk(2, dim=1)
        h = self.block2(self.block1(x), scale_shift=(scale, shift))
        return self.se(h) + self.res_conv(x)


def pixel_shuffle_3d(x: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """``(B, C r³, D, H, W) -> (B, C, r D, r H, r W)``, ``r = scale``, in MONAI's ``pixelshuffle`` channel order."""
    b, c, d, h, w = x.shape
    out = c // (scale * scale * scale)
    x = x.reshape(b, out, scale, scale, scale, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, out, d * scale, h * scale, w * scale)


def pixel_unshuffle_3d(x: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """``(B, C, D, H, W) -> (B, C r³, D / r, H / r, W / r)``, the inverse of :func:`pixel_shuffle_3d`."""
    b, c, d, h, w = x.shape
    x = x.reshape(b, c, d // scale, scale, h // scale, scale, w // scale, scale).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * scale * scale * scale, d // scale, h // scale, w // scale)


class Downsample(nn.Module):
    """3D pixel-unshuffle (``C -> 8 C`` at half the size) and a 1³ convolution to ``dim_out``."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv3d(dim * 8, dim_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(pixel_unshuffle_3d(x, 2))


class PixelShuffleUpsample(nn.Module):
    """1³ convolution to ``8 dim_out``, Mish, 3D pixel-shuffle (twice the size); ICNR-initialised."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv3d(dim, dim_out * 8, 1)
        icnr_init(self.conv, 2, init=nn.init.kaiming_uniform_)
        nn.init.zeros_(self.conv.bias)
        self.act = nn.Mish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_3d(self.act(self.conv(x)), 2)


class DepthwiseSeparableConv3d(nn.Sequential):
    def __init__(self, dim: int, dim_out: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__(
            nn.Conv3d(dim, dim, kernel_size, stride=stride, padding=padding, groups=dim), nn.Conv3d(dim, dim_out, 1)
        )


class BiaslessConv3d(nn.Conv3d):
    """``nn.Conv3d(..., bias=False)`` that hands the convolution an explicit zero bias (a non-persistent buffer, so
    the state dict is that of ``nn.Conv3d(..., bias=False)`` and the output the same).

    Written for the ONNX export: onnxscript 0.7's translation of a bias-free ``aten.conv3d`` gives the zero bias it
    makes the shape ``(C_out, 2)``, which onnxruntime refuses ("bias must be a 1D tensor of size output_channels").
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, bias=False, **kwargs)
        self.register_buffer("zero_bias", torch.zeros(self.out_channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight, self.zero_bias.to(self.weight.dtype))


class LinearAttention(nn.Module):
    """Efficient (linear) attention (Shen et al. 2021) on patch tokens of a ``(N, C, X, Y, Z)`` volume.

    Patchify (channel norm, depthwise-separable convolution with kernel = stride = ``patch_size``), q/k/v by 1³ and
    depthwise 3³ convolutions, ``softmax(q over features) (softmax(k over tokens)^T v)``, Mish, 1³ out projection,
    then back to the full size (trilinear, depthwise-separable 3³ convolution, channel norm).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, patch_size: int, dropout: float = 0.05):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale, self.patch_size = heads, dim_head**-0.5, int(patch_size)
        self.patch_embed = nn.Sequential(
            ChanLayerNorm(dim), DepthwiseSeparableConv3d(dim, dim, kernel_size=patch_size, stride=patch_size)
        )
        self.norm = ChanLayerNorm(dim)
        self.to_q, self.to_k, self.to_v = (
            nn.Sequential(
                nn.Dropout(dropout),
                BiaslessConv3d(dim, inner, 1),
                BiaslessConv3d(inner, inner, 3, padding=1, groups=inner),
            )
            for _ in range(3)
        )
        self.act = nn.Mish()
        self.to_out = nn.Sequential(BiaslessConv3d(inner, dim, 1), ChanLayerNorm(dim))
        self.reconstruct = nn.Sequential(
            nn.Upsample(scale_factor=patch_size, mode="trilinear", align_corners=True),
            DepthwiseSeparableConv3d(dim, dim, kernel_size=3, padding=1),
            ChanLayerNorm(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.norm(self.patch_embed(x))
        b, sx, sy, sz = fmap.shape[0], fmap.shape[2], fmap.shape[3], fmap.shape[4]
        # (b, h*c, x, y, z) -> (b*h, x*y*z, c) per head (reshape / permute, so that TorchScript compiles it)
        q = self._heads(self.to_q(fmap))
        k = self._heads(self.to_k(fmap))
        v = self._heads(self.to_v(fmap))
        q = q.softmax(dim=-1) * self.scale
        k = k.softmax(dim=-2)
        out = torch.einsum("bnd,bde->bne", q, torch.einsum("bnd,bne->bde", k, v))  # (b*h, x*y*z, c)
        out = out.reshape(b, self.heads, sx * sy * sz, -1).permute(0, 1, 3, 2).reshape(b, -1, sx, sy, sz)
        return self.reconstruct(self.to_out(self.act(out)))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, H*C, X, Y, Z)`` -> ``(B*H, X*Y*Z, C)``."""
        b, hc, sx, sy, sz = t.shape[0], t.shape[1], t.shape[2], t.shape[3], t.shape[4]
        return (
            t.reshape(b, self.heads, hc // self.heads, sx * sy * sz)
            .permute(0, 1, 3, 2)
            .reshape(b * self.heads, sx * sy * sz, hc // self.heads)
        )


class ChanFeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: float = 2.0):
        hidden = int(dim * mult)
        super().__init__(
            ChanLayerNorm(dim),
            BiaslessConv3d(dim, hidden, 1),
            nn.GELU(),
            ChanLayerNorm(hidden),
            BiaslessConv3d(hidden, dim, 1),
        )


class LinearAttentionTransformer(nn.Module):
    """``depth`` x (``x + attention(x)``, ``x + feed_forward(x)``) on a merged volume."""

    def __init__(
        self, dim: int, depth: int, heads: int, dim_head: int, ff_mult: float, patch_size: int, dropout: float
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([LinearAttention(dim, heads, dim_head, patch_size, dropout), ChanFeedForward(dim, ff_mult)])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:  # (attention, feed-forward); indexed, not unpacked, so TorchScript compiles it
            x = layer[0](x) + x
            x = layer[1](x) + x
        return x


class DiffusionIQTUNet(nn.Module):
    """The denoiser; see the module docstring. Every argument is a config value of the bundle.

    Args:
        in_channels: the noisy image and the low-field condition (2). out_channels: the predicted clean image (1).
        dim, init_dim, dim_mults: channel widths (level ``i``: ``dim * dim_mults[i]``; first convolution
            ``init_dim``).
        num_res_blocks: residual blocks after each encoder level's first one (per level).
        groups: GroupNorm groups. use_se: squeeze-and-excitation in the residual blocks.
        attention: per encoder level, linear attention on the merged volume after the level's first block.
        attention_depth, attention_heads, attention_dim_head, attention_ff_mult, attention_dropout: its sizes.
        attention_patch_size: the token patch size at the first level, halved at each level but the last (8/4/2).
        boundary: cross-batch padding of every 3³ convolution (else zero padding of each sub-patch).
        cross_batch_factor: sub-patches per axis of one big patch (3: 27 sub-patches); 1 = no cross-batch.
        time_embedding_dim: size of the learned sinusoidal embedding of the time input.
        deep_feature: run the bottleneck block (and attention there, ``middle_attention``); the authors: off.
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        dim: int = 64,
        init_dim: int = 64,
        dim_mults: Sequence[int] = (1, 2, 4),
        num_res_blocks: Sequence[int] = (2, 2, 2),
        groups: int = 8,
        use_se: bool = True,
        attention: Sequence[bool] = (True, True, True),
        attention_depth: int = 1,
        attention_heads: int = 8,
        attention_dim_head: int = 64,
        attention_ff_mult: float = 2.0,
        attention_patch_size: int = 8,
        attention_dropout: float = 0.05,
        boundary: bool = True,
        cross_batch_factor: int = 3,
        time_embedding_dim: int = 16,
        deep_feature: bool = False,
        middle_attention: bool = False,
    ):
        super().__init__()
        levels = len(dim_mults)
        if len(num_res_blocks) != levels or len(attention) != levels:
            raise ValueError(
                f"num_res_blocks {num_res_blocks} and attention {attention} need one entry per level "
                f"of dim_mults {dim_mults}"
            )
        self.factor, self.deep_feature = int(cross_batch_factor), bool(deep_feature)
        time_dim = dim * 4
        conv = {"groups": groups, "boundary": boundary, "factor": self.factor}
        self.init_conv = SubPatchConv3d(in_channels, init_dim, boundary, self.factor)
        self.to_time_hiddens = nn.Sequential(
            LearnedSinusoidalEmbedding(time_embedding_dim), nn.Linear(time_embedding_dim + 1, time_dim), nn.Mish()
        )
        self.to_time_cond = nn.Linear(time_dim, time_dim)
        self.norm_cond = nn.LayerNorm(dim)  # built, never used, by the authors' code (in their parameter count)
        dims = [init_dim, *(dim * m for m in dim_mults)]
        in_out = list(itertools.pairwise(dims))
        attn = {
            "depth": attention_depth,
            "heads": attention_heads,
            "dim_head": attention_dim_head,
            "ff_mult": attention_ff_mult,
            "dropout": attention_dropout,
        }
        self.downs = nn.ModuleList()
        skip_dims, patch = [], int(attention_patch_size)
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == levels - 1
            if not last:
                skip_dims.append(d_in)
            self.downs.append(
                nn.ModuleDict(
                    {
                        "first": ResnetBlock(d_in, d_in, time_dim, use_se=use_se, **conv),
                        "attention": (
                            LinearAttentionTransformer(d_in, patch_size=patch, **attn)
                            if attention[i]
                            else nn.Identity()
                        ),
                        "blocks": nn.ModuleList(
                            ResnetBlock(d_in, d_in, time_dim, use_se=use_se, **conv) for _ in range(num_res_blocks[i])
                        ),
                        "down": nn.Conv3d(d_in, d_out, 1) if last else Downsample(d_in, d_out),
                    }
                )
            )
            if not last:
                patch //= 2
        mid = dims[-1]
        self.mid_attention = (
            LinearAttentionTransformer(mid, patch_size=patch, **attn) if deep_feature and middle_attention else None
        )
        self.mid_block = ResnetBlock(mid, mid, time_dim, use_se=False, **conv)
        self.ups = nn.ModuleList()
        for i, ((d_out, d_in), n_blocks) in enumerate(zip(reversed(in_out), reversed(num_res_blocks), strict=True)):
            d_in = mid if i == 0 else d_in
            last = i == levels - 1
            skip = 0 if last else skip_dims.pop()
            self.ups.append(
                nn.ModuleDict(
                    {
                        "up": nn.Identity() if last else PixelShuffleUpsample(d_in, d_out),
                        "first": ResnetBlock((d_in if last else d_out) + skip, d_out, time_dim, use_se=use_se, **conv),
                        "blocks": nn.ModuleList(
                            ResnetBlock(d_out, d_out, time_dim, use_se=use_se, **conv) for _ in range(n_blocks)
                        ),
                    }
                )
            )
        self.final_res_block = ResnetBlock(d_out, dim, time_dim, use_se=use_se, **conv)
        self.final_conv = nn.Conv3d(dim, out_channels, 1)

    def forward(self, x: torch.Tensor, time: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, in_channels, f*S, f*S, f*S)``, ``time`` ``(B,)`` (None: zeros) -> ``(B, out_channels, f*S, f*S,
        f*S)``; one time per big patch, shared by its sub-patches."""
        if time is None:
            time = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        x = split(x, self.factor)
        time = time.repeat_interleave(self.factor * self.factor * self.factor)
        t = self.to_time_cond(self.to_time_hiddens(time))
        x = self.init_conv(x)
        hiddens = []
        for i, level in enumerate(self.downs):
            x = level["first"](x, t)
            if not isinstance(level["attention"], nn.Identity):
                # attention on the merged volume (keys and values span the sub-patches), added to the input
                x = split(level["attention"](merge(x, self.factor)), self.factor) + x
            for block in level["blocks"]:
                x = block(x, t)
            if i < len(self.downs) - 1:
                hiddens.append(x)
            x = level["down"](x)
        if self.deep_feature:
            if self.mid_attention is not None:
                x = split(self.mid_attention(merge(x, self.factor)), self.factor)
            x = self.mid_block(x, t)
        for level in self.ups:
            x = level["up"](x)
            if hiddens:  # every level but the last takes the skip of its encoder level
                x = torch.cat((x, hiddens.pop()), dim=1)
            x = level["first"](x, t)
            for block in level["blocks"]:
                x = block(x, t)
        return merge(self.final_conv(self.final_res_block(x, t)), self.factor)


def count_flops(network: DiffusionIQTUNet, size: int | Sequence[int]) -> float:
    """Floating-point operations (2 x multiply-adds) of one forward pass on one big patch of ``size``³ voxels (or
    ``(X, Y, Z)``): one sampler step of one window, or of the whole volume in ``mode: whole``.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, linear layers, matrix products) on a copy
    of the network on the ``meta`` device, so nothing is computed; normalisation, activations and additions are not
    counted (O(C X Y Z)).
    """
    import copy

    from shared_transforms.engine.flops import flop_counter

    sizes = (int(size),) * 3 if isinstance(size, int) else tuple(int(s) for s in size)
    meta = copy.deepcopy(network).to("meta").eval()
    x = torch.zeros(1, meta.init_conv.conv.in_channels, *sizes, device="meta")
    with flop_counter() as counter, torch.no_grad():
        meta(x, torch.zeros(1, device="meta"))
    return float(counter.get_total_flops())
