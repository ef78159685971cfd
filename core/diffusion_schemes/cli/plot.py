"""The ``plot`` command: the curves of any installed scheme, drawn from its public API only.

``diffusion-schemes plot KIND NAME [NAME ...] [--out DIR] [--set key=value]`` writes one figure:

- ``noise_schedule``: the noise level ``exp(-lambda(t)/2)`` and ``lambda(t)`` against the
  scheme's own time (with the sampling time steps marked), the training distribution of ``t``
  and of the log noise level (histograms of ``sample_time``), the loss weight against lambda
  for every prediction type (``loss_weight``), and the weight times the training density of lambda;
- ``preconditioner``: ``c_in``, ``c_out``, ``c_skip`` and ``c_noise`` against the noise level
  (``compute_coefficients``);
- ``weighting``: the weight against lambda, converted to every loss type (``convert_weight``).

Several names overlay their curves in one figure, which is how the concepts page compares the
built-in schemes. Nothing here knows a scheme by name, so a third-party scheme plots the same
way. matplotlib is imported only when a figure is drawn (``pip install diffusion-schemes[plot]``).

The numbers behind the curves are available without matplotlib:

>>> import diffusion_schemes as ds
>>> from diffusion_schemes.cli.plot import schedule_curves
>>> curves = schedule_curves(ds.create("noise_schedule", "edm"), num_draws=1000)
>>> sorted(curves)
['lambda', 'lambda_train', 'log_noise_level_density', 'log_noise_level_draws', 'noise_level', 'step_t', 'steps_noise_level', 't', 't_draws', 't_train', 'weights']
>>> sorted(curves["weights"])
['epsilon', 'score', 'v', 'x0']
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from diffusion_schemes.errors import DiffusionSchemesError, InvalidArgumentError

__all__ = ["add_parser", "plot", "preconditioner_curves", "schedule_curves", "weighting_curves"]

_INSTALL_HINT = "pip install 'diffusion-schemes[plot]'"


def _grid(lo: float, hi: float, num: int) -> torch.Tensor:
    """``num`` points from ``lo`` to ``hi``: geometric when both are positive and far apart."""
    if lo > 0 and hi / lo > 50:
        return torch.logspace(math.log10(lo), math.log10(hi), num, dtype=torch.float64)
    return torch.linspace(lo, hi, num, dtype=torch.float64)


def _loss_types() -> tuple[str, ...]:
    from diffusion_schemes.weightings import LOSS_TYPES

    return LOSS_TYPES


def schedule_curves(schedule: Any, num: int = 400, num_draws: int = 100_000, steps: int = 18, seed: int = 0) -> dict:
    """The curves of a noise schedule, as float64 tensors keyed by what they are.

    ``t``/``noise_level``/``lambda`` on the sampling domain, ``t_train``/``lambda_train`` on the
    training domain with ``weights[prediction_type]`` (the loss weight there), ``t_draws`` and
    ``log_noise_level_draws`` from ``sample_time``, and the sampling steps ``step_t``/``steps_noise_level``.
    When the schedule offers the inverse CDF of its training times, ``time_from_uniform(u)`` (what
    ``MSEDSMLoss(low_discrepancy=True)`` uses), ``log_noise_level_density`` holds the exact density
    of ``ln(noise level)`` as ``(points, density)``.
    """
    lo, hi = schedule.domain(training=False)
    t = _grid(lo, hi, num)
    lam = schedule.get_log_snr(t).double()
    tlo, thi = schedule.domain(training=True)
    t_train = _grid(tlo, thi, num)
    lam_train = schedule.get_log_snr(t_train, training=True).double()
    weights = {p: schedule.loss_weight(t_train, p).double() for p in _loss_types()}
    generator = torch.Generator().manual_seed(seed)
    draws = schedule.sample_time(num_draws, generator=generator).double()
    log_level = -schedule.get_log_snr(draws, training=True).double() / 2
    step_t = schedule.timesteps(steps)[:-1].double()
    curves = {
        "t": t,
        "noise_level": schedule.noise_level(t).double(),
        "lambda": lam,
        "t_train": t_train,
        "lambda_train": lam_train,
        "weights": weights,
        "t_draws": draws,
        "log_noise_level_draws": log_level,
        "step_t": step_t,
        "steps_noise_level": schedule.noise_level(step_t).double(),
    }
    if _has_inverse_cdf(schedule):
        u = torch.linspace(0.0005, 0.9995, num, dtype=torch.float64)
        level = -schedule.get_log_snr(torch.as_tensor(schedule.time_from_uniform(u)), training=True).double() / 2
        step = torch.diff(level).abs()
        if bool((step > 0).all()):  # a continuous distribution: density of ln(noise level) = du / d ln s
            curves["log_noise_level_density"] = ((level[1:] + level[:-1]) / 2, torch.diff(u) / step)
    return curves


def _has_inverse_cdf(schedule: Any) -> bool:
    """Whether the schedule states the inverse CDF of its training times (optional for a schedule)."""
    has = getattr(schedule, "has_inverse_cdf", None)
    if callable(has):
        return bool(has())
    return callable(getattr(schedule, "time_from_uniform", None))


class _ZeroBackbone(torch.nn.Module):
    """A stand-in network: the coefficients do not depend on it."""

    def forward(self, x: torch.Tensor, t: Any, condition: Any = None, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(x)


def preconditioner_curves(precond: Any, sigma_min: float = 0.002, sigma_max: float = 80.0, num: int = 400) -> dict:
    """``c_in``, ``c_out``, ``c_skip``, ``c_noise`` of a preconditioner at noise levels in ``[sigma_min, sigma_max]``.

    >>> import diffusion_schemes as ds
    >>> from diffusion_schemes.cli.plot import preconditioner_curves, _ZeroBackbone
    >>> c = preconditioner_curves(ds.create("preconditioner", "edm", model=_ZeroBackbone()), 0.5, 0.5, 1)
    >>> float(c["c_skip"][0]), float(c["c_in"][0] ** 2)    # sigma = sigma_data = 0.5
    (0.5, 2.0)
    """
    if not hasattr(precond, "compute_coefficients"):
        raise DiffusionSchemesError(
            f"{type(precond).__name__} has no compute_coefficients(sigma), so its coefficients cannot be plotted; "
            "only preconditioners following the Preconditioner protocol can"
        )
    sigma = _grid(sigma_min, sigma_max, num)
    with torch.no_grad():
        c_in, c_noise, c_out, c_skip = precond.compute_coefficients(sigma.reshape(-1, 1))
    flat = lambda c: torch.broadcast_to(torch.as_tensor(c, dtype=torch.float64), (num, 1)).reshape(num)  # noqa: E731
    return {"sigma": sigma, "c_in": flat(c_in), "c_out": flat(c_out), "c_skip": flat(c_skip), "c_noise": flat(c_noise)}


def weighting_curves(weighting: Any, lam: torch.Tensor, schedule: Any = None) -> dict:
    """The weighting at log-SNR values ``lam``, converted to every loss type (keyed by loss type)."""
    from diffusion_schemes.weightings import weight_for

    try:
        return {target: weight_for(weighting, lam, target, schedule=schedule).double() for target in _loss_types()}
    except (ValueError, TypeError) as exc:
        hint = " Pass a noise schedule with --schedule NAME." if schedule is None else ""
        raise DiffusionSchemesError(f"cannot evaluate the weighting {weighting!r}: {exc}.{hint}") from exc


# ---------------------------------------------------------------------------------------------- drawing
def _figure(rows: int, cols: int) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise DiffusionSchemesError(f"the plot command needs matplotlib, which is not installed: {_INSTALL_HINT}") from exc
    return Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")


def _draw_schedules(items: list[tuple[str, Any]], steps: int) -> Any:
    fig = _figure(2, 3)
    ax = fig.subplots(2, 3)
    many = len(items) > 1
    log_t, t_wide = True, False
    for label, schedule in items:
        c = schedule_curves(schedule, steps=steps)
        line = ax[0, 0].plot(c["t"], c["noise_level"], label=label)[0]
        color = line.get_color()
        ax[0, 0].plot(c["step_t"], c["steps_noise_level"], ".", color=color, ms=4)
        ax[0, 1].plot(c["t"], c["lambda"], color=color, label=label)
        draws = c["t_draws"]
        wide = bool((draws > 0).all()) and float(draws.max()) / float(draws.min()) > 50
        shown = draws.log() if wide else draws
        ax[0, 2].hist(shown.numpy(), bins=80, density=True, histtype="step", color=color, label=label)
        t_wide = wide
        ax[1, 0].hist(c["log_noise_level_draws"].numpy(), bins=80, density=True, histtype="step", color=color,
                      label=label)
        if "log_noise_level_density" in c:
            ax[1, 0].plot(*c["log_noise_level_density"], "--", color=color, label=f"{label} (inverse CDF)")
            ax[1, 0].legend(fontsize=7)
        lam = c["lambda_train"]
        styles = dict(zip(c["weights"], ["-", "--", ":", "-."]))
        for ptype, w in c["weights"].items():
            if many and ptype != "epsilon":  # overlaid schemes compare on one loss type
                continue
            ax[1, 1].plot(lam, w, styles[ptype], color=color, label=f"{label} ({ptype}-loss)" if many else ptype)
        # weight x density of lambda: where the epsilon-loss puts its emphasis (Kingma & Gao 2023)
        draws_lam = -2 * c["log_noise_level_draws"]
        w_eps = schedule.loss_weight(c["t_draws"], "epsilon").double()
        ax[1, 2].hist(draws_lam.numpy(), bins=80, weights=w_eps.numpy(), density=True, histtype="step",
                      color=color, label=label)
        lo, hi = schedule.domain(training=False)
        log_t = log_t and lo > 0 and hi / lo > 50
    ax[0, 0].set(xlabel="t (the scheme's own time)", ylabel="noise level sigma/alpha", title="noise level sigma(t)",
                 yscale="log")
    ax[0, 1].set(xlabel="t", ylabel="lambda = log alpha^2 - log sigma^2", title="log-SNR lambda(t)")
    ax[0, 2].set(xlabel="ln t" if t_wide else "t", ylabel="density", title="training distribution of " + ("ln t" if t_wide else "t"))
    ax[1, 0].set(xlabel="ln(noise level) = -lambda/2", ylabel="density", title="training distribution of ln sigma")
    ax[1, 1].set(xlabel="lambda", ylabel="loss weight", title="loss weight per prediction type", yscale="log")
    ax[1, 2].set(xlabel="lambda", ylabel="w_eps(lambda) p(lambda), normalised", title="where the loss puts its weight")
    if log_t:
        for a in (ax[0, 0], ax[0, 1]):
            a.set_xscale("log")
    for a in ax.flat:
        a.grid(alpha=0.3)
    ax[1, 1].legend(fontsize=7)
    if many:
        ax[0, 1].legend(fontsize=7)
    return fig


def _draw_preconditioners(items: list[tuple[str, Any]], sigma_range: tuple[float, float]) -> Any:
    fig = _figure(1, 4)
    ax = fig.subplots(1, 4)
    negative = set()
    for label, precond in items:
        c = preconditioner_curves(precond, *sigma_range)
        color = None
        for a, key in zip(ax, ("c_in", "c_out", "c_skip", "c_noise")):
            y = c[key]
            style = "-"
            if key in ("c_in", "c_out") and bool((y < 0).any()):  # log axes show the magnitude, dashed
                y, style = y.abs(), "--"
                negative.add(key)
            color = a.plot(c["sigma"], y, style, color=color, label=label + (" (negative)" if style == "--" else ""))[0].get_color()
    for a, key in zip(ax, ("c_in", "c_out", "c_skip", "c_noise")):
        title = f"|{key}| (dashed: negative)" if key in negative else key
        a.set(xlabel="noise level sigma", title=title, xscale="log")
        if key in ("c_in", "c_out"):
            a.set_yscale("log")
        a.grid(alpha=0.3)
    ax[1].legend(fontsize=7)
    ax[0].legend(fontsize=7)
    return fig


def _draw_weightings(items: list[tuple[str, Any]], schedule: Any, lam_range: tuple[float, float]) -> Any:
    fig = _figure(1, 1)
    ax = fig.subplots()
    lam = torch.linspace(lam_range[0], lam_range[1], 400, dtype=torch.float64)
    many = len(items) > 1
    styles = ["-", "--", ":", "-."]
    for label, weighting in items:
        color = None
        for style, (target, w) in zip(styles, weighting_curves(weighting, lam, schedule).items()):
            line = ax.plot(lam, w, style, color=color, label=f"{label} {target}" if many else target)[0]
            color = line.get_color()
    ax.set(xlabel="lambda = log alpha^2 - log sigma^2", ylabel="weight", yscale="log",
           title="weight per loss type" + (f" (schedule {schedule.name})" if schedule is not None else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


# ---------------------------------------------------------------------------------------------- command
def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise DiffusionSchemesError(f"--set expects key=value (e.g. --set sigma_data=1.0), got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def plot(
    kind: str,
    names: list[str],
    out: str | Path = ".",
    overrides: dict[str, Any] | None = None,
    schedule: str | None = None,
    steps: int = 18,
    sigma_range: tuple[float, float] | None = None,
    lam_range: tuple[float, float] = (-15.0, 15.0),
    fmt: str = "png",
    dpi: int = 80,
) -> Path:
    """Draw the curves of the schemes ``names`` of ``kind`` into ``out``; return the file written.

    ``overrides`` are config fields applied to every name; ``schedule`` names the noise schedule
    a weighting is evaluated with (and whose noise levels a preconditioner is plotted over).
    """
    from diffusion_schemes.specs.discovery import registry

    for what, value in (("steps", steps), ("dpi", dpi)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{what} must be an int >= 1, got {value!r}")
    for what, rng, low in (("sigma_range", sigma_range, 0.0), ("lam_range", lam_range, -math.inf)):
        if rng is not None and not (len(rng) == 2 and low < rng[0] < rng[1] < math.inf):
            bound = "0 < MIN < MAX, both finite" if low == 0.0 else "MIN < MAX, both finite"
            raise InvalidArgumentError(f"{what} must be two numbers with {bound}, got {tuple(rng)!r}")
    overrides = overrides or {}
    sched = registry.create("noise_schedule", schedule) if schedule else None
    if kind == "noise_schedule":
        fig = _draw_schedules([(n, registry.create(kind, {"name": n, **overrides})) for n in names], steps)
    elif kind == "preconditioner":
        if sigma_range is None:
            sigma_range = (float(sched.sigmas(2)[1]), float(sched.sigmas(2)[0])) if sched else (0.002, 80.0)
        items = [(n, registry.create(kind, {"name": n, **overrides}, model=_ZeroBackbone())) for n in names]
        fig = _draw_preconditioners(items, sigma_range)
    elif kind == "weighting":
        if sched is not None and lam_range == (-15.0, 15.0):
            lo, hi = sched.domain(training=True)
            lam_range = tuple(sorted(float(v) for v in sched.get_log_snr(torch.tensor([lo, hi], dtype=torch.float64),
                                                                          training=True)))
        fig = _draw_weightings([(n, registry.create(kind, {"name": n, **overrides})) for n in names], sched, lam_range)
    else:
        from diffusion_schemes.specs.discovery import check_kind

        check_kind(kind)
        raise DiffusionSchemesError(f"there is nothing to plot for a {kind}; plot a noise_schedule, preconditioner or weighting")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{'+'.join(names)}.{fmt}"
    fig.savefig(path, dpi=dpi)
    return path


def _run(args: argparse.Namespace) -> int:
    path = plot(
        args.kind,
        args.names,
        out=args.out,
        overrides=_parse_sets(args.set),
        schedule=args.schedule,
        steps=args.steps,
        sigma_range=tuple(args.sigma_range) if args.sigma_range else None,
        lam_range=tuple(args.lambda_range),
        fmt=args.format,
        dpi=args.dpi,
    )
    print(path)
    return 0


def add_parser(cli: Any) -> None:
    """Add the ``plot`` subcommand to the ``diffusion-schemes`` sub-parsers."""
    p = cli.add_parser(
        "plot",
        help="plot the curves of installed schemes (needs matplotlib)",
        description=(
            "Draw a scheme's curves into DIR/KIND-NAME.png: for a noise_schedule sigma(t), lambda(t), the training "
            "distribution and the loss weight per prediction type; for a preconditioner c_in, c_out, c_skip, c_noise "
            "against the noise level; for a weighting the weight against lambda in every loss type. "
            "Several names are overlaid."
        ),
    )
    p.add_argument("kind", choices=("noise_schedule", "preconditioner", "weighting"))
    p.add_argument("names", nargs="+", metavar="NAME", help="installed scheme name(s)")
    p.add_argument("--out", default=".", metavar="DIR", help="folder to write into (default: .)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config field for every NAME (value parsed as JSON, else a string); repeatable")
    p.add_argument("--schedule", metavar="NAME", help="noise schedule for a weighting that needs one, or whose "
                   "noise levels a preconditioner is plotted over")
    p.add_argument("--steps", type=int, default=18, help="sampling steps marked on sigma(t) (default: 18)")
    p.add_argument("--sigma-range", type=float, nargs=2, metavar=("MIN", "MAX"), help="noise levels for a preconditioner")
    p.add_argument("--lambda-range", type=float, nargs=2, default=(-15.0, 15.0), metavar=("MIN", "MAX"),
                   help="log-SNR range for a weighting (default: -15 15)")
    p.add_argument("--format", default="png", choices=("png", "svg", "pdf"), help="file format (default: png)")
    p.add_argument("--dpi", type=int, default=80, help="resolution of a png (default: 80)")
    p.set_defaults(func=_run)
