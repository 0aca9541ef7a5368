"""Fixed-step ODE solvers for dx/dt = v(x, t), and the time grids they step on.

Shared because several bundles integrate an ODE: cfm's flow from the source (t = 0) to the image (t = 1), flat's
unrolled cascades (one Euler step per cascade on a warped grid from t = 1 down to t = 0), and the diffusion
samplers' deterministic few-step paths. The network stays outside: a solver only sees ``velocity_fn(x, t)``.

Time grids (:func:`time_grid`, ``num_steps + 1`` points from ``start`` to ``end``):

- ``uniform``: t_i = start + (end - start) i / N (cfm, as the authors' sampler: t_i = i dt).
- ``power``: t_i = start + (end - start) (1 - (1 - i/N)^(1 + alpha)); with start = 1, end = 0 this is
  tau_i = (1 - i/N)^(1 + alpha), the grid of flat (Qi et al. 2025): steps shrink towards ``end``.

Solvers, with h_i = t_{i+1} - t_i (negative when integrating backwards in time):

- ``euler`` (the CFM authors' sampler): x <- x + h v(x, t_i).                                  1 evaluation/step
- ``midpoint`` (explicit RK2): x <- x + h v(x + h/2 v(x, t_i), t_i + h/2).                     2 evaluations/step
- ``heun`` (explicit trapezoid, RK2): x~ = x + h v(x, t_i); x <- x + h/2 (v(x, t_i) + v(x~, t_{i+1})).
  The standard method with 2 evaluations in every step, the last included (no EDM-style last-step shortcut).
  Measured in cfm's step study (bundles/cfm/docs/README.md): poor with few steps. With the independent coupling of
  the CFM recipe the ideal velocity at t = 1 is v(x, 1) = x - E[x0] = x (the source is forgotten), so a 1-step Heun
  solve returns E[x1 | x_low] + x0 / 2: half the source noise stays. Euler never evaluates t = 1.

Local error O(h^2) per step for Euler, O(h^3) for midpoint/Heun: global error O(h) and O(h^2).
For a velocity constant along the path (the exact straight-path velocity x1 - x0) every method is exact in 1 step.

Written here (torchdiffeq / torchcfm would add a dependency for three loops; MONAI's schedulers step a diffusion or
rectified-flow model, Euler only, on a float16 time grid): no graphs are kept (each velocity is detached), and the
state and the one intermediate buffer are allocated once per solve and updated in place.
``torch.inference_mode()`` / ``torch.no_grad()`` around the call is the caller's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Optional

import torch

__all__ = ["METHODS", "SCHEDULES", "evaluations", "time_grid", "solve", "euler", "midpoint", "heun"]

METHODS = ("euler", "midpoint", "heun")
SCHEDULES = ("uniform", "power")
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, float, torch.Tensor], None]
_EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2}


def evaluations(method: str, num_steps: int) -> int:
    """Velocity (network) evaluations of ``solve(..., num_steps, method)``: euler N, midpoint 2N, heun 2N."""
    _check(method, num_steps)
    return _EVALS_PER_STEP[method] * num_steps


def _check(method: str, num_steps: int) -> None:
    if method not in _EVALS_PER_STEP:
        raise ValueError(f"Unknown ODE solver {method!r}: use one of {METHODS}.")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")


def time_grid(
    num_steps: int, schedule: str = "uniform", alpha: float = 0.0, start: float = 0.0, end: float = 1.0
) -> list[float]:
    """The ``num_steps + 1`` times t_0 = start, ..., t_N = end of a fixed-step solve (see the module docstring).

    Args:
        schedule: "uniform" or "power" (steps shrink towards ``end`` for alpha > 0; alpha = 0 is uniform).
        alpha: the exponent's excess, >= 0 (power only).
    Returns:
        Python floats (exact for the uniform grid: t_i = start + i (end - start) / N).
    """
    _check("euler", num_steps)
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown time schedule {schedule!r}: use one of {SCHEDULES}.")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}.")
    span = end - start
    if schedule == "uniform" or alpha == 0:
        dt = span / num_steps
        return [start + i * dt for i in range(num_steps)] + [float(end)]
    return [start + span * (1.0 - (1.0 - i / num_steps) ** (1.0 + alpha)) for i in range(num_steps)] + [float(end)]


def _velocity(velocity_fn: VelocityFn, x: torch.Tensor, t: float) -> torch.Tensor:
    """v(x, t) with t as a (B,) tensor of x's dtype/device; detached, shape-checked."""
    t_vec = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    v = velocity_fn(x, t_vec)
    if v.shape != x.shape:
        raise ValueError(f"velocity_fn returned shape {list(v.shape)} for a state of shape {list(x.shape)}.")
    return v.detach()


