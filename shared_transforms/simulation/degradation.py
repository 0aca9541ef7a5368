"""Randomised low-field degradation: a domain-randomised distribution of 64 mT-like scans from one high-field image.

The project's other simulators (:mod:`.lowfield`) each make one kind of low field (one geometry, 1.6 x 1.6 x 5 mm
thick along z, SNR near 60). Real portable 64 mT scans (Hyperfine Swoop) are far noisier, are acquired axially,
coronally or sagittally with 3-7 mm slices, lose in-plane resolution by a truncated k-space (a sinc PSF with Gibbs
ringing, not a Gaussian blur) and have sequence-dependent contrast. SynthSR / LF-SynthSR (Iglesias et al. 2023,
Science Advances; the 2023 LF-SynthSR work) get robustness from *domain randomisation*: every training subject is
degraded with freshly drawn acquisition parameters. :class:`RandomLowFieldDegradation` (array) and
:class:`RandomLowFieldDegradationd` (dictionary) are that distribution as MONAI transforms.

Drawn once per call (= per subject) from MONAI's seeded ``Randomizable.R``; each range is a constructor argument (a
number fixes a factor, a ``(min, max)`` pair draws it uniformly; the axis and the PSF from tuples). Defaults
(:data:`RANDOMISED`) and why:

============================  ===============  =====================================================================
factor                        default          why
============================  ===============  =====================================================================
``axis``                      (0, 1, 2)        the array axis of the thick slices; for RAS input 0 = sagittal, 1 =
                                               coronal, 2 = axial acquisition: Swoop protocols are run in all three
``slice_thickness_mm``        (2, 7)           Swoop clinical 2D protocols use ~5 mm slices (SynthSR's Hyperfine
                                               model takes T1w at 1.5 x 1.5 x 5 mm axial), real scans 3-7 mm; 2 mm
                                               reaches thinner research protocols
``slice_gap_mm``              (0, 1)           contiguous slices up to ~20 % of a 5 mm slice, the usual gap of 2D
                                               multi-slice protocols; slice spacing = thickness + gap
``inplane_spacing_mm``        (1, 2.5)         one draw for both in-plane axes (square pixels, as clinical 2D
                                               protocols); Swoop protocols are 1.5-1.6 mm in-plane, 2.5 mm reaches
                                               coarse fast scans
``psf``                       kspace/gaussian  0.5/0.5; "kspace": the in-plane PSF of a Cartesian acquisition is the
                                               sinc of its truncated k-space (Gibbs ringing); "gaussian": stands for
                                               reconstructions that apodise (filter) k-space and lose the ringing
``contrast_scale``            (0.3, 1.2)       GM and WM T1 converge at low field (T1 dispersion), so T1w grey/white
                                               contrast shrinks; up to 1.2 for sequences tuned for contrast
``bias_peak``                 (0, 0.3)         peak |log gain| of a smooth receive/B0 shading; exp(+-0.3) = 0.74-1.35
                                               (SynthSR's generator draws its log-field with std 0.3)
``gamma``                     (0.7, 1.5)       about exp(+-0.4): SynthSeg/SynthSR draw log(gamma) ~ N(0, 0.4)
``snr_wm``                    (4, 60)          64 mT T1w scans have WM SNR of roughly 10-30 (the project's issue 8);
                                               the range goes past it on both sides; ``math.inf`` switches noise off
============================  ===============  =====================================================================

Order of the steps (``I`` in [0, 1] on the high-field grid, ``p_gm``, ``p_wm`` the tissue maps):

1. **contrast** ``I += (c - 1) * (p_gm * (m_gm - mid) + p_wm * (m_wm - mid))`` with ``m_gm``, ``m_wm`` the mean
   intensities of pure GM / WM (voxels with probability > ``mask_threshold``; the probability-weighted mean where
   there are none) and ``mid = (m_gm + m_wm) / 2``: the GM and WM means move towards (c < 1) or away from (c > 1)
   their midpoint, ``mean'_wm - mean'_gm = c (m_wm - m_gm)`` for pure tissue, texture and CSF stay; then clamped
   at 0 (the power law needs a non-negative image; only c > 1 can push dark GM below 0);
2. **gamma** ``I = I ** gamma``;
3. **bias field** ``I *= exp(b(u))``, ``b(u) = sum_k a_k cos(2 pi f_k . u + phi_k)`` over the field of view
   (``u`` in [0, 1]^3), ``K = bias_terms`` (4) cosines with ``f_k ~ U[0, 1]^3`` cycles per field of view,
   ``phi_k ~ U[0, 2 pi)``, ``a_k ~ N(0, 1)``, scaled so that ``max |b| = bias_peak``;
4. **PSF and sampling** in-plane: "kspace" keeps the centred k-space band ``|k| <= 1 / (2 * spacing)`` cycles/mm
   along each in-plane axis and zeroes the rest (periodic in the field of view, as the scanner's own FOV is);
   "gaussian" blurs with a Gaussian of FWHM = spacing. Slice axis: the slice profile, a box of width = thickness
   ("kspace": the rectangular profile of an ideal selective pulse) or a Gaussian of FWHM = thickness ("gaussian").
   Then cubic resampling onto the low-field grid (spacing = in-plane spacing, and thickness + gap along ``axis``;
   shape ``round(extent / spacing)``; same axis directions, same world centre);
5. **Rician noise** on the low-field grid: ``sigma = m_wm_low / snr_wm`` with ``m_wm_low`` the mean of the noise-free
   low-field image in pure WM (the WM map degraded like the image, resampled linearly),
   ``out = sqrt((I + sigma n1)^2 + (sigma n2)^2)``,
   ``n1, n2 ~ N(0, 1)`` (the magnitude of complex Gaussian noise); with ``sigma = 0`` this is ``|I|``.

The output is not re-normalised (the bundles' pipelines normalise by percentiles). Every drawn value goes into the
output's meta (``lowfield_axis``, ``lowfield_slice_thickness_mm``, ``lowfield_slice_gap_mm``,
``lowfield_inplane_spacing_mm``, ``lowfield_psf``, ``lowfield_contrast_scale``, ``lowfield_bias_peak``,
``lowfield_gamma``, ``lowfield_snr_wm``, ``lowfield_noise_sigma``, ``lowfield_spacing_mm`` (output voxel size per
array axis), ``lowfield_tissue_maps`` ("given", "intensity_multiotsu" or "none" when neither the contrast step nor
the noise needs them)).

Presets: :data:`RANDOMISED` (the default distribution above) and :data:`TYPICAL` (one typical value per factor: a
Swoop-like axial 5 mm T1w scan); :meth:`RandomLowFieldDegradation.fixed` builds a transform with every factor fixed
to :data:`TYPICAL` except those given, for stress tests that push one factor at a time.

Library use: MONAI's ``Randomizable`` / ``MapTransform`` pattern (the dictionary version is in :mod:`.dictionary`),
``SpatialResample`` (through :func:`.common.resample_to_grid`, spline order 3) onto grids from
:func:`shared_transforms.transforms.geometry.affine_for_grid`; the PSF is :mod:`.psf`'s (``torch.fft`` k-space
truncation, ``scipy.ndimage`` filters, a fractional-width box slice profile). Written here: the parameter draws, the
contrast formula, the cosine bias field and the Rician magnitude (MONAI's ``RandRicianNoise`` draws its std uniformly
below a bound instead of taking the sigma of a stated SNR, and ``RandBiasField``'s polynomial coefficients do not set
the field's peak, which is the drawn and recorded parameter here). The helpers of :mod:`.common` (MetaTensor
conversion, ranges, output meta, the intensity-based tissue fallback) and :mod:`.lowfield` (tissue-map checks) are
imported, not repeated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Randomizable, Transform
from monai.utils import TransformBackends

from ..errors import InputError, source_name
from ..transforms.geometry import affine_for_grid, voxel_spacing_mm
from .common import (
    affine_of,
    as_volume,
    check_range,
    check_unit_range,
    resample_to_grid,
    simulated_output,
    tissue_maps_from_intensity,
    tissue_mean,
)
from .lowfield import SimulateLowFieldTissueContrast
from .psf import PSF_KINDS, apply_psf

__all__ = ["RANDOMISED", "TYPICAL", "FixedPreset", "RandomLowFieldDegradation"]

#: The randomised default distribution (each entry is a constructor argument; see the module docstring).
RANDOMISED: dict[str, object] = {
    # thick-slice array axis; RAS input: 0 sagittal, 1 coronal, 2 axial; Swoop protocols use all three
    "axis": (0, 1, 2),
    # Swoop 2D protocols ~5 mm (SynthSR's Hyperfine model: T1w 1.5 x 1.5 x 5 mm axial); real scans 3-7 mm
    "slice_thickness_mm": (2.0, 7.0),
    # contiguous up to ~20 % of a 5 mm slice (usual 2D multi-slice gap); slice spacing = thickness + gap
    "slice_gap_mm": (0.0, 1.0),
    # one draw for both in-plane axes (square pixels); Swoop 1.5-1.6 mm, 2.5 mm for coarse fast scans
    "inplane_spacing_mm": (1.0, 2.5),
    # sinc PSF of a truncated Cartesian k-space, or the smooth PSF of an apodised reconstruction
    "psf": PSF_KINDS,
    # None: equal probabilities (0.5 / 0.5 for the two kinds)
    "psf_probs": None,
    # GM/WM T1 converge at low field (T1 dispersion): grey/white contrast shrinks; > 1 for contrast-tuned sequences
    "contrast_scale": (0.3, 1.2),
    # peak |log gain| of a smooth shading, exp(+-0.3) = 0.74-1.35 (SynthSR's log bias field has std 0.3)
    "bias_peak": (0.0, 0.3),
    # about exp(+-0.4): SynthSeg / SynthSR draw log(gamma) ~ N(0, 0.4)
    "gamma": (0.7, 1.5),
    # 64 mT T1w WM SNR is roughly 10-30 (issue 8); the range goes past it on both sides
    "snr_wm": (4.0, 60.0),
}

#: One typical value per factor (a Swoop-like axial T1w scan): the fixed point of
#: :meth:`RandomLowFieldDegradation.fixed`.
TYPICAL: dict[str, object] = {
    "axis": 2,  # axial
    "slice_thickness_mm": 5.0,  # the Swoop clinical slice
    "slice_gap_mm": 0.0,  # contiguous
    "inplane_spacing_mm": 1.5,  # SynthSR's Hyperfine T1w in-plane
    "psf": "kspace",  # the scanner measures a truncated k-space
    "contrast_scale": 0.75,  # the middle of the default range: reduced grey/white contrast
    "bias_peak": 0.15,  # the middle of the default range
    "gamma": 1.0,  # no power law
    "snr_wm": 20.0,  # the middle of the 10-30 quoted for 64 mT T1w
}

_FACTORS = tuple(TYPICAL)


def _draw(u: float, bounds: tuple[float, float]) -> float:
    """``min + u (max - min)`` for ``u`` in [0, 1); a fixed value stays exact (also ``inf``)."""
    lo, hi = bounds
    return float(lo if lo == hi else lo + u * (hi - lo))


def _checked_image(img: np.ndarray | torch.Tensor) -> tuple[MetaTensor, str]:
    """The input as a one-channel ``(1, X, Y, Z)`` MetaTensor with values in [0, 1] (else InputError), and its name."""
    img = as_volume(img)
    source = source_name(img, "image")
    if img.shape[0] != 1:
        raise InputError(source, f"expected one channel (1, X, Y, Z), got shape {tuple(img.shape)}")
    check_unit_range(img, source, "the high-field image")
    return img, source


class FixedPreset:
    """``fixed(...)``: the transform with every factor at :data:`TYPICAL` except those given (single values)."""

    @classmethod
    def fixed(cls, *args, **values):
        """Every drawn factor fixed: :data:`TYPICAL` updated with ``values`` (each a single number, axis or PSF kind).

        Other keyword arguments (e.g. ``mask_keys`` of the dictionary version) pass through; positional arguments
        too (``keys``).
        """
        for name in set(values) & set(_FACTORS):
            if isinstance(values[name], (list, tuple, np.ndarray)):
                raise TypeError(f"fixed() takes one value per factor, got {name}={values[name]!r}")
        return cls(*args, **{**TYPICAL, **values})


class RandomLowFieldDegradation(FixedPreset, Randomizable, Transform):
    """A randomised 64 mT-like degradation of a high-field image (see the module docstring for the model).

    Args:
        axis: the thick-slice array axis, or a tuple of allowed axes (one is drawn with equal probability).
        slice_thickness_mm: slice thickness (mm), a number or a (min, max) range.
        slice_gap_mm: gap between slices (mm), a number or a range.
        inplane_spacing_mm: voxel size of both in-plane axes (mm, one draw shared by both), a number or a range.
        psf: "kspace" or "gaussian", or a tuple of kinds to draw from.
        psf_probs: their probabilities (None: equal).
        contrast_scale: grey/white contrast factor c, a number or a range.
        bias_peak: peak |log gain| of the bias field, a number or a range (0: no bias field).
        gamma: power-law exponent, a number or a range.
        snr_wm: WM signal / noise sigma on the low-field grid, a number or a range (``math.inf``: no noise).
        bias_terms: number of cosines in the log bias field.
        mask_threshold: probability above which a voxel counts as pure tissue for the tissue means.

    Call: ``t(img, gm=None, wm=None, mask=None)`` with ``img`` ``(1, X, Y, Z)`` in [0, 1] and optional GM / WM
    probability maps ``(X, Y, Z)`` or ``(1, X, Y, Z)`` on its grid; without maps, and when the contrast step or the
    noise needs them, they come from :func:`.common.tissue_maps_from_intensity` (inside ``mask`` if given). Returns
    a float32 MetaTensor ``(1, X', Y', Z')`` on the low-field grid with the draws in its meta.
    """

    backend: ClassVar[list] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        axis: int | Sequence[int] = RANDOMISED["axis"],
        slice_thickness_mm: float | Sequence[float] = RANDOMISED["slice_thickness_mm"],
        slice_gap_mm: float | Sequence[float] = RANDOMISED["slice_gap_mm"],
        inplane_spacing_mm: float | Sequence[float] = RANDOMISED["inplane_spacing_mm"],
        psf: str | Sequence[str] = RANDOMISED["psf"],
        psf_probs: Sequence[float] | None = RANDOMISED["psf_probs"],
        contrast_scale: float | Sequence[float] = RANDOMISED["contrast_scale"],
        bias_peak: float | Sequence[float] = RANDOMISED["bias_peak"],
        gamma: float | Sequence[float] = RANDOMISED["gamma"],
        snr_wm: float | Sequence[float] = RANDOMISED["snr_wm"],
        bias_terms: int = 4,
        mask_threshold: float = 0.9,
    ):
        self.axes = (int(axis),) if np.isscalar(axis) else tuple(int(a) for a in axis)
        if not self.axes or not set(self.axes) <= {0, 1, 2}:
            raise ValueError(f"axis must be 0, 1, 2 or a tuple of them, got {axis}")
        self.psf_kinds = (psf,) if isinstance(psf, str) else tuple(psf)
        if not self.psf_kinds or not set(self.psf_kinds) <= set(PSF_KINDS):
            raise ValueError(f"psf must be one of {PSF_KINDS} or a tuple of them, got {psf}")
        probs = np.ones(len(self.psf_kinds)) if psf_probs is None else np.asarray(psf_probs, float)
        if probs.shape != (len(self.psf_kinds),) or np.any(probs < 0) or not probs.sum() > 0:
            raise ValueError(f"psf_probs must be one non-negative weight per psf kind, got {psf_probs}")
        self.psf_probs = probs / probs.sum()
        self.slice_thickness_mm = check_range(slice_thickness_mm, "slice_thickness_mm", low=1e-6)
        self.slice_gap_mm = check_range(slice_gap_mm, "slice_gap_mm")
        self.inplane_spacing_mm = check_range(inplane_spacing_mm, "inplane_spacing_mm", low=1e-6)
        self.contrast_scale = check_range(contrast_scale, "contrast_scale")
        self.bias_peak = check_range(bias_peak, "bias_peak")
        self.gamma = check_range(gamma, "gamma", low=1e-6)
        self.snr_wm = check_range(snr_wm, "snr_wm", low=1e-6)
        if int(bias_terms) < 1:
            raise ValueError(f"bias_terms must be >= 1, got {bias_terms}")
        self.bias_terms = int(bias_terms)
        self.mask_threshold = float(mask_threshold)
        self.params: dict[str, object] = {}
        self._bias_coefficients: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # ----------------------------------------------------------------------------------------------------- draws
    def randomize(self, data: object = None) -> None:
        """Draw every factor for one subject from ``self.R``.

        Each factor takes one uniform number whether it is fixed or not, so fixing one factor leaves the draws of
        the others unchanged for the same seed.
        """
        u = self.R.uniform(size=9)
        axis = self.axes[min(int(u[0] * len(self.axes)), len(self.axes) - 1)]
        psf_index = min(int(np.searchsorted(np.cumsum(self.psf_probs), u[1], side="right")), len(self.psf_kinds) - 1)
        self.params = {
            "lowfield_axis": int(axis),
            "lowfield_psf": self.psf_kinds[psf_index],
            "lowfield_slice_thickness_mm": _draw(u[2], self.slice_thickness_mm),
            "lowfield_slice_gap_mm": _draw(u[3], self.slice_gap_mm),
            "lowfield_inplane_spacing_mm": _draw(u[4], self.inplane_spacing_mm),
            "lowfield_contrast_scale": _draw(u[5], self.contrast_scale),
            "lowfield_bias_peak": _draw(u[6], self.bias_peak),
            "lowfield_gamma": _draw(u[7], self.gamma),
            "lowfield_snr_wm": _draw(u[8], self.snr_wm),
        }
        k = self.bias_terms
        self._bias_coefficients = (
            self.R.uniform(0.0, 1.0, size=(k, 3)),  # frequencies, cycles per field of view
            self.R.uniform(0.0, 2.0 * np.pi, size=k),  # phases
            self.R.standard_normal(k),  # amplitudes
        )

    def bias_log_field(self, shape: Sequence[int]) -> np.ndarray:
        """The drawn log bias field ``b`` on a grid of ``shape`` spanning the field of view (max |b| = bias_peak)."""
        if not self.params or self._bias_coefficients is None:
            raise RuntimeError("nothing drawn yet: call randomize() first")
        peak = float(self.params["lowfield_bias_peak"])
        b = np.zeros(tuple(shape), np.float32)
        if peak <= 0:
            return b
        coords = [np.linspace(0.0, 1.0, n, dtype=np.float32) if n > 1 else np.zeros(1, np.float32) for n in shape]
        for freq, phase, amp in zip(*self._bias_coefficients, strict=False):
            arg = sum(
                (np.float32(2 * np.pi * f) * c).reshape([-1 if i == j else 1 for j in range(3)])
                for i, (f, c) in enumerate(zip(freq, coords, strict=False))
            )
            b += np.float32(amp) * np.cos(arg + np.float32(phase))
        top = float(np.abs(b).max())
        return b * np.float32(peak / top) if top > 0 else b

    # ------------------------------------------------------------------------------------------------------ grid
    def output_grid(self, affine: np.ndarray, in_shape: Sequence[int]) -> tuple[np.ndarray, tuple[int, ...]]:
        """The drawn low-field grid ``(affine, shape)`` for an input grid: in-plane spacing, thickness + gap along
        the slice axis, ``round(extent / spacing)`` voxels, same directions and world centre."""
        p = self.params
        spacing = np.full(3, float(p["lowfield_inplane_spacing_mm"]))
        spacing[p["lowfield_axis"]] = p["lowfield_slice_thickness_mm"] + p["lowfield_slice_gap_mm"]
        extent = voxel_spacing_mm(affine) * np.asarray(in_shape[:3], float)
        shape = tuple(max(1, int(np.round(e / s))) for e, s in zip(extent, spacing, strict=False))
        return affine_for_grid(affine, in_shape, shape, spacing), shape

    def _psf(self, stack: np.ndarray, spacing_in: np.ndarray) -> np.ndarray:
        """Step 4's PSF (:func:`.psf.apply_psf`) with the drawn kind and sizes, on a ``(C, X, Y, Z)`` stack."""
        p = self.params
        return apply_psf(
            stack,
            spacing_in,
            int(p["lowfield_axis"]),
            str(p["lowfield_psf"]),
            float(p["lowfield_slice_thickness_mm"]),
            float(p["lowfield_inplane_spacing_mm"]),
        )

    # ------------------------------------------------------------------------------------------------------ call
    def __call__(
        self,
        img: np.ndarray | torch.Tensor,
        gm: np.ndarray | torch.Tensor | None = None,
        wm: np.ndarray | torch.Tensor | None = None,
        mask: np.ndarray | torch.Tensor | None = None,
        randomize: bool = True,
    ) -> MetaTensor:
        img, source = _checked_image(img)
        if (gm is None) != (wm is None):
            raise InputError(source, "give both the GM and the WM map, or neither (to estimate them from intensity)")
        if randomize or not self.params:
            self.randomize()
        p = self.params
        c, snr = float(p["lowfield_contrast_scale"]), float(p["lowfield_snr_wm"])
        needs_maps = c != 1.0 or math.isfinite(snr)
        x = np.clip(img[0].as_tensor().detach().cpu().float().numpy(), 0.0, 1.0)
        affine = affine_of(img)
        tissue = "none"
        if needs_maps:
            tissue = "given" if gm is not None else "intensity_multiotsu"
            if gm is None:
                gm, wm, _ = tissue_maps_from_intensity(img, mask)
            p_gm, p_wm = (self._map(m, name, img, source) for m, name in ((gm, "gm"), (wm, "wm")))
        if c != 1.0:  # 1. contrast: GM / WM means move towards / away from their midpoint by the factor c
            m_gm = tissue_mean(x, p_gm, self.mask_threshold, source, "GM")
            m_wm = tissue_mean(x, p_wm, self.mask_threshold, source, "WM")
            mid = 0.5 * (m_gm + m_wm)
            shift = np.float32(c - 1.0) * (p_gm * np.float32(m_gm - mid) + p_wm * np.float32(m_wm - mid))
            x = np.clip(x + shift, 0.0, None)
        if p["lowfield_gamma"] != 1.0:  # 2. power law
            x = np.power(x, np.float32(p["lowfield_gamma"]), dtype=np.float32)
        if p["lowfield_bias_peak"] > 0:  # 3. smooth multiplicative field on the high-field grid
            x = x * np.exp(self.bias_log_field(x.shape))
        # 4. PSF and sampling (the WM map goes the same way, to find pure WM on the low-field grid; it is only
        # thresholded there, so linear interpolation does for it)
        stack = np.stack([x, p_wm] if math.isfinite(snr) else [x]).astype(np.float32)
        stack = self._psf(stack, voxel_spacing_mm(affine))
        dst_affine, shape = self.output_grid(affine, img.shape[1:])
        low = [
            resample_to_grid(MetaTensor(torch.as_tensor(ch[None]), affine=img.affine), dst_affine, shape, mode=order)
            for ch, order in zip(stack, (3, 1), strict=False)
        ]
        out, sigma = low[0][0].numpy(), 0.0
        if math.isfinite(snr):  # 5. Rician noise: the magnitude of complex Gaussian noise added to the signal
            m_wm_low = tissue_mean(out, low[1][0].numpy(), self.mask_threshold, source, "WM")
            if not m_wm_low > 0:
                raise InputError(source, f"mean WM intensity on the low-field grid is {m_wm_low:.3g}, not positive")
            sigma = m_wm_low / snr
            n1, n2 = self.R.standard_normal((2, *out.shape)).astype(np.float32) * np.float32(sigma)
            out = np.sqrt((out + n1) ** 2 + n2**2)
        else:
            out = np.abs(out)
        spacing = voxel_spacing_mm(dst_affine)
        meta = {
            **p,
            "lowfield_noise_sigma": float(sigma),
            "lowfield_spacing_mm": [float(s) for s in spacing],
            "lowfield_tissue_maps": tissue,
        }
        return simulated_output(out[None], img, dst_affine, meta)

    @staticmethod
    def _map(m: np.ndarray | torch.Tensor, name: str, img: MetaTensor, source: str) -> np.ndarray:
        """A tissue map as float32 ``(X, Y, Z)`` on the image's grid, checked (shape, affine, [0, 1])."""
        try:
            t = SimulateLowFieldTissueContrast._map(m, name, img)
        except InputError as err:  # a plain array has no file name: name the image's
            raise InputError(source if err.source == name else err.source, err.problem) from None
        check_unit_range(t, source_name(m, source), f"the {name} probability map")
        return t[0].numpy()
