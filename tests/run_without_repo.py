"""Run an exported bundle with this repository off ``sys.path`` (no checkout, no editable install of it).

    python tests/run_without_repo.py REPO run --config_file configs/inference.json ...   # MONAI's bundle runner
    python tests/run_without_repo.py REPO workflow --config_file configs/inference.json --key value ...
    python tests/run_without_repo.py REPO steps STEPS.json   # monai.bundle functions (and load, onnx_compare) in turn

Run from the unpacked bundle folder (it becomes ``sys.path[0]``, as for ``python -m monai.bundle``). Exits with 3 when
the repository's ``shared_transforms`` is still importable, so a test cannot pass on the repository's code.
"""

from __future__ import annotations

import os
import runpy
import sys

repo = os.path.realpath(sys.argv.pop(1))


def _in_repo(path: str) -> bool:
    real = os.path.realpath(path or os.getcwd())
    inside = real == repo or real.startswith(repo + os.sep)
    return inside and not real.startswith(os.path.join(repo, ".venv"))  # the interpreter's own packages may be there


sys.path[:] = [p for p in sys.path if not _in_repo(p)]
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "") + repr(f)]
for name in [m for m in sys.modules if m == "shared_transforms" or m.startswith("shared_transforms.")]:
    del sys.modules[name]
try:
    import shared_transforms
except ModuleNotFoundError:
    pass
else:
    print(f"the repository's shared_transforms is still importable: {shared_transforms.__file__}", file=sys.stderr)
    raise SystemExit(3)
sys.path.insert(0, os.getcwd())

if sys.argv[1] == "workflow":  # what monai.bundle.load-style use does: a ConfigWorkflow on the folder
    from monai.bundle import ConfigWorkflow

    args = sys.argv[2:]
    kwargs = {args[i].lstrip("-"): args[i + 1] for i in range(0, len(args), 2)}
    workflow = ConfigWorkflow(workflow_type="infer", logging_file=False, **kwargs)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    import scripts.shared_transforms as vendored

    print(f"vendored: {vendored.__file__}")
elif sys.argv[1] == "steps":  # several monai.bundle commands in one process (each would re-import MONAI, ~8 s)
    import json

    import monai.bundle

    def load(name: str, bundle_dir: str) -> None:
        """What a Model Zoo user does with a downloaded bundle: the network with its weights."""
        net = monai.bundle.load(name, bundle_dir=bundle_dir, workflow_type="inference", device="cpu")
        print(f"loaded {type(net).__name__} with {sum(p.numel() for p in net.parameters())} parameters")

    def onnx_compare(onnx_file: str, shape: list[int]) -> None:
        """The exported ONNX file in onnxruntime against the network it came from, on a seeded input of ``shape``."""
        import numpy as np
        import onnxruntime
        import torch

        parser = monai.bundle.ConfigParser()
        parser.read_config("configs/inference.json")
        parser.read_meta("configs/metadata.json")
        parser["device"] = "cpu"
        network = parser.get_parsed_content("network_def")
        network.load_state_dict(torch.load("models/model.pt", map_location="cpu", weights_only=True))
        network.eval()
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype(np.float32)
        if parser["_meta_"]["network_data_format"]["inputs"]["image"]["format"] == "kspace":  # last channel: a mask
            x[:, -1] = (rng.random((shape[0], 1, shape[-1])) < 0.3).astype(np.float32)
        with torch.no_grad():
            ref = network(torch.from_numpy(x)).numpy()
        session = onnxruntime.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {session.get_inputs()[0].name: x})
        diff = float(np.abs(out - ref).max()) if out.shape == ref.shape else float("inf")
        print("onnx_compare: " + json.dumps({"onnx_shape": list(out.shape), "torch_shape": list(ref.shape),
                                             "max_abs_diff": diff, "max_abs_torch": float(np.abs(ref).max())}))

    own = {"load": load, "onnx_compare": onnx_compare}
    with open(sys.argv[2]) as f:
        steps = json.load(f)  # [{"call": name, "args": {...}, "cwd": folder (optional)}, ...]
    for step in steps:
        if step.get("cwd"):  # another bundle folder: its scripts package, as the runner started there would see
            os.chdir(step["cwd"])
            sys.path[0] = os.getcwd()
            for mod in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
                del sys.modules[mod]
        print(f"step: {step['call']}", flush=True)
        (own.get(step["call"]) or getattr(monai.bundle, step["call"]))(**step["args"])
else:
    sys.argv[0] = "monai.bundle"
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
