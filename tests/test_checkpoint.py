"""Weights: shipping, loading with the contract's errors, and finding the state to resume from."""

from __future__ import annotations

import json
import os

import pytest
import torch

from shared_transforms.engine.checkpoint import (
    ZOO_FILE_LIMIT_BYTES,
    export_weights,
    latest_training_state,
    load_weights,
    read_state_dict,
)
from shared_transforms.errors import InputError


def test_export_is_a_plain_state_dict_and_loads_back(tmp_path):
    net = torch.nn.Conv2d(2, 3, 3)
    torch.save({"model": net.state_dict(), "optimizer": {}}, tmp_path / "ckpt.pt")  # MONAI's training layout
    out = export_weights(tmp_path / "ckpt.pt", tmp_path / "models" / "model.pt")
    state = torch.load(out, weights_only=True)
    assert set(state) == {"weight", "bias"} and state["weight"].dtype == torch.float32
    other = load_weights(torch.nn.Conv2d(2, 3, 3), out)
    assert torch.equal(other.weight, net.weight)
    assert not os.path.exists(out + ".tmp")


def test_large_export_is_float16_and_loads_into_float32(tmp_path):
    net = torch.nn.Linear(ZOO_FILE_LIMIT_BYTES // 4 // 1024 + 8, 1024, bias=False)  # just over 25 MB in float32
    out = export_weights(net.state_dict(), tmp_path / "model.pt")
    assert torch.load(out, weights_only=True)["weight"].dtype == torch.float16
    assert os.path.getsize(out) < ZOO_FILE_LIMIT_BYTES
    loaded = load_weights(torch.nn.Linear(net.in_features, 1024, bias=False), out)
    assert loaded.weight.dtype == torch.float32
    assert torch.allclose(loaded.weight, net.weight, atol=1e-3)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="checkpoint not found"):
        read_state_dict(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint") as info:
        read_state_dict(tmp_path / "junk.pt")
    assert str(tmp_path / "junk.pt") in str(info.value)
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(InputError, match="does not fit the network Conv2d"):
        load_weights(torch.nn.Conv2d(2, 3, 3), tmp_path / "other.pt")


def test_resume_finds_the_newest_training_state(tmp_path):
    final = tmp_path / "checkpoint.pt"
    assert latest_training_state(tmp_path / "absent") == str(tmp_path / "absent" / "checkpoint.pt")
    assert latest_training_state(tmp_path) == str(final)  # nothing yet: the loader will say it is missing
    for epoch in (3, 12):  # a run killed after epoch 12: only the interval saves exist
        torch.save({}, tmp_path / f"checkpoint_epoch={epoch}.pt")
    assert latest_training_state(tmp_path) == str(tmp_path / "checkpoint_epoch=12.pt")
    torch.save({}, final)  # the run then ended normally: its final state is the newest
    os.utime(final, (os.path.getmtime(tmp_path / "checkpoint_epoch=12.pt") + 1,) * 2)
    assert latest_training_state(tmp_path) == str(final)


def test_shipped_weights_carry_a_checksum_that_is_checked_at_load(tmp_path):
    """A flipped byte in a bundle's models/model.pt is refused with the file named, not loaded as garbage."""
    from shared_transforms.engine.checkpoint import export_weights, load_weights, verify_checksum, write_large_files
    from shared_transforms.errors import InputError

    net = torch.nn.Linear(4, 3)
    weights = tmp_path / "bundle" / "models" / "model.pt"
    export_weights(net.state_dict(), weights)
    assert not verify_checksum(weights)  # no large_files.yml yet: nothing to check
    write_large_files(tmp_path / "bundle")
    assert verify_checksum(weights)
    load_weights(torch.nn.Linear(4, 3), weights)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"model\.pt: sha256 checksum .* differs from .*large_files\.yml"):
        load_weights(torch.nn.Linear(4, 3), weights)
    export_weights(net.state_dict(), weights)  # re-exporting the bundle's file updates its checksum
    assert verify_checksum(weights)


def test_a_second_shipped_file_keeps_its_checksum_when_the_first_is_re_exported(tmp_path):
    """A bundle that ships a baseline's weights beside models/model.pt (flat): both stay listed and checked."""
    from shared_transforms.engine.checkpoint import export_weights, verify_checksum, write_large_files
    from shared_transforms.errors import InputError

    root = tmp_path / "bundle"
    main, other = root / "models" / "model.pt", root / "models" / "model_baseline.pt"
    export_weights(torch.nn.Linear(4, 3).state_dict(), main)
    export_weights(torch.nn.Linear(2, 2).state_dict(), other)
    write_large_files(root, ("models/model.pt", "models/model_baseline.pt"))
    export_weights(torch.nn.Linear(4, 3).state_dict(), main)  # new weights for the main file
    assert verify_checksum(main) and verify_checksum(other)
    other.write_bytes(other.read_bytes()[:-1] + b"x")
    with pytest.raises(InputError, match=r"model_baseline\.pt: sha256 checksum"):
        verify_checksum(other)


