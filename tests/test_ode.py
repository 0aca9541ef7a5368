"""The shared ODE solvers and time grids (``shared_transforms.inference.ode``): order, exactness, grids, evaluation
counts."""

from __future__ import annotations

import math

import pytest
import torch

from shared_transforms.inference import ode

def _linear_ode_error(method: str, num_steps: int, a: float = 1.3) -> float:
    x0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    x1 = ode.solve(lambda x, t: a * x, x0, num_steps, method)
    return (x1 - x0 * math.exp(a)).abs().max().item()


@pytest.mark.parametrize("method, order", [("euler", 1), ("midpoint", 2), ("heun", 2)])
def test_solver_order_on_linear_ode(method, order):
    ratio = _linear_ode_error(method, 16) / _linear_ode_error(method, 32)
    assert ratio == pytest.approx(2.0**order, rel=0.1)


@pytest.mark.parametrize("method", ode.METHODS)
def test_exact_straight_velocity_reaches_x1_in_one_step(method):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
    x1 = torch.randn(2, 1, 8, 8, generator=g)
    x0_copy = x0.clone()
    out = ode.solve(lambda x, t: x1 - x0_copy, x0, 1, method)
    torch.testing.assert_close(out, x1)
    assert torch.equal(x0, x0_copy)  # the solver works on its own copy


def test_euler_uses_the_authors_time_grid_and_keeps_x0():
    # dx/dt = 2t: Euler on t_i = i dt gives sum 2 i dt^2 = (N - 1) / N, not 1 (or (N + 1) / N on a right grid)
    x0 = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    seen = []
    out = ode.euler(
        lambda x, t: 2 * t[:, None, None, None].expand_as(x), x0, 5, callback=lambda i, t, x: seen.append((i, t))
    )
    torch.testing.assert_close(out, torch.full_like(x0, 4.0 / 5.0))
    assert torch.equal(x0, torch.zeros_like(x0))
    assert [i for i, _ in seen] == list(range(5)) and seen[-1][1] == pytest.approx(1.0)


@pytest.mark.parametrize("method, per_step", [("euler", 1), ("midpoint", 2), ("heun", 2)])
def test_evaluation_counts(method, per_step):
    calls = []

    def v(x, t):
        assert t.shape == (x.shape[0],)
        calls.append(t[0].item())
        return -x

    ode.solve(v, torch.ones(2, 1, 4, 4), 7, method)
    assert len(calls) == ode.evaluations(method, 7) == per_step * 7
    assert min(calls) == 0.0 and max(calls) <= 1.0


def test_solver_bad_arguments():
    with pytest.raises(ValueError, match="Unknown ODE solver"):
        ode.solve(lambda x, t: x, torch.zeros(1, 1), 3, "rk4")
    with pytest.raises(ValueError, match="positive integer"):
        ode.evaluations("euler", 0)
    with pytest.raises(ValueError, match="returned shape"):
        ode.solve(lambda x, t: x[:, :1], torch.zeros(1, 2), 1)




def test_uniform_grid_is_the_cfm_authors_grid():
    assert ode.time_grid(4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert ode.time_grid(3, start=1.0, end=0.0) == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])


def test_power_grid_is_flats_tau():
    """tau_k = (1 - k/N)^(1 + alpha) from t = 1 to 0 (Qi et al. 2025): steps shrink towards t = 0."""
    n, alpha = 12, 0.5
    grid = ode.time_grid(n, "power", alpha, start=1.0, end=0.0)
    assert grid == pytest.approx([(1 - k / n) ** (1 + alpha) for k in range(n + 1)])
    steps = [a - b for a, b in zip(grid[:-1], grid[1:])]
    assert all(s > 0 for s in steps) and steps == sorted(steps, reverse=True)
    assert ode.time_grid(n, "power", 0.0) == ode.time_grid(n)


def test_solve_backwards_on_a_grid():
    """dx/dt = x from t = 1 to 0 on a fine power grid: x(0) = x(1) / e."""
    x1 = torch.tensor([[2.0]], dtype=torch.float64)
    grid = ode.time_grid(400, "power", 1.0, start=1.0, end=0.0)
    out = ode.solve(lambda x, t: x, x1, 400, "heun", grid=grid)
    assert out.item() == pytest.approx(2.0 / math.e, rel=1e-4)
    with pytest.raises(ValueError, match="expected num_steps"):
        ode.solve(lambda x, t: x, x1, 3, grid=[1.0, 0.0])
    with pytest.raises(ValueError, match="schedule"):
        ode.time_grid(3, "cosine")
