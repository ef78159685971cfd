"""The affine preconditioner ``D(x, t) = c_skip x + c_out F(c_in x, c_noise, condition)``.

A subclass states its coefficients as functions of the noise level (and, when its time is
not the noise level, the map ``sigma(t)``); the base class does the rest and its
``forward`` is final.

>>> import torch
>>> import diffusion_schemes as ds
>>> class MyPreconditioner(ds.BaseAffinePreconditioner):
...     def compute_coefficients(self, sigma):
...         c_skip = 1 / (sigma**2 + 1)
...         c_out = sigma / (sigma**2 + 1).sqrt()
...         c_in = 1 / (sigma**2 + 1).sqrt()
...         c_noise = sigma.log() / 4
...         return c_in, c_noise, c_out, c_skip
>>> precond = MyPreconditioner(Backbone(3))
>>> precond(torch.randn(2, 3, 16, 16), torch.rand(2) + 0.1).shape
torch.Size([2, 3, 16, 16])

The EDM coefficients (Karras et al. 2022, Table 1) written as a subclass; for EDM the time is
the noise level, so ``sigma`` is not overridden. An empty TensorDict is a valid condition:

>>> from tensordict import TensorDict
>>> class SmallEDM(ds.BaseAffinePreconditioner):
...     def __init__(self, model, sigma_data=0.5):
...         super().__init__(model)
...         self.sigma_data = sigma_data
...     def compute_coefficients(self, sigma):
...         sd = self.sigma_data
...         c_skip = sd**2 / (sigma**2 + sd**2)
...         c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
...         c_in = 1 / (sd**2 + sigma**2).sqrt()
...         return c_in, sigma.log() / 4, c_out, c_skip
>>> out = SmallEDM(Backbone(3))(torch.randn(2, 3, 16, 16), torch.rand(2) + 0.1, TensorDict({}, batch_size=[2]))
>>> out.shape
torch.Size([2, 3, 16, 16])

Overriding ``sigma`` maps a diffusion time to the noise level first (here ``sigma = sqrt(t)``):

>>> class SqrtTimeVE(ds.BaseAffinePreconditioner):
...     def sigma(self, t):
...         return t.sqrt()
...     def compute_coefficients(self, sigma):
...         one = torch.ones_like(sigma)
...         return one, (0.5 * sigma).log(), sigma, one
>>> SqrtTimeVE(Backbone(3))(torch.randn(2, 3, 16, 16), torch.rand(2) + 0.1).shape
torch.Size([2, 3, 16, 16])

``forward`` cannot be overridden:

>>> class Broken(ds.BaseAffinePreconditioner):
...     def forward(self, x, t):
...         return x
Traceback (most recent call last):
  ...
diffusion_schemes.errors.ArgumentTypeError: Broken defines forward(), but BaseAffinePreconditioner.forward is final: ...
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch

from diffusion_schemes.adapters import check_condition
# _TENSOR, _assert_async, _is_compiling: the bindings of torch.Tensor, torch._assert_async and
# torch.compiler.is_compiling those modules read instead of torch (see below)
from diffusion_schemes.adapters.checks import _TENSOR, check_output, explain_call_error
from diffusion_schemes.errors import ArgumentTypeError, DomainError, InvalidArgumentError
from diffusion_schemes.tensors import (
    _assert_async, _is_compiling, cast, check_inside, check_positive, compute_dtype, interval,
)
from diffusion_schemes.specs.base import SpecBacked

__all__ = ["BaseAffinePreconditioner"]

_FINAL = ("forward", "forward_sigma", "precondition", "_precondition")
_POSITIVE = (0.0, math.inf)  # any noise level's open interval, and by default any time's

# Under torch.compile each global the traced code reads is a guard evaluated before every call of the graph, and a
# helper of another module that reads that module's globals adds a guard on the module and one per name it reads
# there: the forward's path reads the names it needs from this module's globals (imported above) and calls no helper
# of another module but cast, which reads none.


def _levels(value: Any, x: torch.Tensor, what: str) -> torch.Tensor:
    """``value`` as a tensor of one value per sample ``(batch,)`` or one for all ``()``, not expanded (a scalar is
    checked as one value: compiled, no reduction over the batch and no buffer for its result), in the dtype the
    coefficients of latents ``x`` are computed in (:func:`~diffusion_schemes.tensors.compute_dtype`, written out
    for float32 and float64: one helper for the three steps, since compiled each helper is a guard)."""
    if not hasattr(value, "new_tensor"):  # not a tensor (only tensors have it; compiled, a constant, not a guard)
        value = torch.as_tensor(value, device=x.device)
    if not (value.ndim == 0 or (value.ndim == 1 and value.shape[0] == x.shape[0])):
        raise InvalidArgumentError(
            f"{what} must have shape ({x.shape[0]},) (one value per sample of the batch) or be a scalar; "
            f"got shape {tuple(value.shape)}. Flatten it with .reshape(-1) if it carries singleton dims."
        )
    dtype = x.dtype  # float32 and float64 as they are; a dtype's attributes are constants when compiled
    if not (dtype.is_floating_point and dtype.itemsize >= 4):
        dtype = compute_dtype(dtype)
    return value if value.dtype == dtype else value.to(dtype)


def _check_noise_levels(sigma: torch.Tensor) -> None:
    """Refuse noise levels that are not finite and positive: :func:`~diffusion_schemes.tensors.check_positive`,
    which this calls on the CPU when not compiled (the values are in host memory: the bad ones are named), with its
    path on an accelerator and under ``torch.compile`` written out (the same clamp to the least and the greatest
    finite positive value of the dtype compared in, ending in ``torch._assert_async``: no host read)."""
    if sigma.is_cpu and not _is_compiling():
        check_positive(sigma, _bad_noise_level)
        return
    detached = sigma.detach() if sigma.requires_grad else sigma  # no autograd record of the clamp
    if detached.dtype.itemsize == 4:  # float32 or float64: the callers' _levels gave sigma the compute dtype
        clamped = detached.clamp(2.0**-149, (2.0 - 2.0**-23) * 2.0**127)
    else:
        clamped = detached.clamp(2.0**-1074, (2.0 - 2.0**-52) * 2.0**1023)
    _assert_async((clamped == detached).all(),
                  "a noise level is not finite and positive; run the same call on the CPU to see which")


def _time_limits(limits: tuple[float, float]) -> tuple[float, float] | None:
    """The times a forward checks: ``limits`` as floats, None for the default ``(0, inf)`` (only the noise level is checked)."""
    lo, hi = limits
    return None if (lo, hi) == _POSITIVE else (float(lo), float(hi))


def _bad_noise_level(bad: list[float]) -> DomainError:
    return DomainError(
        f"a preconditioner needs noise levels > 0, got {bad}; they must be finite, and noise level 0 "
        "is the end of sampling, where the clean sample is returned without calling the model"
    )


class BaseAffinePreconditioner(SpecBacked, torch.nn.Module, abc.ABC):
    """Abstract affine preconditioner around a backbone ``F`` satisfying :class:`DiffusionModel`.

    ``forward(x, t, condition=None, **model_kwargs)`` computes the noise level
    ``sigma = self.sigma(t)``, the coefficients ``compute_coefficients(sigma)`` (with sigma
    shaped ``(B, 1, ..., 1)`` to broadcast against ``x``), then returns
    ``c_skip * x + c_out * F(c_in * x, c_noise, condition, **model_kwargs)``. The backbone
    receives ``c_noise`` shaped ``(B,)`` in float32 or wider, and the condition untouched.

    ``forward_sigma(x, sigma, ...)`` is the same computation from the noise level directly;
    the loss and the samplers use it so any preconditioner can run with any schedule.

    ``t`` (or ``sigma``) is ``(B,)`` or a scalar broadcast to the batch. Coefficients are
    computed in float32 or wider and cast once to the latent's dtype, so float16, bfloat16,
    float32 and float64 latents all work.

    Every call checks its noise levels (finite and > 0) and, where a scheme sets
    :attr:`t_limits` other than ``(0, inf)``, its times, without synchronising an accelerator
    (:func:`~diffusion_schemes.tensors.check_inside`): on the CPU a bad value raises
    :class:`DomainError` naming it; on an accelerator the check is a device-side assertion, so
    the forward never synchronises and can be captured in a CUDA graph. The loss and the
    samplers, which check their times or grid once a call, go through :meth:`precondition`,
    which skips it.

    Args:
        model: the backbone ``F``.
        meta: optional metadata kept as ``self.meta``.
        validate: ``True`` (default): check every call's noise levels as above. ``False``:
            skip the check (two tensor operations on a ``(B,)`` tensor on the CPU, four on an
            accelerator; compiled, a reduction fused into the coefficients' kernel), for a loop
            that validates its noise levels once; a noise level of 0, a negative one or NaN
            then gives NaN or infinite outputs instead of an error. Every way of building one
            takes it: the constructor, ``ds.create("preconditioner", ..., model=m, validate=False)``,
            ``spec.build(model=m, validate=False)``; and the attribute ``validate`` can be set later.

    A subclass gives the coefficients; with a backbone that outputs 0 the result is ``c_skip x``:

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> class UnitVariance(ds.BaseAffinePreconditioner):
    ...     def compute_coefficients(self, sigma):
    ...         c_skip = 1 / (sigma**2 + 1)
    ...         return c_skip.sqrt(), sigma.log() / 4, sigma * c_skip.sqrt(), c_skip
    >>> precond = UnitVariance(lambda x, c_noise, condition=None: torch.zeros_like(x))
    >>> precond(torch.ones(1, 2), torch.tensor([1.0]))            # c_skip = 1 / (1 + 1)
    tensor([[0.5000, 0.5000]])
    >>> precond.forward_sigma(torch.ones(1, 2), 3.0)             # c_skip = 1 / (9 + 1)
    tensor([[0.1000, 0.1000]])
    >>> precond(torch.ones(1, 2), torch.tensor([0.0]))
    Traceback (most recent call last):
      ...
    diffusion_schemes.DomainError: a preconditioner needs noise levels > 0, got [0.0]; ...
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _FINAL:
            if name in cls.__dict__:
                raise ArgumentTypeError(
                    f"{cls.__name__} defines {name}(), but BaseAffinePreconditioner.{name} is final: "
                    "implement compute_coefficients(sigma) (and sigma(t) if the time is not the noise "
                    "level) instead, or write a plain torch.nn.Module satisfying DiffusionModel"
                )

    #: The open interval of diffusion times ``forward`` accepts, checked when a scheme sets limits other
    #: than the default ``(0, inf)`` (with the default only the noise level ``sigma(t)`` is checked: finite and > 0).
    #: Read at the end of construction (a property may use the spec's fields) and whenever an instance assigns it.
    t_limits: tuple[float, float] = _POSITIVE

    def __init__(
        self, model: torch.nn.Module, *args: Any, meta: Any = None, validate: bool = True, **kwargs: Any
    ) -> None:
        super().__init__()
        self.model = model
        self.validate = validate
        if self._built_from_spec(args, kwargs):  # the other arguments are the spec's fields
            self._bind_spec(args, kwargs)
        elif len(args) == 1 and meta is None and not kwargs:
            meta = args[0]
        elif args or kwargs:
            raise ArgumentTypeError(
                f"{type(self).__qualname__} takes model and meta (it has no spec_class), "
                f"got {len(args)} more positional and {sorted(kwargs)} keyword arguments"
            )
        self.meta = meta
        # read once the spec's fields are bound (limits a scheme derives from them are then defined); an instance's
        # own t_limits assigned later is picked up by __setattr__
        self._time_limits = _time_limits(self.t_limits)

    __repr__ = torch.nn.Module.__repr__  # the module tree, not SpecBacked's one-line repr

    @property
    def validate(self) -> bool:
        """Whether every call checks its noise levels (see the class's ``validate`` argument); settable."""
        return self._validate

    @validate.setter
    def validate(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ArgumentTypeError(f"validate must be True or False, got {value!r}")
        self._validate = value

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "t_limits":  # an instance's own limits: the forward reads them from _time_limits
            self._time_limits = _time_limits(value)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Map diffusion time to noise level; the identity unless a scheme overrides it."""
        return t

    @abc.abstractmethod
    def compute_coefficients(
        self, sigma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(c_in, c_noise, c_out, c_skip)`` for noise levels shaped ``(B, 1, ..., 1)``."""

    def forward(self, x: torch.Tensor, t: Any, condition: Any = None, **model_kwargs: Any) -> torch.Tensor:
        """The preconditioned output at diffusion time ``t``."""
        # one time for all samples stays one value here (_precondition expands it), so its checks test one value
        t = _levels(t, x, "t")
        # plain attributes set beforehand, not the property and the class's tuple: under torch.compile every
        # attribute, property and global the forward reads is a guard evaluated before each call of the graph
        validate = self._validate
        if validate:
            limits = self._time_limits
            if limits is not None:
                check_inside(t, limits[0], limits[1], self._bad_time)
        sigma = self.sigma(t)
        if sigma.dtype != t.dtype:  # the compute dtype, whatever a scheme's map computes in
            sigma = sigma.to(t.dtype)
        if validate:
            _check_noise_levels(sigma)
        return self._precondition(x, sigma, condition, model_kwargs)

    def forward_sigma(self, x: torch.Tensor, sigma: Any, condition: Any = None, **model_kwargs: Any) -> torch.Tensor:
        """The preconditioned output at noise level ``sigma`` (skips the time-to-noise map)."""
        sigma = _levels(sigma, x, "sigma")
        if self._validate:
            _check_noise_levels(sigma)
        return self._precondition(x, sigma, condition, model_kwargs)

    def precondition(self, x: torch.Tensor, sigma: Any, condition: Any = None, **model_kwargs: Any) -> torch.Tensor:
        """:meth:`forward_sigma` without the domain check, for a caller that checked its noise levels once.

        The loss calls it after checking its times once a step (the noise levels follow from them);
        a sampling loop can call it on a grid checked once (``discretizations.check_sigmas``).
        Noise levels that are not finite and positive give NaN or infinite outputs here.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> precond = ds.create("preconditioner", "ve", model=lambda x, c_noise, condition=None: torch.zeros_like(x))
        >>> precond.precondition(torch.ones(1, 2), torch.tensor([2.0]))     # c_skip = 1 for VE
        tensor([[1., 1.]])
        """
        return self._precondition(x, _levels(sigma, x, "sigma"), condition, model_kwargs)

    def _precondition(self, x: torch.Tensor, sigma: torch.Tensor, condition: Any, model_kwargs: dict) -> torch.Tensor:
        """:meth:`precondition` of noise levels already a tensor shaped ``(B,)`` or ``()`` in the compute dtype
        (``_levels``); the forward and :meth:`forward_sigma` call it directly, so compiled the three share one set
        of helpers (each one a guard)."""
        batch, dtype = x.shape[0], x.dtype
        if sigma.ndim == 0:
            sigma = sigma.expand(batch)
        if condition is not None:  # the common None asks no call (under torch.compile, no guard on the checker)
            check_condition(condition, batch)
        c_in, c_noise, c_out, c_skip = self.coefficients(sigma, x.ndim)
        # adapters.call_model written out (compiled, it would add guards on its module on every call): a call that
        # does not fit the backbone's signature says how to adapt it, and an output that is not a floating-point
        # tensor shaped like x on its device is named by check_output
        model, x_in = self.model, cast(c_in, dtype) * x
        try:
            out = model(x_in, c_noise, condition, **model_kwargs)
        except TypeError as exc:
            explain_call_error(model, "backbone", exc, (x_in, c_noise, condition), model_kwargs)
            raise
        if not (isinstance(out, _TENSOR) and out.is_floating_point() and out.device == x.device
                and out.shape == x.shape):
            check_output(out, x, "backbone")  # raises, naming what is wrong
        return cast(c_skip, dtype) * x + cast(c_out, dtype) * cast(out, dtype)

    def _bad_time(self, bad: list[float]) -> DomainError:
        return DomainError(
            f"{type(self).__name__}: diffusion time t={bad} is outside {interval(*self.t_limits)}, "
            "where its sigma(t) is a finite positive noise level"
        )

    def coefficients(
        self, sigma: torch.Tensor, ndim: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(c_in, c_noise, c_out, c_skip)`` for noise levels ``(B,)`` and latents of ``ndim`` dims.

        ``c_in``, ``c_out``, ``c_skip`` are shaped ``(B, 1, ..., 1)``; ``c_noise`` is ``(B,)``.
        All stay in the dtype of ``sigma`` (the caller casts).
        """
        batch = sigma.shape[0]
        sigma_b = sigma.reshape(batch, *([1] * (ndim - 1)))  # append_dims, written out (compiled, a helper is a guard)
        c_in, c_noise, c_out, c_skip = self.compute_coefficients(sigma_b)
        if not (hasattr(c_noise, "new_tensor") and c_noise.shape == sigma_b.shape
                and c_noise.dtype == sigma.dtype and c_noise.device == sigma.device):
            c_noise = torch.as_tensor(c_noise, dtype=sigma.dtype, device=sigma.device)
            c_noise = torch.broadcast_to(c_noise, sigma_b.shape)
        c_noise = c_noise.reshape(batch)
        return c_in, c_noise, c_out, c_skip
