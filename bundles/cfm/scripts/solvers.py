"""Fixed-step ODE solvers for dx/dt = v(x, t) from t = 0 (source) to t = 1 (image) (methods.md A.1).

With dt = 1 / num_steps and t_i = i dt, i = 0 .. num_steps - 1:

- ``euler`` (the authors' sampler [READ-code solver.py]): x <- x + dt v(x, t_i).                       1 evaluation/step
- ``midpoint`` (explicit RK2): x <- x + dt v(x + dt/2 v(x, t_i), t_i + dt/2).                         2 evaluations/step
- ``heun`` (explicit trapezoid, RK2): x~ = x + dt v(x, t_i); x <- x + dt/2 (v(x, t_i) + v(x~, t_i + dt)).
  The standard method with 2 evaluations in every step, the last included (no EDM-style last-step shortcut).
  Measured in the step study (docs/README.md): poor with few steps. With the independent coupling of the authors'
  recipe the ideal velocity at t = 1 is v(x, 1) = x - E[x0] = x (the source is forgotten), so a 1-step Heun solve
  returns E[x1 | x_low] + x0 / 2: half the source noise stays. Euler never evaluates t = 1.

Local error O(dt^2) per step for Euler, O(dt^3) for midpoint/Heun: global error O(dt) and O(dt^2).
For a velocity constant along the path (the exact straight-path velocity x1 - x0) every method is exact in 1 step.

Written here (torchdiffeq / torchcfm would add a dependency for three loops): no graphs are kept (each velocity is
detached), and the state and the one intermediate buffer are allocated once per solve and updated in place.
``torch.inference_mode()`` / ``torch.no_grad()`` around the call is the caller's business.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

__all__ = ["METHODS", "evaluations", "solve", "euler", "midpoint", "heun"]

METHODS = ("euler", "midpoint", "heun")
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
) -> torch.Tensor:
    """Integrate dx/dt = velocity_fn(x, t) from t = 0 to t = 1 in ``num_steps`` equal steps.

    Args:
        velocity_fn: v(x, t) with x of the shape of x0 and t a (B,) tensor; e.g. ``flow.ConditionalVelocity``.
        x0: source sample at t = 0, (B, ...); not modified.
        num_steps: number of steps (evaluations: see ``evaluations``).
        method: "euler" (authors), "midpoint" or "heun".
        callback: optional ``callback(step, t, x)`` after each step (step 0-based, t = (step + 1) / num_steps);
            x is the live state, clone it to keep it.

    Returns:
        x at t = 1, same shape, dtype and memory format as x0.
    """
    _check(method, num_steps)
    dt = 1.0 / num_steps
    x = x0.detach().clone()
    buffer = torch.empty_like(x) if method != "euler" else x
    for i in range(num_steps):
        t = i * dt  # the authors' grid: t = i * dt
        k1 = _velocity(velocity_fn, x, t)
        if method == "euler":
            x.add_(k1, alpha=dt)
        elif method == "midpoint":
            torch.add(x, k1, alpha=0.5 * dt, out=buffer)
            k2 = _velocity(velocity_fn, buffer, t + 0.5 * dt)
            x.add_(k2, alpha=dt)
        else:  # heun
            torch.add(x, k1, alpha=dt, out=buffer)
            k2 = _velocity(velocity_fn, buffer, t + dt)
            x.add_(k1, alpha=0.5 * dt).add_(k2, alpha=0.5 * dt)
        if callback is not None:
            callback(i, (i + 1) * dt, x)
    return x


def euler(velocity_fn: VelocityFn, x0: torch.Tensor, num_steps: int, callback: Optional[Callback] = None):
    """Forward Euler, as the authors' sampler (methods.md A.1): ``solve(..., method="euler")``."""
    return solve(velocity_fn, x0, num_steps, "euler", callback)


def midpoint(velocity_fn: VelocityFn, x0: torch.Tensor, num_steps: int, callback: Optional[Callback] = None):
    """Explicit midpoint (RK2), 2 evaluations per step: ``solve(..., method="midpoint")``."""
    return solve(velocity_fn, x0, num_steps, "midpoint", callback)


def heun(velocity_fn: VelocityFn, x0: torch.Tensor, num_steps: int, callback: Optional[Callback] = None):
    """Heun (explicit trapezoid, RK2), 2 evaluations in every step: ``solve(..., method="heun")``."""
    return solve(velocity_fn, x0, num_steps, "heun", callback)
