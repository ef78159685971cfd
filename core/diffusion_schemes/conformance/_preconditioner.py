"""Invariants of a preconditioner ``D(x, t) = c_skip x + c_out F(c_in x, c_noise)`` paired with a schedule.

The backbone is a :class:`~diffusion_schemes.conformance._context.ProbeBackbone`, so the expected
output is computed here from the scheme's coefficients and the probe's known ``F``.

**Declaring unit variance.** A preconditioner class may declare
``unit_variance = ("input", "target")`` (or either one). For data of standard deviation
``sigma_d`` (the instance's ``sigma_data`` attribute, 1 when it has none) and the unscaled
latent ``x = x0 + sigma eps``:

- ``"input"``: the network input ``c_in x`` has unit variance, ``c_in^2 (sigma_d^2 + sigma^2) = 1``;
- ``"target"``: the effective training target ``(x0 - c_skip x) / c_out`` has unit variance,
  ``((1 - c_skip)^2 sigma_d^2 + c_skip^2 sigma^2) / c_out^2 = 1``

(Karras et al. 2022, appendix B.6, eqs. 114-118). The kit checks what is declared over the
paired schedule's noise levels; an undeclared property is reported as skipped.
"""

from __future__ import annotations

from typing import Any

import torch

from diffusion_schemes.errors import DomainError
from diffusion_schemes.tensors import append_dims
from ._context import compare, fmt, time_grid
from ._report import invariant

__all__ = ["UNIT_VARIANCE_PROPERTIES"]

#: What a preconditioner class may list in its ``unit_variance`` attribute, e.g.
#: ``unit_variance = ("input", "target")`` on the EDM preconditioner.
UNIT_VARIANCE_PROPERTIES = ("input", "target")

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _times(ctx: Any, num: int = 33) -> torch.Tensor:
    """Times covering both domains of the paired schedule."""
    grids = [time_grid(*map(float, ctx.schedule.domain(training)), num=num) for training in (False, True)]
    return torch.unique(torch.cat(grids))


def _mid_time(ctx: Any) -> torch.Tensor:
    """Three moderate sampling times of the paired schedule (noise levels where half precision is safe)."""
    ts = ctx.schedule.timesteps(9)[:-1].to(torch.float64)
    return ts[3:6]


