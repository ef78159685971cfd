"""BayesFlow's argument name ``log_snr_t`` accepted, with a deprecation warning, where ours is ``log_snr``."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

from diffusion_schemes.errors import ArgumentTypeError

__all__ = ["LOG_SNR_METHODS", "accept_log_snr_t"]

#: The schedule methods whose log-SNR argument BayesFlow's ``NoiseSchedule`` names ``log_snr_t``.
LOG_SNR_METHODS = ("get_t_from_log_snr", "derivative_log_snr", "get_alpha_sigma", "get_drift_diffusion", "get_weights_for_snr")


def accept_log_snr_t(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` also callable as ``method(log_snr_t=...)``, which warns (``DeprecationWarning``) and passes ``log_snr``."""
    if getattr(method, "_accepts_log_snr_t", False):
        return method

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "log_snr_t" in kwargs:
            if args or "log_snr" in kwargs:
                raise ArgumentTypeError(f"{method.__name__}() got the log-SNR twice: pass log_snr only")
            warnings.warn(
                f"{method.__name__}(log_snr_t=...) is BayesFlow's argument name and is deprecated here; "
                "pass log_snr=... (or the value positionally)",
                DeprecationWarning,
                stacklevel=2,
            )
            kwargs["log_snr"] = kwargs.pop("log_snr_t")
        return method(self, *args, **kwargs)

    wrapper._accepts_log_snr_t = True  # type: ignore[attr-defined]
    return wrapper
