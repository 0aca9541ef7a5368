"""Synthetic low-field MRI from high-field volumes: the two simulators every bundle's training data can be made with.

1. :class:`SimulateLowFieldBlurGamma` (seed 002's recipe, its section 2.3.2):
   ``I_low = clip(N((G_sigma(resample(I_high)))^gamma), 0, 1)`` on an intensity-normalised input in [0, 1].
2. :class:`SimulateLowFieldTissueContrast` (Figini et al. 2020, arXiv 2003.07216 -> Lin et al., Medical Image
   Analysis 87:102807, 2023, "Stochastic IQT", and its public code): slice-thickness blur and thick-slice
   resampling, tissue-specific contrast set by a (SNR_WM, SNR_GM) pair drawn from a bivariate Gaussian, and additive
   Gaussian noise.

Both take channel-first volumes ``(C, X, Y, Z)`` (MONAI MetaTensors carrying an ``affine``, as from ``LoadImage`` +
``EnsureChannelFirst``; a plain numpy array / torch tensor is taken as 1 mm isotropic with an identity affine) and
return MetaTensors whose affine is that of their (new) grid. Spacings, factors and shapes are given in the order of
the array axes (X, Y, Z), not in world (RAS) order: reorient first (``Orientationd``) if the slice axis must be a
given world axis. Every new grid keeps the input's axis directions and is centred on the input's field of view, so a
low-field output and its high-field input overlay in world space.

Randomness: everything random goes through MONAI's ``Randomizable.R`` (seed it with ``set_random_state``); the
simulation parameters are drawn once per call (= per subject) in ``randomize`` and the drawn values are written into
the output's meta dict (keys ``lowfield_*``), so tools can record them in a datalist.

The machinery both simulators (and :mod:`.degradation`) share, MetaTensor handling, resampling onto a grid and the
parameter ranges, is :mod:`.common`; their dictionary versions are in :mod:`.dictionary`.

Library use: resampling is MONAI ``SpatialResample`` (spline ``mode=3`` for images, ``mode=0`` nearest for masks)
onto grids from :func:`shared_transforms.transforms.geometry.affine_for_grid` (same directions, same world centre);
Gaussian smoothing is ``scipy.ndimage.gaussian_filter`` with ``mode="nearest"`` (the border handling of nibabel's
``smooth_image`` used by the reference code; MONAI's ``GaussianSmooth`` zero-pads and would darken volume faces);
the intensity-based tissue fallback is scikit-image ``threshold_multiotsu``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Randomizable, Transform
from monai.utils import TransformBackends
from scipy import ndimage

from ..errors import InputError, source_name
from ..transforms.geometry import SEED002_LOW_FIELD, affine_for_grid, voxel_spacing_mm
from .common import affine_of, as_volume, check_range, fwhm_mm_to_sigma_vox, resample_to_grid, simulated_output

__all__ = [
    "SNR_MEAN_T1W",
    "SNR_COV_T1W",
    "SNR_MEAN_FLAIR_MBB",
    "SNR_COV_FLAIR_MBB",
    "TISSUES",
    "draw_snr_pair",
    "SimulateLowFieldBlurGamma",
    "SimulateLowFieldTissueContrast",
]

#: (SNR_WM, SNR_GM) mean and covariance of the Stochastic-IQT T1w/HCP setting (Lin et al. 2023: the commented block
#: of the official config.py; fitted to SNRs measured on real 0.36 T scans).
SNR_MEAN_T1W = (64.50, 54.14)
SNR_COV_T1W = ((78.47, 71.50), (71.50, 73.91))
#: The active Stochastic-IQT config (FLAIR, LEMON/MBB data) of Lin et al. 2023's config.py.
SNR_MEAN_FLAIR_MBB = (35.031, 42.329)
SNR_COV_FLAIR_MBB = ((34.048, 39.850), (39.850, 50.293))

TISSUES = ("gm", "wm", "csf")


# ------------------------------------------------------------------------------------------------- seed 002's recipe
class SimulateLowFieldBlurGamma(Randomizable, Transform):
    """Seed 002's synthetic low field (its section 2.3.2).

    ``I_low = clip(N((G_sigma(resample(I_high)))^gamma), 0, 1)``, steps in the report's order:

    1. cubic resample (MONAI ``SpatialResample``, spline order 3) to ``spacing_mm`` (default the 64 mT Hyperfine-type
       grid 1.6 x 1.6 x 5.0 mm) on a grid centred on the input's field of view, of shape ``spatial_shape`` (seed 002:
       (112, 138, 40)) or, if None, ``round(extent / spacing)`` (the input's field of view). Outside the input's field
       of view the output is 0. No anti-aliasing filter precedes the resampling (the report names none); the
       resampled values are clamped to [0, 1] (cubic overshoot) so the power law stays defined;
    2. Gaussian blur ``G_sigma``, sigma in voxels of the new grid, the same in every axis, drawn from
       ``blur_sigma_vox``;
    3. power-law darkening ``(.)^gamma``, gamma drawn from ``gamma`` (gamma > 1 darkens);
    4. background-weighted Gaussian noise ``N``: ``J + noise_std * (1 + background_weight * (1 - J)) * n``,
       ``n ~ N(0, 1)``, ``noise_std`` drawn from ``noise_std``: more noise where the image is dark. The report gives
       no formula for the weighting: this one is our reading of "background-weighted";
    5. clip to [0, 1].

    The report states no values for sigma, gamma or the noise level: the default ranges
    (sigma 0.5-1.5 voxel, gamma 1.1-1.6, noise std 0.01-0.05, background weight 1) are ours. One draw of
    (sigma, gamma, noise std) per call; recorded in the output's meta as ``lowfield_blur_sigma_vox``,
    ``lowfield_gamma``, ``lowfield_noise_std``, ``lowfield_background_weight``.

    Args:
        spacing_mm: output voxel size per array axis (mm).
        spatial_shape: output shape, or None for ``round(extent / spacing)``.
        blur_sigma_vox: Gaussian sigma (output voxels), a number or a (min, max) range.
        gamma: power-law exponent, a number or a (min, max) range.
        noise_std: noise std in bright tissue (intensity units of the [0, 1] image), a number or a (min, max) range.
        background_weight: extra noise factor at intensity 0 (std there = ``noise_std * (1 + background_weight)``).

    Input ``(C, X, Y, Z)`` in [0, 1] (a small tolerance is allowed; anything else raises :class:`InputError`);
    output ``(C, *spatial_shape)`` float32 MetaTensor on the low-field grid.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        spacing_mm: Sequence[float] = SEED002_LOW_FIELD["spacing_mm"],
        spatial_shape: Sequence[int] | None = None,
        blur_sigma_vox: float | Sequence[float] = (0.5, 1.5),
        gamma: float | Sequence[float] = (1.1, 1.6),
        noise_std: float | Sequence[float] = (0.01, 0.05),
        background_weight: float = 1.0,
    ):
        self.spacing_mm = np.asarray(spacing_mm, float)
        if self.spacing_mm.shape != (3,) or np.any(self.spacing_mm <= 0):
            raise ValueError(f"spacing_mm must be three positive numbers, got {spacing_mm}")
        self.spatial_shape = None if spatial_shape is None else tuple(int(s) for s in spatial_shape)
        if self.spatial_shape is not None and (len(self.spatial_shape) != 3 or min(self.spatial_shape) < 1):
            raise ValueError(f"spatial_shape must be three positive integers or None, got {spatial_shape}")
        self.blur_sigma_vox = check_range(blur_sigma_vox, "blur_sigma_vox")
        self.gamma = check_range(gamma, "gamma", low=1e-6)
        self.noise_std = check_range(noise_std, "noise_std")
        if background_weight < 0:
            raise ValueError(f"background_weight must be >= 0, got {background_weight}")
        self.background_weight = float(background_weight)
        self.params: dict[str, float] = {}

    def randomize(self, data: object = None) -> None:
        """Draw (sigma, gamma, noise std) for one subject, uniformly in their ranges, from ``self.R``."""
        self.params = {
            "lowfield_blur_sigma_vox": float(self.R.uniform(*self.blur_sigma_vox)),
            "lowfield_gamma": float(self.R.uniform(*self.gamma)),
            "lowfield_noise_std": float(self.R.uniform(*self.noise_std)),
            "lowfield_background_weight": self.background_weight,
        }

    def output_grid(self, affine: np.ndarray, in_shape: Sequence[int]) -> tuple[np.ndarray, tuple[int, ...]]:
        """The low-field grid ``(affine, shape)`` for an input grid."""
        zoom = self.spacing_mm / voxel_spacing_mm(affine)
        shape = self.spatial_shape or tuple(max(1, int(round(n / z))) for n, z in zip(in_shape, zoom, strict=False))
        return affine_for_grid(affine, in_shape, shape, self.spacing_mm), tuple(shape)

    def __call__(self, img: np.ndarray | torch.Tensor, randomize: bool = True) -> MetaTensor:
        img = as_volume(img)
        lo, hi = float(img.min()), float(img.max())
        if lo < -0.05 or hi > 1.05:
            raise InputError(
                source_name(img, "image"),
                f"seed 002's low-field simulator expects an intensity-normalised image in [0, 1], got range "
                f"[{lo:.3g}, {hi:.3g}]; normalise it first (e.g. 1-99 percentile scaling to [0, 1])",
            )
        if randomize or not self.params:
            self.randomize()
        p = self.params
        dst_affine, shape = self.output_grid(affine_of(img), img.shape[1:])
        # (C, *shape): resample, then clamp the cubic overshoot so the power law is defined
        low = resample_to_grid(img, dst_affine, shape, mode=3, padding_mode="constant").numpy().clip(0.0, 1.0)
        sigma = p["lowfield_blur_sigma_vox"]
        if sigma > 0:
            low = ndimage.gaussian_filter(low, sigma=(0.0, sigma, sigma, sigma), mode="nearest")
        low = np.power(low, p["lowfield_gamma"], dtype=np.float32)
        if p["lowfield_noise_std"] > 0:
            local_std = p["lowfield_noise_std"] * (1.0 + self.background_weight * (1.0 - low))
            low = low + local_std * self.R.standard_normal(low.shape).astype(np.float32)
        return simulated_output(np.clip(low, 0.0, 1.0), img, dst_affine, p)


