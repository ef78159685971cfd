"""diffusers bridge: diffusers models and noise tables in, any scheme and solver out as a diffusers scheduler.

Registered by name through the ``diffusion_schemes`` entry point, like any third-party package:

- the ``discrete`` noise schedule and preconditioner: a DDPM noise table (``betas``,
  ``alphas_cumprod`` or a diffusers ``beta_schedule``) with its noise-level-to-timestep map;
- the ``linspace``, ``leading`` and ``trailing`` discretizations: diffusers' timestep spacings.

And three functions: :func:`from_diffusers` (a diffusers model and its scheduler's table become a
preconditioner and a schedule), :func:`as_diffusers_scheduler` (a schedule, a solver and a grid
become a diffusers scheduler) and :func:`export_run` (a run of the trainer's ``unet2d`` backbone
becomes a diffusers pipeline folder).

>>> import diffusion_schemes as ds
>>> schedule = ds.create("noise_schedule", {"name": "discrete", "beta_schedule": "scaled_linear",
...                                         "beta_start": 0.00085, "beta_end": 0.012})
>>> round(float(schedule.sigma_at_timestep(999)), 4), float(schedule.timestep(schedule.sigma_at_timestep(500)))
(14.6146, 500.0)

This module only declares the specs; building one imports its implementation (and diffusers
only where a diffusers object is made).
"""

from typing import Annotated, Literal

from pydantic import Field, model_validator

import diffusion_schemes as ds
from diffusion_schemes.lazy import lazy_exports

__all__ = [
    "DiffusersBridgeError", "DiffusionSchemesScheduler", "DiscreteNoiseSchedule", "DiscreteNoiseScheduleSpec",
    "DiscretePreconditioner", "DiscretePreconditionerSpec", "LeadingDiscretization", "LeadingSpec",
    "LinspaceDiscretization", "LinspaceSpec", "TrailingDiscretization", "TrailingSpec", "as_diffusers_scheduler",
    "export_run", "from_diffusers",
]


class DiffusersBridgeError(ds.DiffusionSchemesError, ValueError):
    """Something given to the diffusers bridge cannot be bridged; the message says what to pass instead."""


#: The fields that describe the noise table, shared by the ``discrete`` schedule and preconditioner.
TABLE_FIELDS = (
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "alphas_cumprod",
    "rescale_betas_zero_snr", "precision", "interpolation",
)


class _DiscreteTableSpec(ds.SchemeSpec):
    """The noise table fields, named as in diffusers' scheduler configs."""

    shared_parameters = TABLE_FIELDS
    num_train_timesteps: int = Field(1000, ge=2, le=100_000, description="Entries of the table (DDPM steps T).")
    beta_start: float = Field(0.0001, gt=0, lt=1, description="First beta of a 'linear' or 'scaled_linear' table.")
    beta_end: float = Field(0.02, gt=0, lt=1, description="Last beta of a 'linear' or 'scaled_linear' table.")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = Field(
        "linear", description="How the betas are made when neither trained_betas nor alphas_cumprod is given."
    )
    trained_betas: list[Annotated[float, Field(gt=0, lt=1)]] | None = Field(
        None, min_length=2, description="The betas themselves, in (0, 1), num_train_timesteps of them."
    )
    alphas_cumprod: list[Annotated[float, Field(gt=0, le=1)]] | None = Field(
        None, min_length=2, description="The cumulative products of 1 - beta themselves, decreasing in (0, 1]."
    )
    rescale_betas_zero_snr: bool = Field(
        False, description="Rescale the betas to zero terminal SNR (Lin et al. 2024); the last alpha_bar becomes 2^-24."
    )
    precision: Literal["float32", "float64"] = Field(
        "float64", description="Precision the table is computed in: float64, or float32 as diffusers does (from_diffusers)."
    )
    interpolation: Literal["linear", "log_sigma"] = Field(
        "linear", description="Noise level between table entries: linear in the timestep, or log sigma linear in it."
    )

    @model_validator(mode="after")
    def _one_table(self) -> "_DiscreteTableSpec":
        given = [f for f in ("trained_betas", "alphas_cumprod") if getattr(self, f) is not None]
        if len(given) > 1:
            raise ValueError("give trained_betas or alphas_cumprod, not both (each defines the whole table)")
        for name in given:
            values = getattr(self, name)
            if len(values) != self.num_train_timesteps:
                raise ValueError(
                    f"{name} has {len(values)} entries but num_train_timesteps is {self.num_train_timesteps}; "
                    f"set num_train_timesteps={len(values)}"
                )
        a = self.alphas_cumprod
        if a is not None and not all(x > y for x, y in zip(a, a[1:])):
            raise ValueError("alphas_cumprod must decrease strictly")
        return self


