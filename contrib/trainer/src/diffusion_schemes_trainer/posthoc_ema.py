"""EDM2's post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", sec. 3 and appendix C): choose the EMA length after training.

A **power-function EMA** with exponent ``gamma`` updates, after optimiser step ``t = 1, 2, ...``,

    ``ema_t = beta_t ema_(t-1) + (1 - beta_t) theta_t``,  ``beta_t = (1 - 1/t)^(gamma + 1)``  (EDM2 eq. 4).

Unrolled, ``ema_T = sum_tau w_tau theta_tau`` with ``w_tau = (tau^(gamma+1) - (tau-1)^(gamma+1)) / T^(gamma+1)``
(the product of the ``beta`` telescopes), the discrete form of the profile ``(gamma+1) tau^gamma / T^(gamma+1)``.
Its width relative to the run's length is ``sigma_rel = sqrt((gamma+1) / ((gamma+2)^2 (gamma+3)))`` (the
standard deviation of that profile on ``[0, 1]``; EDM2 eq. 3), which :func:`sigma_rel_to_gamma` inverts.

During training two such EMAs (EDM2's defaults: ``sigma_rel`` 0.05 and 0.10) are kept and
snapshotted every ``ema_snapshot_every`` steps. Afterwards the EMA of any other ``sigma_rel`` is the
combination of snapshots whose weights ``w`` over the steps are closest in least squares to the
wanted profile's (:func:`solve_coefficients`, :func:`reconstruct`); EDM2 solves the same problem with
the continuous profiles.

This module is the math only: tensors and numbers in, tensors and numbers out, no file I/O (the
snapshots are written and verified by :mod:`diffusion_schemes_trainer.storage.snapshots`).

>>> from diffusion_schemes_trainer.posthoc_ema import gamma_to_sigma_rel, sigma_rel_to_gamma
>>> round(sigma_rel_to_gamma(0.05), 3), round(sigma_rel_to_gamma(0.10), 3)
(16.972, 6.937)
>>> round(gamma_to_sigma_rel(sigma_rel_to_gamma(0.15)), 12)
0.15
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .errors import TrainerError

__all__ = ["DEFAULT_PROFILES", "PowerEMA", "gamma_to_sigma_rel", "profile_weights", "reconstruct", "sigma_rel_to_gamma",
           "solve_coefficients"]

#: EDM2's two tracked EMA widths.
DEFAULT_PROFILES = (0.05, 0.10)
_MAX_SIGMA_REL = 1 / math.sqrt(12)  # gamma = 0: the uniform average over the whole run


def gamma_to_sigma_rel(gamma: float) -> float:
    """Relative standard deviation of the power-function profile with exponent ``gamma`` (> -1)."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent ``gamma >= 0`` whose profile has relative width ``sigma_rel``, by bisection.

    ``sigma_rel`` falls monotonically from ``1/sqrt(12)`` (``gamma = 0``) to 0 as ``gamma`` grows.
    """
    if not 0 < sigma_rel < _MAX_SIGMA_REL:
        raise TrainerError(
            f"an EMA width sigma_rel must lie in (0, {_MAX_SIGMA_REL:.4f}) (0.2887 is the plain average of the "
            f"whole run); got {sigma_rel}. EDM2 tracks 0.05 and 0.10."
        )
    lo, hi = 0.0, 1.0
    while gamma_to_sigma_rel(hi) > sigma_rel:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gamma_to_sigma_rel(mid) > sigma_rel else (lo, mid)
    return (lo + hi) / 2


def profile_weights(gamma: float, step: int, length: int) -> torch.Tensor:
    """``w_tau`` for ``tau = 1..length`` of the power EMA at ``step`` (0 after ``step``), float64."""
    tau = torch.arange(1, length + 1, dtype=torch.float64).clamp(max=step)
    return ((tau / step) ** (gamma + 1) - ((tau - 1) / step) ** (gamma + 1)) * (torch.arange(1, length + 1) <= step)


class PowerEMA:
    """Power-function EMAs of a module's floating-point state, one per ``sigma_rel``."""

    def __init__(self, module: torch.nn.Module, sigma_rels: Sequence[float]) -> None:
        self.sigma_rels = [float(s) for s in sigma_rels]
        self.gammas = [sigma_rel_to_gamma(s) for s in self.sigma_rels]
        self.module = module
        self.states = [{k: v.detach().clone() for k, v in module.state_dict().items()} for _ in self.sigma_rels]

    def update(self, step: int) -> None:
        """Fold in the module's state after optimiser step ``step`` (1 for the first)."""
        current = self.module.state_dict()
        # every profile holds a copy of the same state: its floating-point entries and the weights they follow, once
        floats = [k for k, v in current.items() if v.is_floating_point()]
        weights = [current[k].detach() for k in floats]
        with torch.no_grad():
            for gamma, state in zip(self.gammas, self.states):
                beta = (1 - 1 / step) ** (gamma + 1)
                # beta ema + (1 - beta) theta as ema + (1 - beta) (theta - ema): one batched lerp per profile, which
                # reads each EMA and weight once and writes the EMA once (a multiply then an add: five passes)
                torch._foreach_lerp_([state[k] for k in floats], weights, 1 - beta)
                for k, v in state.items():
                    if not v.is_floating_point():
                        v.copy_(current[k])

    def state_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint."""
        return {"sigma_rels": self.sigma_rels, "states": self.states}

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        if [float(s) for s in payload["sigma_rels"]] != self.sigma_rels:
            raise TrainerError(
                f"the checkpoint tracks EMA widths {payload['sigma_rels']}, this run {self.sigma_rels}; resume with "
                "the run's own ema_profiles"
            )
        for mine, theirs in zip(self.states, payload["states"]):
            for k, v in mine.items():
                v.copy_(theirs[k])


def solve_coefficients(basis: Sequence[torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The least-squares coefficients ``c`` of ``sum_i c_i basis_i ~ target`` (float64) and the relative error
    ``|W c - w| / |w|`` of the fit, where each ``basis_i`` is a snapshot's weights over the steps.

    >>> import torch
    >>> from diffusion_schemes_trainer.posthoc_ema import solve_coefficients
    >>> coef, err = solve_coefficients([torch.tensor([1.0, 0.0], dtype=torch.float64),
    ...                                 torch.tensor([0.0, 1.0], dtype=torch.float64)],
    ...                                torch.tensor([0.25, 0.75], dtype=torch.float64))
    >>> coef.tolist(), err
    ([0.25, 0.75], 0.0)
    """
    a = torch.stack(list(basis), dim=1)
    coef = torch.linalg.lstsq(a, target[:, None], driver="gelsd").solution[:, 0]
    return coef, float((a @ coef - target).norm() / target.norm())


