"""A MONAI Label app that serves this repository's bundles: send a low-field NIfTI, get the enhanced NIfTI back.

    bash tools/monailabel_env.sh                     # once: MONAI Label in its own environment (.venv-monailabel)
    .venv-monailabel/bin/monailabel start_server --app tools/monailabel_app --studies STUDIES_DIR \\
        --host 127.0.0.1 --port 8000 --conf bundles cfm,unet
    curl -X POST "http://127.0.0.1:8000/infer/cfm?output=image" -F "file=@scan.nii.gz" -o scan_cfm.nii.gz

``--conf`` values (all optional):

- ``bundles``: comma-separated bundle names, or ``all`` (default): every folder of ``bundles/`` with weights or no
  network to load. The infer endpoint's model name is the bundle's name.
- ``bundles_dir``: where the bundles are (default: this repository's ``bundles/``; an unpacked exported archive's
  parent folder works too).
- ``device``: ``cpu`` or ``cuda`` (default: CUDA when available).
- ``overrides``: a JSON object ``{"<bundle>": {"<config id>": value}}`` applied to every request of that bundle.

A request's ``params`` (the multipart form field) may set a bundle's run settings for that request, e.g.
``-F 'params={"num_steps": 4, "num_samples": 1}'`` for cfm; the response's JSON names what was used
(``?output=json`` returns it alone). Settings the network depends on cannot be changed per request.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from lib.bundle_infer import BundleInferTask
from monailabel.interfaces.app import MONAILabelApp

logger = logging.getLogger(__name__)

REPO_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def _servable(folder: Path) -> bool:
    """A bundle folder with an inference config whose weights are present (or that has no weights to load)."""
    config = folder / "configs" / "inference.json"
    if not config.is_file():
        return False
    uses_weights = '"ckpt_path"' in config.read_text()
    return not uses_weights or (folder / "models" / "model.pt").is_file()


class LowFieldApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.bundles_dir = Path(conf.get("bundles_dir") or REPO_BUNDLES).resolve()
        available = sorted(p.name for p in self.bundles_dir.iterdir() if p.is_dir() and _servable(p))
        wanted = conf.get("bundles", "all")
        self.bundle_names = available if wanted == "all" else [b.strip() for b in wanted.split(",") if b.strip()]
        missing = sorted(set(self.bundle_names) - set(available))
        if missing:
            raise ValueError(f"--conf bundles names {missing}, not servable bundles of {self.bundles_dir} "
                             f"(servable: {', '.join(available)})")
        self.device = conf.get("device") or None
        self.overrides = json.loads(conf.get("overrides") or "{}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="lowfield-mri-bundles",
            description="Low-field MRI enhancement and under-sampled MRI reconstruction (MONAI bundles)",
            version="0.1.0",
        )

    def init_infers(self):
        infers = {}
        for name in self.bundle_names:
            infers[name] = BundleInferTask(self.bundles_dir / name, self.device, self.overrides.get(name))
            logger.info(f"+++ serving bundle {name} from {self.bundles_dir / name}")
        return infers

    def init_trainers(self):
        return {}  # training runs through each bundle's train.json (see the bundle's docs)


if __name__ == "__main__":  # a quick local check without the server: python main.py SCAN [BUNDLE]
    import sys

    scan, bundle = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "cfm")
    app = LowFieldApp(os.path.dirname(__file__), os.path.dirname(os.path.abspath(scan)), {"bundles": bundle})
    print(app.infer({"model": bundle, "image": os.path.abspath(scan)}))
