"""The simulators' dictionary versions, as MONAI keeps its transforms' (``monai.transforms.*.dictionary``): each
wraps its array simulator (:mod:`.lowfield`, :mod:`.degradation`) as ``self.sim``, seeds it with its own random
state, draws the parameters once per call for all its keys and resamples ``mask_keys`` (nearest neighbour) onto the
low-field grid.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils import ensure_tuple

from ..errors import InputError, source_name
from ..transforms.geometry import SEED002_LOW_FIELD
from .common import affine_of, as_volume, resample_mask, tissue_maps_from_intensity
from .degradation import FixedPreset, RandomLowFieldDegradation
from .lowfield import SNR_COV_T1W, SNR_MEAN_T1W, TISSUES, SimulateLowFieldBlurGamma, SimulateLowFieldTissueContrast

__all__ = [
    "SimulatorDict",
    "SimulateLowFieldBlurGammad",
    "SimulateLowFieldTissueContrastd",
    "RandomLowFieldDegradationd",
]


class SimulatorDict(Randomizable, MapTransform):
    """Base of the simulators' dictionary versions: their array simulator ``self.sim`` is seeded with them and draws
    the parameters (MONAI's dictionary transforms delegate the same way)."""

    sim: Randomizable

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.sim.set_random_state(seed, state)
        return self

    def randomize(self, data: object = None) -> None:
        self.sim.randomize(data)

    def masks_onto(self, d: dict, grid: tuple | None, source: Mapping | None = None) -> None:
        """Put each of ``self.mask_keys`` present in ``source`` (default ``d``) into ``d``, resampled by nearest
        neighbour onto ``grid`` (``(affine, shape)``; None: nothing to resample onto)."""
        source = d if source is None else source
        for key in self.mask_keys:
            if key in source and grid is not None:
                d[key] = resample_mask(source[key], str(key), *grid)


class SimulateLowFieldBlurGammad(SimulatorDict):
    """Dictionary version of :class:`SimulateLowFieldBlurGamma`.

    Each key in ``keys`` is replaced by its simulated low-field volume; the parameters are drawn once per call and
    shared by all keys (each key gets its own noise field). Keys in ``mask_keys`` (e.g. a brain mask) are resampled
    with nearest neighbour onto the same low-field grid (no blur, no noise), taking the grid of the first image key.
    Keep the high-field target by copying it first (``CopyItemsd(keys="image", names="lowfield")``).
    """

    backend = SimulateLowFieldBlurGamma.backend

    def __init__(
        self,
        keys: KeysCollection,
        spacing_mm: Sequence[float] = SEED002_LOW_FIELD["spacing_mm"],
        spatial_shape: Sequence[int] | None = None,
        blur_sigma_vox: float | Sequence[float] = (0.5, 1.5),
        gamma: float | Sequence[float] = (1.1, 1.6),
        noise_std: float | Sequence[float] = (0.01, 0.05),
        background_weight: float = 1.0,
        mask_keys: KeysCollection = (),
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.sim = SimulateLowFieldBlurGamma(
            spacing_mm, spatial_shape, blur_sigma_vox, gamma, noise_std, background_weight
        )
        self.mask_keys = list(ensure_tuple(mask_keys))

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize()
        grid = None
        for key in self.key_iterator(d):
            src = as_volume(d[key], str(key))
            grid = grid or self.sim.output_grid(affine_of(src), src.shape[1:])
            d[key] = self.sim(src, randomize=False)
        self.masks_onto(d, grid)
        return d


class SimulateLowFieldTissueContrastd(SimulatorDict):
    """Dictionary version of :class:`SimulateLowFieldTissueContrast`.

    Each key in ``keys`` (image) is replaced by its simulated low-field volume, with the tissue maps read from
    ``tissue_keys`` (default ``{"gm": "gm", "wm": "wm", "csf": "csf"}``). The SNR pair is drawn once per call. When a
    map key is absent and ``allow_missing_keys`` is True, the maps come from :func:`tissue_maps_from_intensity` on
    the image (multi-Otsu inside ``mask_key`` if present, else inside an intensity mask) and the meta records
    ``lowfield_tissue_maps = "intensity_multiotsu"`` (``"given"`` otherwise); with ``allow_missing_keys`` False an
    absent map raises :class:`InputError`. The map keys themselves are left unchanged (on the high-field grid). Keys in
    ``mask_keys`` are resampled with nearest neighbour onto the output grid (the low-field grid unless ``upsample``).
    """

    backend = SimulateLowFieldTissueContrast.backend

    def __init__(
        self,
        keys: KeysCollection,
        tissue_keys: Mapping[str, str] | None = None,
        snr_mean: Sequence[float] = SNR_MEAN_T1W,
        snr_cov: Sequence[Sequence[float]] = SNR_COV_T1W,
        snr: Sequence[float] | None = None,
        slice_thickness_factor: Sequence[float] = (1, 1, 6),
        gap_factor: Sequence[float] = (0, 0, 2),
        fixed_tissue: str = "gm",
        upsample: bool = False,
        add_noise: bool = True,
        mask_threshold: float = 0.9,
        mask_key: str | None = None,
        mask_keys: KeysCollection = (),
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.tissue_keys = {t: t for t in TISSUES} | dict(tissue_keys or {})
        if set(self.tissue_keys) != set(TISSUES):
            raise ValueError(f"tissue_keys must map exactly {TISSUES} to data keys, got {tissue_keys}")
        self.sim = SimulateLowFieldTissueContrast(
            snr_mean,
            snr_cov,
            snr,
            slice_thickness_factor,
            gap_factor,
            fixed_tissue,
            upsample,
            add_noise,
            mask_threshold,
        )
        self.mask_key = mask_key
        self.mask_keys = list(ensure_tuple(mask_keys))

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize()
        grid = None
        for key in self.key_iterator(d):
            img = as_volume(d[key], str(key))
            missing = [k for k in self.tissue_keys.values() if k not in d]
            if missing and not self.allow_missing_keys:
                raise InputError(
                    source_name(img, str(key)),
                    f"tissue map key(s) {missing} not in the data; give GM/WM/CSF maps or set allow_missing_keys=True "
                    "to estimate them from intensity",
                )
            if missing:
                gm, wm, csf = tissue_maps_from_intensity(img, d.get(self.mask_key) if self.mask_key else None)
            else:
                gm, wm, csf = (d[self.tissue_keys[t]] for t in TISSUES)
            out = self.sim(img, gm, wm, csf, randomize=False)
            out.meta["lowfield_tissue_maps"] = "intensity_multiotsu" if missing else "given"
            grid = grid or (affine_of(out), tuple(out.shape[1:]))
            d[key] = out
        self.masks_onto(d, grid)
        return d


class RandomLowFieldDegradationd(FixedPreset, SimulatorDict):
    """Dictionary version of :class:`RandomLowFieldDegradation`.

    Each key in ``keys`` is replaced by its degraded low-field volume; the factors are drawn once per call and
    shared by all keys (each key gets its own noise). GM / WM maps come from ``tissue_keys`` (default
    ``{"gm": "gm", "wm": "wm"}``; a ``"csf"`` entry is accepted, so a mapping shared with
    :class:`SimulateLowFieldTissueContrastd` works, and ignored: CSF keeps its intensity); when both are
    absent they are estimated by :func:`.common.tissue_maps_from_intensity` (inside ``mask_key`` if given) and the
    meta says ``lowfield_tissue_maps = "intensity_multiotsu"``. The map keys stay unchanged (high-field grid). Keys in
    ``mask_keys`` (e.g. a brain mask) are resampled with nearest neighbour onto the low-field grid of the first image
    key. Keep the high-field target by copying it first (``CopyItemsd``).

    Args:
        keys: image keys.
        tissue_keys: maps "gm", "wm" (and optionally "csf") to data keys.
        mask_key: brain mask for the intensity-based tissue estimate.
        mask_keys: keys resampled (nearest neighbour) onto the output grid.
        degradation: the keyword arguments of :class:`RandomLowFieldDegradation` (ranges, axis, psf, ...).
    """

    backend = RandomLowFieldDegradation.backend

    def __init__(
        self,
        keys: KeysCollection,
        tissue_keys: Mapping[str, str] | None = None,
        mask_key: str | None = None,
        mask_keys: KeysCollection = (),
        allow_missing_keys: bool = False,
        **degradation,
    ):
        super().__init__(keys, allow_missing_keys)
        self.tissue_keys = {"gm": "gm", "wm": "wm"} | dict(tissue_keys or {})
        if not set(self.tissue_keys) <= {"gm", "wm", "csf"}:
            raise ValueError(f"tissue_keys may map only 'gm', 'wm' and 'csf' to data keys, got {tissue_keys}")
        self.sim = RandomLowFieldDegradation(**degradation)
        self.mask_key = mask_key
        self.mask_keys = list(ensure_tuple(mask_keys))

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize()
        mask = d.get(self.mask_key) if self.mask_key else None
        gm, wm = d.get(self.tissue_keys["gm"]), d.get(self.tissue_keys["wm"])
        outputs = {
            key: self.sim(as_volume(d[key], str(key)), gm, wm, mask, randomize=False) for key in self.key_iterator(d)
        }
        if outputs:
            first = next(iter(outputs.values()))
            grid = (affine_of(first), tuple(first.shape[1:]))
            self.masks_onto(outputs, grid, source=d)
        d.update(outputs)
        return d
