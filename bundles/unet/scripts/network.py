"""MONAI's ``UNet`` with its decoder's transposed convolutions replaced by resize-convolutions.

A transposed convolution with a 3 x 3 kernel and stride 2 (MONAI ``UNet``'s up layer) lets the kernel overlap
unevenly: even output pixels get one tap of it, odd ones two or four, so every trained network of that kind prints
a fixed pattern of period 2, 4 and 8 pixels (its three up layers) on smooth regions - the grid seen on real 64 mT
scans in the coronal view (issue 30). Upsampling first (bilinear, no parameters) and then convolving with stride 1
gives every output pixel the same kernel (Odena, Dumoulin & Olah, "Deconvolution and Checkerboard Artifacts",
Distill 2016). Everything else is MONAI's ``UNet`` (its encoder, residual units, skip connections, norms).

Written here: MONAI's ``UNet`` has no upsampling option; ``BasicUNet`` has one but another layout, so the trained
weights could not be carried over. :func:`from_transposed_state` carries them over: the parameters come in the same
order (the upsampling has none), and each transposed kernel becomes the equivalent forward one (in/out channels
swapped, flipped) divided by 4, the number of kernel taps a transposed stride-2 layer gives an output pixel on
average (9 / 4 against 9) - a start for fine-tuning, not an equal network.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from monai.networks.nets import UNet
from torch import nn


class ResizeConvUNet(UNet):
    """``monai.networks.nets.UNet`` (same arguments) whose up layers are bilinear upsampling by the stride, then a
    stride-1 convolution of ``up_kernel_size`` (with the layer's norm, dropout and activation), then the residual
    unit as in MONAI. Input and output ``(N, C, H, W)`` (or ``(N, C, X, Y, Z)``), spatial sizes divisible by the
    product of the strides."""

    def _get_up_layer(self, in_channels: int, out_channels: int, strides: int, is_top: bool) -> nn.Module:
        conv = Convolution(
            self.dimensions,
            in_channels,
            out_channels,
            strides=1,
            kernel_size=self.up_kernel_size,
            act=self.act,
            norm=self.norm,
            dropout=self.dropout,
            bias=self.bias,
            conv_only=is_top and self.num_res_units == 0,
            is_transposed=False,
            adn_ordering=self.adn_ordering,
        )
        up = UpSample(
            self.dimensions,
            scale_factor=strides,
            mode="nontrainable",
            interp_mode="bilinear" if self.dimensions == 2 else "trilinear",
            align_corners=False,
        )
        layers = [up, conv]
        if self.num_res_units > 0:
            layers.append(
                ResidualUnit(
                    self.dimensions,
                    out_channels,
                    out_channels,
                    strides=1,
                    kernel_size=self.kernel_size,
                    subunits=1,
                    act=self.act,
                    norm=self.norm,
                    dropout=self.dropout,
                    bias=self.bias,
                    last_conv_only=is_top,
                    adn_ordering=self.adn_ordering,
                )
            )
        return nn.Sequential(*layers)


def from_transposed_state(
    state: Mapping[str, torch.Tensor], transposed: nn.Module, target: nn.Module
) -> dict[str, torch.Tensor]:
    """The state dict of ``target`` (a :class:`ResizeConvUNet`, possibly inside a wrapper) made from ``state``, the
    weights of ``transposed`` (the same network built with MONAI's ``UNet``): parameters and buffers are matched in
    order; every transposed-convolution kernel ``(in, out, k, k)`` becomes ``(out, in, k, k)``, flipped, divided by
    the stride's square (see the module docstring)."""
    flips = {}
    for name, module in transposed.named_modules():
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            stride = module.stride[0]
            flips[f"{name}.weight"] = stride ** len(module.stride)
    old_keys, target_state = list(transposed.state_dict()), target.state_dict()
    if len(old_keys) != len(target_state):
        raise ValueError(f"{len(old_keys)} entries in the source network, {len(target_state)} in the target")
    out = {}
    for old, (new, like) in zip(old_keys, target_state.items(), strict=True):
        value = state[old]
        if old in flips:
            dims = tuple(range(2, value.ndim))
            value = value.transpose(0, 1).flip(dims) / flips[old]
        if value.shape != like.shape:
            raise ValueError(f"{old} {tuple(value.shape)} does not fit {new} {tuple(like.shape)}")
        out[new] = value.clone()
    return out