def _latent(ctx: Any, t: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Unscaled latents ``x0 + noise_level(t) eps`` for unit-variance data."""
    level = append_dims(ctx.schedule.noise_level(t).to(torch.float64), len(shape))
    g = ctx.generator
    x = torch.randn(shape, generator=g, dtype=torch.float64) * (1 + level**2).sqrt()
    return x.to(dtype)


def _coefficients(precond: Any, sigma: torch.Tensor, ndim: int):
    """The scheme's ``(c_in, c_noise, c_out, c_skip)`` in float64, broadcast for latents of ``ndim`` dims."""
    sigma_b = append_dims(sigma.to(torch.float64), ndim)
    c_in, c_noise, c_out, c_skip = precond.compute_coefficients(sigma_b)
    as64 = lambda c: torch.broadcast_to(torch.as_tensor(c, dtype=torch.float64), sigma_b.shape)  # noqa: E731
    return as64(c_in), as64(c_noise).reshape(-1), as64(c_out), as64(c_skip)


@invariant("preconditioner")
def output_shapes(ctx: Any) -> str | None:
    """The output has the latent's shape for latents of 2 to 5 dims, with t per sample or scalar."""
    t = _mid_time(ctx)
    for shape in ((3, 4), (3, 2, 4, 4), (3, 2, 3, 2, 2)):
        x = _latent(ctx, t, shape, torch.float32)
        for tt in (t.to(torch.float32), t[1].to(torch.float32)):
            out = ctx.obj(x, tt)
            if tuple(out.shape) != shape:
                return f"latent {shape} with t of shape {tuple(tt.shape)} gave output {tuple(out.shape)}"
    return None


@invariant("preconditioner")
def dtypes(ctx: Any) -> str | None:
    """float16, bfloat16, float32 and float64 latents give finite outputs of the same dtype; c_noise is float32+."""
    t = _mid_time(ctx)
    for dtype in DTYPES:
        x = _latent(ctx, t, (3, 2, 4), dtype)
        out = ctx.obj(x, t.to(dtype) if dtype == torch.float64 else t.to(torch.float32))
        if out.dtype != dtype:
            return f"a {dtype} latent gave a {out.dtype} output"
        if not bool(torch.isfinite(out).all()):
            return f"a {dtype} latent at t={fmt(t)} gave non-finite outputs {fmt(out)}"
        c_noise = ctx.probe.seen_c_noise
        if c_noise is not None and c_noise.is_floating_point() and torch.finfo(c_noise.dtype).bits < 32:
            return f"the backbone received c_noise in {c_noise.dtype} for a {dtype} latent; it must be float32 or wider"
    return None


@invariant("preconditioner")
def devices(ctx: Any) -> str | None:
    """The output stays on the latent's device (CPU, and CUDA when available)."""
    names = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    t = _mid_time(ctx).to(torch.float32)
    x = _latent(ctx, t, (3, 4), torch.float32)
    for name in names:
        precond = ctx.obj.to(name)
        try:
            out = precond(x.to(name), t.to(name))
        finally:
            ctx.obj.to("cpu")
        if out.device.type != name:
            return f"a latent on {name} gave an output on {out.device}"
        ref = ctx.obj(x, t)
        msg = compare(out.cpu(), ref, "t", t.reshape(-1, 1), rtol=1e-4, atol=1e-5)
        if msg:
            return f"the output on {name} differs from the CPU output, {msg}"
    return None


@invariant("preconditioner")
def finite_over_schedule_domain(ctx: Any) -> str | None:
    """Outputs are finite at every time of the paired schedule's sampling and training domains (float32, float64)."""
    t = _times(ctx)
    for dtype in (torch.float32, torch.float64):
        x = _latent(ctx, t, (t.shape[0], 3), dtype)
        out = ctx.obj(x, t.to(dtype))
        bad = ~torch.isfinite(out).all(dim=1)
        if bool(bad.any()):
            level = ctx.schedule.noise_level(t[bad])
            return f"{dtype}: non-finite output at t={fmt(t[bad])} (noise level {fmt(level)})"
    return None


@invariant("preconditioner")
def affine_output(ctx: Any) -> str | None:
    """The output is ``c_skip x + c_out F(c_in x, c_noise)`` and the backbone sees ``c_in x`` and ``c_noise``."""
    t = _times(ctx)
    x = _latent(ctx, t, (t.shape[0], 3))
    sigma = ctx.obj.sigma(t)
    out = ctx.obj(x, t)
    c_in, c_noise, c_out, c_skip = _coefficients(ctx.obj, sigma, x.ndim)
    seen_x, seen_c = ctx.probe.seen_x, ctx.probe.seen_c_noise
    msg = compare(seen_x, c_in * x, "t", t.reshape(-1, 1), rtol=1e-10, atol=1e-12)
    if msg:
        return f"the backbone's input is not c_in * x, {msg}"
    msg = compare(seen_c, c_noise, "t", t, rtol=1e-10, atol=1e-12)
    if msg:
        return f"the backbone's noise label is not c_noise, {msg}"
    want = c_skip * x + c_out * ctx.probe.reference(c_in * x, c_noise)
    msg = compare(out, want, "t", t.reshape(-1, 1), rtol=1e-10, atol=1e-10)
    return f"output != c_skip * x + c_out * F(c_in * x, c_noise), {msg}" if msg else None


@invariant("preconditioner")
def sigma_matches_schedule(ctx: Any) -> str | None:
    """``sigma(t)`` equals the paired schedule's ``noise_level(t) = exp(-lambda(t)/2)`` on both domains."""
    t = _times(ctx)
    got = ctx.obj.sigma(t)
    want = ctx.schedule.noise_level(t)
    msg = compare(got, want, "t", t, rtol=1e-5)
    if msg:
        return f"sigma(t) disagrees with noise_level(t) of schedule {ctx.schedule.name!r}, {msg}"
    return None


@invariant("preconditioner")
def forward_sigma_consistent(ctx: Any) -> str | None:
    """``forward(x, t)`` equals ``forward_sigma(x, schedule.noise_level(t))`` (the path the loss and samplers take)."""
    if not hasattr(ctx.obj, "forward_sigma"):
        ctx.skip("no forward_sigma: not a BaseAffinePreconditioner")
        return None
    t = _times(ctx)
    x = _latent(ctx, t, (t.shape[0], 3))
    via_t = ctx.obj(x, t)
    via_sigma = ctx.obj.forward_sigma(x, ctx.schedule.noise_level(t))
    msg = compare(via_sigma, via_t, "t", t.reshape(-1, 1), rtol=1e-5, atol=1e-8)
    return f"forward_sigma(x, noise_level(t)) != forward(x, t), {msg}" if msg else None


@invariant("preconditioner")
def rejects_zero_noise(ctx: Any) -> str | None:
    """Noise level 0 raises a clear error instead of returning NaN."""
    x = torch.zeros(2, 3)
    try:
        out = ctx.obj.forward_sigma(x, torch.zeros(2)) if hasattr(ctx.obj, "forward_sigma") else None
    except (DomainError, ValueError):
        return None
    if out is None:
        ctx.skip("no forward_sigma")
        return None
    return f"forward_sigma at noise level 0 returned {fmt(out)} instead of raising DomainError"


@invariant("preconditioner")
def unit_variance(ctx: Any) -> str | None:
    """What the class declares in ``unit_variance`` holds: unit-variance network input and/or training target."""
    declared = getattr(type(ctx.obj), "unit_variance", None)
    if not declared:
        ctx.skip("the class declares no unit_variance")
        return None
    if isinstance(declared, str) or any(d not in UNIT_VARIANCE_PROPERTIES for d in declared):
        return f"unit_variance = {declared!r}; expected a tuple drawn from {UNIT_VARIANCE_PROPERTIES}"
    sd = float(getattr(ctx.obj, "sigma_data", 1.0))
    t = _times(ctx)
    sigma = ctx.schedule.noise_level(t).to(torch.float64)
    c_in, _, c_out, c_skip = _coefficients(ctx.obj, sigma, 1)
    sigma = sigma.reshape(-1)
    c_in, c_out, c_skip = c_in.reshape(-1), c_out.reshape(-1), c_skip.reshape(-1)
    one = torch.ones_like(sigma)
    if "input" in declared:
        msg = compare(c_in**2 * (sd**2 + sigma**2), one, "noise level", sigma, rtol=1e-5)
        if msg:
            return f"declares a unit-variance input, but Var(c_in x) for data std {sd:g} is not 1: {msg}"
    if "target" in declared:
        var = ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2) / c_out**2
        msg = compare(var, one, "noise level", sigma, rtol=1e-5)
        if msg:
            return (
                f"declares a unit-variance target, but Var((x0 - c_skip x)/c_out) for data std {sd:g} is not 1: {msg}"
            )
    return None


@invariant("preconditioner")
def compiles_fullgraph(ctx: Any) -> str | None:
    """``torch.compile(fullgraph=True)`` traces the preconditioner without graph breaks and gives the same output."""
    if not ctx.options.get("compile", True):
        ctx.skip("compile=False")
        return None
    import torch._dynamo

    t = _mid_time(ctx).to(torch.float32)
    x = _latent(ctx, t, (3, 4), torch.float32)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(ctx.obj, fullgraph=True, backend="eager")
        out = compiled(x, t)
    except Exception as exc:  # noqa: BLE001 - any failure to trace is the finding
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"torch.compile(fullgraph=True) failed: {type(exc).__name__}: {first}"
    finally:
        torch._dynamo.reset()
    msg = compare(out, ctx.obj(x, t), "t", t.reshape(-1, 1), rtol=1e-5, atol=1e-6)
    return f"the compiled output differs from eager, {msg}" if msg else None
