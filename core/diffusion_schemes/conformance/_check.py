"""``check(kind, config)``: build a scheme by name and run every invariant of its kind."""

from __future__ import annotations

from typing import Any

from diffusion_schemes.errors import ArgumentTypeError, InvalidArgumentError
from diffusion_schemes.specs.discovery import check_kind, registry
from ._context import Context, ProbeBackbone
from ._report import CHECKS, ConformanceError, ConformanceReport, Failure

__all__ = ["check"]

_OPTIONS = {
    "noise_schedule": {"seed"},
    "preconditioner": {"seed", "schedule", "compile"},
    "weighting": {"seed", "schedule"},
    "solver": {"seed"},
    "discretization": {"seed", "schedule"},
}


def check(
    kind: str,
    config: Any,
    *,
    only: Any = None,
    skip: Any = (),
    raise_on_failure: bool = True,
    **options: Any,
) -> ConformanceReport:
    """Build the scheme ``config`` of ``kind`` (as :func:`diffusion_schemes.create` does) and check its invariants.

    Every invariant runs, even after one fails; the failures are gathered into one
    :class:`ConformanceError` that names each and shows the values seen. On success the
    :class:`ConformanceReport` lists what held and what did not apply.

    Args:
        kind: ``"noise_schedule"``, ``"preconditioner"``, ``"weighting"``, ``"solver"`` or ``"discretization"``.
        config: a name, a mapping with ``name``, or a spec.
        only: run only these invariants (names as in ``CHECKS[kind]``).
        skip: invariants not to run.
        raise_on_failure: return the report instead of raising when something fails.
        schedule: (preconditioner, weighting) the paired noise schedule's config. Default: the
            schedule of the same name when one is installed; for a weighting without one, the
            kit's reference schedule (``lambda = -2 log t`` on ``[1e-3, 1e3]``, plus a lambda grid
            on [-20, 20]). A preconditioner without a same-named schedule needs it.
            A discretization runs on ``schedule`` (a config or a schedule object) when given, else
            on the kit's reference schedule.
        compile: (preconditioner) set False to skip the ``torch.compile`` invariant.
        seed: seed of every random draw (default 0).

    >>> from diffusion_schemes import conformance
    >>> report = conformance.check("weighting", "snr")
    >>> report.ok, "conversions_consistent" in report.passed
    (True, True)
    """
    check_kind(kind)
    unknown = set(options) - _OPTIONS[kind]
    if unknown:
        raise ArgumentTypeError(
            f"check({kind!r}, ...) got unknown options {sorted(unknown)}; the options of a {kind} are "
            f"{sorted(_OPTIONS[kind])} (plus only, skip, raise_on_failure)"
        )
    invariants = CHECKS[kind]
    selected = _select(kind, invariants, only, skip)
    spec = registry.parse_spec(kind, config)
    ctx = _context(kind, spec, dict(options))
    report = ConformanceReport(kind, spec.name)
    for name in selected:
        ctx.skipped = None
        try:
            message = invariants[name].fn(ctx)
        except Exception as exc:  # noqa: BLE001 - an exception inside an invariant is a failure of it
            message = f"raised {type(exc).__name__}: {exc}"
        if message:
            report.failures.append(Failure(name, message))
        elif ctx.skipped is not None:
            report.skipped[name] = ctx.skipped
        else:
            report.passed.append(name)
    if report.failures and raise_on_failure:
        raise ConformanceError(report)
    return report


def _select(kind: str, invariants: dict, only: Any, skip: Any) -> list[str]:
    names = list(invariants)
    wanted = [only] if isinstance(only, str) else list(only) if only is not None else names
    skipped = [skip] if isinstance(skip, str) else list(skip)
    for n in [*wanted, *skipped]:
        if n not in invariants:
            raise InvalidArgumentError(f"{kind} has no conformance invariant {n!r}; they are: {', '.join(names)}")
    return [n for n in names if n in wanted and n not in skipped]


def _paired_schedule(kind: str, name: str, options: dict[str, Any]) -> Any:
    config = options.get("schedule")
    if config is not None:
        return config if hasattr(config, "get_log_snr") else registry.create("noise_schedule", config)
    if name in registry.names("noise_schedule"):
        return registry.create("noise_schedule", name)
    if kind == "weighting":
        from ._reference import ReferenceSchedule

        options["_reference_schedule"] = True
        return ReferenceSchedule()
    raise InvalidArgumentError(
        f"the preconditioner {name!r} has no noise schedule of the same name to pair with; pass one: "
        f"check('preconditioner', {name!r}, schedule='<schedule name or config>'). Installed schedules: "
        f"{', '.join(registry.names('noise_schedule')) or '(none)'}"
    )


def _context(kind: str, spec: Any, options: dict[str, Any]) -> Context:
    name = spec.name
    if kind == "preconditioner":
        schedule = _paired_schedule(kind, name, options)
        probe = ProbeBackbone()
        return Context(kind, name, spec, registry.create(kind, spec, model=probe), options, schedule, probe)
    if kind == "weighting":
        schedule = _paired_schedule(kind, name, options)
        return Context(kind, name, spec, registry.create(kind, spec), options, schedule)
    if kind == "discretization":
        config = options.get("schedule")
        if config is None:
            from ._reference import ReferenceSchedule

            schedule = ReferenceSchedule()
        else:
            schedule = config if hasattr(config, "get_log_snr") else registry.create("noise_schedule", config)
        return Context(kind, name, spec, registry.create(kind, spec), options, schedule)
    return Context(kind, name, spec, registry.create(kind, spec), options)
