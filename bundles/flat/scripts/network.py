"""FLATNet: an unrolled single-coil MRI reconstruction network read as a conditional probability flow.

FLAT: Qi et al., "Unrolled Networks are Conditional Probability Flows in MRI Reconstruction", arXiv 2512.03020.
There is no official code; everything below that is not a plain equation of the paper's unrolled form (as its public
ICLR 2026 reviews quote it) is OUR READING of the paper and is marked so. Unverified choices: the grid exponent alpha
= 2, sigma = 1, the U-Net widths, the time embedding (sinusoid of 1000 t with FiLM), sharing one U-Net across
cascades, and the baseline's step initialisation 1/N.

Measurement model: ``y = M F x`` (``A = M F``, ``A^H = F^H M``; ``F`` the centred orthonormal 2D FFT, ``M`` a Cartesian
column mask), complex images ``(B, 1, H, W, 2)`` with (real, imaginary) last, as MONAI's ``monai.apps.reconstruction``.

Time grid and indices (the convention of this file)
---------------------------------------------------
The flow runs from the zero-filled image ``x_1 = A^H y`` at t = 1 to the fully-sampled image ``x_0`` at t = 0 over
N forward-Euler steps on the grid

    tau_j = (1 - j / N) ** (1 + alpha),   j = 0..N:   tau_0 = 1 (zero-filled)  >  ...  >  tau_N = 0 (output),

i.e. j counts the steps in the order they are applied, and the trajectory list is ``[z_0, z_1, ..., z_N]`` with
``z_j`` at time ``tau_j``. In the usual unrolled-network numbering x_k (k = N-1, ..., 0; x_N the zero-filled image,
x_0 the output) the same images are ``x_k = z_{N-k}`` at ``t_k = tau_{N-k} = (k / N) ** (1 + alpha)``. The grid is the
same set of times either way: with alpha > 0 it is densest near t = 0 (the fully-sampled end; the last step is ``(1/N)
** (1 + alpha)``, 5.8e-4 for N = 12, alpha = 2), coarsest near t = 1.

Step j (cascade k = N - 1 - j), from ``z_j`` at ``tau_j`` to ``z_{j+1}`` at ``tau_{j+1}``:

    z_{j+1} = z_j - eta_j * A^H (A z_j - y) - |delta_j| * Phi(z_j, tau_j),
    |delta_j| = tau_j - tau_{j+1}   (sum_j |delta_j| = 1),   eta_j = |delta_j| / sigma^2.

Phi is evaluated at the time of the state it is applied to (``tau_j``), as forward Euler does; the cascade equation
is often written ``Phi(x_{k+1}, t_k)`` - if the paper means the time of the step's end instead, only
:meth:`FLATNet.step`'s time index changes (a doubt to check against the paper).

The baseline (``mode="learned_steps"``, our reading): the same cascades with free learned step sizes ``eta_j``
(initialised to 1/N, so that sum eta = 1 as on the flow grid with sigma = 1), each cascade with its own regulariser
(E2E-VarNet style), no ODE grid, no time input, and the regulariser not scaled (``z - eta A^H(Az - y) - Phi_j(z)``).
With sensitivity maps of ones, that cascade is MONAI's ``VarNetBlock`` moved to the image domain (checked in
tests/test_flat_network.py).

What is MONAI's and what is written here (MONAI 1.6.1)
-------------------------------------------------------
- The U-Net is MONAI's ``BasicUNet`` (what ``ComplexUnet`` builds), with MONAI's complex reshaping and padding
  helpers (``reshape_complex_to_channel_dim``, ``divisible_pad_t``, ...). ``ComplexUnet`` itself is not used:
  (1) it has no time input; extra constant input channels carrying t would not do, because the U-Net's instance
  norm after the first convolution removes per-channel constants (t would survive only through border effects);
  so t enters by FiLM (a per-channel scale and shift from a time embedding) on the output of every U-Net stage,
  after its norm; (2) it adds the input mean back to its output (it predicts an image), but Phi is a velocity: with
  the mean added, a zero U-Net would not give Phi = 0; (3) its normalisation divides by the standard deviation with
  no floor, giving NaN for an image with an exactly zero imaginary part. :class:`TimeConditionedComplexUnet` with
  ``time_embed_dim=0`` equals ``ComplexUnet(conv_net=its BasicUNet)`` minus the input mean (checked in the tests).
- The sinusoidal embedding is MONAI's ``get_timestep_embedding`` (DDPM), fed 1000 t so that the grid's small times
  near 0 are told apart (with t itself the fastest sinusoid would change by 6e-4 between the last two grid times).
- The FFTs are MONAI's TorchScript-friendly ``fftn_centered_t`` / ``ifftn_centered_t`` (the same transforms as
  ``shared_transforms.kspace.fourier.fft2c`` / ``ifft2c``).
- The unrolled loop is written here (3 lines per step) rather than built from ``VarNetBlock``: that block works in
  k-space, needs a sensitivity-map tensor, takes a refinement model without t and learns its step (``dc_weight``),
  while the flow's steps are fixed by the grid.

The U-Net depth is fixed by ``BasicUNet`` at 4 poolings (5 levels); its width is ``features``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.apps.reconstruction.complex_utils import complex_abs_t
from monai.apps.reconstruction.networks.nets.utils import (
    divisible_pad_t,
    inverse_divisible_pad_t,
    reshape_channel_complex_to_last_dim,
    reshape_complex_to_channel_dim,
)
from monai.networks.blocks.fft_utils_t import fftn_centered_t, ifftn_centered_t
from monai.networks.nets import BasicUNet
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from torch import nn

__all__ = [
    "MODES",
    "PACKED_CHANNELS",
    "FLATNet",
    "FLATReconstructor",
    "TimeConditionedComplexUnet",
    "ZeroFilled",
    "data_consistency_gradient",
    "flow_step_sizes",
    "flow_time_grid",
    "pack_inputs",
    "unpack_inputs",
    "zero_filled_image",
]

MODES = ("flow", "learned_steps")
DEFAULT_FEATURES = (32, 32, 64, 128, 256, 32)  # MONAI ComplexUnet's default widths (not from the paper)


# ----------------------------------------------------------------------------------------------------------------
# Time grid and the data term
# ----------------------------------------------------------------------------------------------------------------


def flow_time_grid(num_steps: int, alpha: float = 0.0) -> torch.Tensor:
    """The flow's time grid ``tau_j = (1 - j / N) ** (1 + alpha)``, j = 0..N (module docstring, our reading).

    Args:
        num_steps: N >= 1, the number of cascades.
        alpha: grid exponent > -1 (0: uniform; > 0: denser near t = 0). The paper's value is unverified; 0 by
            default (it beat 2 in the study of docs/README.md).

    Returns:
        float64 ``(N + 1,)``, from ``tau_0 = 1`` down to ``tau_N = 0``, strictly decreasing.
    """
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps}")
    if not (math.isfinite(alpha) and alpha > -1):
        raise ValueError(f"alpha must be a finite number > -1, got {alpha}")
    j = torch.arange(int(num_steps) + 1, dtype=torch.float64)
    return (1.0 - j / int(num_steps)) ** (1.0 + float(alpha))


def flow_step_sizes(times: torch.Tensor, sigma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps of a grid: ``|delta_j| = tau_j - tau_{j+1}`` and ``eta_j = |delta_j| / sigma^2``.

    Args:
        times: ``(N + 1,)`` decreasing grid from :func:`flow_time_grid`.
        sigma: the measurement-noise scale of the flow's likelihood term (> 0; 1 by default, our reading).

    Returns:
        ``(|delta|, eta)``, each ``(N,)`` with the dtype of ``times``; ``|delta|`` sums to ``tau_0 - tau_N`` = 1.
    """
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
    deltas = times[:-1] - times[1:]
    return deltas, deltas / float(sigma) ** 2