def solve(
    velocity_fn: VelocityFn,
    x0: torch.Tensor,
    num_steps: int,
    method: str = "euler",
    callback: Optional[Callback] = None,
    grid: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """Integrate dx/dt = velocity_fn(x, t) over ``grid`` (default: ``num_steps`` equal steps from t = 0 to 1).

    Args:
        velocity_fn: v(x, t) with x of the shape of x0 and t a (B,) tensor; e.g. cfm's ``ConditionalVelocity``.
        x0: the state at ``grid[0]``, (B, ...); not modified.
        num_steps: number of steps (evaluations: see ``evaluations``).
        method: "euler", "midpoint" or "heun".
        callback: optional ``callback(step, t, x)`` after each step (step 0-based, t = grid[step + 1]);
            x is the live state, clone it to keep it.
        grid: ``num_steps + 1`` times (:func:`time_grid`); default ``time_grid(num_steps)``.

    Returns:
        x at ``grid[-1]``, same shape, dtype and memory format as x0.
    """
    _check(method, num_steps)
    grid = time_grid(num_steps) if grid is None else [float(t) for t in grid]
    if len(grid) != num_steps + 1:
        raise ValueError(f"grid has {len(grid)} times, expected num_steps + 1 = {num_steps + 1}.")
    x = x0.detach().clone()
    buffer = torch.empty_like(x) if method != "euler" else x
    for i in range(num_steps):
        t, h = grid[i], grid[i + 1] - grid[i]
        k1 = _velocity(velocity_fn, x, t)
        if method == "euler":
            x.add_(k1, alpha=h)
        elif method == "midpoint":
            torch.add(x, k1, alpha=0.5 * h, out=buffer)
            k2 = _velocity(velocity_fn, buffer, t + 0.5 * h)
            x.add_(k2, alpha=h)
        else:  # heun
            torch.add(x, k1, alpha=h, out=buffer)
            k2 = _velocity(velocity_fn, buffer, grid[i + 1])
            x.add_(k1, alpha=0.5 * h).add_(k2, alpha=0.5 * h)
        if callback is not None:
            callback(i, grid[i + 1], x)
    return x


def euler(velocity_fn: VelocityFn, x0: torch.Tensor, num_steps: int, callback: Optional[Callback] = None):
    """Forward Euler, the CFM authors' sampler: ``solve(..., method="euler")``."""
    return solve(velocity_fn, x0, num_steps, "euler", callback)


def midpoint(velocity_fn: VelocityFn, x0: torch.Tensor, num_steps: int, callback: Optional[Callback] = None):
    """Explicit midpoint (RK2), 2 evaluations per step: ``solve(..., method="midpoint")``."""
    return solve(velocity_fn, x0, num_steps, "midpoint", callback)


def heun(velocity_fn: VelocityFn, x0: torch.Tensor, num_steps: int, callback: Optional[Callback] = None):
    """Heun (explicit trapezoid, RK2), 2 evaluations in every step: ``solve(..., method="heun")``."""
    return solve(velocity_fn, x0, num_steps, "heun", callback)
