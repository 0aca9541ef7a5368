"""Issue 31.1: one way to load a bundle outside its runner (``shared_transforms.engine.loader``), used by the
benchmark, the MONAI Label app, the study scripts and the tests; no other code in ``tools/`` or a bundle's
``scripts/`` parses a bundle config or loads weights itself."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO

from shared_transforms.engine.checkpoint import read_state_dict
from shared_transforms.engine.loader import bundle_parser, bundle_weights, load_bundle
from shared_transforms.errors import InputError


def test_load_bundle_builds_the_network_with_its_weights_and_the_inferer():
    loaded = load_bundle(REPO / "bundles" / "unet", device="cpu")
    assert loaded.name == "unet" and loaded.weights.endswith("models/model.pt")
    assert not loaded.network.training and loaded.inferer is not None
    assert sum(p.numel() for p in loaded.network.parameters()) > 0
    none = load_bundle(REPO / "bundles" / "interpolation", device="cpu")
    assert none.weights is None  # a bundle without weights


def test_bad_requests_are_refused_in_one_line_naming_the_bundle(tmp_path):
    with pytest.raises(InputError, match="bundle 'cfm' has no config id 'no_such_id'"):
        bundle_parser(REPO / "bundles" / "cfm", overrides={"no_such_id": 1})
    parser = bundle_parser(REPO / "bundles" / "cfm", overrides={"num_steps": 1}, device="cpu")
    assert parser.get_parsed_content("num_steps") == 1 and parser["device"] == "cpu"
    with pytest.raises(InputError, match="checkpoint not found"):
        bundle_weights(parser, tmp_path / "missing.pt")
    with pytest.raises(InputError, match="has no weights"):
        bundle_weights(bundle_parser(REPO / "bundles" / "interpolation"), tmp_path / "w.pt")


def test_no_tool_or_bundle_script_loads_a_bundle_by_hand():
    files = [*(REPO / "tools").rglob("*.py"), *(REPO / "bundles").glob("*/scripts/*.py")]
    by_hand = [str(p.relative_to(REPO)) for p in files
               if any(call in p.read_text() for call in ("read_config(", "load_weights(", "ConfigParser("))]
    assert not by_hand, by_hand


def test_the_loaded_network_carries_the_shipped_weights():
    loaded = load_bundle(REPO / "bundles" / "cfm", device="cpu", network_id="network_def", inferer_id=None)
    shipped = read_state_dict(REPO / "bundles" / "cfm" / "models" / "model.pt")
    state = loaded.network.state_dict()
    assert state.keys() == shipped.keys() and all(torch.equal(state[k], shipped[k]) for k in shipped)
