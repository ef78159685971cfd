"""Invariants of a loss weighting ``w(log_snr, schedule=None)``.

The conversions are checked against the identities of the objectives (independent of
:func:`diffusion_schemes.convert_weight`): with ``x_hat = x0 + exp(-lambda/2) eps``,
``||x0 - x0_hat||^2 = exp(-lambda) ||eps - eps_hat||^2``, ``||v - v_hat||^2 = ||eps - eps_hat||^2 /
sigmoid(lambda)`` and ``||s - s_hat||^2 = exp(lambda) ||eps - eps_hat||^2`` (Kingma & Gao 2023,
appendix D), so ``w_x0 / w_eps = exp(lambda)``, ``w_v / w_eps = sigmoid(lambda)`` and
``w_score / w_eps = exp(-lambda)``.
"""

from __future__ import annotations

from typing import Any

import torch

from diffusion_schemes.weightings import LOSS_TYPES
from ._context import compare, fmt, time_grid
from ._report import invariant

__all__: list[str] = []


def _log_snrs(ctx: Any) -> torch.Tensor:
    """The lambda grid: over the paired schedule's domains, plus [-20, 20] with the kit's reference schedule."""
    grids = []
    for training in (False, True):
        t = time_grid(*map(float, ctx.schedule.domain(training)), num=33)
        grids.append(ctx.schedule.get_log_snr(t, training))
    if ctx.options.get("_reference_schedule"):
        grids.append(torch.linspace(-20, 20, 81, dtype=torch.float64))
    return torch.unique(torch.cat(grids).to(torch.float64))


def _ratio(log_snr: torch.Tensor, loss_type: str) -> torch.Tensor:
    """``w_type / w_eps`` for the same objective."""
    return {
        "epsilon": torch.ones_like(log_snr),
        "x0": torch.exp(log_snr),
        "v": torch.sigmoid(log_snr),
        "score": torch.exp(-log_snr),
    }[loss_type]


@invariant("weighting")
def loss_type_known(ctx: Any) -> str | None:
    """``loss_type`` names one of the loss types (epsilon, x0, v, score)."""
    lt = getattr(ctx.obj, "loss_type", None)
    return None if lt in LOSS_TYPES else f"loss_type is {lt!r}; expected one of {LOSS_TYPES}"


@invariant("weighting")
def finite_non_negative(ctx: Any) -> str | None:
    """``w(lambda)`` is finite and >= 0 over the lambda grid."""
    lam = _log_snrs(ctx)
    w = ctx.obj(lam, schedule=ctx.schedule)
    bad = ~torch.isfinite(w) | (w < 0)
    if bool(bad.any()):
        return f"w(lambda) = {fmt(w[bad])} at lambda = {fmt(lam[bad])}; a weight must be finite and >= 0"
    return None


@invariant("weighting")
def shape_and_dtype(ctx: Any) -> str | None:
    """``w`` keeps the shape of ``log_snr`` (scalar, (B,), (B, 1, 1)) and a float32 input gives a float32 weight."""
    lam = _log_snrs(ctx)[:6].to(torch.float32)
    for x in (lam[0], lam, lam.reshape(-1, 1, 1)):
        w = ctx.obj(x, schedule=ctx.schedule)
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != tuple(x.shape):
            shape = tuple(getattr(w, "shape", ()))
            return f"w(log_snr of shape {tuple(x.shape)}) returned {type(w).__name__} of shape {shape}"
        if w.dtype != torch.float32:
            return f"a float32 log_snr gave a {w.dtype} weight"
    return None


@invariant("weighting")
def conversions_consistent(ctx: Any) -> str | None:
    """Converting between loss types follows the objectives' identities and round-trips back to the weight."""
    lam = _log_snrs(ctx)
    lt = ctx.obj.loss_type
    w = ctx.obj(lam, schedule=ctx.schedule).to(torch.float64)
    w_eps = w / _ratio(lam, lt)
    for target in LOSS_TYPES:
        got = ctx.obj.convert(lam, target, schedule=ctx.schedule)
        msg = compare(got, w_eps * _ratio(lam, target), "lambda", lam, rtol=1e-6, atol=1e-300)
        if msg:
            return f"converting the {lt} weight to the {target} loss breaks w_{target}/w_eps, {msg}"
    chain = w
    path = [lt, *[t for t in LOSS_TYPES if t != lt], lt]
    from diffusion_schemes.weightings import convert_weight

    for a, b in zip(path, path[1:]):
        chain = convert_weight(chain, lam, a, b)
    msg = compare(chain, w, "lambda", lam, rtol=1e-6, atol=1e-300)
    return f"the round trip {' -> '.join(path)} does not give the weight back, {msg}" if msg else None
