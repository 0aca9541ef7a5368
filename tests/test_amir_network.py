"""Tests of the amir bundle's network (AMIR, arXiv 2405.19769; official code: the GitHub repository
Yaziwel/All-In-One-Medical-Image-Restoration-via-Task-Adaptive-Routing, ``model/Model_AMIR.py``).

Facts checked: the parameter count of the official default ``AMIR()``; shapes and the global residual; the
load-balancing loss (training only, reaches the gates); the routing record; determinism; input-size errors; the
expert combination rule of the official mixture of experts.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from conftest import REPO, load_bundle_scripts
from torch import nn


def _load_scripts():
    return load_bundle_scripts("amir")


_load_scripts()
from amir_bundle_scripts.network import AMIR, MDTA, ChannelLayerNorm, ChannelRouting, SpatialRouting

TINY = {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1, "heads": (1, 1, 1, 1)}


def _tiny(**kwargs) -> AMIR:
    torch.manual_seed(0)
    return AMIR(**{**TINY, **kwargs})


def _n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_default_parameter_count_is_official():
    assert _n_params(AMIR()) == 23_540_498


def test_shape_and_global_residual():
    net = _tiny().eval()
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        y = net(x)
        assert y.shape == x.shape
        nn.init.zeros_(net.output.weight)
        assert torch.equal(net(x), x)


def test_load_loss_trains_the_gates_and_is_zero_in_eval():
    net = _tiny().train()
    torch.manual_seed(1)
    _, loss = net.forward_with_loss(torch.randn(2, 1, 32, 32))
    assert loss is net.last_load_loss and loss.shape == () and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    for srm in (net.srm_enc1, net.srm_enc2, net.srm_enc3):
        assert srm.gate.w_gate.grad is not None and srm.gate.w_gate.grad.abs().sum() > 0
        assert srm.gate.w_noise.grad is not None and srm.gate.w_noise.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        _, loss = net.forward_with_loss(torch.randn(2, 1, 32, 32))
    assert loss.item() == 0.0 and net.last_load_loss.item() == 0.0


def test_routing_record():
    net = _tiny(top_k=2, num_experts=4).eval()
    with torch.no_grad():
        y = net(torch.randn(3, 1, 32, 32))
    atoms = net.last_routing["atoms"]
    assert atoms.shape == (3, 32) and (atoms >= 0).all()
    torch.testing.assert_close(atoms.sum(1), torch.ones(3))
    assert len(net.last_routing["expert_load"]) == 3 and len(net.last_routing["expert_importance"]) == 3
    for load, importance in zip(net.last_routing["expert_load"], net.last_routing["expert_importance"]):
        assert load.shape == importance.shape == (4,)
        torch.testing.assert_close(load.sum(), torch.tensor(2.0))
        torch.testing.assert_close(importance.sum(), torch.tensor(1.0))
    assert not y.requires_grad


def test_eval_is_deterministic_and_training_noise_is_seeded():
    net = _tiny()
    x = torch.randn(1, 1, 16, 24)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
        net.train()
        torch.manual_seed(7)
        a = net(x)
        torch.manual_seed(7)
        b = net(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(1, 1, 36, 32), (1, 1, 32, 20)])
def test_size_not_divisible_by_8_is_refused(shape):
    with pytest.raises(ValueError, match="divisible by 8"):
        _tiny()(torch.randn(*shape))


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="heads"):
        AMIR(dim=6, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(4, 1, 1, 1))
    with pytest.raises(ValueError, match="top_k"):
        AMIR(**TINY, top_k=5)


def test_experts_combine_as_the_official_log_sum_exp():
    # official SparseDispatcher.combine: log(sum_k gate_k * exp(expert_k(pixel))), only the top-k experts per pixel
    torch.manual_seed(0)
    srm = SpatialRouting(dim=6, instruction_dim=5, ffn_expansion_factor=2.0, num_experts=3, top_k=2).eval()
    x, instruction = torch.randn(2, 6, 3, 4), torch.randn(2, 5)
    with torch.no_grad():
        out, loss, _, _ = srm(x, instruction)
        tokens = x.permute(0, 2, 3, 1).reshape(-1, 6)
        prompt = srm.fc(instruction).repeat_interleave(12, dim=0)
        gates = srm.gate(torch.cat([tokens, prompt], 1))[0]
        assert ((gates > 0).sum(1) == 2).all()
        dense = torch.stack([e(tokens) for e in srm.experts], 1)  # (N, E, C)
        want = torch.log((gates[:, :, None] * dense.exp()).sum(1)).reshape(2, 3, 4, 6).permute(0, 3, 1, 2) + x
    torch.testing.assert_close(out, want)
    assert loss.item() == 0.0


def test_channel_routing_starts_as_identity():
    crm = ChannelRouting(dim=4, instruction_dim=3)
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(crm(x, torch.randn(2, 3)), x)


@pytest.mark.parametrize("with_bias", [True, False])
def test_channel_layer_norm_is_the_official_formula(with_bias):
    """The official WithBias_LayerNorm / BiasFree_LayerNorm over each pixel's channels, written out: (x - mean) /
    sqrt(var + 1e-5) * w + b (biased variance), or x / sqrt(var + 1e-5) * w; also on a channels-last tensor."""
    torch.manual_seed(0)
    norm = ChannelLayerNorm(6, with_bias=with_bias)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        if with_bias:
            norm.bias.uniform_(-1.0, 1.0)
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    mean, var = x.mean(1, keepdim=True), x.var(1, keepdim=True, unbiased=False)
    w = norm.weight[:, None, None]
    want = (x - mean) / torch.sqrt(var + 1e-5) * w + norm.bias[:, None, None] if with_bias else \
        x / torch.sqrt(var + 1e-5) * w
    with torch.no_grad():
        torch.testing.assert_close(norm(x), want)
        torch.testing.assert_close(norm(x.contiguous(memory_format=torch.channels_last)), want)


def test_mdta_computes_the_official_channel_attention():
    """MONAI's CABlock, as used, equals the official Attention written out directly (per head, L2-normalised q and
    k along the pixels, softmax(q k^T * temperature) v)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    attn = MDTA(dim=8, num_heads=2, bias=False)
    with torch.no_grad():
        attn.temperature.uniform_(0.5, 2.0)
    x = torch.randn(2, 8, 6, 5)
    b, c, h, w = x.shape
    with torch.no_grad():
        q, k, v = attn.qkv_dwconv(attn.qkv(x)).chunk(3, dim=1)
        q = F.normalize(q.reshape(b, 2, c // 2, h * w), dim=-1)
        k = F.normalize(k.reshape(b, 2, c // 2, h * w), dim=-1)
        weights = ((q @ k.transpose(-2, -1)) * attn.temperature).softmax(dim=-1)
        want = attn.project_out((weights @ v.reshape(b, 2, c // 2, h * w)).reshape(b, c, h, w))
        torch.testing.assert_close(attn(x), want)


def test_routed_l1_loss_adds_the_weighted_load_loss_and_trains_the_gates():
    """The authors' training loss, L1 + 1e-3 * load loss, through MONAI's SupervisedTrainer (one iteration): the
    value is the sum of the two terms, and the step changes the gating weights (the load term reaches them)."""
    from monai.engines import SupervisedTrainer

    scripts = _load_scripts()
    training = importlib.import_module(f"{scripts.__name__}.training")
    torch.manual_seed(0)
    net = scripts.network.AMIR(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 1, 1))
    loss = training.RoutedL1Loss(net)
    assert loss.load_weight == scripts.network.OFFICIAL_LOAD_LOSS_WEIGHT == 1e-3
    x, y = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    net.train()
    value = loss(net(x), y)
    assert value.item() == pytest.approx(loss.last_l1 + 1e-3 * loss.last_load) and loss.last_load > 0
    assert not list(loss.parameters())  # the network is not saved twice as part of the loss
    gates = {n: p.detach().clone() for n, p in net.named_parameters() if "gate" in n}
    assert gates
    data = [{"image": x, "label": y}]
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=data, network=net,
                                optimizer=torch.optim.Adam(net.parameters(), 1e-3), loss_function=loss)
    trainer.run()
    assert any(not torch.equal(p, gates[n]) for n, p in net.named_parameters() if n in gates)
    with pytest.raises(ValueError, match="load_weight"):
        training.RoutedL1Loss(net, load_weight=-1)


def test_routing_study_records_atoms_and_expert_load_per_condition(tmp_path):
    """tools/studies/amir_routing.py: slices of any size are padded to a multiple of 8; the mean atom weights are a distribution
    over the atoms, each SRM's expert load sums to top_k; the summary measures each condition against the reference
    (the same atoms: distance 0) and writes the plot."""
    import numpy as np

    sys.path.insert(0, str(REPO / "tools"))
    from studies import amir_routing as routing

    net = _tiny().eval()
    r = routing.routing_of(net, torch.rand(3, 1, 20, 27))
    assert r["atoms"].shape == (32,) and r["atoms"].sum() == pytest.approx(1.0, abs=1e-5)
    assert r["expert_load"].shape == (3, 4) and np.allclose(r["expert_load"].sum(1), 2.0)
    other = routing.routing_of(net, torch.rand(3, 1, 20, 27) ** 4)
    result = {routing.REFERENCE_CONDITION: r, "snr_4": other}
    rows = {row["condition"]: row for row in routing.summary_rows(result)}
    assert rows[routing.REFERENCE_CONDITION]["tv_from_reference"] == 0.0
    assert 0.0 <= rows["snr_4"]["tv_from_reference"] <= 1.0
    assert 0.0 < rows["snr_4"]["entropy_bits"] <= np.log2(32) + 1e-6
    path = routing.plot(result, str(tmp_path / "routing.png"))
    assert (tmp_path / "routing.png").stat().st_size > 0 and path.endswith("routing.png")
    with pytest.raises(Exception, match="not a folder"):
        routing.conditions_in(str(tmp_path / "missing"))