# ---------------------------------------------------------------------------- Lin et al. / Figini et al. simulator
def draw_snr_pair(
    rng: np.random.RandomState | np.random.Generator,
    snr_mean: Sequence[float] = SNR_MEAN_T1W,
    snr_cov: Sequence[Sequence[float]] = SNR_COV_T1W,
    size: int | None = None,
    min_snr: float = 1.0,
) -> np.ndarray:
    """Draw (SNR_WM, SNR_GM) from the bivariate Gaussian of Lin et al. 2023 (its config.py).

    Args:
        rng: the random state (a transform's ``self.R``).
        snr_mean: mean (SNR_WM, SNR_GM); default the T1w/HCP values (64.50, 54.14).
        snr_cov: 2x2 covariance; default ((78.47, 71.50), (71.50, 73.91)).
        size: None for one pair ``(2,)``, else ``(size, 2)``.
        min_snr: draws are clipped from below at this value (a negative SNR has no meaning; with the published
            parameters it is > 6 standard deviations away and never happens).
    """
    draws = rng.multivariate_normal(np.asarray(snr_mean, float), np.asarray(snr_cov, float), size=size)
    return np.maximum(draws, min_snr)


class SimulateLowFieldTissueContrast(Randomizable, Transform):
    """Stochastic low-field simulator of Lin et al. 2023 / Figini et al. 2020 (their ``MRI_036T_sim_contrast_custom``).

    Given a (skull-stripped) high-field image ``I`` and tissue probability maps GM, WM, CSF on the same grid
    (SPM12 c1/c2/c3 in the reference; FAST/SynthSeg posteriors or :func:`tissue_maps_from_intensity` as substitutes),
    following the reference ``MRI_036T_sim_contrast_custom``:

    1. **Resolution.** Gaussian smoothing of ``I`` and of the three maps with ``FWHM = voxel size x thickness
       factor`` (mm) on the degraded axes only (those with ``slice_thickness_factor != 1``), then cubic resampling
       (MONAI ``SpatialResample``, spline order 3) onto the grid with ``spacing = input spacing x (thickness + gap)``
       and ``shape = floor(extent / spacing)``. Defaults (1, 1, 6) + (0, 0, 2): x8 in z (HCP 0.7 mm -> 4.2 mm FWHM,
       5.6 mm slice spacing). Non-integer factors are allowed (e.g. 1.6 in-plane). Unlike the reference (whose grid
       starts at input voxel 0), the grid is centred on the input's field of view; the affine is right either way.
    2. **Contrast and SNR** (partial-volume weighted, ``mask_threshold`` = 0.9 as in the reference), GM-fixed mode
       (``fixed_tissue="gm"``, both published configs): ``sigma = mean(I[GM>0.9]) / SNR_GM``,
       ``newWM = SNR_WM * sigma``, ``I' = (GM + newWM * WM / mean(I[WM>0.9]) + CSF) * I``; WM-fixed mirror:
       ``sigma = mean(I[WM>0.9]) / SNR_WM``, ``newGM = SNR_GM * sigma``, ``I' = (WM + newGM * GM / mean(I[GM>0.9])
       + CSF) * I``. The means and maps are those after step 1. Note ``I'`` multiplies by ``I`` everywhere, so voxels
       outside GM + WM + CSF (background, and tissue the maps do not cover) become 0, as in the reference code;
       CSF keeps its high-field intensity.
    3. **Noise.** ``I'' = I' + sigma * N(0, 1)`` (real Gaussian, not Rician, as in the reference).
    4. Optional ``upsample``: cubic resampling of ``I''`` back onto the input grid (the reference's ``is_upsample``).

    (SNR_WM, SNR_GM) is one bivariate-Gaussian draw per call from ``snr_mean`` / ``snr_cov`` (default the T1w/HCP
    values of Lin et al.'s config.py; :data:`SNR_MEAN_FLAIR_MBB` / :data:`SNR_COV_FLAIR_MBB` for the FLAIR config), or
    fixed by ``snr``. The drawn values and sigma are written into the output's meta: ``lowfield_snr_wm``,
    ``lowfield_snr_gm``, ``lowfield_noise_sigma``, ``lowfield_fixed_tissue``, ``lowfield_total_factor``.
    The output is not intensity-normalised (WM is rescaled to ``SNR_WM * sigma``): normalise afterwards.

    Args:
        snr_mean: mean (SNR_WM, SNR_GM) of the bivariate Gaussian.
        snr_cov: its 2x2 covariance.
        snr: fixed (SNR_WM, SNR_GM); overrides the draw.
        slice_thickness_factor: slice thickness / input voxel size, per array axis (>= 1).
        gap_factor: gap between slices / input voxel size, per array axis (>= 0).
        fixed_tissue: "gm" (GM keeps its intensity, sets sigma) or "wm".
        upsample: resample the result back onto the input grid.
        add_noise: False leaves out step 3 (sigma is still computed and recorded); for tests and noise-free pairs.
        mask_threshold: probability above which a voxel counts as pure tissue for the means.

    Call: ``sim(img, gm, wm, csf)`` with ``img`` ``(1, X, Y, Z)`` and maps ``(X, Y, Z)`` or ``(1, X, Y, Z)`` on the
    same grid; returns a float32 MetaTensor ``(1, X', Y', Z')`` on the low-field grid (or the input grid).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        snr_mean: Sequence[float] = SNR_MEAN_T1W,
        snr_cov: Sequence[Sequence[float]] = SNR_COV_T1W,
        snr: Sequence[float] | None = None,
        slice_thickness_factor: Sequence[float] = (1, 1, 6),
        gap_factor: Sequence[float] = (0, 0, 2),
        fixed_tissue: str = "gm",
        upsample: bool = False,
        add_noise: bool = True,
        mask_threshold: float = 0.9,
    ):
        self.snr_mean = np.asarray(snr_mean, float)
        self.snr_cov = np.asarray(snr_cov, float)
        if self.snr_mean.shape != (2,) or self.snr_cov.shape != (2, 2):
            raise ValueError("snr_mean must be (SNR_WM, SNR_GM) and snr_cov a 2x2 matrix")
        if not np.allclose(self.snr_cov, self.snr_cov.T) or np.any(np.linalg.eigvalsh(self.snr_cov) < -1e-9):
            raise ValueError(f"snr_cov must be a symmetric positive semi-definite 2x2 matrix, got {snr_cov}")
        self.snr = None if snr is None else tuple(float(s) for s in snr)
        if self.snr is not None and (len(self.snr) != 2 or min(self.snr) <= 0):
            raise ValueError(f"snr must be a pair of positive numbers (SNR_WM, SNR_GM), got {snr}")
        self.thickness = np.asarray(slice_thickness_factor, float)
        self.gap = np.asarray(gap_factor, float)
        if self.thickness.shape != (3,) or self.gap.shape != (3,) or np.any(self.thickness < 1) or np.any(self.gap < 0):
            raise ValueError("slice_thickness_factor must be three numbers >= 1 and gap_factor three numbers >= 0")
        if fixed_tissue not in ("gm", "wm"):
            raise ValueError(f"fixed_tissue must be 'gm' or 'wm', got {fixed_tissue!r}")
        self.fixed_tissue = fixed_tissue
        self.upsample = bool(upsample)
        self.add_noise = bool(add_noise)
        self.mask_threshold = float(mask_threshold)
        self.snr_wm, self.snr_gm = self.snr if self.snr is not None else (float("nan"), float("nan"))

    @property
    def total_factor(self) -> np.ndarray:
        """Slice spacing / input voxel size per array axis: thickness + gap."""
        return self.thickness + self.gap

    def randomize(self, data: object = None) -> None:
        """Draw (SNR_WM, SNR_GM) for one subject from ``self.R`` (or take the fixed ``snr``)."""
        if self.snr is None:
            self.snr_wm, self.snr_gm = (float(v) for v in draw_snr_pair(self.R, self.snr_mean, self.snr_cov))

    def output_grid(self, affine: np.ndarray, in_shape: Sequence[int]) -> tuple[np.ndarray, tuple[int, ...]]:
        """The thick-slice grid ``(affine, shape)``: spacing x (thickness + gap), ``floor(extent / spacing)``."""
        factor = self.total_factor
        shape = tuple(int(math.floor(n / f + 1e-9)) for n, f in zip(in_shape, factor, strict=False))
        if min(shape) < 1:
            raise InputError(None, f"volume of shape {tuple(in_shape)} is smaller than one slice of factor {factor}")
        return affine_for_grid(affine, in_shape, shape, voxel_spacing_mm(affine) * factor), shape

    def degrade_resolution(self, vols: MetaTensor) -> tuple[torch.Tensor, np.ndarray]:
        """Step 1 on a channel-first stack ``(C, X, Y, Z)``: slice-profile smoothing and thick-slice resampling.

        Returns:
            the degraded stack ``(C, X', Y', Z')`` (float32 tensor) and its affine.
        """
        affine = affine_of(vols)
        degraded = self.thickness != 1  # the reference smooths only axes whose thickness factor differs from 1
        spacing = voxel_spacing_mm(affine)
        sigma = np.where(degraded, fwhm_mm_to_sigma_vox(spacing * self.thickness, spacing), 0.0)  # FWHM = vox x factor
        dst_affine, shape = self.output_grid(affine, vols.shape[1:])
        arr = vols.as_tensor().float().numpy()
        if np.any(sigma > 0):
            arr = ndimage.gaussian_filter(arr, sigma=(0.0, *sigma), mode="nearest")
        smoothed = MetaTensor(torch.as_tensor(arr), affine=torch.as_tensor(affine, dtype=torch.float64))
        return resample_to_grid(smoothed, dst_affine, shape, mode=3, padding_mode="nearest"), dst_affine

    def __call__(
        self,
        img: np.ndarray | torch.Tensor,
        gm: np.ndarray | torch.Tensor,
        wm: np.ndarray | torch.Tensor,
        csf: np.ndarray | torch.Tensor,
        randomize: bool = True,
    ) -> MetaTensor:
        img = as_volume(img)
        source = source_name(img, "image")
        if img.shape[0] != 1:
            raise InputError(source, f"expected one channel (1, X, Y, Z), got shape {tuple(img.shape)}")
        maps = [self._map(m, name, img) for m, name in zip((gm, wm, csf), TISSUES, strict=False)]
        if randomize:
            self.randomize()
        if not (self.snr_wm > 0 and self.snr_gm > 0):
            raise RuntimeError("no (SNR_WM, SNR_GM) drawn yet: call randomize() or pass randomize=True")
        stack = MetaTensor(torch.cat([img.as_tensor().float()] + maps, 0), affine=img.affine)  # (4, X, Y, Z)
        low, dst_affine = self.degrade_resolution(stack)
        im, gm_l, wm_l, csf_l = (low[i].numpy().astype(np.float64) for i in range(4))

        in_gm, in_wm = gm_l > self.mask_threshold, wm_l > self.mask_threshold
        for name, inside in (("GM", in_gm), ("WM", in_wm)):
            if not inside.any():
                raise InputError(
                    source,
                    f"no voxel with {name} probability > {self.mask_threshold} after slice-thickness smoothing; "
                    "check the tissue maps (they must be probabilities on the image's grid)",
                )
        mean_gm, mean_wm = float(im[in_gm].mean()), float(im[in_wm].mean())
        if self.fixed_tissue == "gm":  # the reference's step 3, GM-fixed
            sigma = mean_gm / self.snr_gm
            contrast = gm_l + (self.snr_wm * sigma) * wm_l / mean_wm + csf_l
        else:  # WM-fixed
            sigma = mean_wm / self.snr_wm
            contrast = wm_l + (self.snr_gm * sigma) * gm_l / mean_gm + csf_l
        if not sigma > 0:
            raise InputError(source, "mean tissue intensity is not positive; the image must be a magnitude image")
        out = contrast * im  # I' (0 outside GM + WM + CSF, as in the reference)
        if self.add_noise:
            out = out + sigma * self.R.standard_normal(out.shape)  # I'' = I' + sigma N(0, 1)
        out = torch.as_tensor(out[None], dtype=torch.float32)
        if self.upsample:
            low_img = MetaTensor(out, affine=torch.as_tensor(dst_affine, dtype=torch.float64))
            dst_affine = affine_of(img)
            out = resample_to_grid(low_img, dst_affine, img.shape[1:], mode=3, padding_mode="nearest")
        meta = {
            "lowfield_snr_wm": float(self.snr_wm),
            "lowfield_snr_gm": float(self.snr_gm),
            "lowfield_noise_sigma": float(sigma),
            "lowfield_fixed_tissue": self.fixed_tissue,
            "lowfield_total_factor": [float(f) for f in self.total_factor],
        }
        return simulated_output(out, img, dst_affine, meta)

    @staticmethod
    def _map(m: np.ndarray | torch.Tensor, name: str, img: MetaTensor) -> torch.Tensor:
        """A tissue map as a float32 ``(1, X, Y, Z)`` tensor on the image's grid (checked)."""
        t = m.detach().cpu() if isinstance(m, torch.Tensor) else torch.as_tensor(np.asarray(m))
        t = torch.as_tensor(t).float()
        if t.ndim == 3:
            t = t[None]
        if t.shape != img.shape:
            raise InputError(
                source_name(m, name), f"{name} map shape {tuple(t.shape)} differs from the image's {tuple(img.shape)}"
            )
        if isinstance(m, MetaTensor) and not np.allclose(affine_of(m), affine_of(img), atol=1e-3):
            raise InputError(source_name(m, name), f"{name} map is not on the image's grid (affines differ)")
        return t.as_tensor() if isinstance(t, MetaTensor) else t