class DiscreteNoiseScheduleSpec(_DiscreteTableSpec, ds.NoiseScheduleSpec):
    """A DDPM noise table (diffusers' betas): t = sigma on the table, uniform table entries in training.

    >>> import diffusion_schemes as ds
    >>> lo, hi = ds.create("noise_schedule", {"name": "discrete", "beta_schedule": "squaredcos_cap_v2"}).domain()
    >>> round(lo, 5), round(hi)                # iDDPM's table (Nichol & Dhariwal 2021), its ends
    (0.00643, 20291)
    """

    name: Literal["discrete"] = "discrete"
    builds = "DiscreteNoiseSchedule"
    weighting: ds.WeightingRef = Field(
        "default", description="Loss weighting: 'default' (1/sigma^2 on x0: DDPM's loss on epsilon), None, a name or a config."
    )


class DiscretePreconditionerSpec(_DiscreteTableSpec, ds.PreconditionerSpec):
    """A network trained on a DDPM noise table (a diffusers model): epsilon, v or sample prediction at timestep t.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> precond = ds.create("preconditioner", {"name": "discrete", "prediction_type": "v_prediction"},
    ...                     model=lambda x, t, condition=None: torch.zeros_like(x))
    >>> precond.forward_sigma(torch.ones(1, 2), 1.0)          # c_skip = 1 / (1 + sigma^2)
    tensor([[0.5000, 0.5000]])
    """

    name: Literal["discrete"] = "discrete"
    builds = "DiscretePreconditioner"
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = Field(
        "epsilon", description="What the network predicts (diffusers' prediction_type)."
    )


class _ExtraPointSpec(ds.DiscretizationSpec):
    extra_point: bool = Field(
        False, description="Space N + 1 timesteps and drop the smallest (DPMSolverMultistepScheduler and its kin)."
    )


class LinspaceSpec(_ExtraPointSpec):
    """diffusers' 'linspace' spacing: N timesteps evenly from T - 1 down to 0, rounded or not.

    >>> import diffusion_schemes as ds
    >>> grid = ds.create("discretization", {"name": "linspace", "round": True})
    >>> grid.timesteps(4, ds.create("noise_schedule", "discrete")).tolist()
    [999.0, 666.0, 333.0, 0.0]
    """

    name: Literal["linspace"] = "linspace"
    builds = "LinspaceDiscretization"
    round: bool = Field(False, description="Round the timesteps to integers (DDIM, DDPM, the DPM-Solvers).")


class LeadingSpec(_ExtraPointSpec):
    """diffusers' 'leading' spacing: timesteps k * (T // N) + steps_offset, from the top.

    >>> import diffusion_schemes as ds
    >>> grid = ds.create("discretization", {"name": "leading", "steps_offset": 1})
    >>> grid.timesteps(4, ds.create("noise_schedule", "discrete")).tolist()
    [751.0, 501.0, 251.0, 1.0]
    """

    name: Literal["leading"] = "leading"
    builds = "LeadingDiscretization"
    steps_offset: int = Field(0, ge=0, description="Added to every timestep (diffusers' steps_offset).")


class TrailingSpec(ds.DiscretizationSpec):
    """diffusers' 'trailing' spacing: timesteps round(T - k T / N) - 1, from T - 1 down.

    >>> import diffusion_schemes as ds
    >>> ds.create("discretization", "trailing").timesteps(4, ds.create("noise_schedule", "discrete")).tolist()
    [999.0, 749.0, 499.0, 249.0]
    """

    name: Literal["trailing"] = "trailing"
    builds = "TrailingDiscretization"


@ds.hookimpl
def register_schemes() -> list[type[ds.SchemeSpec]]:
    return [DiscreteNoiseScheduleSpec, DiscretePreconditionerSpec, LinspaceSpec, LeadingSpec, TrailingSpec]


_LAZY = {
    "DiscreteNoiseSchedule": "._schedule",
    "DiscretePreconditioner": "._preconditioner",
    "from_diffusers": "._preconditioner",
    "LinspaceDiscretization": "._discretizations",
    "LeadingDiscretization": "._discretizations",
    "TrailingDiscretization": "._discretizations",
    "DiffusionSchemesScheduler": "._scheduler",
    "as_diffusers_scheduler": "._scheduler",
    "export_run": "._export",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
