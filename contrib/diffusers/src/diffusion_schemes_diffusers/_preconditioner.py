"""The ``discrete`` preconditioner around a diffusers network, and :func:`from_diffusers`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

import diffusion_schemes as ds
from diffusion_schemes.adapters import BackboneAdapter

from . import TABLE_FIELDS, DiffusersBridgeError, DiscretePreconditionerSpec
from ._table import TableMixin


class DiscretePreconditioner(TableMixin, ds.BaseAffinePreconditioner):
    """A network trained on a DDPM table, called at its timestep; the time is the noise level.

    The network sees the scaled latent ``c_in x = x / sqrt(1 + sigma^2)`` (DDPM's
    ``sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps``) and the timestep ``c_noise = timestep(sigma)``
    (fractional between table entries). Its output becomes an x0-prediction by ``prediction_type``
    (``alpha = 1 / sqrt(1 + sigma^2)``; Salimans & Ho 2022 for ``v = alpha eps - sigma alpha x0``):

    - ``epsilon``: ``x0 = x - sigma eps`` (``c_skip = 1``, ``c_out = -sigma``);
    - ``v_prediction``: ``x0 = alpha^2 x - sigma alpha v`` (``c_skip = 1 / (1 + sigma^2)``,
      ``c_out = -sigma / sqrt(1 + sigma^2)``);
    - ``sample``: ``x0`` itself (``c_skip = 0``, ``c_out = 1``).

    >>> import torch
    >>> from diffusion_schemes_diffusers import DiscretePreconditioner
    >>> precond = DiscretePreconditioner(lambda x, t, condition=None: torch.ones_like(x))
    >>> c_in, c_noise, c_out, c_skip = precond.coefficients(precond.table_sigmas[[0, 999]], ndim=2)
    >>> c_noise.tolist(), c_out.flatten().tolist() == (-precond.table_sigmas[[0, 999]]).tolist()
    ([0.0, 999.0], True)
    """

    spec_class = DiscretePreconditionerSpec

    def __init__(self, model: Any, *args: Any, meta: Any = None, **kwargs: Any) -> None:
        super().__init__(model, *args, meta=meta, **kwargs)
        self._init_table(self.spec)

    def compute_coefficients(self, sigma: torch.Tensor):
        variance = sigma**2 + 1
        c_in = variance.rsqrt()
        if self.prediction_type == "epsilon":
            c_skip, c_out = torch.ones_like(sigma), -sigma
        elif self.prediction_type == "v_prediction":
            c_skip, c_out = 1 / variance, -sigma * c_in
        else:
            c_skip, c_out = torch.zeros_like(sigma), torch.ones_like(sigma)
        return c_in, self.timestep(sigma), c_out, c_skip


class DiffusersBackbone(BackboneAdapter):
    """A diffusers network as ``F(x, t, condition)``: its output's ``.sample``, the condition by keyword.

    ``condition`` names the keyword the condition goes to (``"encoder_hidden_states"``,
    ``"class_labels"``), or several: the condition is then a TensorDict (or mapping) with those keys,
    each passed under its own name. ``None``: the network takes no condition.
    """

    def __init__(self, model: Any, condition: str | Sequence[str] | None = None) -> None:
        keys = None if condition is None or isinstance(condition, str) else tuple(condition)
        if keys is not None and not (keys and all(isinstance(k, str) for k in keys)):
            raise DiffusersBridgeError(f"condition must be a keyword name or a list of them, got {condition!r}")
        super().__init__(model, output="sample", condition=condition if isinstance(condition, str) else False)
        self.keys = keys

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: Any = None, **model_kwargs: Any) -> torch.Tensor:
        if self.keys is None or condition is None:
            return super().forward(x, t, condition, **model_kwargs)
        missing = [k for k in self.keys if k not in condition.keys()]
        if missing:
            raise DiffusersBridgeError(
                f"the condition has no {missing} (keys {sorted(condition.keys())}); from_diffusers was told the "
                f"model takes {list(self.keys)}: pass a TensorDict with those keys"
            )
        return self.model(x, t, **{k: condition[k] for k in self.keys}, **model_kwargs).sample

    def extra_repr(self) -> str:
        return f"condition={self.keys if self.keys is not None else self.condition!r}"


#: diffusers config keys that mean something this bridge does not reproduce, with what to do instead.
_UNSUPPORTED = {
    "timestep_type": ("continuous", "continuous timesteps (0.25 log sigma) are EDM's: use the 'edm' preconditioner"),
}


def _config_of(scheduler_or_config: Any) -> Mapping[str, Any]:
    config = getattr(scheduler_or_config, "config", scheduler_or_config)
    if not isinstance(config, Mapping):
        raise DiffusersBridgeError(
            f"from_diffusers needs a diffusers scheduler or its config (a mapping), got {type(scheduler_or_config).__name__}"
        )
    return config


def table_config(scheduler_or_config: Any, interpolation: str | None = None) -> dict[str, Any]:
    """The ``discrete`` table fields (and ``prediction_type``) of a diffusers scheduler or config.

    ``interpolation`` defaults to ``"log_sigma"`` where the scheduler places Karras, exponential or
    beta sigmas (it maps them back to timesteps in log sigma) and ``"linear"`` otherwise.

    >>> table_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
    ...               "use_karras_sigmas": True, "prediction_type": "v_prediction"})["interpolation"]
    'log_sigma'
    """
    config = _config_of(scheduler_or_config)
    if "beta_schedule" not in config and "trained_betas" not in config:
        raise DiffusersBridgeError(
            "this scheduler's config has no noise table (no beta_schedule or trained_betas): it is not a "
            "discrete-time scheduler; EDM schedulers map to the 'edm' scheme, flow-matching ones to 'flow_matching'"
        )
    for key, (value, hint) in _UNSUPPORTED.items():
        if config.get(key) == value:
            raise DiffusersBridgeError(f"{key}={value!r} is not supported: {hint}")
    schedule = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is None and schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        raise DiffusersBridgeError(
            f"beta_schedule={schedule!r} is not supported; the 'discrete' schedule takes 'linear', 'scaled_linear', "
            "'squaredcos_cap_v2', or the table itself as trained_betas= or alphas_cumprod="
        )
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction", "sample"):
        raise DiffusersBridgeError(
            f"prediction_type={prediction!r} is not supported; a discrete-time network predicts 'epsilon', "
            "'v_prediction' or 'sample'"
        )
    karras_like = any(config.get(k) for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"))
    fields = {k: config[k] for k in TABLE_FIELDS if k in config and config[k] is not None}
    trained = fields.get("trained_betas")
    if trained is not None:
        fields["trained_betas"] = [float(b) for b in trained]
        fields["num_train_timesteps"] = len(fields["trained_betas"])
    fields["interpolation"] = interpolation or ("log_sigma" if karras_like else "linear")
    fields["precision"] = "float32"  # diffusers computes its tables in float32: the noise levels the model saw
    fields["prediction_type"] = prediction
    return fields


def from_diffusers(
    model: Any, scheduler_or_config: Any, condition: str | Sequence[str] | None = None,
    interpolation: str | None = None,
) -> tuple[DiscretePreconditioner, Any]:
    """A diffusers network and its scheduler's noise table as ``(preconditioner, schedule)``.

    Args:
        model: a diffusers network (``UNet2DModel``, ``UNet2DConditionModel``, ...) or any module
            called as ``model(sample, timestep, ...)`` returning an object with ``.sample``.
        scheduler_or_config: the scheduler the model was trained with, or its config: its
            ``num_train_timesteps``, ``beta_*``, ``trained_betas``, ``rescale_betas_zero_snr`` and
            ``prediction_type`` (``epsilon``, ``v_prediction`` or ``sample``) are read; the table is
            computed in float32 as diffusers computes it (``precision="float32"``).
        condition: the keyword the model takes the condition under (``"encoder_hidden_states"``,
            ``"class_labels"``), a list of keywords (the condition is then a TensorDict with those
            keys), or ``None`` for an unconditional model.
        interpolation: the timestep map between table entries, ``"linear"`` or ``"log_sigma"``;
            default from the scheduler (see :func:`table_config`).

    The preconditioner is the ``discrete`` one around the model, the schedule the ``discrete`` one
    on the same table; both are by name, so every solver, discretization, guidance mode and
    inpainting of :func:`diffusion_schemes.sample` runs on the model.

    >>> import torch
    >>> from diffusers import DDPMScheduler
    >>> from diffusion_schemes_diffusers import from_diffusers
    >>> class Net(torch.nn.Module):                      # a diffusers-like network predicting zero noise
    ...     def forward(self, sample, timestep):
    ...         return type("Out", (), {"sample": torch.zeros_like(sample)})()
    >>> precond, schedule = from_diffusers(Net(), DDPMScheduler(prediction_type="epsilon"))
    >>> precond.spec.name, schedule.spec.name, precond.prediction_type
    ('discrete', 'discrete', 'epsilon')
    """
    fields = table_config(scheduler_or_config, interpolation)
    prediction = fields.pop("prediction_type")
    backbone = DiffusersBackbone(model, condition)
    precond = DiscretePreconditioner(backbone, prediction_type=prediction, **fields)
    schedule = ds.create("noise_schedule", {"name": "discrete", **fields})
    return precond, schedule