def test_a_resumed_run_keeps_its_best_model(tmp_path):
    """The best score is part of the training state: after a resume, a worse validation leaves model.pt alone and
    a better one replaces it."""
    from ignite.engine import Engine, Events
    from monai.handlers import CheckpointSaver

    from shared_transforms.engine.checkpoint import BestModelState

    net = torch.nn.Linear(1, 1)

    def validate(scores):
        saver = CheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="psnr",
                                key_metric_filename="model.pt")
        engine = Engine(lambda e, b: None)
        it = iter(scores)

        @engine.on(Events.EPOCH_COMPLETED)
        def _score(e):  # the validation's key metric, before the saver looks at it
            e.state.metrics["psnr"] = next(it)

        saver.attach(engine)
        return saver, engine

    saver, engine = validate([20.0])
    with torch.no_grad():
        net.weight.fill_(1.0)
    engine.run([0], max_epochs=1)
    state = BestModelState(saver).state_dict()
    assert os.path.isfile(tmp_path / "model.pt")

    resumed, engine = validate([18.0, 21.0])
    BestModelState(resumed).load_state_dict(state)
    with torch.no_grad():
        net.weight.fill_(2.0)
    engine.run([0], max_epochs=1)  # worse: the epoch-1 weights stay
    assert float(torch.load(tmp_path / "model.pt", weights_only=True)["weight"]) == 1.0
    engine.run([0], max_epochs=2)  # better: replaced
    assert float(torch.load(tmp_path / "model.pt", weights_only=True)["weight"]) == 2.0
    with pytest.raises(ValueError, match="save_key_metric"):
        BestModelState(CheckpointSaver(str(tmp_path), {"model": net}, save_final=True))


def test_a_run_resumes_only_its_own_training_state(tmp_path, capsys):
    """--resume true never continues another run's state, and a fresh run never replaces an earlier run's results."""
    from shared_transforms.engine.checkpoint import claim_run

    ours = {"bundle": "unet", "datalist": "/data/a.json", "network": "UNet(" + "x" * 100 + ")"}
    run_file = claim_run(tmp_path, ours, resume=False)
    with open(run_file) as f:
        assert json.load(f)["identity"]["network"].startswith("sha256:")
    torch.save({}, tmp_path / "checkpoint_epoch=3.pt")
    assert claim_run(tmp_path, ours, resume="true") == run_file  # the same run: resumed
    with pytest.raises(InputError, match=r"another run \(datalist: this run '/data/b.json', the folder's '/data/a"):
        claim_run(tmp_path, {**ours, "datalist": "/data/b.json"}, resume=True)
    with pytest.raises(InputError, match="earlier run .*checkpoint_epoch=3.pt.*nothing was overwritten"):
        claim_run(tmp_path, ours, resume=False)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save({}, legacy / "checkpoint.pt")  # a state from before run.json existed: resumed, with a note
    claim_run(legacy, ours, resume=True)
    assert "has no run.json" in capsys.readouterr().out


def test_training_never_replaces_weights_it_did_not_write(tmp_path):
    """Issue 29.1: a fresh run (or --resume true with nothing to resume) into a folder holding a model.pt (the
    shipped weights, a user's file) is refused in one line before anything is written."""
    from shared_transforms.engine.checkpoint import claim_run

    ours = {"bundle": "unet", "datalist": "/data/a.json", "network": "UNet()"}
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"someone's weights")
    for resume in (False, True):
        with pytest.raises(InputError, match="holds model.pt, which this training run did not write") as info:
            claim_run(tmp_path, ours, resume=resume)
        assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)
    assert weights.read_bytes() == b"someone's weights" and not (tmp_path / "run.json").exists()
    own = tmp_path / "own"
    claim_run(own, ours, resume=False)  # the run's own model.pt, later, is resumed as before
    (own / "model.pt").write_bytes(b"ours")
    torch.save({}, own / "checkpoint.pt")
    claim_run(own, ours, resume=True)


@pytest.mark.slow
def test_training_into_the_shipped_weights_folder_is_refused_through_the_runner(tmp_path):
    """The issue's own command: training with --output_dir bundles/unet/models stops before the first epoch with
    one line, and the shipped weights are untouched."""
    import hashlib
    import subprocess
    import sys

    from conftest import REPO, tiny_subjects

    shipped = REPO / "bundles" / "unet" / "models" / "model.pt"
    before = hashlib.sha256(shipped.read_bytes()).hexdigest()
    (tmp_path / "data").mkdir()
    data = tiny_subjects(tmp_path / "data", 3, (1, 1, 1))
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/unet/configs/train.json",
         "--datalist", data["datalist"], "--max_epochs", "1", "--val_interval", "1",
         "--output_dir", str(shipped.parent)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    last = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()][-1]
    assert proc.returncode != 0 and "holds model.pt, which this training run did not write" in last, last
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == before
    assert not (shipped.parent / "run.json").exists()
