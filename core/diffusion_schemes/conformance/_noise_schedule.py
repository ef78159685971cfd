"""Invariants of a noise schedule (the log-SNR contract of :class:`diffusion_schemes.BaseNoiseSchedule`).

Every reference value here is derived independently of the schedule's own derived methods:
derivatives by autograd of ``get_log_snr`` and ``get_alpha_sigma``, inverses by round trip,
``alpha``/``sigma`` from their definitions (Kingma & Gao 2023, section 2):
``lambda = log alpha^2 - log sigma^2``; preserving ``alpha^2 + sigma^2 = 1``; exploding
``alpha = 1``; forward SDE ``f = d log alpha/dt``, ``g^2 = d sigma^2/dt - 2 f sigma^2``
(Kingma et al. 2021, appendix A; Song et al. 2021, eq. 5 for the exploding/preserving cases).
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch
import torch.nn.functional as F

from ._context import compare, fmt, time_grid
from ._report import invariant

__all__: list[str] = []

RTOL = 1e-5
DOMAINS = (("sampling", False), ("training", True))


def _grids(ctx: Any):
    for where, training in DOMAINS:
        lo, hi = ctx.obj.domain(training)
        yield where, training, time_grid(float(lo), float(hi))


def _autograd(fn: Any, t: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        tt = t.detach().clone().requires_grad_(True)
        out = fn(tt)
        if not out.requires_grad:  # does not depend on t at all (e.g. alpha = 1)
            return torch.zeros_like(t)
        (grad,) = torch.autograd.grad(out.sum(), tt, allow_unused=True, materialize_grads=True)
    return grad


@invariant("noise_schedule")
def domains_valid(ctx: Any) -> str | None:
    """Both domains are finite, non-empty intervals inside ``t_limits``."""
    s = ctx.obj
    t_lo, t_hi = s.t_limits
    for where, training in DOMAINS:
        lo, hi = s.domain(training)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            return f"{where} domain ({lo}, {hi}) is not a finite non-empty interval"
        if not (t_lo < lo and hi < t_hi):
            return f"{where} domain ({lo}, {hi}) is not inside t_limits ({t_lo}, {t_hi}), where lambda is defined"
    return None


@invariant("noise_schedule")
def log_snr_decreasing(ctx: Any) -> str | None:
    """``lambda(t)`` is finite and strictly decreasing on both domains."""
    for where, training, t in _grids(ctx):
        lam = ctx.obj.get_log_snr(t, training)
        if not bool(torch.isfinite(lam).all()):
            return f"{where}: lambda(t) is not finite at t={fmt(t[~torch.isfinite(lam)])}"
        rising = lam[1:] >= lam[:-1]
        if bool(rising.any()):
            i = int(rising.nonzero()[0])
            return (
                f"{where}: lambda(t) is not decreasing: lambda({fmt(t[i])}) = {fmt(lam[i])} but "
                f"lambda({fmt(t[i + 1])}) = {fmt(lam[i + 1])}"
            )
    return None


@invariant("noise_schedule")
def inverse_roundtrip(ctx: Any) -> str | None:
    """``get_t_from_log_snr`` inverts ``get_log_snr`` (t -> lambda -> t and lambda -> t -> lambda)."""
    for where, training, t in _grids(ctx):
        lam = ctx.obj.get_log_snr(t, training)
        back = ctx.obj.get_t_from_log_snr(lam, training)
        msg = compare(back, t, "t", t, rtol=RTOL)
        if msg:
            return f"{where}: get_t_from_log_snr(get_log_snr(t)) != t, {msg}"
        again = ctx.obj.get_log_snr(back, training)
        msg = compare(again, lam, "lambda", lam, rtol=RTOL, atol=RTOL)
        if msg:
            return f"{where}: get_log_snr(get_t_from_log_snr(lambda)) != lambda, {msg}"
    return None


@invariant("noise_schedule")
def dlog_snr_dt_matches_autograd(ctx: Any) -> str | None:
    """``dlog_snr_dt(t)`` equals autograd of ``get_log_snr``."""
    for where, training, t in _grids(ctx):
        want = _autograd(lambda tt: ctx.obj.get_log_snr(tt, training), t)
        msg = compare(ctx.obj.dlog_snr_dt(t, training), want, "t", t, rtol=RTOL)
        if msg:
            return f"{where}: d lambda/dt differs from autograd of get_log_snr, {msg}"
    return None


@invariant("noise_schedule")
def derivative_log_snr_matches_autograd(ctx: Any) -> str | None:
    """``derivative_log_snr(lambda)`` equals autograd of ``t -> log(1 + exp(-lambda(t)))``."""
    for where, training, t in _grids(ctx):
        lam = ctx.obj.get_log_snr(t, training)
        want = _autograd(lambda tt: F.softplus(-ctx.obj.get_log_snr(tt, training)), t)
        msg = compare(ctx.obj.derivative_log_snr(lam, training), want, "t", t, rtol=RTOL)
        if msg:
            return f"{where}: beta = derivative_log_snr differs from d/dt log(1 + exp(-lambda)), {msg}"
    return None


@invariant("noise_schedule")
def alpha_sigma_match_variance_type(ctx: Any) -> str | None:
    """``alpha, sigma`` are positive and follow the variance type.

    Preserving: ``alpha^2 + sigma^2 = 1``; exploding: ``alpha = 1``; custom: positivity only.
    """
    s = ctx.obj
    for where, training, t in _grids(ctx):
        lam = s.get_log_snr(t, training)
        alpha, sigma = s.get_alpha_sigma(lam)
        if not bool(((alpha > 0) & (sigma > 0)).all()):
            return f"{where}: alpha or sigma not positive (alpha={fmt(alpha)}, sigma={fmt(sigma)})"
        if s.variance_type == "preserving":
            msg = compare(alpha**2 + sigma**2, torch.ones_like(lam), "t", t, rtol=RTOL)
            if msg:
                return f"{where}: variance preserving but alpha^2 + sigma^2 != 1, {msg}"
        elif s.variance_type == "exploding":
            msg = compare(alpha, torch.ones_like(lam), "t", t, rtol=RTOL)
            if msg:
                return f"{where}: variance exploding but alpha != 1, {msg}"
    return None


@invariant("noise_schedule")
def alpha_sigma_match_log_snr(ctx: Any) -> str | None:
    """``log alpha^2 - log sigma^2 = lambda`` for the schedule's ``get_alpha_sigma``."""
    for where, training, t in _grids(ctx):
        lam = ctx.obj.get_log_snr(t, training)
        alpha, sigma = ctx.obj.get_alpha_sigma(lam)
        got = 2 * alpha.to(torch.float64).log() - 2 * sigma.to(torch.float64).log()
        msg = compare(got, lam, "t", t, rtol=RTOL, atol=RTOL)
        if msg:
            return f"{where}: log alpha^2 - log sigma^2 != lambda, {msg}"
    return None


