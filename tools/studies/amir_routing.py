"""What AMIR's routing does per degradation family: the instruction atoms and the expert load, per stress condition.

    python tools/study.py amir_routing --stress_dir bench/stress/stress_data --out_dir bench/amir_routing

``--stress_dir`` is the ``stress_data`` folder that ``tools/benchmark.py --stress true`` writes (one folder per
condition, each with its ``datalist.json``: the same test subjects degraded with one factor changed). For every
condition and subject, ``num_slices`` slices across the brain
(:class:`shared_transforms.transforms.geometry.SelectSlicesd`, the slices along the acquisition as inference cuts them)
go through the network in eval mode, and the network's ``last_routing`` is kept: the softmax weights of the Routing
Instruction Network's atoms (which "task" the network reads from the input) and, per Spatial Routing Module, the
fraction of pixels sent to each expert.

Writes ``routing.csv`` (one row per condition: the mean atom weights and expert loads over its slices),
``routing.png`` (atoms as a heat map, conditions x atoms; expert load per SRM, conditions x experts) and
``routing.md`` (per condition: the atom with the largest weight, the entropy of the mean atom weights in bits, and
the total-variation distance of its mean atom weights from the typical low field's, i.e. how differently the
network routes it). Written here: the loop and the plot; the network, the loading, the preprocessing and the slice
selection are the bundle's and the project's.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose, DivisiblePad

from shared_transforms.engine import loader
from shared_transforms.errors import InputError
from shared_transforms.io.datalist import pair_items
from shared_transforms.io.files import write_text_atomic
from shared_transforms.io.preview import save_figure_atomic
from shared_transforms.transforms.geometry import SelectSlicesd
from shared_transforms.transforms.pipelines import pair_transforms

BUNDLE_ROOT = Path(__file__).resolve().parents[2] / "bundles" / "amir"
#: the condition the others are compared with: the typical low field of the stress test (an axial 5 mm scan)
REFERENCE_CONDITION = "thick_5_mm"


def build_network(ckpt_path: str | None = None) -> torch.nn.Module:
    """inference.json's network with the shipped (checksummed) or the given weights, in eval mode on the CPU."""
    parser = loader.bundle_parser(BUNDLE_ROOT, device="cpu")
    return loader.build_network(parser, loader.bundle_weights(parser, ckpt_path, "--ckpt_path"), "network_def")


def conditions_in(stress_dir: str) -> list[str]:
    """The condition folders of a stress ``stress_data`` folder (those with a datalist), sorted."""
    if not os.path.isdir(stress_dir):
        raise InputError(stress_dir, "is not a folder (run tools/benchmark.py --stress true first)")
    names = sorted(n for n in os.listdir(stress_dir) if os.path.isfile(os.path.join(stress_dir, n, "datalist.json")))
    if not names:
        raise InputError(stress_dir, "holds no condition folder with a datalist.json")
    return names


@torch.no_grad()
def routing_of(network: torch.nn.Module, slices: torch.Tensor) -> dict[str, np.ndarray]:
    """``(N, 1, H, W)`` slices -> mean atom weights ``(num_atoms,)`` and expert load ``(num_srm, num_experts)``
    (fraction of pixels per expert, each row sums to top_k) over the N slices."""
    # DivisiblePad pads the spatial dims of (C, H, W): the slices go in as channels, so only H and W are padded
    network(torch.as_tensor(DivisiblePad(k=8)(slices[:, 0])).unsqueeze(1).float())
    routing = network.last_routing
    return {
        "atoms": routing["atoms"].float().mean(0).numpy(),
        "expert_load": torch.stack([load.float() for load in routing["expert_load"]]).numpy(),
    }