def reconstruct(snapshots: Sequence[dict[str, Any]], sigma_rel: float, step: int | None = None,
                use: Sequence[float] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state of the power EMA of width ``sigma_rel`` at ``step`` (default: the last snapshot's).

    ``use`` restricts the basis to the snapshots of those tracked widths (default: all). Returns
    the state dict and a report: the coefficients and the relative L2 error of the fitted profile
    ``|W c - w| / |w|`` over the steps.
    """
    step = int(step if step is not None else max(s["step"] for s in snapshots))
    gamma = sigma_rel_to_gamma(sigma_rel)
    basis, states = [], []
    for snap in snapshots:
        if snap["step"] > step:
            continue
        for tracked, state in zip(snap["sigma_rels"], snap["states"]):
            if use is None or any(abs(float(tracked) - u) < 1e-12 for u in use):
                basis.append(profile_weights(sigma_rel_to_gamma(float(tracked)), snap["step"], step))
                states.append(state)
    if not basis:
        raise TrainerError(f"no snapshot at or before step {step} to reconstruct from")
    coef, fit_error = solve_coefficients(basis, profile_weights(gamma, step, step))
    out = {}
    for k, ref in states[-1].items():
        if ref.is_floating_point():
            acc = torch.zeros_like(ref, dtype=torch.float64)
            for c, state in zip(coef.tolist(), states):
                acc += c * state[k].to(torch.float64)
            out[k] = acc.to(ref.dtype)
        else:
            out[k] = ref.clone()
    return out, {"sigma_rel": sigma_rel, "gamma": gamma, "step": step, "coefficients": coef.tolist(),
                 "profile_error": fit_error}