@invariant("noise_schedule")
def drift_diffusion_match_forward_process(ctx: Any) -> str | None:
    """``get_drift_diffusion`` gives ``f = d log alpha/dt`` and ``g^2 = d sigma^2/dt - 2 f sigma^2`` (autograd)."""
    s = ctx.obj
    for where, training, t in _grids(ctx):
        lam = s.get_log_snr(t, training)
        f_want = _autograd(lambda tt: s.get_alpha_sigma(s.get_log_snr(tt, training))[0].log(), t)
        dsig2 = _autograd(lambda tt: s.get_alpha_sigma(s.get_log_snr(tt, training))[1] ** 2, t)
        sigma2 = s.get_alpha_sigma(lam)[1].to(torch.float64) ** 2
        g2_want = dsig2 - 2 * f_want * sigma2
        x = torch.full_like(lam, 1.5)
        fx, g2 = s.get_drift_diffusion(lam, x=x, training=training)
        scale = float(f_want.abs().max()) + 1e-300
        msg = compare(fx / 1.5, f_want, "t", t, rtol=RTOL, atol=RTOL * scale)
        if msg:
            return f"{where}: drift f differs from d log alpha/dt (times x), {msg}"
        msg = compare(g2, g2_want, "t", t, rtol=RTOL)
        if msg:
            return f"{where}: diffusion g^2 differs from d sigma^2/dt - 2 f sigma^2, {msg}"
        alone = s.get_drift_diffusion(lam, training=training)
        msg = compare(alone, g2, "t", t, rtol=1e-12)
        if msg:
            return f"{where}: get_drift_diffusion(lambda) without x differs from the g^2 returned with x, {msg}"
    return None