def study(stress_dir: str, num_slices: int = 16, ckpt_path: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """condition -> mean atoms and expert load over every subject's ``num_slices`` slices."""
    network = build_network(ckpt_path)
    prepare = Compose(pair_transforms(track_meta=False, slice_along_acquisition=True))
    select = SelectSlicesd(["image"], num_slices=num_slices, axis=0, mask_key="mask")
    out = {}
    for name in conditions_in(stress_dir):
        per_subject = []
        for item in pair_items(os.path.join(stress_dir, name, "datalist.json"), "testing"):
            slices = select(prepare(item))["image"].permute(1, 0, 2, 3)  # (1, N, H, W) -> (N, 1, H, W)
            per_subject.append(routing_of(network, torch.as_tensor(slices)))
        out[name] = {k: np.mean([s[k] for s in per_subject], axis=0) for k in ("atoms", "expert_load")}
    return out


def summary_rows(result: dict[str, dict[str, np.ndarray]]) -> list[dict]:
    """Per condition: top atom, entropy (bits) and total-variation distance from the reference condition's atoms."""
    reference = result.get(REFERENCE_CONDITION, next(iter(result.values())))["atoms"]
    rows = []
    for name, r in result.items():
        atoms = r["atoms"] / r["atoms"].sum()
        rows.append(
            {
                "condition": name,
                "top_atom": int(np.argmax(atoms)),
                "top_weight": round(float(atoms.max()), 4),
                "entropy_bits": round(float(-(atoms * np.log2(np.clip(atoms, 1e-12, None))).sum()), 3),
                "tv_from_reference": round(float(0.5 * np.abs(atoms - reference / reference.sum()).sum()), 4),
                **{f"load_srm{i + 1}": " ".join(f"{v:.3f}" for v in load) for i, load in enumerate(r["expert_load"])},
            }
        )
    return rows


def plot(result: dict[str, dict[str, np.ndarray]], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result)
    atoms = np.stack([result[n]["atoms"] for n in names])
    loads = np.stack([result[n]["expert_load"] for n in names])  # (conditions, srm, experts)
    fig, axes = plt.subplots(
        1,
        1 + loads.shape[1],
        figsize=(4 + 2.2 * (1 + loads.shape[1]), 0.35 * len(names) + 2),
        gridspec_kw={"width_ratios": [4] + [1] * loads.shape[1]},
    )
    im = axes[0].imshow(atoms, aspect="auto", cmap="viridis")
    axes[0].set(title="instruction atoms (softmax weight)", xlabel="atom", yticks=range(len(names)), yticklabels=names)
    fig.colorbar(im, ax=axes[0], fraction=0.04)
    for i in range(loads.shape[1]):
        im = axes[1 + i].imshow(loads[:, i], aspect="auto", cmap="magma", vmin=0, vmax=1)
        axes[1 + i].set(title=f"SRM {i + 1} expert load", xlabel="expert", yticks=[])
    fig.colorbar(im, ax=axes[-1], fraction=0.08)
    fig.tight_layout()
    return save_figure_atomic(fig, path, "amir", dpi=100)


def main(stress_dir: str, out_dir: str = "bench/amir_routing", num_slices: int = 16, ckpt_path: str | None = None):
    """The study (module docstring) on the conditions of ``stress_dir``; writes to ``out_dir``."""
    result = study(stress_dir, num_slices=num_slices, ckpt_path=ckpt_path)
    rows = summary_rows(result)
    buf = io.StringIO()
    num_srm = len(next(iter(result.values()))["expert_load"])
    writer = csv.DictWriter(buf, fieldnames=["condition", "atoms", *[f"load_srm{i + 1}" for i in range(num_srm)]])
    writer.writeheader()
    for name, r in result.items():
        writer.writerow(
            {
                "condition": name,
                "atoms": " ".join(f"{v:.4f}" for v in r["atoms"]),
                **{f"load_srm{i + 1}": " ".join(f"{v:.4f}" for v in load) for i, load in enumerate(r["expert_load"])},
            }
        )
    csv_path = write_text_atomic(os.path.join(out_dir, "routing.csv"), buf.getvalue(), newline="")
    header = list(rows[0])
    table = "\n".join(
        ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
        + ["| " + " | ".join(str(r[k]) for k in header) + " |" for r in rows]
    )
    md_path = write_text_atomic(os.path.join(out_dir, "routing.md"), table + "\n")
    png_path = plot(result, os.path.join(out_dir, "routing.png"))
    print(table)
    print(json.dumps({"csv": csv_path, "markdown": md_path, "figure": png_path}))
