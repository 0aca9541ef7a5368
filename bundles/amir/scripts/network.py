"""AMIR, the all-in-one medical image restoration network with task-adaptive routing, in PyTorch.

Paper: Yang et al., "All-In-One Medical Image Restoration via Task-Adaptive Routing", MICCAI 2024, arXiv 2405.19769.
Official code: https://github.com/Yaziwel/All-In-One-Medical-Image-Restoration-via-Task-Adaptive-Routing
(``model/Model_AMIR.py``, commit 80b1aa2), the authority for every detail here; this is our own re-implementation of
it, with the same computation, parameters and initialisation (parameter count of the defaults: 23,540,498).

Layout (2D; C = ``dim``; every SRM and CRM also takes the 256-d instruction that the RIN computes from x)::

    enc1 = Enc1(SRM(Embed(x)))                       C channels at H x W
    enc2 = Enc2(SRM(Down(enc1)))                     2C at H/2 x W/2
    enc3 = Enc3(SRM(Down(enc2)))                     4C at H/4 x W/4
    lat  = Latent(CRM(Down(enc3)))                   8C at H/8 x W/8
    dec3 = Dec3(CRM(Conv1x1(cat(Up(lat), enc3))))    4C at H/4 x W/4
    dec2 = Dec2(CRM(Conv1x1(cat(Up(dec3), enc2))))   2C at H/2 x W/2
    dec1 = Dec1(CRM(cat(Up(dec2), enc1)))            2C at H x W (no 1x1 reduction at level 1)
    out  = Conv3x3(Refinement(dec1)) + x             C_out at H x W

MONAI reuse (``monai.networks.blocks`` / ``monai.networks.nets.restormer``, MONAI 1.6):

- ``FeedForward`` (GDFN), ``OverlapPatchEmbed``, ``DownSample`` (pixel-unshuffle mode) are used as they are.
- ``UpSample`` (pixel-shuffle mode, ``apply_pad_pool=False``) is used, but its conv is re-initialised: MONAI applies
  ICNR initialisation, the official code PyTorch's default.
- ``CABlock`` (MDTA) is used as it is (its parameters and computation equal the official ``Attention``'s; it needs
  ``einops``, a dependency of this project for that reason).
- ``MDTATransformerBlock`` / ``Restormer`` are not used: they normalise with InstanceNorm (each channel over space)
  where the official code uses a LayerNorm over channels (each pixel), and ``Restormer`` has no routing hooks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import CABlock, FeedForward
from monai.networks.blocks.downsample import DownSample
from monai.networks.blocks.upsample import UpSample
from monai.networks.nets.restormer import OverlapPatchEmbed
from torch import nn

__all__ = [
    "AMIR",
    "MDTA",
    "OFFICIAL_LOAD_LOSS_WEIGHT",
    "ChannelLayerNorm",
    "ChannelRouting",
    "Downsample",
    "ExpertMLP",
    "NoisyTopKGate",
    "RoutingInstructionNetwork",
    "SpatialRouting",
    "TransformerBlock",
    "Upsample",
    "cv_squared",
]

#: weight of the load-balancing loss in the authors' training loss: L1(output, target) + 1e-3 * load_loss
#: (``main_train_AMIR.py`` of the official repository).
OFFICIAL_LOAD_LOSS_WEIGHT = 1e-3

# the official mixture of experts replaces an exact zero before its log by float64's machine epsilon
_LOG_EPS = float(torch.finfo(torch.float64).eps)


def cv_squared(x: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation var(x) / (mean(x)^2 + 1e-10) of a 1-d tensor, as a float scalar; 0 for a
    single element. ``var`` is the unbiased one (torch's default), as in the official code. (N,) -> ()."""
    if x.numel() == 1:
        return x.new_zeros((), dtype=torch.float32)
    x = x.float()
    return x.var() / (x.mean() ** 2 + 1e-10)


