"""Guidance: classifier-free guidance, its interval and rescale, and autoguidance, on the denoised estimate.

At every evaluation the guided denoiser combines two x0-predictions of the same latent:

    D = D_null + w (D_cond - D_null)

- classifier-free guidance (Ho & Salimans 2022): ``D_null`` is the same model with
  ``null_condition`` (``None``: called with ``condition=None``);
- autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"):
  ``D_null`` is a ``guide`` model (smaller or less trained) on the same condition;
- ``interval = (sigma_lo, sigma_hi)`` (Kynkaanniemi et al. 2024): guidance only at noise levels
  in that closed interval; outside it only ``D_cond`` is evaluated. Which side an evaluation is on
  is decided without reading the device (see :meth:`GuidedDenoiser.x0_sigma`);
- ``rescale = phi`` (Lin et al. 2024, Section 3.4): ``D <- phi D std(D_cond) / std(D) + (1 - phi) D``,
  the standard deviations taken per sample over the non-batch dimensions (``torch.std``,
  default correction); a sample whose guided estimate has no spread (``std(D) = 0``) is left as it is.

``w = 1`` evaluates only ``D_cond`` and ``w = 0`` only ``D_null``; otherwise both are
evaluated, as one batch of ``2B`` when they share the model and the two conditions
concatenate (Tensors or TensorDicts). Either way a guided evaluation costs two network
evaluations per sample, and the denoiser counts them in :attr:`GuidedDenoiser.evaluations`
(what :func:`~diffusion_schemes.sample` reports as ``nfe``).

>>> import torch
>>> import diffusion_schemes as ds
>>> schedule = ds.create("noise_schedule", "edm")
>>> model = lambda x, t, condition=None: torch.zeros_like(x) if condition is None else condition.expand_as(x)
>>> latents = schedule.init_latents((2, 3), generator=torch.Generator().manual_seed(0))
>>> condition = torch.tensor([[1.0], [2.0]])
>>> result = ds.sample(model, latents, schedule, 8, condition=condition, guidance=3.0)
>>> result.samples                   # 0 + 3 * (c - 0) for a dataset of one point per class
tensor([[3., 3., 3.],
        [6., 6., 6.]])
>>> result.nfe                       # 15 evaluations of the Heun solver, each guided: two per sample
30
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from diffusion_schemes.adapters.conditions import check_condition, expand_null_condition
from diffusion_schemes.sampling.denoiser import Denoiser, as_levels, make_denoiser
from diffusion_schemes.errors import ArgumentTypeError, GuidanceError
from diffusion_schemes.solvers.base import StepLevels
from diffusion_schemes.tensors import append_dims, compute_dtype

__all__ = ["Guidance", "GuidedDenoiser", "as_guidance"]

#: Relative widening of a solver's host-side bounds on its evaluation levels: the device computes a derived
#: level (a midpoint, ``sigma (1 + gamma)``) in float32 or wider, a few roundings (about 1e-7 each) away
#: from the bound the host computes for it in float64.
LEVEL_ROUNDING = 1e-5


def _real(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not (
        isinstance(value, torch.Tensor) and value.numel() == 1
    ):
        raise ArgumentTypeError(f"{what} must be a real number, got {value!r}")
    return float(value)


@dataclass(frozen=True, eq=False)
class Guidance:
    """How :func:`~diffusion_schemes.sample` guides: ``D = D_null + scale (D_cond - D_null)``.

    Args:
        scale: the guidance weight ``w`` (finite); 1 is plain conditional sampling, 0 unconditional.
        null_condition: the condition of the unconditional branch: a Tensor or TensorDict for the
            whole batch or for one sample (batch size 1, broadcast); ``None`` calls the model with
            ``condition=None``.
        interval: ``(sigma_lo, sigma_hi)``, guide only at noise levels in that closed interval
            (``sigma_hi`` may be ``inf``); ``None``: at every noise level.
        rescale: ``phi`` in ``[0, 1]``, the fraction of the guided estimate rescaled to the
            conditional estimate's standard deviation.
        guide: autoguidance: the guide model (an x0-predictor, a preconditioner or a
            :class:`~diffusion_schemes.Denoiser`), evaluated on the same condition in place of
            the null branch.

    >>> import diffusion_schemes as ds
    >>> ds.Guidance(2.0, interval=(0.3, 5.0))
    Guidance(scale=2.0, interval=(0.3, 5.0))
    >>> ds.Guidance(2.0, interval=(5.0, 0.3))
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.GuidanceError: the guidance interval must be (sigma_lo, sigma_hi) with 0 <= sigma_lo <= sigma_hi, got (5.0, 0.3); ...
    """

    scale: float
    null_condition: Any = None
    interval: tuple[float, float] | None = None
    rescale: float = 0.0
    guide: Any = field(default=None)

    def __post_init__(self) -> None:
        scale = _real(self.scale, "the guidance scale")
        if not math.isfinite(scale):
            raise GuidanceError(f"the guidance scale must be finite, got {scale}; 1.0 samples without guidance")
        object.__setattr__(self, "scale", scale)
        if self.interval is not None:
            try:
                lo, hi = (_real(v, "a guidance interval bound") for v in self.interval)
            except (TypeError, ValueError) as exc:
                raise GuidanceError(
                    f"the guidance interval must be a pair (sigma_lo, sigma_hi) of noise levels, got {self.interval!r}"
                ) from exc
            if not (0 <= lo <= hi) or math.isnan(hi):
                raise GuidanceError(
                    f"the guidance interval must be (sigma_lo, sigma_hi) with 0 <= sigma_lo <= sigma_hi, got "
                    f"{(lo, hi)}; it holds the noise levels (not times) at which guidance applies, e.g. (0.3, 5.0)"
                )
            object.__setattr__(self, "interval", (lo, hi))
        rescale = _real(self.rescale, "rescale")
        if not 0 <= rescale <= 1:
            raise GuidanceError(f"rescale must be in [0, 1] (the fraction phi of Lin et al. 2024), got {rescale}")
        object.__setattr__(self, "rescale", rescale)
        if self.guide is not None and self.null_condition is not None:
            raise GuidanceError(
                "give either guide= (autoguidance: the guide model sees the same condition) or null_condition= "
                "(classifier-free guidance), not both"
            )
        if self.guide is not None and not callable(self.guide):
            raise GuidanceError(f"guide must be a model or a Denoiser, got {type(self.guide).__name__}")
        check_condition(self.null_condition)

    def __repr__(self) -> str:
        shown = [f"scale={self.scale!r}"]
        for f in fields(self)[1:]:
            value = getattr(self, f.name)
            if value is not f.default:
                shown.append(f"{f.name}={value!r}" if f.name in ("interval", "rescale") else f"{f.name}=...")
        return f"Guidance({', '.join(shown)})"

    def bind(self, denoiser: Denoiser, batch_size: int, schedule: Any) -> GuidedDenoiser:
        """The guided denoiser for ``denoiser`` (with its condition) and latents of ``batch_size``."""
        return GuidedDenoiser(denoiser, self, batch_size, schedule)


def as_guidance(guidance: Any) -> Any:
    """``None``, a number ``w``, a mapping of :class:`Guidance`'s fields, a :class:`Guidance`, another member
    of the guidance family (an object with ``bind(denoiser, batch_size, schedule)``, such as
    :class:`~diffusion_schemes.Posterior`), or a sequence of them applied in order.

    >>> as_guidance({"scale": 2, "rescale": 0.7})
    Guidance(scale=2.0, rescale=0.7)
    """
    if guidance is None or isinstance(guidance, Guidance):
        return guidance
    if isinstance(guidance, (list, tuple)):
        return _Sequence(tuple(as_guidance(g) for g in guidance))
    if callable(getattr(guidance, "bind", None)) and not isinstance(guidance, Mapping):
        return guidance
    if isinstance(guidance, Mapping):
        unknown = set(guidance) - {f.name for f in fields(Guidance)}
        if unknown:
            raise GuidanceError(
                f"unknown guidance fields {sorted(unknown)}; expected scale, null_condition, interval, rescale, guide"
            )
        if "scale" not in guidance:
            raise GuidanceError("a guidance mapping needs 'scale' (the weight w)")
        return Guidance(**guidance)
    if isinstance(guidance, (int, float)) and not isinstance(guidance, bool):
        return Guidance(guidance)
    raise ArgumentTypeError(f"guidance must be None, a number, a mapping or ds.Guidance(...), got {type(guidance).__name__}")


class _Sequence:
    """Guidance members bound in order, each over the denoiser the previous one made."""

    def __init__(self, members: tuple[Any, ...]) -> None:
        if not members or any(m is None for m in members):
            raise GuidanceError("a guidance sequence needs at least one member and no None")
        later = [type(m).__name__ for m in members[1:] if isinstance(m, Guidance)]
        if later:
            raise GuidanceError(
                "classifier-free guidance (ds.Guidance) must come first in a guidance sequence, e.g. "
                "(ds.Guidance(3.0), ds.Posterior(...)): the members after it act on the guided estimate"
            )
        self.members = members

    def bind(self, denoiser: Denoiser, batch_size: int, schedule: Any) -> Denoiser:
        for member in self.members:
            denoiser = member.bind(denoiser, batch_size, schedule)
        return denoiser


def _cat(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b.to(a.dtype) if b.is_floating_point() and a.is_floating_point() else b])
    return torch.cat([a, b])


class GuidedDenoiser(Denoiser):
    """A :class:`~diffusion_schemes.Denoiser` whose ``D`` is guided; counts network evaluations per sample.

    Built by :meth:`Guidance.bind` (``ds.sample(..., guidance=...)`` does it). ``evaluations``
    is the number of network evaluations made for each sample so far: two for a guided
    evaluation (batched or not), one for an unguided one.
    """

    def __init__(self, denoiser: Denoiser, guidance: Guidance, batch_size: int, schedule: Any) -> None:
        super().__init__(
            denoiser.schedule, denoiser.predictor, denoiser.prediction_type, denoiser.denoising_type, denoiser.condition
        )
        self.base = denoiser
        self.model_dtype = denoiser.model_dtype
        self.guidance = guidance
        self.evaluations = 0
        self._levels: StepLevels | None = None  # what the solver loop said about the current step
        self._bounds: dict[torch.dtype, tuple[float, float]] = {}
        condition = denoiser.condition
        check_condition(condition, batch_size)
        guide = guidance.guide
        if guide is not None and not isinstance(guide, Denoiser):
            guide = make_denoiser(schedule, x0_predictor=guide)
        if guide is not None:
            guide = guide.named("guide model").calling_model_in(denoiser.model_dtype)
        self.guide = guide
        if guide is None and condition is None and guidance.scale != 1:
            raise GuidanceError(
                "classifier-free guidance needs a condition to guide toward: pass condition= to sample (or use "
                "guide= for autoguidance, which also works without a condition)"
            )
        if guidance.null_condition is not None and condition is None:
            raise GuidanceError(
                "null_condition is given but the sampling has no condition; pass condition= to sample (or bind it "
                "with get_denoiser(..., condition=...))"
            )
        self.null_condition = expand_null_condition(guidance.null_condition, condition, batch_size)
        self.batched = guide is None and condition is not None and self.null_condition is not None

    def parameter(self) -> torch.Tensor | None:
        return self.base.parameter()

    @property
    def enter_step(self) -> Any:
        """What a solver loop calls before each step with the step's :class:`~diffusion_schemes.solvers.StepLevels`
        (and with None when it leaves the loop); None when no decision depends on the noise level (no
        interval, or ``scale = 1``), so the loop reads nothing for it."""
        g = self.guidance
        return None if g.interval is None or g.scale == 1 else self._enter_step

    def _enter_step(self, levels: StepLevels | None) -> None:
        self._levels = levels
        if levels is not None and levels.dtype not in self._bounds:
            # the interval's bounds as the device compares them: rounded to the levels' dtype (once per dtype)
            self._bounds[levels.dtype] = tuple(torch.tensor(self.guidance.interval, dtype=levels.dtype).tolist())

    def _placement(self, sigma: Any, dtype: torch.dtype) -> bool | None:
        """Whether the evaluation at ``sigma`` (as the solver passed it) is inside the interval, decided on the
        host from what the solver loop said about the step: exactly for a level it named (a grid value), by
        the step's bounds for a level derived from them when those lie wholly on one side; None otherwise."""
        levels = self._levels
        if levels is None or levels.dtype != dtype:
            return None
        lo, hi = self._bounds[dtype]
        for tensor, value in levels.known:
            if sigma is tensor:
                return lo <= value <= hi
        if levels.bounds is None:
            return None
        low, high = levels.bounds[0] * (1 - LEVEL_ROUNDING), levels.bounds[1] * (1 + LEVEL_ROUNDING)
        if lo <= low and high <= hi:
            return True
        if high < lo or low > hi:
            return False
        return None

    def x0_sigma(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        """The guided ``D(x; sigma)``; guidance applies where ``sigma`` is in the interval.

        With an interval, no device value is read. Inside a solver's loop (``enter_step``) an evaluation at
        a level the host knows, or at a level derived from the step's grid values whose bounds lie wholly
        inside or outside the interval, is decided on the host: two network evaluations inside, one outside.
        Anywhere else (a level near a bound, one value per sample, a call outside a loop) both branches are
        evaluated and ``torch.where`` keeps, sample by sample, the guided estimate inside and the conditional
        one outside: the same values, at two evaluations.
        """
        g = self.guidance
        placed = None if g.interval is None or g.scale == 1 else self._placement(sigma, compute_dtype(x.dtype))
        sigma = as_levels(sigma, x)
        if g.scale == 1:
            self.evaluations += 1
            return self.base.x0_given(x, sigma, self.condition)
        if g.interval is None or placed is True:
            return self._guided(x, sigma, self.condition, self.null_condition)
        if placed is False:
            self.evaluations += 1
            return self.base.x0_given(x, sigma, self.condition)
        inside = append_dims((sigma >= g.interval[0]) & (sigma <= g.interval[1]), x.ndim)
        d_cond, d_null = self._branches(x, sigma, self.condition, self.null_condition)
        return torch.where(inside, d_null if g.scale == 0 else self._combine(d_cond, d_null), d_cond)

    def _null(self, x: torch.Tensor, sigma: torch.Tensor, condition: Any, null: Any) -> torch.Tensor:
        if self.guide is not None:
            return self.guide.x0_given(x, sigma, condition)
        return self.base.x0_given(x, sigma, null)

    def _guided(self, x: torch.Tensor, sigma: torch.Tensor, condition: Any, null: Any) -> torch.Tensor:
        if self.guidance.scale == 0:
            self.evaluations += 1
            return self._null(x, sigma, condition, null)
        return self._combine(*self._branches(x, sigma, condition, null))

    def _branches(self, x: torch.Tensor, sigma: torch.Tensor, condition: Any, null: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(D_cond, D_null)``: two network evaluations per sample, one batch of ``2B`` when batched."""
        self.evaluations += 2
        if self.batched:
            both = self.base.x0_given(torch.cat([x, x]), torch.cat([sigma, sigma]), _cat(condition, null))
            d_cond, d_null = both.chunk(2)
            return d_cond, d_null
        return self.base.x0_given(x, sigma, condition), self._null(x, sigma, condition, null)

    def _combine(self, d_cond: torch.Tensor, d_null: torch.Tensor) -> torch.Tensor:
        d = d_null + self.guidance.scale * (d_cond - d_null)
        phi = self.guidance.rescale
        if phi:
            if d[0].numel() < 2:
                raise GuidanceError(
                    f"rescale needs at least two values per sample for a standard deviation, but each sample has "
                    f"shape {tuple(d.shape[1:])}; use rescale=0 for such data"
                )
            dims = tuple(range(1, d.ndim))
            spread = d.std(dim=dims, keepdim=True)
            # a guided estimate with no spread (a constant sample) has nothing to rescale: ratio 1, not 0/0
            ratio = torch.where(spread > 0, d_cond.std(dim=dims, keepdim=True) / spread, torch.ones_like(spread))
            d = phi * (d * ratio) + (1 - phi) * d
        return d

    def __repr__(self) -> str:
        return f"GuidedDenoiser({self.guidance!r}, base={self.base!r})"
