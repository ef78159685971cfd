"""A diffusion-schemes noise schedule speaking BayesFlow's ``NoiseSchedule`` conventions.

BayesFlow (2.0.12) calls its schedule with ``t`` in ``[0, 1]`` (0: data, 1: noise) and a
``training`` flag, and with keyword arguments named ``t`` and ``log_snr_t``. Here ``t`` is
mapped onto the schedule's native time (see :mod:`diffusion_schemes_bayesflow._maps`) and
everything else is the schedule's own: ``lambda`` from ``get_log_snr``, ``alpha, sigma`` from
``get_alpha_sigma``. Rates in ``t`` are the schedule's rates in native time times
``d time / d t`` (chain rule): ``derivative_log_snr`` gives ``beta = -d lambda / dt *
sigmoid(-lambda)`` and ``get_drift`` the forward SDE ``(f, g^2)`` with
``g^2 = -d lambda / dt * sigma^2``, which for variance exploding is ``beta (1 + exp(-lambda))``
where BayesFlow's own schedules use ``beta``. Weights are for the noise-prediction loss.
"""

from __future__ import annotations

import copy
import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402

_grad_mode = torch.is_grad_enabled()
import keras  # noqa: E402
from bayesflow.networks.inference.diffusion import NoiseSchedule  # noqa: E402  (BayesFlow turns autograd off)
from bayesflow.utils.serialization import serializable  # noqa: E402

import diffusion_schemes as ds  # noqa: E402
from diffusion_schemes.weightings import weight_for  # noqa: E402

from ._maps import GridMap, TrainingMap  # noqa: E402

torch.set_grad_enabled(_grad_mode)  # diffusion-schemes' own training needs autograd; BayesFlow enables it itself

__all__ = ["BayesFlowNoiseSchedule", "as_bayesflow"]

def _to_torch(x: Any) -> torch.Tensor:
    """A BayesFlow tensor (or a Python number) as a torch tensor; a copy only off the torch backend."""
    if isinstance(x, torch.Tensor):
        return x
    if keras.backend.backend() == "torch" or isinstance(x, (int, float)):
        return torch.as_tensor(x)
    return torch.from_numpy(keras.ops.convert_to_numpy(x).copy())


def _from_torch(y: torch.Tensor, like: Any) -> Any:
    """``y`` back in the caller's backend, in its floating dtype (Keras' ``floatx`` for numbers)."""
    if isinstance(like, torch.Tensor) and like.is_floating_point():
        dtype = like.dtype
    else:
        dtype = getattr(torch, keras.backend.floatx())
    y = y.to(dtype)
    if keras.backend.backend() == "torch":
        return y
    return keras.ops.convert_to_tensor(y.detach().cpu().numpy())


def _build(schedule: Any) -> Any:
    if isinstance(schedule, ds.BaseNoiseSchedule):
        return schedule
    if isinstance(schedule, NoiseSchedule):
        raise ds.errors.ArgumentTypeError(
            f"{schedule!r} is already a BayesFlow NoiseSchedule; pass a diffusion-schemes schedule"
        )
    return ds.create("noise_schedule", schedule)


def _build_discretization(discretization: Any) -> Any:
    if discretization is None or hasattr(discretization, "sigma_at"):
        return discretization
    return ds.create("discretization", discretization)


def _with_variance_type(schedule: Any, variance_type: str) -> Any:
    """A copy of ``schedule`` whose forward process is ``variance_type`` (same lambda, same noise level)."""
    if variance_type not in ("preserving", "exploding"):
        raise ds.SchemeConfigError(f"variance_type must be 'preserving' or 'exploding', got {variance_type!r}")
    if type(schedule).get_alpha_sigma is not ds.BaseNoiseSchedule.get_alpha_sigma:
        raise ds.SchemeConfigError(
            f"the schedule {schedule.name!r} states its own alpha and sigma ({schedule.variance_type!r}), so its "
            f"variance type cannot be changed to {variance_type!r}; drop the variance_type argument"
        )
    clone = copy.copy(schedule)
    clone.variance_type = variance_type
    return clone


