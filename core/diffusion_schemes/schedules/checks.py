"""The checks behind :meth:`BaseNoiseSchedule.validate`: a schedule's log-SNR against its own claims.

>>> import diffusion_schemes as ds
>>> from diffusion_schemes.schedules.checks import check_schedule
>>> check_schedule(ds.create("noise_schedule", "vp"), ds.BaseNoiseSchedule.dlog_snr_dt)   # passes
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from diffusion_schemes.errors import InvalidArgumentError

__all__ = ["check_schedule"]


def check_schedule(schedule: Any, autograd_derivative: Callable[..., Any], num: int = 257) -> None:
    """Finite at both ends of each domain, lambda decreasing, inverse and noise level consistent.

    A closed-form ``dlog_snr_dt`` is compared with ``autograd_derivative`` (the base class's
    autograd of ``get_log_snr``); every failed
    check is listed in one ``ValueError`` with the values seen.
    """
    problems = []
    for training in (False, True):
        lo, hi = schedule.domain(training)
        where = "training" if training else "sampling"
        if not (lo < hi):
            problems.append(f"{where} domain ({lo}, {hi}) is empty")
            continue
        t = torch.linspace(lo, hi, num, dtype=torch.float64)
        lam = schedule.get_log_snr(t, training)
        if not bool(torch.isfinite(lam).all()):
            problems.append(f"{where}: lambda(t) not finite at t={t[~torch.isfinite(lam)].tolist()[:4]}")
            continue
        if not bool((lam[1:] < lam[:-1]).all()):
            bad = int((lam[1:] >= lam[:-1]).nonzero()[0])
            problems.append(f"{where}: lambda(t) is not decreasing near t={float(t[bad]):.6g}")
        back = schedule.get_t_from_log_snr(lam, training)
        err = ((back - t).abs() / t.abs().clamp_min(1e-12)).max()
        if not float(err) < 1e-6:
            problems.append(
                f"{where}: get_t_from_log_snr(get_log_snr(t)) differs from t by {float(err):.2e} (relative)"
            )
        if not training:
            level_err = (schedule.noise_level(t) / torch.exp(-lam / 2) - 1).abs().max()
            if not float(level_err) < 1e-6:
                problems.append(f"{where}: noise_level(t) differs from exp(-lambda(t)/2) by {float(level_err):.2e}")
        dlam = schedule.dlog_snr_dt(t, training)
        if not bool(torch.isfinite(dlam).all()):
            problems.append(f"{where}: d lambda/dt not finite")
        elif type(schedule).dlog_snr_dt is not autograd_derivative:  # a closed form: check it
            auto = autograd_derivative(schedule, t, training)
            d_err = ((dlam - auto).abs() / auto.abs().clamp_min(1e-12)).max()
            if not float(d_err) < 1e-6:
                problems.append(f"{where}: dlog_snr_dt differs from autograd of get_log_snr by {float(d_err):.2e}")
    if problems:
        raise InvalidArgumentError(f"noise schedule {schedule.name!r} is invalid:\n  - " + "\n  - ".join(problems))