# ------------------------------------------------------------------------------------------- Restormer building blocks


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each pixel (the official ``LayerNorm``), (B, C, H, W) -> (B, C, H, W).

    ``with_bias=True`` ('WithBias', the AMIR default): (x - mean) / sqrt(var + 1e-5) * weight + bias;
    ``with_bias=False`` ('BiasFree'): x / sqrt(var + 1e-5) * weight (no centring, no bias). ``var`` is the biased
    variance over the channels. MONAI's ``MDTATransformerBlock`` uses InstanceNorm instead (each channel normalised
    over the spatial positions), a different computation with the same number of parameters.
    """

    def __init__(self, dim: int, with_bias: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if with_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            var = x.var(dim=1, keepdim=True, unbiased=False)
            return x / torch.sqrt(var + self.eps) * self.weight[:, None, None]
        # 'WithBias' is torch's layer_norm over the last axis: the channels moved there and back (one fused kernel;
        # the reduction over a strided channel axis took a quarter of the forward time on the CPU)
        out = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return out.permute(0, 3, 1, 2)


class MDTA(CABlock):
    """Multi-Dconv-head transposed attention (attention across channels), (B, C, H, W) -> (B, C, H, W): MONAI's
    ``CABlock`` in 2D without flash attention, which computes what the official ``Attention`` computes.

    qkv = dwconv3x3(conv1x1(x)); per head, q and k are L2-normalised along the pixels, attn = softmax(q k^T * t)
    with a learned temperature t per head; out = conv1x1(attn v).
    """

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__(spatial_dims=2, dim=dim, num_heads=num_heads, bias=bias, flash_attention=False)


class TransformerBlock(nn.Module):
    """Restormer block x + MDTA(LN(x)), then x + GDFN(LN(x)), (B, C, H, W) -> (B, C, H, W).

    GDFN is MONAI's ``FeedForward`` (1x1 -> depthwise 3x3 -> GELU gate -> 1x1, hidden int(C * expansion)), equal to
    the official ``FeedForward``. Written here rather than MONAI's ``MDTATransformerBlock`` because of the norm
    (see :class:`ChannelLayerNorm`).
    """

    def __init__(
        self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, layer_norm_with_bias: bool = True
    ) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim, with_bias=layer_norm_with_bias)
        self.attn = MDTA(dim, num_heads, bias)
        self.norm2 = ChannelLayerNorm(dim, with_bias=layer_norm_with_bias)
        self.ffn = FeedForward(spatial_dims=2, dim=dim, ffn_expansion_factor=ffn_expansion_factor, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Downsample(DownSample):
    """Conv3x3 (C -> C/2, no bias) then PixelUnshuffle(2), (B, C, H, W) -> (B, 2C, H/2, W/2).

    MONAI's ``DownSample`` in pixel-unshuffle mode with its default pre-conv: the same layers, order and
    initialisation as the official ``Downsample``."""

    def __init__(self, dim: int) -> None:
        super().__init__(
            spatial_dims=2, in_channels=dim, out_channels=dim // 2, scale_factor=2, mode="pixelunshuffle", bias=False
        )


class Upsample(UpSample):
    """Conv3x3 (C -> 2C, no bias) then PixelShuffle(2), (B, C, H, W) -> (B, C/2, 2H, 2W).

    MONAI's ``UpSample`` in pixel-shuffle mode without pad-pool computes the official ``Upsample``; MONAI
    ICNR-initialises the conv, so it is reset here to PyTorch's default initialisation, as in the official code."""

    def __init__(self, dim: int) -> None:
        super().__init__(
            spatial_dims=2,
            in_channels=dim,
            out_channels=dim // 2,
            scale_factor=2,
            mode="pixelshuffle",
            bias=False,
            apply_pad_pool=False,
        )
        self.pixelshuffle.conv_block.reset_parameters()


def _stage(n: int, dim: int, heads: int, ffn_expansion_factor: float, bias: bool, ln_bias: bool) -> nn.Sequential:
    return nn.Sequential(*[TransformerBlock(dim, heads, ffn_expansion_factor, bias, ln_bias) for _ in range(n)])


# ---------------------------------------------------------------------------------------------------------- routing
# MONAI has no equivalent of any of the routing parts below (RIN, noisy top-k gating, SRM, CRM).


