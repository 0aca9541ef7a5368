"""Issue 30.3: no bundle's output carries a grid (checkerboard) pattern.

A smooth volume goes through each learned 2D bundle's own inferer with its shipped weights; the output slice's
spectrum must not peak at the frequencies of a period-2, -4 or -8 pixel checkerboard (what a decoder of stride-2
transposed convolutions prints: 560 for the unet of MONAI's ``UNet``; resize-convolutions print none),
:func:`grid_peak` below :data:`LIMIT`. cfm and amir still print one (:data:`STILL_GRIDDED`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO

from shared_transforms.engine.loader import build_network, bundle_parser, bundle_weights

SIZE = 96
#: the largest grid peak allowed (see :func:`grid_peak`)
LIMIT = 30.0


def grid_peak(img: np.ndarray) -> float:
    """How far the spectrum of a square ``img`` peaks at the checkerboard frequencies of periods 2, 4 and 8 pixels
    (``(n/p, n/p)``: a pattern that repeats along both axes at once, what uneven kernel overlap prints; lines along
    one axis alone peak elsewhere): the largest ratio of the power there to the median power of its 7 x 7
    neighbourhood (itself left out). A checkerboard gives a ratio in the hundreds; noise and anatomy a few."""
    power = np.abs(np.fft.fft2(img - img.mean())) ** 2
    n = img.shape[0]
    ratios = []
    for period in (2, 4, 8):
        k = n // period
        for a, b in ((k, k),):
            rows, cols = np.arange(a - 3, a + 4) % n, np.arange(b - 3, b + 4) % n
            around = power[np.ix_(rows, cols)].ravel()
            around = np.delete(around, around.size // 2)
            ratios.append(power[a, b] / max(np.median(around), 1e-30))
    return float(max(ratios))


def smooth_volume() -> torch.Tensor:
    """``(1, 1, 16, SIZE, SIZE)`` in [0, 1]: a broad Gaussian blob on a grey level, the same in every slice."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    img = 0.3 + 0.4 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.08)
    return torch.tensor(np.broadcast_to(img, (16, SIZE, SIZE)).copy(), dtype=torch.float32)[None, None]


def test_the_measure_sees_a_grid():
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    smooth = 0.3 + 0.4 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.08)
    noise = np.random.default_rng(0).normal(0, 0.02, (SIZE, SIZE))
    grid = (np.arange(SIZE)[:, None] % 4 == 0) & (np.arange(SIZE)[None] % 4 == 0)
    assert grid_peak(smooth + noise) < LIMIT < grid_peak(smooth + noise + 0.01 * grid)


#: bundles whose output still shows a checkerboard, with the peak measured with their shipped weights and defaults;
#: strict: the test fails once the grid is gone, so that this list is kept true
STILL_GRIDDED = {
    "cfm": "grid peak 102 at its defaults (13 with one step): its decoder's pixel shuffle; a resize-convolution "
    "candidate prints 1.2 but scores lower on the real scans, not shipped (bundles/cfm/docs, issue 30.3)",
    "amir": "grid peak 270; its decoder upsamples by pixel shuffle (issue 30.3, not fixed: needs a retrained decoder)",
}


@pytest.mark.parametrize(
    "bundle",
    [pytest.param(b, marks=pytest.mark.xfail(strict=True, reason=STILL_GRIDDED[b])) if b in STILL_GRIDDED else b
     for b in ("unet", "cfm", "amir")],
)
def test_no_bundle_prints_a_grid_on_a_smooth_input(bundle):
    root = REPO / "bundles" / bundle
    parser = bundle_parser(root, device="cpu")
    exact = {"precision": "float32", "inferer#progress": False}  # else its defaults
    parser.update({key: value for key, value in exact.items() if key.split("#")[0] in parser})
    network = build_network(parser, bundle_weights(parser), "network_def")
    inferer = parser.get_parsed_content("inferer")
    torch.manual_seed(0)
    with torch.inference_mode():
        out = inferer(smooth_volume(), network)
    middle = out[0, 0, 8].float().numpy()
    assert grid_peak(middle) < LIMIT, bundle