def _config_of(obj: Any) -> dict[str, Any]:
    """The config that ``ds.create`` rebuilds ``obj`` from (its spec, or its name and ``get_config()``)."""
    try:
        return obj.spec.model_dump(mode="json")
    except (AttributeError, NotImplementedError):
        pass
    try:
        return {"name": obj.name, **obj.get_config()}
    except AttributeError as exc:
        raise ds.errors.ArgumentTypeError(
            f"{obj!r} cannot be described by name, so this BayesFlow schedule's config cannot be serialised; "
            "pass it by name or config instead"
        ) from exc


#: The keys of :meth:`BayesFlowNoiseSchedule.get_config`, which ``from_config`` takes.
_CONFIG_KEYS = frozenset({"name", "variance_type", "schedule", "discretization"})


@serializable("diffusion_schemes_bayesflow")
class BayesFlowNoiseSchedule(NoiseSchedule):
    """A diffusion-schemes noise schedule as a BayesFlow ``NoiseSchedule``.

    Args:
        schedule: a built schedule, a scheme name or a config (what ``ds.create`` takes);
            ``None`` builds the scheme named ``name``.
        name: the scheme's name (BayesFlow's config key); checked against the schedule's.
        variance_type: ``None`` keeps the schedule's own. ``"preserving"`` or ``"exploding"``
            runs the same ``lambda(t)`` with that forward process (``alpha^2 = sigmoid(lambda)``
            or ``alpha = 1``), as BayesFlow's ``EDMNoiseSchedule(variance_type=...)`` does; the
            noise level ``sigma / alpha = exp(-lambda / 2)`` is the same either way. A schedule with
            its own ``alpha, sigma`` (``"custom"``, flow matching) keeps them.
        discretization: what ``training=False`` walks: ``None`` for the schedule's own grid
            (``timesteps``), or a discretization (an object with ``sigma_at(u, schedule)``, or
            a name or config of the ``"discretization"`` kind where it is installed).

    Attributes ``log_snr_min`` and ``log_snr_max`` are ``lambda`` at ``t = 1`` and ``t = 0`` of
    the sampling map (BayesFlow normalises the network's noise input with them); a schedule with
    a ``sigma_data`` (EDM) exposes it, which BayesFlow's ``"F"`` prediction reads.

    >>> import torch
    >>> from diffusion_schemes_bayesflow import as_bayesflow
    >>> vp = as_bayesflow("vp")
    >>> vp.get_config()["name"], vp.get_config()["variance_type"]
    ('vp', 'preserving')
    >>> t = torch.tensor([0.0, 1.0])
    >>> torch.allclose(vp.get_t_from_log_snr(vp.get_log_snr(t, training=True), training=True), t)
    True
    """

    def __init__(
        self,
        schedule: Any = None,
        *,
        name: str | None = None,
        variance_type: str | None = None,
        discretization: Any = None,
    ) -> None:
        if schedule is None:
            if name is None:
                raise ds.errors.ArgumentTypeError(
                    "as_bayesflow needs a noise schedule: a built one, a scheme name such as 'edm' or a config "
                    "such as {'name': 'vp'} (or name=...); got None"
                )
            schedule = name
        built = _build(schedule)
        if name is not None and name != built.name:
            raise ds.SchemeConfigError(
                f"name {name!r} does not match the schedule's name {built.name!r}; drop one of the two"
            )
        if variance_type is not None and variance_type != built.variance_type:
            built = _with_variance_type(built, variance_type)
        super().__init__(name=built.name, variance_type=built.variance_type)
        self.schedule = built
        self.training_map = TrainingMap(built)
        self.discretization = _build_discretization(discretization)
        self.sampling_map = GridMap(built, self.discretization)
        ends = built.get_log_snr(self.sampling_map.time(torch.tensor([1.0, 0.0], dtype=torch.float64)))
        self.log_snr_min, self.log_snr_max = float(ends[0]), float(ends[1])
        if hasattr(built, "sigma_data"):
            self.sigma_data = float(built.sigma_data)

    def _map(self, training: bool) -> TrainingMap | GridMap:
        return self.training_map if training else self.sampling_map

    #: How far outside [0, 1] a time may fall by the rounding of an integrator's steps (then clamped).
    T_ROUNDING = 1e-6

    def _checked_t(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` clamped onto ``[0, 1]``; on the CPU a clear error beyond :attr:`T_ROUNDING` of it."""
        tol = self.T_ROUNDING
        if t.device.type == "cpu" and t.numel() and not bool(((t >= -tol) & (t <= 1 + tol)).all()):
            bad = t[~((t >= -tol) & (t <= 1 + tol))].flatten()[:4].tolist()
            raise ds.DomainError(f"BayesFlow's diffusion time t must lie in [0, 1]; got t={bad}")
        return t.clamp(0, 1)

    def _time_rate(self, lam: torch.Tensor, training: bool) -> torch.Tensor:
        """``d time / d t`` at the ``t`` whose log-SNR is ``lam``."""
        time = self.schedule.get_t_from_log_snr(lam, training)
        mapping = self._map(training)
        return mapping.dtime_dt(mapping.t(time))

    # ------------------------------------------------------------------ BayesFlow's interface
    def get_log_snr(self, t: float | Any, training: bool) -> Any:
        """``lambda`` at BayesFlow time ``t`` in ``[0, 1]``: the schedule's ``lambda`` at the mapped native time."""
        time = self._map(training).time(self._checked_t(_to_torch(t)))
        return _from_torch(self.schedule.get_log_snr(time, training), t)

    def get_t_from_log_snr(self, log_snr_t: float | Any, training: bool) -> Any:
        """The BayesFlow time ``t`` whose log-SNR is ``log_snr_t`` (inverse of :meth:`get_log_snr`)."""
        lam = _to_torch(log_snr_t).to(torch.float64)
        time = self.schedule.get_t_from_log_snr(lam, training)
        return _from_torch(self._map(training).t(time), log_snr_t)

    def derivative_log_snr(self, log_snr_t: float | Any, training: bool = False) -> Any:
        """``beta(t) = d/dt log(1 + exp(-lambda(t)))`` in BayesFlow time."""
        lam = _to_torch(log_snr_t).to(torch.float64)
        beta = self.schedule.derivative_log_snr(lam, training) * self._time_rate(lam, training)
        return _from_torch(beta, log_snr_t)

    def get_drift(self, log_snr_t: Any, x: Any = None, training: bool = False) -> Any:
        """The forward SDE in BayesFlow time: ``(f(x, t), g(t)^2)`` if ``x`` is given, else ``g^2``.

        ``f = d log alpha / dt * x`` and ``g^2 = -d lambda / dt * sigma^2`` (the schedule's
        ``get_drift_diffusion`` times ``d time / d t``); for variance preserving these are
        BayesFlow's ``-beta / 2 * x`` and ``beta``.
        """
        lam = _to_torch(log_snr_t).to(torch.float64)
        rate = self._time_rate(lam, training)
        if x is None:
            return _from_torch(self.schedule.get_drift_diffusion(lam, None, training) * rate, log_snr_t)
        xx = _to_torch(x)
        f, g2 = self.schedule.get_drift_diffusion(lam, xx.to(torch.float64), training)
        return _from_torch(f * rate, x), _from_torch(g2 * rate, log_snr_t)

    #: The name later BayesFlow versions and the seed documents use for :meth:`get_drift`.
    get_drift_diffusion = get_drift

    def get_alpha_sigma(self, log_snr_t: Any) -> tuple[Any, Any]:
        """``(alpha, sigma)`` of the schedule's forward process at ``log_snr_t``."""
        lam = _to_torch(log_snr_t)
        alpha, sigma = self.schedule.get_alpha_sigma(lam)
        return _from_torch(alpha, log_snr_t), _from_torch(sigma, log_snr_t)

    def get_weights_for_snr(self, log_snr_t: Any) -> Any:
        """The schedule's weighting as noise-prediction (epsilon-loss) weights; ones without a weighting.

        A NaN log-SNR is refused on the CPU (a :class:`~diffusion_schemes.DomainError`) rather than
        weighted as NaN; on accelerators the check is skipped to keep the loss free of host reads.
        """
        lam = _to_torch(log_snr_t)
        if lam.device.type == "cpu" and lam.is_floating_point() and bool(torch.isnan(lam).any()):
            raise ds.DomainError(
                f"get_weights_for_snr got a NaN log-SNR ({lam.flatten()[:4].tolist()}); the log-SNR comes from "
                "get_log_snr(t) with t in [0, 1]"
            )
        weight = weight_for(self.schedule.weighting, lam, "epsilon", schedule=self.schedule)
        return _from_torch(weight, log_snr_t)

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """``name``, ``variance_type`` (BayesFlow's keys) and the schedule's full config."""
        config = {"name": self.name, "variance_type": self._variance_type, "schedule": _config_of(self.schedule)}
        if self.discretization is not None:
            config["discretization"] = _config_of(self.discretization)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> BayesFlowNoiseSchedule:
        """Rebuild from :meth:`get_config` (or from BayesFlow-style ``{"name": ..., "variance_type": ...}``).

        >>> BayesFlowNoiseSchedule.from_config({"name": "vp", "sigma": 2})
        Traceback (most recent call last):
          ...
        diffusion_schemes.SchemeConfigError: a BayesFlow schedule config has the keys discretization, name, schedule and variance_type; got the unknown key(s) sigma ...
        """
        if not isinstance(config, dict):
            raise ds.errors.ArgumentTypeError(f"a BayesFlow schedule config must be a dict, got {type(config).__name__}")
        unknown = sorted(set(config) - _CONFIG_KEYS)
        if unknown:
            raise ds.SchemeConfigError(
                f"a BayesFlow schedule config has the keys {', '.join(sorted(_CONFIG_KEYS)[:-1])} and "
                f"{sorted(_CONFIG_KEYS)[-1]}; got the unknown key(s) {', '.join(map(str, unknown))} (a scheme's own "
                "fields go inside 'schedule', e.g. {'name': 'vp', 'schedule': {'name': 'vp', 'beta_min': 0.1}})"
            )
        return cls(**config)

    def validate(self) -> None:
        """BayesFlow's checks, the schedule's own (:meth:`BaseNoiseSchedule.validate`) and both maps' round trips.

        Raises ``ValueError`` naming what failed.
        """
        self.schedule.validate()
        super().validate()
        t = torch.linspace(0, 1, 65, dtype=torch.float64)
        for training in (True, False):
            lam = _to_torch(self.get_log_snr(t, training=training)).to(torch.float64)
            where = "training" if training else "sampling"
            if not bool(torch.isfinite(lam).all()):
                raise ValueError(f"{self.name}: lambda(t) is not finite on [0, 1] ({where})")
            if not bool((lam[1:] <= lam[:-1]).all()):
                raise ValueError(f"{self.name}: lambda(t) increases somewhere on [0, 1] ({where})")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.schedule!r})"


def as_bayesflow(schedule: Any, discretization: Any = None, variance_type: str | None = None) -> BayesFlowNoiseSchedule:
    """Any installed noise schedule as a BayesFlow ``NoiseSchedule``: a built one, a name or a config.

    ``discretization`` chooses the sampling map and ``variance_type`` the forward process (see
    :class:`BayesFlowNoiseSchedule`).

    >>> from diffusion_schemes_bayesflow import as_bayesflow
    >>> edm = as_bayesflow({"name": "edm", "sigma_data": 1.0})
    >>> round(edm.log_snr_min, 4), round(edm.log_snr_max, 4)    # -2 ln 80, -2 ln 0.002
    (-8.7641, 12.4292)
    """
    return BayesFlowNoiseSchedule(schedule, discretization=discretization, variance_type=variance_type)