@invariant("noise_schedule")
def noise_level_matches_log_snr(ctx: Any) -> str | None:
    """``noise_level(t) = exp(-lambda(t)/2) = sigma(t)/alpha(t)`` on the sampling domain."""
    s = ctx.obj
    lo, hi = s.domain(False)
    t = time_grid(float(lo), float(hi))
    lam = s.get_log_snr(t)
    got = s.noise_level(t)
    msg = compare(got, torch.exp(-lam / 2), "t", t, rtol=RTOL)
    if msg:
        return f"noise_level(t) != exp(-lambda(t)/2), {msg}"
    alpha, sigma = s.get_alpha_sigma(lam)
    msg = compare(got, sigma / alpha, "t", t, rtol=RTOL)
    return f"noise_level(t) != sigma/alpha, {msg}" if msg else None


@invariant("noise_schedule")
def finite_at_domain_ends(ctx: Any) -> str | None:
    """Every derived quantity is finite at both ends of both domains (float32 and float64)."""
    s = ctx.obj
    for where, training in DOMAINS:
        for dtype in (torch.float32, torch.float64):
            t = torch.tensor(s.domain(training), dtype=dtype)
            lam = s.get_log_snr(t, training)
            alpha, sigma = s.get_alpha_sigma(lam)
            fx, g2 = s.get_drift_diffusion(lam, x=torch.ones_like(lam), training=training)
            values = {
                "lambda": lam, "dlog_snr_dt": s.dlog_snr_dt(t, training),
                "derivative_log_snr": s.derivative_log_snr(lam, training), "alpha": alpha, "sigma": sigma,
                "drift": fx, "g^2": g2, "loss_weight": s.loss_weight(t, "x0") if training else s.noise_level(t),
            }
            bad = [k for k, v in values.items() if not bool(torch.isfinite(v).all())]
            if bad:
                return f"{where} domain ends t={fmt(t)} ({dtype}): not finite: " + ", ".join(
                    f"{k}={fmt(values[k])}" for k in bad)
    return None


@invariant("noise_schedule")
def timesteps_decreasing_to_zero(ctx: Any) -> str | None:
    """``timesteps(N)`` is N+1 long, strictly decreasing, inside the sampling domain, and ends at 0."""
    s = ctx.obj
    lo, hi = s.domain(False)
    for n in (1, 2, 7, 32):
        ts = s.timesteps(n)
        if tuple(ts.shape) != (n + 1,):
            return f"timesteps({n}) has shape {tuple(ts.shape)}, expected ({n + 1},)"
        if float(ts[-1]) != 0.0:
            return f"timesteps({n}) ends at {fmt(ts[-1])}, expected 0"
        if bool((ts[1:] >= ts[:-1]).any()):
            return f"timesteps({n}) is not strictly decreasing: {fmt(ts)}"
        head = ts[:-1].to(torch.float64)
        tol = 1e-6 * max(abs(lo), abs(hi))
        if bool((head < lo - tol).any() or (head > hi + tol).any()):
            return f"timesteps({n}) = {fmt(ts)} leaves the sampling domain [{lo:g}, {hi:g}]"
    return None