def _zeros_like_scalar(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=x.dtype, device=x.device)


def zero_filled_image(masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x_1 = A^H y = F^H M y``: ``(B, 1, H, W, 2)`` k-space and a bool/0-1 mask broadcastable to it ->
    complex image ``(B, 1, H, W, 2)``."""
    y = torch.where(mask.to(torch.bool), masked_kspace, _zeros_like_scalar(masked_kspace))
    return ifftn_centered_t(y, spatial_dims=2, is_complex=True)


def data_consistency_gradient(image: torch.Tensor, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``A^H (A x - y) = F^H M (F x - y)``, the gradient of ``||A x - y||^2 / 2`` (half the gradient of the squared
    norm itself).

    Args:
        image: complex image ``(B, 1, H, W, 2)``.
        masked_kspace: the measurement ``y`` ``(B, 1, H, W, 2)`` (entries outside the mask are ignored).
        mask: bool or 0/1 mask broadcastable to the k-space, e.g. ``(B, 1, 1, W, 1)``.

    Returns:
        complex image ``(B, 1, H, W, 2)``.
    """
    k = fftn_centered_t(image, spatial_dims=2, is_complex=True)
    residual = torch.where(mask.to(torch.bool), k - masked_kspace, _zeros_like_scalar(k))
    return ifftn_centered_t(residual, spatial_dims=2, is_complex=True)


# ----------------------------------------------------------------------------------------------------------------
# The regulariser Phi
# ----------------------------------------------------------------------------------------------------------------


class TimeConditionedComplexUnet(nn.Module):
    """Phi(x, t): MONAI's complex U-Net recipe (normalise, pad, ``BasicUNet`` on (real, imag) channels, unpad)
    with FiLM time conditioning and a velocity output (module docstring for why not ``ComplexUnet`` itself).

    ``Phi(x, t) = std * U(pad((x - mean) / std), t)``: mean and std per sample and per part (real, imaginary), the
    std floored at 1e-3 of the larger part's (an image with an exactly real value would otherwise divide by 0).
    Scaling ``x`` by c > 0 scales Phi by c; the input mean is not added back (a zero U-Net gives Phi = 0).

    FiLM: ``e = MLP(sinusoid(1000 t))``; every stage output h of the U-Net (conv_0, down_1..4, upcat_4..1) becomes
    ``h * (1 + gamma(e)) + beta(e)``, per channel, after the stage's norm and activation. ``time_embed_dim=0``
    disables it (no time input: the baseline's regulariser).

    Args:
        features: the six ``BasicUNet`` widths (five encoder levels, last decoder level).
        time_embed_dim: size of the sinusoidal embedding (even; 0: no time conditioning).
        act, norm, dropout, upsample: as ``BasicUNet`` (defaults: LeakyReLU 0.1, instance norm, as ``ComplexUnet``).
        pad_factor: spatial sizes are zero-padded to a multiple of this (16 for the 4 poolings).
        time_scale: t is multiplied by this before the sinusoid.
    """

    def __init__(
        self,
        features: Sequence[int] = DEFAULT_FEATURES,
        time_embed_dim: int = 64,
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        dropout: float = 0.0,
        upsample: str = "deconv",
        pad_factor: int = 16,
        time_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        if len(features) != 6:
            raise ValueError(f"features must be six BasicUNet widths, got {features}")
        if time_embed_dim < 0 or time_embed_dim % 2:
            raise ValueError(f"time_embed_dim must be an even number >= 0, got {time_embed_dim}")
        self.unet = BasicUNet(
            spatial_dims=2,
            in_channels=2,
            out_channels=2,
            features=features,
            act=act,
            norm=norm,
            bias=True,
            dropout=dropout,
            upsample=upsample,
        )
        self.pad_factor = int(pad_factor)
        self.time_embed_dim = int(time_embed_dim)
        self.time_scale = float(time_scale)
        if self.time_embed_dim:
            hidden = 4 * self.time_embed_dim
            self.time_mlp = nn.Sequential(
                nn.Linear(self.time_embed_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
            )
            f0, f1, f2, f3, f4, f5 = features
            stage_channels = (f0, f1, f2, f3, f4, f3, f2, f1, f5)  # conv_0, down_1..4, upcat_4..1
            self.film = nn.ModuleList([nn.Linear(hidden, 2 * c) for c in stage_channels])

    @staticmethod
    def _film(h: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        """FiLM of ``h`` (B, C, H, W) by ``film`` (B, 2 C): scale ``1 + gamma`` and shift ``beta`` per channel."""
        gamma, beta = film[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return h * (1 + gamma) + beta

    def _unet(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``BasicUNet.forward`` (MONAI 1.6.1, its own submodules) with FiLM on each stage: (B, 2, H', W')."""
        u = self.unet
        if not hasattr(self, "film"):  # no time input (a static branch for TorchScript as well)
            return u(z)
        emb = self.time_mlp(get_timestep_embedding(t * self.time_scale, self.time_embed_dim))  # (B, 4 E)
        x0 = self._film(u.conv_0(z), self.film[0](emb))
        x1 = self._film(u.down_1(x0), self.film[1](emb))
        x2 = self._film(u.down_2(x1), self.film[2](emb))
        x3 = self._film(u.down_3(x2), self.film[3](emb))
        x4 = self._film(u.down_4(x3), self.film[4](emb))
        u4 = self._film(u.upcat_4(x4, x3), self.film[5](emb))
        u3 = self._film(u.upcat_3(u4, x2), self.film[6](emb))
        u2 = self._film(u.upcat_2(u3, x1), self.film[7](emb))
        u1 = self._film(u.upcat_1(u2, x0), self.film[8](emb))
        return u.final_conv(u1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: complex image ``(B, 1, H, W, 2)``.
            t: flow times ``(B,)`` in [0, 1] (ignored when ``time_embed_dim == 0``).

        Returns:
            the velocity term ``(B, 1, H, W, 2)``.
        """
        z = reshape_complex_to_channel_dim(x)  # (B, 2, H, W)
        mean = z.mean(dim=(2, 3), keepdim=True)  # (B, 2, 1, 1)
        std = (z.var(dim=(2, 3), unbiased=False, keepdim=True) + 1e-30).sqrt()  # + tiny: no NaN gradient at 0
        std = torch.maximum(std, 1e-3 * std.amax(dim=1, keepdim=True))
        z, pad_sizes = divisible_pad_t((z - mean) / std, k=self.pad_factor)  # (B, 2, H', W')
        z = inverse_divisible_pad_t(self._unet(z, t), pad_sizes)  # (B, 2, H, W)
        return reshape_channel_complex_to_last_dim(z * std)  # (B, 1, H, W, 2)


# ----------------------------------------------------------------------------------------------------------------
# The unrolled network
# ----------------------------------------------------------------------------------------------------------------


class FLATNet(nn.Module):
    """N cascades of ``z <- z - eta_j A^H(A z - y) - s_j Phi_j(z, tau_j)`` from the zero-filled image (module
    docstring for the grid and the indices).

    ``mode="flow"`` (FLAT): ``eta_j = |delta_j| / sigma^2`` and ``s_j = |delta_j|`` fixed by the grid (buffers),
    Phi time-conditioned. ``mode="learned_steps"`` (the paper's unrolled baseline, our reading): ``eta_j`` learned
    (a parameter, initialised to ``learned_step_init``, default 1/N), ``s_j = 1``, Phi without time input.

    Args:
        num_cascades: N (12 by default, our reading of the paper).
        alpha: grid exponent (0, uniform, by default: unverified in the paper, measured in docs/README.md).
        sigma: noise scale of the data term (1.0).
        mode: ``"flow"`` or ``"learned_steps"``.
        share_weights: one U-Net for all cascades; None (default) shares it in ``"flow"`` mode (Phi is conditioned
            on t, so one network can serve every step; our reading) and not in ``"learned_steps"`` mode
            (E2E-VarNet: each cascade its own regulariser).
        features: ``BasicUNet`` widths of Phi (MONAI ``ComplexUnet``'s default; the paper's are not known).
        time_embed_dim: sinusoidal embedding size of Phi in ``"flow"`` mode.
        learned_step_init: initial eta_j in ``"learned_steps"`` mode (None: 1/N).
        norm, act, pad_factor: passed to :class:`TimeConditionedComplexUnet`.

    Buffers / parameters: ``times`` ``(N + 1,)`` (tau_0 = 1 .. tau_N = 0), ``deltas`` ``(N,)``, ``step_sizes``
    ``(N,)`` (eta: buffer in flow mode, parameter in learned mode), ``regulariser_scales`` ``(N,)``;
    ``regularisers`` holds 1 (shared) or N U-Nets, index j = step order (cascade k = N - 1 - j in the unrolled
    numbering).
    """

    def __init__(
        self,
        num_cascades: int = 12,
        alpha: float = 0.0,
        sigma: float = 1.0,
        mode: str = "flow",
        share_weights: bool | None = None,
        features: Sequence[int] = DEFAULT_FEATURES,
        time_embed_dim: int = 64,
        learned_step_init: float | None = None,
        norm: str | tuple = ("instance", {"affine": True}),
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        pad_factor: int = 16,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        n = int(num_cascades)
        times = flow_time_grid(n, alpha)
        deltas, etas = flow_step_sizes(times, sigma)
        self.num_cascades, self.alpha, self.sigma, self.mode = n, float(alpha), float(sigma), mode
        self.share_weights = (mode == "flow") if share_weights is None else bool(share_weights)
        self.register_buffer("times", times.float())
        self.register_buffer("deltas", deltas.float())
        if mode == "flow":
            self.register_buffer("step_sizes", etas.float())
            self.register_buffer("regulariser_scales", deltas.float())
        else:
            init = 1.0 / n if learned_step_init is None else float(learned_step_init)
            self.step_sizes = nn.Parameter(torch.full((n,), init))
            self.register_buffer("regulariser_scales", torch.ones(n))
        embed = int(time_embed_dim) if mode == "flow" else 0
        self.regularisers = nn.ModuleList(
            [
                TimeConditionedComplexUnet(features, embed, act=act, norm=norm, pad_factor=pad_factor)
                for _ in range(1 if self.share_weights else n)
            ]
        )

    def _update(
        self, image: torch.Tensor, j: int, masked_kspace: torch.Tensor, mask: torch.Tensor, velocity: torch.Tensor
    ) -> torch.Tensor:
        """``z_{j+1} = z_j - eta_j A^H(A z_j - y) - |delta_j| Phi`` given ``velocity = Phi(z_j, t_j)``."""
        grad = data_consistency_gradient(image, masked_kspace, mask)
        return image - self.step_sizes[j] * grad - self.regulariser_scales[j] * velocity

    def _time(self, j: int, image: torch.Tensor) -> torch.Tensor:
        return self.times[j].expand(image.shape[0])  # (B,): the time of the state step j starts from

    def step(self, image: torch.Tensor, j: int, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Step j (0 = first, from the zero-filled image): ``z_j`` at ``tau_j`` -> ``z_{j+1}`` at ``tau_{j+1}``.

        Args:
            image: ``z_j`` ``(B, 1, H, W, 2)``.
            j: step index 0..N-1 (cascade k = N - 1 - j in the unrolled numbering).
            masked_kspace: ``y`` ``(B, 1, H, W, 2)``.
            mask: bool mask broadcastable to ``y``.

        Returns:
            ``z_{j+1}`` ``(B, 1, H, W, 2)``.
        """
        regulariser = self.regularisers[0 if self.share_weights else j]
        return self._update(image, j, masked_kspace, mask.to(torch.bool), regulariser(image, self._time(j, image)))

    def trajectory(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """
        Args:
            masked_kspace: single-coil measurement ``y = M F x`` ``(B, 1, H, W, 2)``.
            mask: bool or 0/1 sampling mask broadcastable to it, e.g. ``(1, 1, 1, W, 1)`` or ``(B, 1, 1, W, 1)``.

        Returns:
            the N + 1 images ``[x_1 (zero-filled), x_{N-1}, ..., x_0]`` (unrolled numbering; ``z_0 .. z_N`` here),
            each ``(B, 1, H, W, 2)``, at the flow times ``self.times`` (1 down to 0; nominal labels in
            ``"learned_steps"`` mode, which has no grid). Written with the module lists iterated, not indexed by a
            variable, so that TorchScript compiles it (``ckpt_export``).
        """
        if masked_kspace.ndim != 5 or masked_kspace.shape[1] != 1 or masked_kspace.shape[-1] != 2:
            raise ValueError(f"masked_kspace must be single-coil (B, 1, H, W, 2), got {list(masked_kspace.shape)}")
        mask = mask.to(torch.bool)
        y = torch.where(mask, masked_kspace, _zeros_like_scalar(masked_kspace))  # M y: off-mask entries ignored
        image = zero_filled_image(y, mask)  # x_1 = A^H y at t = 1
        images = [image]
        if self.share_weights:
            for shared in self.regularisers:  # the one U-Net, applied at every step
                for j in range(self.num_cascades):
                    image = self._update(image, j, y, mask, shared(image, self._time(j, image)))
                    images.append(image)
        else:
            for j, regulariser in enumerate(self.regularisers):  # one U-Net per step
                image = self._update(image, j, y, mask, regulariser(image, self._time(j, image)))
                images.append(image)
        return images

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``x_0`` ``(B, 1, H, W, 2)`` (the last image of :meth:`trajectory`, same arguments)."""
        return self.trajectory(masked_kspace, mask)[-1]


# ----------------------------------------------------------------------------------------------------------------
# One-tensor interface for the bundle (MONAI engines, inferers, the Model Zoo's checks and TorchScript)
# ----------------------------------------------------------------------------------------------------------------

#: channels of the packed network input: masked k-space (real, imaginary) and the sampling mask (0/1)
PACKED_CHANNELS = ("kspace_real", "kspace_imag", "sampling_mask")


def pack_inputs(masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W, 2)`` masked k-space and a mask broadcastable to ``(B, 1, H, W, 1)`` -> ``(B, 3, H, W)``
    (:data:`PACKED_CHANNELS`): one image-like tensor that MONAI's engines, slice inferers and the Model Zoo's
    ``verify_net_in_out`` can pass around (the mask broadcast over the rows costs one channel)."""
    k = masked_kspace[:, 0].movedim(-1, 1)  # (B, 2, H, W)
    m = mask.to(k.dtype).expand(masked_kspace.shape[0], 1, *masked_kspace.shape[2:4], 1)[..., 0]  # (B, 1, H, W)
    return torch.cat([k * m, m], dim=1)


def unpack_inputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_inputs`: ``(B, 3, H, W)`` -> masked k-space ``(B, 1, H, W, 2)``, bool mask
    ``(B, 1, H, W, 1)`` (a mask channel above 0.5 counts as sampled)."""
    if x.ndim != 4 or x.shape[1] != 3:  # len(PACKED_CHANNELS), spelt out for TorchScript
        raise ValueError(
            f"expected packed inputs (B, 3, H, W) = (kspace_real, kspace_imag, sampling_mask), got {list(x.shape)}"
        )
    return x[:, 0:2].movedim(1, -1)[:, None], (x[:, 2:3] > 0.5)[..., None]


class FLATReconstructor(nn.Module):
    """:class:`FLATNet` behind one tensor: ``forward(x)`` on packed inputs ``(B, 3, H, W)`` (:func:`pack_inputs`)
    returns the magnitude of the reconstruction ``(B, 1, H, W)``; :meth:`trajectory` returns the complex images of
    every cascade for the training loss and the per-cascade plots. Keyword arguments go to :class:`FLATNet`."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.net = FLATNet(**kwargs)

    def trajectory(self, x: torch.Tensor) -> torch.Tensor:
        """Packed inputs ``(B, 3, H, W)`` -> the complex trajectory ``(B, N + 1, H, W, 2)``: the zero-filled image,
        then the output of each cascade (its flow times are ``self.net.times``)."""
        masked_kspace, mask = unpack_inputs(x)
        return torch.cat(self.net.trajectory(masked_kspace, mask), dim=1)

    def forward(self, x: torch.Tensor, return_trajectory: bool = False) -> torch.Tensor:
        """Packed inputs ``(B, 3, H, W)`` -> magnitude ``(B, 1, H, W)``; with ``return_trajectory`` the complex
        trajectory of :meth:`trajectory` instead (how a ``DistributedDataParallel`` wrapper reaches it)."""
        if return_trajectory:
            return self.trajectory(x)
        masked_kspace, mask = unpack_inputs(x)
        return complex_abs_t(self.net(masked_kspace, mask))  # (B, 1, H, W)


class ZeroFilled(nn.Module):
    """The zero-filled reconstruction ``|A^H y|`` behind the same one-tensor interface as :class:`FLATReconstructor`
    (packed inputs ``(B, 3, H, W)`` -> ``(B, 1, H, W)``), so the bundle's evaluation scores the baseline every
    under-sampled reconstruction starts from with the same pipeline (no weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        masked_kspace, mask = unpack_inputs(x)
        return complex_abs_t(zero_filled_image(masked_kspace, mask))