class RoutingInstructionNetwork(nn.Module):
    """RIN: the image -> a task instruction from a learned dictionary, (B, C_in, H, W) -> ((B, D), (B, A)).

    CondNet: Conv(C_in -> 64, k3, s3, no padding) -> LReLU(0.1) -> Conv(64 -> 64, k3, s3) -> LReLU -> Conv1x1(64) ->
    LReLU -> Conv1x1(64) -> LReLU -> Conv1x1(64 -> 32); global average pool; Linear(32 -> A); softmax gives the atom
    weights alpha (B, A); instruction = GELU(alpha @ dictionary), dictionary (A, D) ~ N(0, 1). Needs H, W >= 9.
    MONAI has no equivalent.
    """

    def __init__(
        self, in_channels: int, num_atoms: int = 32, atom_dim: int = 256, hidden_dim: int = 64, cond_dim: int = 32
    ) -> None:
        super().__init__()
        self.cond_net = nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, kernel_size=3, stride=3),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, stride=3),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(hidden_dim, cond_dim, kernel_size=1),
        )
        self.to_atoms = nn.Linear(cond_dim, num_atoms)
        self.dictionary = nn.Parameter(torch.randn(num_atoms, atom_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.cond_net(x).mean(dim=(2, 3))
        alpha = torch.softmax(self.to_atoms(feat), dim=-1)
        return F.gelu(alpha @ self.dictionary), alpha


class ExpertMLP(nn.Module):
    """One expert of the SRM: Linear(C -> hidden) -> GELU -> Linear(hidden -> C_out), (N, C) -> (N, C_out).
    (The official ``Mlp`` also has dropout with p=0, i.e. none.) MONAI has no equivalent used here."""

    def __init__(self, dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class NoisyTopKGate(nn.Module):
    """Noisy top-k gating (Shazeer et al. 2017, arXiv 1701.06538) as in the official ``MoE``, (N, F) -> gates.

    Returns ``(gates, top_index, top_gates, load)``: dense gates (N, E) with k non-zeros per row, the chosen experts
    (N, k) and their gates (N, k) (softmax of the k largest logits), and the load (E,). Logits = x @ w_gate; in
    training mode with ``noisy=True`` Gaussian noise (torch's RNG) of std softplus(x @ w_noise) + noise_epsilon is
    added, and the load is the differentiable probability of each expert being in the top k, summed over the rows;
    otherwise (eval mode, or no noise, or k = E) the load is the count of rows sent to each expert. w_gate ~ N(0, 1),
    w_noise = 0 at initialisation. MONAI has no equivalent.
    """

    def __init__(
        self, in_features: int, num_experts: int, top_k: int, noisy: bool = True, noise_epsilon: float = 1e-2
    ) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.noisy = noisy
        self.noise_epsilon = noise_epsilon
        self.w_gate = nn.Parameter(torch.randn(in_features, num_experts))
        self.w_noise = nn.Parameter(torch.zeros(in_features, num_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        k = self.top_k
        clean = x @ self.w_gate
        noise_std = F.softplus(x @ self.w_noise) + self.noise_epsilon if (self.noisy and self.training) else None
        logits = clean if noise_std is None else clean + torch.randn_like(clean) * noise_std
        # the (k+1)-th largest logit is the threshold the load estimate needs
        top_logits, top_index = logits.topk(min(k + 1, self.num_experts), dim=1)
        top_gates = torch.softmax(top_logits[:, :k], dim=1)
        top_index = top_index[:, :k]
        gates = torch.zeros_like(logits).scatter(1, top_index, top_gates)
        if noise_std is not None and k < self.num_experts:
            load = self._prob_in_top_k(clean, logits, noise_std, top_logits).sum(0)
        else:
            load = (gates > 0).sum(0).to(gates.dtype)
        return gates, top_index, top_gates, load

    def _prob_in_top_k(
        self, clean: torch.Tensor, noisy: torch.Tensor, noise_std: torch.Tensor, top_logits: torch.Tensor
    ) -> torch.Tensor:
        """P(expert in the top k under fresh noise), (N, E): a value now in the top k must stay above the (k+1)-th
        largest noisy logit, one outside must beat the k-th largest."""
        k = self.top_k
        threshold_if_in = top_logits[:, k : k + 1]
        threshold_if_out = top_logits[:, k - 1 : k]
        prob_if_in = torch.special.ndtr((clean - threshold_if_in) / noise_std)
        prob_if_out = torch.special.ndtr((clean - threshold_if_out) / noise_std)
        return torch.where(noisy > threshold_if_in, prob_if_in, prob_if_out)


class SpatialRouting(nn.Module):
    """SRM: per-pixel mixture of experts steered by the instruction, (B, C, H, W), (B, D) -> (B, C, H, W), extras.

    prompt = Linear(D -> C)(instruction) is broadcast to every pixel; the gate sees concat(pixel feature, prompt)
    (2C) and picks k of E experts (:class:`ExpertMLP`, hidden int(C * expansion)) per pixel; only the chosen experts
    run on a pixel. The experts are combined as in the official ``SparseDispatcher.combine``, which treats expert
    outputs as log-values: y = log(sum_k g_k * exp(expert_k(x))) (not sum_k g_k * expert_k(x)); computed here in the
    overflow-free form m + log(sum_k g_k exp(e_k - m)), m = max_k e_k, which equals the official value wherever its
    float32 exp neither overflows nor underflows. Output y + x.

    ``forward`` returns ``(out, load_loss, expert_load, expert_importance)``: load_loss = cv^2(importance) +
    cv^2(load), importance = the gates summed over the pixels (computed in training mode, 0 in eval mode, where the
    official model discards it); expert_load (E,) = the fraction of pixels sent to each expert (sums to k) and
    expert_importance (E,) = the mean gate of each expert (sums to 1), both detached, for plots. MONAI has no
    equivalent.
    """

    def __init__(
        self,
        dim: int,
        instruction_dim: int = 256,
        ffn_expansion_factor: float = 2.66,
        num_experts: int = 4,
        top_k: int = 2,
        noisy_gating: bool = True,
        noise_epsilon: float = 1e-2,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.fc = nn.Linear(instruction_dim, dim)
        self.gate = NoisyTopKGate(2 * dim, num_experts, top_k, noisy=noisy_gating, noise_epsilon=noise_epsilon)
        hidden = int(dim * ffn_expansion_factor)
        self.experts = nn.ModuleList([ExpertMLP(dim, hidden, dim) for _ in range(num_experts)])

    def forward(
        self, x: torch.Tensor, instruction: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(b * h * w, c)  # pixel order (b h w), as the official rearrange
        prompt = self.fc(instruction)[:, None, :].expand(b, h * w, c).reshape(b * h * w, c)
        gates, top_index, top_gates, load = self.gate(torch.cat([tokens, prompt], dim=1))
        if self.training:
            load_loss = cv_squared(gates.sum(0)) + cv_squared(load)
        else:
            load_loss = x.new_zeros((), dtype=torch.float32)
        y = self._mix_experts(tokens, top_index, top_gates)
        y = y.reshape(b, h, w, c).permute(0, 3, 1, 2)
        expert_load = (gates > 0).float().mean(0).detach()
        expert_importance = gates.float().mean(0).detach()
        return y + x, load_loss, expert_load, expert_importance

    def _mix_experts(self, tokens: torch.Tensor, top_index: torch.Tensor, top_gates: torch.Tensor) -> torch.Tensor:
        """(N, C), (N, k), (N, k) -> (N, C): log(sum_k g_k exp(expert_k(token)))."""
        n, k = top_index.shape
        flat = top_index.reshape(-1)
        outs = tokens.new_zeros(n * k, self.dim)
        for e, expert in enumerate(self.experts):
            slots = (flat == e).nonzero().squeeze(1)
            rows = torch.div(slots, k, rounding_mode="floor")
            outs = outs.index_copy(0, slots, expert(tokens.index_select(0, rows)).to(outs.dtype))
        outs = outs.reshape(n, k, self.dim)
        peak = outs.amax(dim=1, keepdim=True).detach()  # the value does not depend on it: detaching is exact
        mixed = (top_gates.to(outs.dtype).unsqueeze(-1) * torch.exp(outs - peak)).sum(dim=1)
        return peak.squeeze(1) + torch.log(mixed.clamp_min(_LOG_EPS))


class ChannelRouting(nn.Module):
    """CRM: instruction-gated channel modulation, (B, C, H, W), (B, D) -> (B, C, H, W).

    g = sigmoid(Linear(D -> C)(instruction)); out = x + g * (gamma * x + beta), gamma and beta (1, C, 1, 1)
    zero-initialised (so the CRM starts as the identity). MONAI has no equivalent.
    """

    def __init__(self, dim: int, instruction_dim: int = 256) -> None:
        super().__init__()
        self.fc = nn.Linear(instruction_dim, dim)
        self.beta = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.fc(instruction))[:, :, None, None]
        return x + (x * self.gamma + self.beta) * g


# ------------------------------------------------------------------------------------------------------------ AMIR


class AMIR(nn.Module):
    """AMIR (arXiv 2405.19769): Restormer U-Net with task-adaptive routing, (B, C_in, H, W) -> (B, C_out, H, W).

    Four levels of C, 2C, 4C, 8C channels (C = ``dim``); an SRM before each of the three encoder stages, a CRM before
    the latent stage and each decoder stage; decoder level 1 keeps 2C channels (no 1x1 reduction), then
    ``num_refinement_blocks`` blocks at 2C and Conv3x3 (2C -> C_out) plus the input (global residual, so
    ``out_channels`` must equal ``in_channels``). Defaults are the official ``AMIR()``'s. H and W must be multiples
    of 8 (three pixel-unshuffles) and at least 9 (the RIN's two stride-3 convolutions), so at least 16.

    Load-balancing loss: ``forward(x)`` returns only the image and stores the sum over the three SRMs of
    cv^2(importance) + cv^2(load) of that forward in ``self.last_load_loss`` (a float scalar tensor, attached to the
    graph in training mode; 0 in eval mode, where the official model does not return it). ``forward_with_loss(x)``
    returns ``(output, load_loss)`` (what the official model returns in training mode). The authors train with
    L1 + ``OFFICIAL_LOAD_LOSS_WEIGHT`` (1e-3) * load_loss. Gate noise is drawn in training mode only, from torch's
    global RNG (``torch.manual_seed`` makes it reproducible).

    Routing (detached, for plots) of the last forward: ``self.last_routing = {"atoms": (B, num_atoms) softmax
    weights of the RIN's dictionary atoms, "expert_load": [3 x (num_experts,)] fraction of pixels sent to each expert
    per SRM (sums to top_k), "expert_importance": [3 x (num_experts,)] mean gate per expert per SRM (sums to 1)}``.

    Args:
        in_channels / out_channels: image channels (equal; 1 for MRI magnitude).
        dim: channels at level 1 (even).
        num_blocks: transformer blocks at levels 1-4 (the decoder repeats levels 1-3).
        num_refinement_blocks: blocks after decoder level 1.
        heads: attention heads at levels 1-4 (each level's channels divisible by its heads; decoder level 1 and the
            refinement have 2C channels and heads[0] heads).
        ffn_expansion_factor: GDFN and expert hidden size factor.
        bias: bias of the convs in the transformer blocks, the 1x1 reductions and the output conv (the embedding and
            the down/up-sampling convs never have one, as in the official code).
        layer_norm_type: "WithBias" or "BiasFree".
        num_experts / top_k / noisy_gating / noise_epsilon: the SRMs' mixture of experts.
        instruction_dim / num_atoms: the RIN dictionary (num_atoms x instruction_dim).
        rin_hidden_dim / rin_cond_dim: widths of the RIN's CondNet (64, 32 in the official code, fixed there).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        dim: int = 42,
        num_blocks: Sequence[int] = (5, 7, 7, 9),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: str = "WithBias",
        num_experts: int = 4,
        top_k: int = 2,
        noisy_gating: bool = True,
        noise_epsilon: float = 1e-2,
        instruction_dim: int = 256,
        num_atoms: int = 32,
        rin_hidden_dim: int = 64,
        rin_cond_dim: int = 32,
    ) -> None:
        super().__init__()
        num_blocks, heads = tuple(num_blocks), tuple(heads)
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError(f"num_blocks and heads need 4 entries (levels 1-4), got {num_blocks} and {heads}")
        if in_channels != out_channels:
            msg = f"out_channels == in_channels needed (global residual), got {out_channels} != {in_channels}"
            raise ValueError(msg)
        if dim % 2:
            raise ValueError(f"dim must be even (the down-sampling halves it before a pixel-unshuffle), got {dim}")
        if layer_norm_type not in ("WithBias", "BiasFree"):
            raise ValueError(f"layer_norm_type must be 'WithBias' or 'BiasFree', got {layer_norm_type!r}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"need 1 <= top_k <= num_experts, got top_k={top_k}, num_experts={num_experts}")
        c1, c2, c3, c4 = dim, 2 * dim, 4 * dim, 8 * dim
        for channels, h, where in [
            (c1, heads[0], "level 1"),
            (c2, heads[1], "level 2"),
            (c3, heads[2], "level 3"),
            (c4, heads[3], "level 4"),
            (c2, heads[0], "decoder level 1 / refinement"),
        ]:
            if channels % h:
                raise ValueError(f"{where}: {channels} channels are not divisible by {h} heads")
        self.in_channels = in_channels
        ln_bias = layer_norm_type == "WithBias"
        ffn = ffn_expansion_factor

        def srm(c: int) -> SpatialRouting:
            return SpatialRouting(c, instruction_dim, ffn, num_experts, top_k, noisy_gating, noise_epsilon)

        # registration order = the official one, so that parameter lists can be matched one to one
        self.patch_embed = OverlapPatchEmbed(spatial_dims=2, in_channels=in_channels, embed_dim=dim, bias=False)
        self.rin = RoutingInstructionNetwork(in_channels, num_atoms, instruction_dim, rin_hidden_dim, rin_cond_dim)
        self.srm_enc1, self.srm_enc2, self.srm_enc3 = srm(c1), srm(c2), srm(c3)
        self.crm_latent = ChannelRouting(c4, instruction_dim)
        self.crm_dec3 = ChannelRouting(c3, instruction_dim)
        self.crm_dec2 = ChannelRouting(c2, instruction_dim)
        self.crm_dec1 = ChannelRouting(c2, instruction_dim)
        self.encoder1 = _stage(num_blocks[0], c1, heads[0], ffn, bias, ln_bias)
        self.down1_2 = Downsample(c1)
        self.encoder2 = _stage(num_blocks[1], c2, heads[1], ffn, bias, ln_bias)
        self.down2_3 = Downsample(c2)
        self.encoder3 = _stage(num_blocks[2], c3, heads[2], ffn, bias, ln_bias)
        self.down3_4 = Downsample(c3)
        self.latent = _stage(num_blocks[3], c4, heads[3], ffn, bias, ln_bias)
        self.up4_3 = Upsample(c4)
        self.reduce3 = nn.Conv2d(c4, c3, kernel_size=1, bias=bias)
        self.decoder3 = _stage(num_blocks[2], c3, heads[2], ffn, bias, ln_bias)
        self.up3_2 = Upsample(c3)
        self.reduce2 = nn.Conv2d(c3, c2, kernel_size=1, bias=bias)
        self.decoder2 = _stage(num_blocks[1], c2, heads[1], ffn, bias, ln_bias)
        self.up2_1 = Upsample(c2)
        self.decoder1 = _stage(num_blocks[0], c2, heads[0], ffn, bias, ln_bias)
        self.refinement = _stage(num_refinement_blocks, c2, heads[0], ffn, bias, ln_bias)
        self.output = nn.Conv2d(c2, out_channels, kernel_size=3, padding=1, bias=bias)

        self.last_load_loss: torch.Tensor = torch.zeros(())
        self.last_routing: dict = {}

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"AMIR expects (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        h, w = int(x.shape[2]), int(x.shape[3])
        if h % 8 or w % 8:
            raise ValueError(f"AMIR needs H and W divisible by 8 (three 2x pixel-unshuffles), got H={h}, W={w}")
        if h < 9 or w < 9:
            raise ValueError(f"AMIR needs H and W >= 9 (the RIN's two stride-3 convolutions), got H={h}, W={w}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        instruction, atoms = self.rin(x)

        enc1, loss1, load1, imp1 = self.srm_enc1(self.patch_embed(x), instruction)
        enc1 = self.encoder1(enc1)
        enc2, loss2, load2, imp2 = self.srm_enc2(self.down1_2(enc1), instruction)
        enc2 = self.encoder2(enc2)
        enc3, loss3, load3, imp3 = self.srm_enc3(self.down2_3(enc2), instruction)
        enc3 = self.encoder3(enc3)
        latent = self.latent(self.crm_latent(self.down3_4(enc3), instruction))

        dec3 = self.reduce3(torch.cat([self.up4_3(latent), enc3], dim=1))
        dec3 = self.decoder3(self.crm_dec3(dec3, instruction))
        dec2 = self.reduce2(torch.cat([self.up3_2(dec3), enc2], dim=1))
        dec2 = self.decoder2(self.crm_dec2(dec2, instruction))
        dec1 = torch.cat([self.up2_1(dec2), enc1], dim=1)
        dec1 = self.decoder1(self.crm_dec1(dec1, instruction))
        out = self.output(self.refinement(dec1)) + x

        self.last_load_loss = loss1 + loss2 + loss3
        self.last_routing = {
            "atoms": atoms.detach(),
            "expert_load": [load1, load2, load3],
            "expert_importance": [imp1, imp2, imp3],
        }
        return out

    def forward_with_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C_in, H, W) -> ((B, C_out, H, W), load-balancing loss scalar): the official training-mode return."""
        out = self(x)
        return out, self.last_load_loss
