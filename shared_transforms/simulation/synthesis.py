"""Label-to-image synthesis: training images of any MR contrast from tissue labels (SynthSeg / SynthSR's generator).

The project's low-field simulators change one T1-weighted image; a model trained on them learns one contrast and a
skull-stripped head. Real low-field scans come as T1w (GRE), T2w (FSE), FLAIR or PD-weighted, with scalp fat the
brightest thing in the image. SynthSeg (Billot et al., Medical Image Analysis 86:102789, 2023) and SynthSR
(Iglesias et al., Science Advances 9:eadd3607, 2023) draw every training image from a label map with random
intensities per label, so that a network sees every contrast. This module is that generator for the project's
anatomy (soft tissue maps, so partial volume survives), as MONAI ``Randomizable`` transforms with every draw in the
output's meta:

- :class:`SynthHeadLabels`: tissue probability maps ``(K, X, Y, Z)`` of :data:`LABELS` from a skull-stripped brain's
  GM / WM / CSF maps plus extra-cerebral shells drawn around the brain mask (the template and the real high-field
  volumes the project has are skull-stripped): a CSF rim, skull, scalp fat and other soft tissue (skin, muscle),
  each of a random thickness modulated over the head by a smooth random field, smoothed by 1 mm for partial volume.
- :class:`SynthContrast`: per-label mean intensities drawn per call from a Gaussian mixture of contrast families
  (:data:`FAMILIES`: T1-, T2-, FLAIR-, PD-like, and "arbitrary" = uniform per label), the image
  ``sum_k p_k mu_k`` times the real image's within-tissue texture (the source image divided by its own tissue-mean
  image, raised to a random strength) inside the brain and a smooth random texture outside it.

Written here: no MONAI transform draws images from label maps (MONAI's ``RandHistogramShift`` and
``RandAdjustContrast`` change a given image's contrast monotonically, which cannot turn T1 into T2 order).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Randomizable
from scipy import ndimage

#: The tissue classes, in channel order.
LABELS = ("csf", "gm", "wm", "skull", "fat", "soft")

#: Mean intensity (on [0, 1]) of each label per contrast family, and the spread (standard deviation) of each draw
#: around it. Orders from the textbook contrasts: T1w WM > GM > CSF, fat bright, cortical bone dark; T2w CSF > GM >
#: WM, fat intermediate-bright (fast spin echo); FLAIR GM > WM, CSF suppressed; PD CSF >= GM > WM, low contrast.
FAMILIES: dict[str, dict[str, float]] = {
    "t1": {"csf": 0.15, "gm": 0.50, "wm": 0.75, "skull": 0.05, "fat": 0.95, "soft": 0.45},
    "t2": {"csf": 0.95, "gm": 0.55, "wm": 0.40, "skull": 0.05, "fat": 0.70, "soft": 0.35},
    "flair": {"csf": 0.08, "gm": 0.65, "wm": 0.50, "skull": 0.05, "fat": 0.80, "soft": 0.40},
    "pd": {"csf": 0.80, "gm": 0.70, "wm": 0.55, "skull": 0.08, "fat": 0.85, "soft": 0.50},
}
FAMILY_SPREAD = 0.06
#: Probabilities of the families, "arbitrary" last (SynthSR draws all labels uniformly; most real inputs are one of
#: the four weightings, so they take most of the mass).
FAMILY_PROBS = {"t1": 0.3, "t2": 0.25, "flair": 0.15, "pd": 0.1, "arbitrary": 0.2}

#: Thickness ranges (mm) of the extra-cerebral shells, outward from the brain: CSF rim, skull, scalp fat, soft tissue
#: (adult scalp and skull are each about 3-7 mm; the rim of CSF and dura 1-3 mm).
SHELL_MM = {"csf": (1.0, 3.0), "skull": (3.0, 7.0), "fat": (2.0, 6.0), "soft": (1.0, 3.0)}


def _smooth_field(shape, rng: np.random.RandomState, sigma_vox: float) -> np.ndarray:
    """A smooth random field of ``shape`` with values in about [-1, 1] (white noise blurred, scaled by its max)."""
    coarse = [max(2, int(np.ceil(s / sigma_vox))) for s in shape]
    field = ndimage.zoom(
        rng.standard_normal(coarse).astype(np.float32), [s / c for s, c in zip(shape, coarse, strict=True)], order=3
    )
    field = field[tuple(slice(0, s) for s in shape)]
    return field / max(float(np.abs(field).max()), 1e-6)


class SynthHeadLabels(Randomizable):
    """Tissue probability maps of a whole head from a skull-stripped brain (see the module docstring).

    Call: ``t(gm, wm, csf, mask)`` with ``(X, Y, Z)`` arrays on a 1 mm grid (``mask`` the brain) and enough margin
    around the brain for the shells (about 20 voxels). Returns ``(maps, draws)``: float32 ``(6, X, Y, Z)`` in the
    order of :data:`LABELS` (summing to at most 1 per voxel) and the drawn thicknesses (mm).
    """

    def __init__(self, shell_mm: Mapping[str, tuple[float, float]] = SHELL_MM, variation: float = 0.35):
        self.shell_mm = dict(shell_mm)
        self.variation = float(variation)
        self.thickness_mm: dict[str, float] = {}

    def randomize(self, data: object = None) -> None:
        self.thickness_mm = {k: float(self.R.uniform(*v)) for k, v in self.shell_mm.items()}

    def __call__(self, gm, wm, csf, mask) -> tuple[np.ndarray, dict]:
        self.randomize()
        gm, wm, csf, mask = (np.asarray(v, np.float32).reshape(np.shape(v)[-3:]) for v in (gm, wm, csf, mask))
        brain = mask > 0.5
        depth = ndimage.distance_transform_edt(~brain).astype(np.float32)  # mm outside the brain (1 mm grid)
        # the shells' outer radii vary smoothly over the head by +-variation of their thickness
        wobble = 1.0 + self.variation * _smooth_field(depth.shape, self.R, 12.0)
        edges = np.cumsum([self.thickness_mm[k] for k in ("csf", "skull", "fat", "soft")])
        hard = {}
        inner = np.zeros_like(brain)
        for name, edge in zip(("csf", "skull", "fat", "soft"), edges, strict=True):
            shell = ~brain & ~inner & (depth <= edge * wobble)
            hard[name] = shell
            inner = inner | shell
        maps = {
            "csf": np.where(brain, csf, 0) + hard["csf"],
            "gm": np.where(brain, gm, 0),
            "wm": np.where(brain, wm, 0),
        }
        for name in ("skull", "fat", "soft"):
            maps[name] = ndimage.gaussian_filter(hard[name].astype(np.float32), 0.5)  # 1 mm partial volume
        maps["csf"] = np.clip(ndimage.gaussian_filter(maps["csf"].astype(np.float32), 0.5), 0, 1)
        stack = np.stack([maps[k] for k in LABELS]).astype(np.float32)
        total = stack.sum(0, keepdims=True)
        stack = stack / np.maximum(total, 1.0)  # at most 1 per voxel; the rest is air
        return stack, {"shell_thickness_mm": {k: round(v, 3) for k, v in self.thickness_mm.items()}}


class SynthContrast(Randomizable):
    """A random-contrast image from tissue maps and a real image's texture (see the module docstring).

    Args:
        families: the family probabilities (:data:`FAMILY_PROBS`); a single name fixes the family.
        spread: the standard deviation of each label's mean around its family's (:data:`FAMILY_SPREAD`).
        texture_strength: range of the exponent of the real image's within-tissue texture (0: flat tissues).
        outside_texture: peak relative amplitude of the smooth texture given to the extra-cerebral labels.

    Call: ``t(maps, texture_source, brain)``: ``maps`` ``(K, X, Y, Z)`` of :data:`LABELS`, ``texture_source`` the
    real image ``(X, Y, Z)`` (any scale) and ``brain`` its mask. Returns a float32 MetaTensor-ready array
    ``(X, Y, Z)`` in [0, 1] and the draws (``family``, ``means``, ``texture_strength``). ``means`` may be given
    (``t.means_from(draws, jitter)``) to make a second image of a related contrast from the same maps.
    """

    def __init__(
        self,
        families: Mapping[str, float] | str = FAMILY_PROBS,
        spread: float = FAMILY_SPREAD,
        texture_strength: tuple[float, float] = (0.5, 1.2),
        outside_texture: float = 0.1,
    ):
        self.family_probs = {families: 1.0} if isinstance(families, str) else dict(families)
        unknown = set(self.family_probs) - {*FAMILIES, "arbitrary"}
        if unknown:
            raise ValueError(f"unknown contrast families {sorted(unknown)}; known: {[*FAMILIES, 'arbitrary']}")
        self.spread = float(spread)
        self.texture_strength = tuple(float(v) for v in texture_strength)
        self.outside_texture = float(outside_texture)
        self.draws: dict = {}

    def randomize(self, data: object = None) -> None:
        names = list(self.family_probs)
        probs = np.asarray([self.family_probs[n] for n in names], float)
        family = names[int(self.R.choice(len(names), p=probs / probs.sum()))]
        if family == "arbitrary":
            means = {k: float(self.R.uniform(0.02, 1.0)) for k in LABELS}
        else:
            means = {
                k: float(np.clip(v + self.spread * self.R.standard_normal(), 0.01, 1.0))
                for k, v in FAMILIES[family].items()
            }
        self.draws = {
            "family": family,
            "means": means,
            "texture_strength": float(self.R.uniform(*self.texture_strength)),
        }

    def jittered(self, draws: dict, jitter: float) -> dict:
        """The draws with each label mean multiplied by ``exp(N(0, jitter))`` (a related contrast: the same
        weighting on another scanner), clipped to [0.01, 1]."""
        means = {
            k: float(np.clip(v * np.exp(jitter * self.R.standard_normal()), 0.01, 1.0))
            for k, v in draws["means"].items()
        }
        return {**draws, "means": means}

    def __call__(self, maps, texture_source, brain, draws: dict | None = None) -> tuple[np.ndarray, dict]:
        if draws is None:
            self.randomize()
            draws = self.draws
        maps = np.asarray(maps, np.float32)
        src = np.asarray(texture_source, np.float32).reshape(maps.shape[1:])
        brain = np.asarray(brain).reshape(maps.shape[1:]) > 0.5
        mu = np.asarray([draws["means"][k] for k in LABELS], np.float32)
        image = np.tensordot(mu, maps, axes=1)  # sum_k p_k mu_k: partial volume mixes the means
        # the real image's texture: the source over its own tissue-mean image (what the labels do not explain)
        src_means = np.asarray(
            [
                float((src * m).sum() / max(float(m.sum()), 1e-6)) if k in ("csf", "gm", "wm") else 0.0
                for k, m in zip(LABELS, maps, strict=True)
            ],
            np.float32,
        )
        expected = np.tensordot(src_means, maps, axes=1)
        ratio = np.where(brain & (expected > 1e-3), src / np.maximum(expected, 1e-6), 1.0)
        texture = np.clip(ratio, 0.5, 1.5) ** np.float32(draws["texture_strength"])
        outside = 1.0 + self.outside_texture * _smooth_field(image.shape, self.R, 3.0)
        image = image * np.where(brain, texture, outside)
        return np.clip(image, 0.0, 1.0).astype(np.float32), draws


def synth_pair(
    gm,
    wm,
    csf,
    mask,
    texture_source,
    seed: int,
    low_jitter: float = 0.15,
    families=FAMILY_PROBS,
    high_family: str | None = None,
) -> dict:
    """One high / low-contrast pair from one anatomy: head maps (:class:`SynthHeadLabels`) and two contrasts.

    - ``high_family=None`` (same-contrast enhancement): a contrast drawn from ``families`` for the high field and the
      same contrast jittered (:meth:`SynthContrast.jittered`) for the low field's image before its degradation.
    - ``high_family="t1"`` (or another of :data:`FAMILIES`; SynthSR's task, a T1-weighted image from any input): the
      high field drawn from that family alone, the low field's contrast drawn from ``families`` independently.

    Returns ``{"high", "low_contrast", "head", "draws"}`` (arrays ``(X, Y, Z)``, ``head`` the head mask); the draws
    hold the high field's ``family`` and ``means`` and the low field's ``low_family`` and ``low_means``.
    """
    labels = SynthHeadLabels()
    labels.set_random_state(seed)
    maps, label_draws = labels(gm, wm, csf, mask)
    contrast = SynthContrast(families)
    contrast.set_random_state(seed + 1)
    if high_family is None:
        high, draws = contrast(maps, texture_source, mask)
        low_draws = contrast.jittered(draws, low_jitter)
        low, _ = contrast(maps, texture_source, mask, draws=low_draws)
    else:
        target = SynthContrast(high_family)
        target.set_random_state(seed + 2)
        high, draws = target(maps, texture_source, mask)
        low, low_draws = contrast(maps, texture_source, mask)
    return {
        "high": high,
        "low_contrast": low,
        "head": maps.sum(0) > 0.5,
        "draws": {**label_draws, **draws, "low_family": low_draws["family"], "low_means": low_draws["means"]},
    }


def as_metatensor(arr: np.ndarray, affine) -> MetaTensor:
    """``(X, Y, Z)`` -> ``(1, X, Y, Z)`` float32 MetaTensor with ``affine``."""
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr, np.float32))[None], affine=torch.as_tensor(affine))
