"""The denoising score-matching loss (Vincent 2011; Karras et al. 2022, eq. 2 and 8).

For ``x0`` from the data, ``t`` from the schedule's training distribution and
``noise ~ N(0, I)``: ``lambda = lambda(t)``, noise level ``s = exp(-lambda / 2)``, unscaled
latent ``x_hat = x0 + s noise`` (``= z_t / alpha(t)``). The model predicts a target from
``x_hat`` and the loss is ``w(t) ||model(x_hat) - target||^2`` with the targets

- ``"x0"``: ``x0``; ``"epsilon"``: ``noise``; ``"score"`` (of the unscaled latent): ``-noise / s``;
- ``"v"``: ``alpha noise - sigma x0`` with the variance-preserving ``alpha = sqrt(sigmoid(lambda))``,
  ``sigma = sqrt(sigmoid(-lambda))`` (Salimans & Ho 2022).

The seed 000 pipeline, with a small backbone of our own:

>>> import torch
>>> from functools import partial
>>> import diffusion_schemes as ds
>>> from diffusion_schemes_edm import EDMNoiseSchedule, EDMPreconditioner
>>> scheduler = EDMNoiseSchedule()
>>> precond = EDMPreconditioner(Backbone(3), sigma_data=0.5)
>>> loss_fn = ds.MSEDSMLoss(precond, scheduler)
>>> x0, condition = torch.randn(4, 3, 8, 8), torch.randn(4, 2)
>>> loss = loss_fn(x0, condition=condition)      # training: the loss sees precond as the model
>>> loss.shape, bool(loss > 0)
(torch.Size([]), True)
>>> x0_predictor = partial(precond, condition=condition)   # sampling: precond is the predictor
>>> denoiser = scheduler.get_denoiser(x0_predictor=x0_predictor)
>>> latents = scheduler.init_latents((4, 3, 8, 8), generator=torch.Generator().manual_seed(0))
>>> ds.sample(denoiser, latents, scheduler, num_steps=4).samples.shape
torch.Size([4, 3, 8, 8])

With an image and a vector condition through :class:`ConcatConditionWrapper`:

>>> from tensordict import TensorDict
>>> precond = EDMPreconditioner(ds.ConcatConditionWrapper(CondBackbone()), sigma_data=0.5)
>>> condition = TensorDict({"cond_concat": torch.rand(1, 1, 8, 8), "cond_vec": torch.rand(1, 4)}, batch_size=[1])
>>> precond(torch.rand(1, 3, 8, 8), torch.rand(1), condition).shape
torch.Size([1, 3, 8, 8])
>>> ds.MSEDSMLoss(precond, scheduler)(torch.rand(1, 3, 8, 8), condition=condition).shape
torch.Size([])
"""

from __future__ import annotations

from typing import Any

import torch

from diffusion_schemes.sampling.compose import check_prediction_type, check_shared_parameters
from diffusion_schemes.adapters.conditions import check_condition, expand_null_condition
from diffusion_schemes.sampling.denoiser import _preconditioner_of, check_pair, predict
from diffusion_schemes.errors import InvalidArgumentError
from diffusion_schemes.preconditioners.affine import BaseAffinePreconditioner
# _is_compiling: torch.compiler.is_compiling, read without a guard on the torch module each name read from it costs
from diffusion_schemes.tensors import _is_compiling, append_dims, cast, compute_dtype
from diffusion_schemes.specs.config import resolve_weighting
from diffusion_schemes.weightings.uncertainty import resolve_uncertainty
from diffusion_schemes.weightings import weight_for

__all__ = ["PREDICTION_TYPES", "REDUCTIONS", "MSEDSMLoss"]

#: What the model predicts: the clean data, the noise, the velocity or the score of the unscaled latent.
PREDICTION_TYPES = ("x0", "epsilon", "v", "score")
REDUCTIONS = ("mean", "sum", "none")