@invariant("noise_schedule")
def sample_time_in_training_domain(ctx: Any) -> str | None:
    """``sample_time`` draws finite, reproducible times, nearly all (>= 99%) inside the training domain."""
    s = ctx.obj
    n = 4096
    t = s.sample_time(n, generator=ctx.generator)
    if tuple(t.shape) != (n,):
        return f"sample_time({n}) has shape {tuple(t.shape)}, expected ({n},)"
    if not bool(torch.isfinite(t).all()):
        return f"sample_time drew non-finite times: {fmt(t[~torch.isfinite(t)])}"
    again = s.sample_time(n, generator=ctx.generator)
    if not torch.equal(t, again):
        return "sample_time with two generators seeded alike drew different times; it must draw from `generator`"
    t_lo, t_hi = s.t_limits
    outside = (t <= t_lo) | (t >= t_hi)
    if bool(outside.any()):
        return f"sample_time drew times outside t_limits ({t_lo}, {t_hi}): {fmt(t[outside])}"
    lo, hi = s.domain(True)
    inside = float(((t >= lo) & (t <= hi)).to(torch.float64).mean())
    if inside < 0.99:
        return f"only {inside:.1%} of sample_time draws fall in the training domain [{lo:g}, {hi:g}]"
    lam = s.get_log_snr(t, training=True)
    if not bool(torch.isfinite(lam).all()):
        return f"lambda is not finite at sampled times {fmt(t[~torch.isfinite(lam)])}"
    return None


@invariant("noise_schedule")
def loss_weight_finite(ctx: Any) -> str | None:
    """``loss_weight(t, prediction_type)`` is finite and non-negative over the training domain."""
    s = ctx.obj
    lo, hi = s.domain(True)
    t = time_grid(float(lo), float(hi))
    for ptype in ("x0", "epsilon", "v"):
        w = s.loss_weight(t, ptype)
        bad = ~torch.isfinite(w) | (w < 0)
        if bool(bad.any()):
            return f"loss_weight(t, {ptype!r}) is {fmt(w[bad])} at t={fmt(t[bad])}; expected finite and >= 0"
    return None


@invariant("noise_schedule")
def config_roundtrip(ctx: Any) -> str | None:
    """``from_config(get_config())`` rebuilds an equal schedule, through JSON."""
    s = ctx.obj
    config = s.get_config()
    try:
        text = json.dumps(config)
    except TypeError as exc:
        return f"get_config() is not JSON-serialisable: {exc} ({config!r})"
    rebuilt = type(s).from_config(json.loads(text))
    if rebuilt.get_config() != config:
        return f"from_config(get_config()) has config {rebuilt.get_config()!r}, not {config!r}"
    t = time_grid(*map(float, s.domain(False)), num=9)
    msg = compare(rebuilt.get_log_snr(t), s.get_log_snr(t), "t", t, rtol=1e-12)
    return f"the rebuilt schedule has another lambda(t), {msg}" if msg else None


@invariant("noise_schedule")
def time_from_uniform_consistent(ctx: Any) -> str | None:
    """Where stated, the inverse CDF ``time_from_uniform`` is nondecreasing, in ``t_limits``, and what ``sample_time`` draws.

    The fraction of ``sample_time`` draws below ``time_from_uniform(q)`` must be ``q`` within
    five binomial standard errors, for q = 0.1, ..., 0.9.
    """
    s = ctx.obj
    has = getattr(s, "has_inverse_cdf", None)
    if has is None or not has():
        ctx.skip("the schedule states no inverse CDF (time_from_uniform)")
        return None
    n = 1001
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    t = s.time_from_uniform(u).to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        return f"time_from_uniform is not finite at u={fmt(u[~torch.isfinite(t)])}"
    if bool((t[1:] < t[:-1]).any()):
        i = int((t[1:] < t[:-1]).nonzero()[0])
        return f"time_from_uniform decreases: t({fmt(u[i])}) = {fmt(t[i])} > t({fmt(u[i + 1])}) = {fmt(t[i + 1])}"
    t_lo, t_hi = s.t_limits
    if bool(((t <= t_lo) | (t >= t_hi)).any()):
        return f"time_from_uniform leaves t_limits ({t_lo}, {t_hi}): {fmt(t[(t <= t_lo) | (t >= t_hi)])}"
    draws = s.sample_time(4096, generator=ctx.generator).to(torch.float64)
    q = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
    below = (draws[None, :] <= s.time_from_uniform(q).to(torch.float64)[:, None]).to(torch.float64).mean(dim=1)
    worst = int((below - q).abs().argmax())
    if float((below - q).abs()[worst]) > 5 * math.sqrt(0.25 / draws.numel()):
        return (
            f"sample_time does not draw from time_from_uniform's distribution: {float(below[worst]):.3f} of the "
            f"draws fall below its {float(q[worst]):.1f}-quantile"
        )
    return None
