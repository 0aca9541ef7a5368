"""A MONAI Label infer task that runs one of this repository's bundles on a volume and returns the enhanced NIfTI.

MONAI Label's own ``BundleInferTask`` expects a segmentation bundle (a network called on the image, its own writer of
label maps); these bundles are image-to-image, some generative (cfm integrates a flow over several network calls,
flat unrolls a reconstruction), and each writes its output on the grid its contract promises. So this task builds
the bundle's own objects from its ``configs/inference.json`` with the engine's loader (MONAI's ``ConfigParser``) and
runs them as the bundle runner's evaluator does: ``preprocessing`` on the item, ``inferer(inputs, network)``,
``postprocessing`` (which writes the NIfTI). The network is built and its weights are loaded (and checked against the
bundle's ``large_files.yml``) once, when the server starts; the rest is rebuilt for every request, so that a request may
change the bundle's run settings (``params``: e.g. ``{"num_steps": 4, "num_samples": 1}`` for cfm).

What MONAI Label does around it: the upload, the datastore, the HTTP response; this module is the part it has not.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from monai.utils import CommonKeys
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from shared_transforms.io.batch import output_writers
from shared_transforms.engine.bundle import activate_bundle
from shared_transforms.engine.loader import build_network, bundle_parser, bundle_weights
from shared_transforms.io.datalist import inference_items

logger = logging.getLogger(__name__)

#: config ids a request may not change: where the input, the output and the weights are, and what the server fixed
FIXED_IDS = frozenset(
    {"imports", "bundle_name", "bundle_root", "input_kind", "input_path", "output_dir", "dataset_dir", "datalist",
     "ckpt_path", "device", "preview", "network_def", "network"}
)


def _is_plain(value: Any) -> bool:
    """A value a request may set: a number, a flag, a word or a list of them (no expression, no reference)."""
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, str):
        return not value.startswith(("$", "@", "%"))
    return isinstance(value, (bool, int, float)) or value is None


class BundleInferTask(InferTask):
    """Serve ``bundles/<name>`` (one process may serve several: each call re-activates its bundle's ``scripts``).

    Args:
        bundle_root: the bundle's folder (``configs/inference.json``, ``models/``, ``scripts/``).
        device: where the network runs (``"cpu"``, ``"cuda"``; None: CUDA when available).
        overrides: config id -> value applied to every request (e.g. ``{"num_samples": 1}``).
    """

    def __init__(self, bundle_root: str | os.PathLike, device: str | None = None, overrides: dict | None = None):
        self.bundle_root = Path(bundle_root).resolve()
        self.name = self.bundle_root.name
        meta = json.loads((self.bundle_root / "configs" / "metadata.json").read_text())
        self.base_config = json.loads((self.bundle_root / "configs" / "inference.json").read_text())
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.defaults = dict(overrides or {})
        network_text = json.dumps(self.base_config.get("network_def", {}))
        # settings a request may change: plain top-level values that the network's shape does not depend on
        self.settings = {
            k: v
            for k, v in self.base_config.items()
            if k not in FIXED_IDS and _is_plain(v) and f"@{k}" not in network_text
        }
        unknown = sorted(set(self.defaults) - set(self.settings))
        if unknown:
            raise ValueError(f"{self.name}: cannot override {unknown}; settings: {sorted(self.settings)}")
        super().__init__(
            type=InferType.OTHERS,
            labels=None,
            dimension=3,
            description=f"{meta.get('name', self.name)} ({self.name} bundle v{meta.get('version', '?')}): "
            f"{meta.get('description', '')}",
            config={**self.settings, **self.defaults},
        )
        self._lock = threading.Lock()  # one request at a time per bundle (the network and sys.path are shared)
        parser = self._parser({}, output_dir=tempfile.gettempdir())
        activate_bundle(self.bundle_root)
        self.weights = bundle_weights(parser)
        self.network = build_network(parser, self.weights, "network")
        logger.info(f"{self.name}: network on {self.device}, weights {self.weights}")

    def _parser(self, params: dict, output_dir: str):
        """The bundle's inference config through the engine (:func:`shared_transforms.engine.loader.bundle_parser`),
        with this server's device, a temporary output folder, no preview and the request's settings."""
        parser = bundle_parser(self.bundle_root, "inference.json", {**self.defaults, **params}, self.device)
        parser["output_dir"] = output_dir
        if "preview" in parser:
            parser["preview"] = False  # the server returns the volume; a PNG beside it would be left behind
        return parser

    def is_valid(self) -> bool:
        return (self.bundle_root / "configs" / "inference.json").is_file()

    def __call__(self, request: dict) -> tuple[str, dict]:
        """``request["image"]``: the path MONAI Label gives (an upload's temporary copy, or a datastore image);
        other keys that name one of the bundle's settings change it for this request. Returns the written NIfTI
        (MONAI Label removes it once sent) and a JSON of what was done."""
        image = str(request["image"])
        params = {k: v for k, v in request.items() if k in self.settings}
        start = time.perf_counter()
        with self._lock, tempfile.TemporaryDirectory(prefix=f"lfmri_{self.name}_") as work:
            out_dir = os.path.join(work, "out")
            parser = self._parser(params, output_dir=out_dir)
            activate_bundle(self.bundle_root)
            parser.get_parsed_content("initialize", instantiate=True)  # the bundle's own checks and seeding
            kind = parser.get_parsed_content("input_kind")
            (item,) = inference_items(image, kind=kind)
            preprocessing = parser.get_parsed_content("preprocessing")
            inferer = parser.get_parsed_content("inferer")
            postprocessing = parser.get_parsed_content("postprocessing")
            data = preprocessing(dict(item))
            with torch.inference_mode():
                inputs = data[CommonKeys.IMAGE][None].to(self.device)
                pred = inferer(inputs, self.network)
            postprocessing({**data, CommonKeys.PRED: pred[0]})  # the evaluator's decollated item
            written = [w for t in output_writers(postprocessing) for w in getattr(t, "written", [])]
            if not written:
                raise RuntimeError(f"{self.name}: the postprocessing wrote no file for {image}")
            # the first file is the prediction; keep it beyond the temporary folder, MONAI Label deletes it
            suffix = ".nii.gz" if written[0].endswith(".nii.gz") else Path(written[0]).suffix
            fd, result = tempfile.mkstemp(prefix=f"{Path(written[0]).name.split('.')[0]}_", suffix=suffix)
            os.close(fd)
            shutil.move(written[0], result)
        seconds = time.perf_counter() - start
        info = {"bundle": self.name, "seconds": round(seconds, 3), "device": str(self.device),
                "settings": {k: parser[k] for k in self.settings}, "also_written": [Path(w).name for w in written[1:]]}
        logger.info(f"{self.name}: {image} -> {result} in {seconds:.1f} s")
        return result, info