def _resolve_weighting(weighting: Any) -> Any:
    """None (the schedule's) and numbers (constant weights) stay; the rest is a weighting reference."""
    if weighting is None or isinstance(weighting, (int, float)) and not isinstance(weighting, bool):
        return weighting
    return resolve_weighting(weighting)


class MSEDSMLoss(torch.nn.Module):
    """Weighted mean-squared denoising score-matching loss for any model and any schedule.

    Args:
        model: a preconditioner (or a ``functools.partial`` of one), called as
            ``forward_sigma(x_hat, s, condition, **kw)`` with the schedule's noise level, so
            any preconditioner trains with any schedule; or any callable
            ``model(x_hat, t, condition, **kw)``, which gets the schedule's own time.
        noise_schedule: gives ``t`` (``sample_time``), ``lambda(t)`` and the default weighting.
        prediction_type: ``"x0"`` (a preconditioner's output, and the only type a preconditioner
            trains for), ``"epsilon"``, ``"v"`` or ``"score"`` (for a plain model).
        weighting: ``None`` or ``"default"``: the schedule's weighting, converted to
            ``prediction_type`` (a schedule built with ``weighting=None`` gives weight 1). A number: that constant weight, so ``weighting=1.0`` is the unweighted
            loss on ``prediction_type``. A registered name, a config mapping, a spec or a
            :class:`BaseWeighting`: its weight, converted from its ``loss_type``
            (``_weighting.weight_for``, the one place a weight meets a prediction type).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (elementwise, shaped like ``x0``).
        uncertainty: learn the loss weight per noise level (EDM2's uncertainty weighting):
            ``True`` for a :class:`~diffusion_schemes.weightings.uncertainty.UncertaintyWeight` ``u(sigma)``,
            or such a module; each element's loss ``L`` becomes ``L / exp(u) + u``. The module is
            :attr:`uncertainty`: add its parameters to the optimiser. ``False`` (default): none.
        low_discrepancy: draw the batch's times stratified, ``u_i = (i + U) / B`` with one
            ``U ~ U(0, 1)``, mapped by the schedule's ``time_from_uniform(u)`` (its training
            distribution's inverse CDF); the schedule must offer that method.
        condition_dropout: the probability, drawn per sample, that a sample's condition is
            replaced by ``null_condition``, so one network learns the conditional and the
            unconditional denoiser that classifier-free guidance combines (Ho & Salimans 2022).
        null_condition: the dropped samples' condition, for the whole batch or for one sample
            (batch size 1, broadcast), selected per sample on the device; ``None``: the dropped
            samples are evaluated in a separate call with ``condition=None`` (tensor keyword
            arguments with the batch's leading size are split with them), which needs the
            number of dropped samples on the host, a device synchronisation per step; give a
            null condition where the model has one (a null class label) to avoid it.

    Called as ``loss(x0, t=None, condition=None, noise=None, generator=None, **model_kwargs)``;
    ``t`` (shape ``(B,)``) and ``noise`` (like ``x0``) are drawn when not given.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "edm")
    >>> model = ds.create("preconditioner", "edm", model=lambda x, c_noise, condition=None: torch.zeros_like(x))
    >>> loss = ds.MSEDSMLoss(model, schedule, weighting=1.0)       # unweighted loss on x0
    >>> x0, noise = torch.zeros(2, 2), torch.ones(2, 2)
    >>> loss(x0, t=torch.tensor([1.0, 1.0]), noise=noise)      # D = c_skip x = 0.25 / 1.25, target 0
    tensor(0.0400)
    """

    def __init__(
        self,
        model: Any,
        noise_schedule: Any,
        prediction_type: str = "x0",
        weighting: Any = None,
        reduction: str = "mean",
        low_discrepancy: bool = False,
        condition_dropout: float = 0.0,
        null_condition: Any = None,
        uncertainty: Any = False,
    ) -> None:
        super().__init__()
        if isinstance(condition_dropout, bool) or not isinstance(condition_dropout, (int, float)) or not (
            0 <= condition_dropout <= 1
        ):
            raise InvalidArgumentError(
                f"condition_dropout must be a probability in [0, 1] (0.1 is usual for classifier-free guidance), "
                f"got {condition_dropout!r}"
            )
        if null_condition is not None:
            check_condition(null_condition)
        if prediction_type not in PREDICTION_TYPES:
            raise InvalidArgumentError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")
        if reduction not in REDUCTIONS:
            raise InvalidArgumentError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
        if low_discrepancy and not getattr(noise_schedule, "has_inverse_cdf", lambda: False)():
            raise InvalidArgumentError(
                f"low_discrepancy=True needs the schedule's inverse CDF of training times, "
                f"time_from_uniform(u), which {type(noise_schedule).__name__} does not offer; "
                "use low_discrepancy=False or pass t yourself"
            )
        check_prediction_type(model, prediction_type, "MSEDSMLoss")
        check_pair(model, noise_schedule)
        self.model = model
        self.noise_schedule = noise_schedule
        self.prediction_type = prediction_type
        self.weighting = _resolve_weighting(weighting)
        check_shared_parameters(model, noise_schedule, self.weighting)
        self.reduction = reduction
        self.low_discrepancy = low_discrepancy
        self.condition_dropout = float(condition_dropout)
        self.null_condition = null_condition
        self.uncertainty = resolve_uncertainty(uncertainty)

    def sample_time(self, n: int, device: Any = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` training times (stratified when ``low_discrepancy``)."""
        if not self.low_discrepancy:
            return self.noise_schedule.sample_time(n, generator=generator, device=device)
        offset = torch.rand((), generator=generator, device=device)
        u = (torch.arange(n, device=device) + offset) / n
        return self.noise_schedule.time_from_uniform(u)

    def weight(self, log_snr: torch.Tensor) -> torch.Tensor:
        """The weight of each sample's loss at ``log_snr``, for :attr:`prediction_type`."""
        w = self.noise_schedule.weighting if self.weighting is None else self.weighting
        if isinstance(w, (int, float)):
            return torch.full_like(log_snr, float(w))
        return weight_for(w, log_snr, self.prediction_type, schedule=self.noise_schedule)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, log_snr: torch.Tensor) -> torch.Tensor:
        """The regression target for :attr:`prediction_type` (``log_snr`` shaped to broadcast)."""
        if self.prediction_type == "x0":
            return x0
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "score":
            return -noise * torch.exp(log_snr / 2).to(x0.dtype)
        alpha, sigma = torch.sigmoid(log_snr).sqrt(), torch.sigmoid(-log_snr).sqrt()
        return alpha.to(x0.dtype) * noise - sigma.to(x0.dtype) * x0

    def forward(
        self,
        x0: torch.Tensor,
        t: Any = None,
        condition: Any = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        **model_kwargs: Any,
    ) -> torch.Tensor:
        batch = x0.shape[0]
        if condition is not None:  # the common None asks no call (under torch.compile, no guard on the checker)
            check_condition(condition, batch)
        if t is None:
            t = self.sample_time(batch, device=x0.device, generator=generator)
        if not (hasattr(t, "new_tensor") and t.device == x0.device):  # a tensor in place asks no call (nor guard)
            t = torch.as_tensor(t, device=x0.device)
        t = t.expand(batch) if t.ndim == 0 else t
        if t.shape != (batch,):
            raise InvalidArgumentError(f"t must have shape ({batch},) (one time per sample) or be a scalar, got {tuple(t.shape)}")
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        elif noise.shape != x0.shape:
            raise InvalidArgumentError(f"noise must be shaped like x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
        # lambda(t) and the noise level once a step, from one domain check; passed on to the target and the weight
        log_snr, level = self._log_snr_and_level(t, compute_dtype(x0.dtype))
        x_hat = x0 + cast(append_dims(level, x0.ndim), x0.dtype) * noise
        if self.condition_dropout and condition is not None:
            dropped = torch.rand(batch, generator=generator, device=x0.device) < self.condition_dropout
            if self.null_condition is not None:  # a per-sample select on the device: no host read
                condition = _replace(condition, dropped, expand_null_condition(self.null_condition, condition, batch))
            else:  # the model's own "no condition" needs a second call on the dropped rows, found on the host
                return self._reduce(self._loss(x0, noise, log_snr, level,
                                               self._predict_split(x_hat, level, t, condition, dropped, model_kwargs)))
        out = self._predict(x_hat, level, t, condition, model_kwargs)
        return self._reduce(self._loss(x0, noise, log_snr, level, out))

    def _log_snr_and_level(self, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``lambda(t)`` and the noise level ``exp(-lambda / 2)`` in ``dtype``, with the schedule's one check of ``t``."""
        schedule = self.noise_schedule
        both = getattr(schedule, "log_snr_and_noise_level", None)
        if both is None:  # a schedule of the protocol only: the noise level from its log-SNR
            log_snr = cast(schedule.get_log_snr(t, training=True), dtype)
            return log_snr, torch.exp(log_snr * -0.5)
        log_snr, level = both(t, training=True)
        return cast(log_snr, dtype), cast(level, dtype)

    def _predict(self, x_hat, level, t, condition, model_kwargs) -> torch.Tensor:
        """The model's prediction at noise level ``level``; a preconditioner skips its own domain check,
        since the times were checked once when the schedule turned them into log-SNRs."""
        model = self.model
        # the common case; a preconditioner compiled in place is called through its compiled __call__, except
        # while this loss is itself being compiled (tracing the call inlines the same computation)
        if isinstance(model, BaseAffinePreconditioner) and (
            _is_compiling() or model._compiled_call_impl is None
        ):
            return model.precondition(x_hat, level, condition, **model_kwargs)
        precond, args, keywords = _preconditioner_of(model)
        if precond is None:
            return predict(model, self.noise_schedule, x_hat, level, t, condition, **model_kwargs)
        if condition is not None:
            model_kwargs["condition"] = condition
        return precond.precondition(x_hat, level, *args, **{**keywords, **model_kwargs})

    def _loss(self, x0, noise, log_snr, level, out) -> torch.Tensor:
        """The weighted elementwise loss of the prediction ``out``."""
        target = x0 if self.prediction_type == "x0" else self.target(x0, noise, append_dims(log_snr, x0.ndim))
        weight = append_dims(cast(self.weight(log_snr), log_snr.dtype), x0.ndim)
        loss = weight * (cast(out, weight.dtype) - cast(target, weight.dtype)).square()
        if self.uncertainty is not None:
            loss = self.uncertainty.weigh(loss, append_dims(level, x0.ndim))
        return loss

    def _reduce(self, loss: torch.Tensor) -> torch.Tensor:
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def _predict_split(self, x_hat, level, t, condition, dropped, model_kwargs) -> torch.Tensor:
        """The kept samples with their condition, the dropped ones in a second call with none."""
        batch = x_hat.shape[0]
        out = torch.empty_like(x_hat)
        for rows, cond in ((~dropped).nonzero().squeeze(1), True), (dropped.nonzero().squeeze(1), False):
            if rows.numel() == 0:
                continue
            kwargs = {k: v[rows] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == batch else v
                      for k, v in model_kwargs.items()}
            part = self._predict(x_hat[rows], level[rows], t[rows], condition[rows] if cond else None, kwargs)
            out = out.index_put((rows,), part.to(out.dtype))
        return out


def _replace(condition: Any, dropped: torch.Tensor, null: Any) -> Any:
    """``condition`` with the ``dropped`` samples' entries taken from ``null``."""
    if isinstance(condition, torch.Tensor):
        mask = append_dims(dropped, condition.ndim)
        return torch.where(mask, null.to(condition.dtype), condition)
    return condition.where(~dropped, null)  # TensorDict: the mask broadcasts over every entry
