"""A PNG preview beside each output volume: the input and each result in three orthogonal mid slices.

Matplotlib (headless ``Agg``) draws it; the file is written through
:func:`shared_transforms.io.files.atomic_path` and marked as its writer's, like the volumes.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from ..errors import source_name
from .files import atomic_path
from .ownership import PNG_MARK_KEY, check_replaceable, ownership_mark
from .volumes import output_stem_of


def _volume(x) -> np.ndarray:
    arr = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    return arr[0] if arr.ndim == 4 else arr


def save_preview(volumes: Sequence[np.ndarray], titles: Sequence[str], path: str, owner: str, ranges=None) -> str:
    """Rows = volumes ``(X, Y, Z)`` (RAS), columns = sagittal / coronal / axial mid slices, written as ``owner``'s
    (see :func:`save_figure_atomic`); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(volumes), 3, figsize=(9, 3 * len(volumes)), squeeze=False)
    for r, (vol, title) in enumerate(zip(volumes, titles, strict=False)):
        x, y, z = (s // 2 for s in vol.shape)
        lo, hi = ranges[r] if ranges and ranges[r] else (0.0, 1.0)
        cmap = "magma" if "std" in title or "uncertainty" in title else "gray"
        for c, (img, view) in enumerate(((vol[x], "sagittal"), (vol[:, y], "coronal"), (vol[:, :, z], "axial"))):
            ax = axes[r, c]
            ax.imshow(img.T, cmap=cmap, origin="lower", vmin=lo, vmax=hi)
            ax.set_title(f"{title}: {view}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return save_figure_atomic(fig, path, owner, dpi=90)


def save_figure_atomic(fig, path: str, owner: str, dpi: int = 100) -> str:
    """Write a matplotlib figure to the PNG ``path`` through a temporary file in the same folder and a rename (never
    a half-written PNG), marked as ``owner``'s; an existing file is replaced only when it is ``owner``'s own
    (:mod:`shared_transforms.io.ownership`). Closes the figure. Returns ``path``."""
    import matplotlib.pyplot as plt

    try:
        check_replaceable(path, owner)
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, metadata={PNG_MARK_KEY: ownership_mark(owner)})
    finally:
        plt.close(fig)
    return path


class SavePreviewd(MapTransform):
    """Write ``<output_dir>/<input name>_<bundle>.png`` showing ``keys`` (e.g. image, pred, pred_std).

    Args:
        titles: one per key (default: the key names).
        ref_key: the MetaTensor whose ``filename_or_obj`` names the file.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        bundle_name: str,
        titles: Sequence[str] | None = None,
        ref_key: str = "image",
        allow_missing_keys: bool = True,
    ):
        super().__init__(keys, allow_missing_keys)
        self.output_dir, self.bundle_name, self.ref_key = output_dir, bundle_name, ref_key
        self.titles = list(titles) if titles else None

    def _path(self, item: Mapping, source) -> str:
        return os.path.join(self.output_dir, f"{output_stem_of(item, source)}_{self.bundle_name}.png")

    def planned_paths(self, item: Mapping) -> list[str]:
        """The PNG this writer will write for an inference item (``{"image": path, "output_stem": stem}``)."""
        return [self._path(item, item.get(self.ref_key) or "volume")]

    def check_outputs(self, item: Mapping) -> None:
        """Refuse, before computing, an item whose preview would replace a file this bundle did not write."""
        for path in self.planned_paths(item):
            check_replaceable(path, self.bundle_name)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        source = source_name(d[self.ref_key], "volume")
        keys = [k for k in self.keys if d.get(k) is not None]
        titles = [self.titles[self.keys.index(k)] if self.titles else str(k) for k in keys]
        volumes = [_volume(d[k]) for k in keys]
        ranges = [
            (0.0, float(np.percentile(v, 99.5)) or 1.0) if "std" in str(k) else None
            for k, v in zip(keys, volumes, strict=False)
        ]
        path = self._path(d, source)
        d["preview_path"] = save_preview(volumes, titles, path, self.bundle_name, ranges)
        print(f"[{self.bundle_name}] wrote {os.path.abspath(path)}", flush=True)
        return d
