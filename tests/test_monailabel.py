"""Issue 13.3: the MONAI Label round trip. A MONAI Label server on 127.0.0.1 serves the cfm bundle
(``tools/monailabel_app``); the shipped sample goes to its infer endpoint, and the NIfTI that comes back must have
the bundle runner's geometry and values.

MONAI Label lives in its own virtual environment (``tools/monailabel_env.sh``; it cannot share this project's numpy
2), found at ``$LFMRI_MONAILABEL_VENV`` or ``.venv-monailabel`` in the repository; ``.ci/run`` makes it. Without it
the test is skipped and says how to make it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("LFMRI_MONAILABEL_VENV", REPO / ".venv-monailabel"))
SERVER = VENV / "bin" / "monailabel"
SAMPLE = REPO / "shared_transforms" / "sample_data" / "sample_low.nii.gz"
#: the run's settings, small so the round trip stays short: one sample set by the server's --conf, one step by the
#: request's params (both ways of setting a bundle's settings are exercised)
SERVER_OVERRIDES = {"cfm": {"num_samples": 1}}
REQUEST_PARAMS = {"num_steps": 1}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not SERVER.is_file(), reason=f"monailabel is absent ({SERVER} not found): run bash tools/monailabel_env.sh"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path):
    requests = pytest.importorskip("requests")
    port = _free_port()
    studies = tmp_path / "studies"
    studies.mkdir()
    app = tmp_path / "app"  # MONAI Label writes logs/, model/ and bin/ into the app's folder: not into the repository
    shutil.copytree(REPO / "tools" / "monailabel_app", app, ignore=shutil.ignore_patterns("logs", "model", "bin"))
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 (closed below, after the server has stopped)
    cmd = [str(SERVER), "start_server", "--app", str(app), "--studies", str(studies), "--host", "127.0.0.1",
           "--port", str(port), "--conf", "bundles", "cfm", "--conf", "bundles_dir", str(REPO / "bundles"),
           "--conf", "device", "cpu", "--conf", "overrides", json.dumps(SERVER_OVERRIDES, separators=(",", ":"))]
    # the monailabel script runs ``python -m monailabel.main``: its environment's python must come first on PATH
    path = f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    env = dict(os.environ, PATH=path, VIRTUAL_ENV=str(VENV), OMP_NUM_THREADS="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the MONAI Label server exited ({proc.returncode}):\n{_tail(tmp_path / 'server.log')}")
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.time() > deadline:
                pytest.fail(f"the MONAI Label server did not answer in 300 s:\n{_tail(tmp_path / 'server.log')}")
            time.sleep(2)
        yield url, requests, tmp_path / "server.log"
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)  # the server and any worker it started
                proc.wait(timeout=30)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:]


def test_monailabel_serves_cfm_like_the_bundle_runner(server, tmp_path):
    url, requests, log = server
    info = requests.get(f"{url}/info/", timeout=30).json()
    assert "cfm" in info["models"], info["models"]
    assert info["models"]["cfm"]["config"]["num_samples"] == 1  # the server's --conf overrides
    with open(SAMPLE, "rb") as f:
        resp = requests.post(f"{url}/infer/cfm", params={"output": "image"}, timeout=600,
                             files={"file": ("sample_low.nii.gz", f)}, data={"params": json.dumps(REQUEST_PARAMS)})
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text[:2000]}\n{_tail(log)}"
    served = tmp_path / "served.nii.gz"
    served.write_bytes(resp.content)

    runner_dir = tmp_path / "runner"
    settings = {**SERVER_OVERRIDES["cfm"], **REQUEST_PARAMS}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/cfm/configs/inference.json",
           "--input_path", str(SAMPLE), "--output_dir", str(runner_dir), "--device", "cpu", "--preview", "false",
           *[a for k, v in settings.items() for a in (f"--{k}", str(v))]]
    env = dict(os.environ, OMP_NUM_THREADS="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    a, b = nib.load(served), nib.load(runner_dir / "sample_low_cfm.nii.gz")
    assert a.shape == b.shape and np.allclose(a.affine, b.affine, atol=1e-5)
    x, y = a.get_fdata(), b.get_fdata()
    assert np.isfinite(x).all() and x.std() > 0
    # the server's environment has numpy 1.x (tools/monailabel_env.sh); the network and transforms are the same
    print(f"served vs runner: max |difference| {np.abs(x - y).max():.2e}, {resp.headers.get('content-length')} bytes")
    assert np.abs(x - y).max() < 1e-3, f"max |served - runner| = {np.abs(x - y).max():.2e}"
