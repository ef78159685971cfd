"""The denoiser: a predictor turned into ``D(x; sigma)`` and the sampling ODE/SDE right-hand side.

Every solver integrates in the noise level ``sigma`` with the unscaled latent
``x_hat = z / alpha`` (Karras et al. 2022, eq. 4 with ``s(t) = 1``, ``sigma(t) = t``):

    dx/dsigma = (x - D(x; sigma)) / sigma,

where ``D`` is the x0-prediction. A predictor of another kind is converted: an
epsilon-prediction gives ``D = x - sigma eps_hat``, a score of the unscaled latent gives
``D = x + sigma^2 score_hat`` (Tweedie), a v-prediction (Salimans & Ho 2022, with the
variance-preserving ``alpha = 1 / sqrt(1 + sigma^2)``, ``sigma_vp = sigma alpha`` of the same
log-SNR and ``z = alpha x``) gives ``D = alpha z - sigma_vp v_hat = x / (1 + sigma^2) - sigma /
sqrt(1 + sigma^2) v_hat``. A :class:`BaseAffinePreconditioner` (also inside a
``functools.partial``) is called through ``forward_sigma`` with the noise level, so any
preconditioner runs with any schedule (a compiled one through its compiled call, see :func:`predict`); any other callable gets the unscaled latent and the
schedule's own time ``t = schedule.get_t_from_log_snr(-2 log sigma)``.

>>> import torch
>>> import diffusion_schemes as ds
>>> schedule = ds.create("noise_schedule", "edm")
>>> denoiser = schedule.get_denoiser(epsilon_predictor=lambda x, t: torch.ones_like(x))
>>> denoiser.x0_sigma(torch.zeros(2, 3), torch.tensor(0.5))
tensor([[-0.5000, -0.5000, -0.5000],
        [-0.5000, -0.5000, -0.5000]])
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from diffusion_schemes.sampling.compose import check_prediction_type, check_shared_parameters
from diffusion_schemes.adapters.conditions import check_condition
from diffusion_schemes.errors import ArgumentTypeError, ConditionError, InvalidArgumentError, PairingError
from diffusion_schemes.adapters.checks import call_model, check_output
from diffusion_schemes.preconditioners.affine import BaseAffinePreconditioner
from diffusion_schemes.tensors import append_dims, cast, compute_dtype

__all__ = ["DENOISING_TYPES", "Denoiser", "as_levels", "bind_condition", "check_device", "make_denoiser"]

#: ``"ode"``: the probability-flow ODE; ``"sde"``: the drift of the reverse-time SDE.
DENOISING_TYPES = ("ode", "sde")
_PREDICTORS = ("x0_predictor", "epsilon_predictor", "v_predictor", "score_predictor")


def _preconditioner_of(model: Any, direct: bool = True) -> tuple[BaseAffinePreconditioner | None, tuple, dict]:
    """``(preconditioner, args, keywords)`` when ``model`` is one (or a ``partial`` of one). With ``direct`` (to
    call its ``precondition`` or ``forward_sigma``), not one compiled in place (``precond.compile()`` compiles
    only its ``__call__``, so a direct call would run it uncompiled): that one is reached as a compiled model
    (:func:`_compiled_preconditioner`)."""
    if isinstance(model, functools.partial) and isinstance(model.func, BaseAffinePreconditioner):
        precond, args, keywords = model.func, model.args, dict(model.keywords)
    elif isinstance(model, BaseAffinePreconditioner):
        precond, args, keywords = model, (), {}
    else:
        return None, (), {}
    if direct and precond._compiled_call_impl is not None:
        return None, (), {}
    return precond, args, keywords


def _uncompiled(model: Any) -> Any:
    """The module inside ``torch.compile``'s wrapper (which holds it as its submodule ``_orig_mod``), else ``model``."""
    return model._modules.get("_orig_mod", model) if isinstance(model, torch.nn.Module) else model


def _compiled_preconditioner(model: Any) -> tuple[BaseAffinePreconditioner | None, tuple, dict]:
    """``(preconditioner, args, keywords)`` when ``model`` is a compiled one (or a ``partial`` of one):
    ``torch.compile``'s wrapper of it, or the preconditioner itself compiled in place (``precond.compile()``, which
    compiles its ``__call__``); ``(None, (), {})`` otherwise."""
    base, args, keywords = ((model.func, model.args, dict(model.keywords)) if isinstance(model, functools.partial)
                            else (model, (), {}))
    inner = _uncompiled(base)
    if isinstance(inner, BaseAffinePreconditioner) and (inner is not base or inner._compiled_call_impl is not None):
        return inner, args, keywords
    return None, (), {}


def _at_noise_level(precond: BaseAffinePreconditioner) -> bool:
    """Whether the preconditioner's time is its noise level (``sigma(t) = t``, such as EDM's)."""
    return type(precond).sigma is BaseAffinePreconditioner.sigma


def _compiled_at_noise_level(model: Any) -> Any:
    """``model`` when it is a compiled preconditioner (:func:`_compiled_preconditioner`) whose time is the noise
    level: called with the noise level as its time it computes ``forward_sigma``, compiled, whatever the schedule.
    None otherwise."""
    inner, _, _ = _compiled_preconditioner(model)
    return model if inner is not None and _at_noise_level(inner) else None


def _scheme(obj: Any) -> str | None:
    try:
        return obj.spec.name
    except (AttributeError, NotImplementedError):
        return None


def _noise_level_entry(model: Any, condition: Any, checked: bool) -> Callable[..., torch.Tensor] | None:
    """``f(x, sigma)``: ``model``'s output at noise levels ``sigma`` (shape ``(B,)``) with ``condition`` bound,
    for a preconditioner (``precondition`` when the levels were ``checked`` once by the caller, else
    ``forward_sigma``) or a compiled noise-level preconditioner; None for any other model."""
    precond, args, keywords = _preconditioner_of(model)
    if condition is not None:
        keywords["condition"] = condition
    if precond is not None:
        method = precond.precondition if checked else precond.forward_sigma
    else:
        method = _compiled_at_noise_level(model)
        if method is None:
            return None
    if not args and not keywords:
        return method
    return lambda x, sigma: method(x, sigma, *args, **keywords)


def as_levels(sigma: Any, x: torch.Tensor) -> torch.Tensor:
    """``sigma`` as noise levels for the batch ``x``: a tensor on its device in its coefficient dtype
    (float32 or wider), shaped ``(B,)`` (a scalar expanded, without a copy)."""
    if not isinstance(sigma, torch.Tensor) or sigma.device != x.device:
        sigma = torch.as_tensor(sigma, device=x.device)
    sigma = cast(sigma, compute_dtype(x.dtype))
    return sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma


def check_pair(model: Any, schedule: Any, num: int = 65) -> None:
    """Reject a preconditioner whose own ``sigma(t)`` disagrees with a schedule of the same scheme.

    A preconditioner and a schedule with the same scheme name (their specs' ``name``) share a
    diffusion time (the contract in docs/architecture.md), so ``precond.sigma(t)`` must equal ``schedule.noise_level(t)``
    over the schedule's domains; otherwise (e.g. the VP pair built with two different
    ``beta_d``) calling the preconditioner with the schedule's times would train on the wrong
    noise level. Raises :class:`PairingError`. Preconditioners of another scheme are reached
    through the noise level and are not compared. Parameters the family declares shared
    (:attr:`SchemeSpec.shared_parameters`) must agree between the model, the schedule and the
    schedule's weighting.
    """
    # a compiled preconditioner (inside torch.compile's wrapper, or compiled in place) is checked as itself
    precond = _preconditioner_of(model, direct=False)[0]
    if precond is None:
        precond = _compiled_preconditioner(model)[0]
    key = _pair_key(precond, schedule, num)
    if key is not None and key in _PAIRS_AGREEING:
        return
    check_shared_parameters(precond, schedule, getattr(schedule, "weighting", None))
    if precond is None:
        return
    names = _scheme(precond), _scheme(schedule)
    if None in names:
        return
    if names[0] != names[1]:
        _remember_pair(key)
        return
    for training in (False, True):
        lo, hi = schedule.domain(training)
        t = torch.logspace(math.log10(lo), math.log10(hi), num, dtype=torch.float64) if lo > 0 else torch.linspace(lo, hi, num + 1, dtype=torch.float64)[1:]
        with torch.no_grad():
            mine, theirs = precond.sigma(t), schedule.noise_level(t)
        if not torch.allclose(mine, theirs, rtol=1e-4, atol=0):
            worst = int(((mine - theirs).abs() / theirs.abs()).argmax())
            raise PairingError(
                f"the {names[0]!r} preconditioner and the {names[1]!r} schedule disagree on the noise level: at "
                f"t={float(t[worst]):.6g} the preconditioner's sigma(t) is {float(mine[worst]):.6g} but the schedule's "
                f"noise_level(t) is {float(theirs[worst]):.6g}. Build both from the same parameters "
                f"(preconditioner {precond.spec.model_dump()}, schedule {schedule.spec.model_dump()})."
            )
    _remember_pair(key)


#: Pairs found to agree, by the types and specs of the preconditioner and the schedule (a spec states every
#: parameter its object is built from, so the same specs give the same verdict): ``ds.sample`` binds its
#: denoiser on every call, and the comparison costs about as much as a few small network evaluations.
_PAIRS_AGREEING: set[tuple[Any, ...]] = set()


def _pair_key(precond: Any, schedule: Any, num: int) -> tuple[Any, ...] | None:
    """What :func:`check_pair`'s verdict depends on, hashable; None when it cannot be stated (no spec). Without a
    preconditioner the verdict is the schedule's agreement with its own weighting, which its spec states."""
    try:
        key = (type(precond), None if precond is None else precond.spec, type(schedule), schedule.spec, num)
        hash(key)
    except (AttributeError, NotImplementedError, TypeError):
        return None
    return key


def _remember_pair(key: tuple[Any, ...] | None) -> None:
    if key is not None:
        if len(_PAIRS_AGREEING) >= 1024:
            _PAIRS_AGREEING.clear()
        _PAIRS_AGREEING.add(key)


def first_parameter(model: Any) -> torch.Tensor | None:
    """The first parameter of ``model`` (or of the module inside a ``partial``), or None."""
    while isinstance(model, functools.partial):
        model = model.func
    if isinstance(model, torch.nn.Module) and type(model).parameters is torch.nn.Module.parameters:
        return _first_in(model, set())  # what parameters() yields first, without its generator machinery
    model = getattr(model, "__self__", model)  # a bound method such as module.forward
    parameters = getattr(model, "parameters", None)
    if not callable(parameters):
        return None
    try:
        return next(iter(parameters()), None)
    except TypeError:
        return None


def _first_in(module: torch.nn.Module, seen: set[int]) -> torch.Tensor | None:
    """The first parameter ``module.parameters()`` yields: its own first, then its submodules' in order, each
    module visited once (``seen``), as ``named_parameters`` walks them."""
    seen.add(id(module))
    for value in module._parameters.values():
        if value is not None:
            return value
    for child in module._modules.values():
        if child is not None and id(child) not in seen:
            found = _first_in(child, seen)
            if found is not None:
                return found
    return None


def _uncompiled_call_message(precond: BaseAffinePreconditioner, schedule: Any) -> str:
    return (
        f"the compiled {type(precond).__name__} ({_scheme(precond)!r}) runs with a {_scheme(schedule)!r} schedule: its "
        "compiled call takes its own time, which cannot be computed from the schedule's noise level, so it is called "
        "uncompiled through forward_sigma (correct, but not compiled); pair it with a schedule of its own scheme, or "
        "compile the model inside it instead (precond.model.compile())"
    )


def predict(
    model: Any,
    schedule: Any,
    x: torch.Tensor,
    sigma: torch.Tensor,
    t: torch.Tensor | None = None,
    condition: Any = None,
    who: str = "model",
    **model_kwargs: Any,
) -> torch.Tensor:
    """Call ``model`` on the unscaled latent ``x`` at noise level ``sigma`` (shape ``(B,)``).

    A preconditioner (or a partial of one) gets ``forward_sigma(x, sigma, ...)``; a compiled one
    (``torch.compile``'s wrapper, or compiled in place; also in a partial) its compiled call, with ``sigma`` as
    its time where its time is the noise level, else with the schedule's (a preconditioner of another scheme
    whose time is not the noise level gets ``forward_sigma``, uncompiled, with a warning); any other
    callable gets ``model(x, t, ...)`` with the schedule's time ``t`` (computed from
    ``sigma`` when not given). ``condition`` is passed only when it is not None, so a
    condition bound in a ``partial`` is kept. The output must be a tensor shaped like ``x``
    (:class:`ModelOutputError` / :class:`ModelSignatureError` otherwise, naming ``who``).
    """
    if condition is not None:
        model_kwargs["condition"] = condition
    precond, args, keywords = _preconditioner_of(model)
    if precond is not None:
        return check_output(precond.forward_sigma(x, sigma, *args, **{**keywords, **model_kwargs}), x, who)
    inner, args, keywords = _compiled_preconditioner(model)
    if inner is not None:
        if _at_noise_level(inner):  # its compiled call takes the noise level as its time
            return call_model(model, who, x, sigma, **model_kwargs)
        if _scheme(inner) != _scheme(schedule):  # its time means another level than the schedule's
            warnings.warn(_uncompiled_call_message(inner, schedule), stacklevel=2)
            return check_output(inner.forward_sigma(x, sigma, *args, **{**keywords, **model_kwargs}), x, who)
    if t is None:
        t = schedule.get_t_from_log_snr(-2 * sigma.log())
    return call_model(model, who, x, t, **model_kwargs)


class Denoiser:
    """A predictor bound to a schedule: ``D(x; sigma)``, ``D`` at time ``t``, and the ODE/SDE right-hand side.

    Build it with :func:`make_denoiser` (or ``schedule.get_denoiser(...)``).

    - ``x0_sigma(x, sigma)``: the x0-prediction ``D(x; sigma)`` at noise level ``sigma`` (a
      scalar tensor or one value per sample); this is what the solvers call.
    - ``x0(x, t)``: the same at the schedule's time ``t``.
    - ``denoiser(x, t)``: ``d x_hat / dt`` in the schedule's time for the unscaled latent.
      With ``sigma = noise_level(t)`` and ``sigma'`` its derivative:

      * ``"ode"`` (probability flow, Karras et al. 2022 eq. 4 with ``s = 1``):
        ``sigma'(t) / sigma (x - D)``;
      * ``"sde"`` (drift of the reverse-time SDE, Song et al. 2021 eq. 6, with
        ``g^2 = d sigma^2 / dt = 2 sigma sigma'`` and score ``(D - x) / sigma^2``):
        ``2 sigma'(t) / sigma (x - D)``; the noise term is ``g dW`` with ``g^2`` from
        :meth:`diffusion`.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "edm")          # t = sigma
    >>> denoiser = schedule.get_denoiser(x0_predictor=lambda x, t: torch.zeros_like(x))
    >>> denoiser(torch.ones(1, 2), torch.tensor(2.0))           # (x - 0) / sigma
    tensor([[0.5000, 0.5000]])
    """

    def __init__(
        self, schedule: Any, predictor: Any, prediction_type: str, denoising_type: str = "ode", condition: Any = None
    ) -> None:
        self.schedule = schedule
        self.predictor = predictor
        self.prediction_type = prediction_type
        self.denoising_type = denoising_type
        self.condition = condition
        #: How errors name the predictor ("x0_predictor", "guide model (epsilon_predictor)", ...).
        self.who = f"{prediction_type}_predictor"
        #: The dtype the predictor is called in (None: the latent's). ``sample`` sets it to the latents'
        #: dtype and calls ``D`` on a float32 state: the model runs in half precision, while the
        #: conversion to ``D`` (``x - sigma eps``, ``x + sigma^2 score``, ...) stays in float32.
        self.model_dtype: torch.dtype | None = None

    def with_condition(self, condition: Any) -> Denoiser:
        """A copy of this denoiser that passes ``condition`` to the predictor at every evaluation."""
        copy = Denoiser(self.schedule, self.predictor, self.prediction_type, self.denoising_type, condition)
        copy.who, copy.model_dtype = self.who, self.model_dtype
        return copy

    def named(self, role: str) -> Denoiser:
        """A copy whose errors name the predictor by its ``role`` (e.g. ``"guide model"``) too."""
        copy = self.with_condition(self.condition)
        copy.who = f"{role} ({self.prediction_type}_predictor)"
        return copy

    def calling_model_in(self, dtype: torch.dtype | None) -> Denoiser:
        """A copy that calls the predictor in ``dtype`` whatever the latent's dtype (see :attr:`model_dtype`)."""
        copy = self.with_condition(self.condition)
        copy.model_dtype = dtype
        return copy

    def parameter(self) -> torch.Tensor | None:
        """The predictor's first parameter (where its weights live), or None."""
        return first_parameter(self.predictor)

    def x0_sigma(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        """``D(x; sigma)``: the x0-prediction at noise level ``sigma`` (never call it at 0)."""
        return self.x0_given(x, sigma, self.condition)

    def x0_given(self, x: torch.Tensor, sigma: Any, condition: Any) -> torch.Tensor:
        """``D(x; sigma)`` with ``condition`` in place of the bound one (``None``: the model gets none)."""
        sigma = as_levels(sigma, x)
        check_condition(condition, x.shape[0])
        x_in = x if self.model_dtype in (None, x.dtype) else x.to(self.model_dtype)
        compiled = _compiled_at_noise_level(self.predictor)
        if compiled is not None:
            kwargs = {} if condition is None else {"condition": condition}
            out = check_output(compiled(x_in, sigma, **kwargs), x_in, self.who)
        else:
            out = predict(self.predictor, self.schedule, x_in, sigma, condition=condition, who=self.who)
        return self._to_x0(x, sigma, cast(out, x.dtype))  # a model in another precision: D in x's

    def _to_x0(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The x0-prediction from the predictor's output ``out`` at noise levels ``sigma`` (``(B,)``)."""
        if self.prediction_type == "x0":
            return out
        sigma_b = append_dims(sigma, x.ndim).to(x.dtype)
        if self.prediction_type == "epsilon":
            return x - sigma_b * out
        if self.prediction_type == "v":
            alpha_sq = 1 / (1 + sigma_b**2)  # sigmoid(lambda) of the variance-preserving process
            return alpha_sq * x - sigma_b * alpha_sq.sqrt() * out
        return x + sigma_b**2 * out  # score of the unscaled latent

    def on_checked_levels(self, like: torch.Tensor) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        """``D(x; sigma)`` as a function for states ``x`` shaped and typed like ``like``, at noise levels the
        caller checked once (positive and finite: a grid checked by ``check_sigmas`` and the levels a solver
        derives from it), which is how ``ds.sample`` calls the model.

        What depends only on the latents is settled here, once: the condition's batch, the dtype the model is
        called in, how the predictor is reached. A preconditioner (or a ``partial`` of one) is then called
        through ``precondition``, without the per-call domain check of ``forward_sigma``; a compiled one whose
        time is the noise level (``torch.compile``'s wrapper, or compiled in place) through its compiled call. A state of another batch
        size or dtype, and any other predictor, take the checked path of :meth:`x0_given`.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> net = lambda x, c_noise, condition=None: torch.zeros_like(x)
        >>> schedule = ds.create("noise_schedule", "ve")
        >>> denoiser = schedule.get_denoiser(x0_predictor=ds.create("preconditioner", "ve", model=net))
        >>> x = torch.ones(2, 3)
        >>> evaluate = denoiser.on_checked_levels(x)
        >>> torch.equal(evaluate(x, torch.tensor(2.0)), denoiser.x0_sigma(x, torch.tensor(2.0)))
        True
        """
        batch, dtype, device = like.shape[0], like.dtype, like.device
        levels = compute_dtype(dtype)
        condition = self.condition
        check_condition(condition, batch)
        model_dtype = None if self.model_dtype in (None, dtype) else self.model_dtype
        entry = _noise_level_entry(self.predictor, condition, checked=True)
        if entry is None:
            return lambda x, sigma: self.x0_given(x, sigma, condition)
        to_x0 = None if self.prediction_type == "x0" else self._to_x0

        def evaluate(x: torch.Tensor, sigma: Any) -> torch.Tensor:
            if x.shape[0] != batch or x.dtype != dtype:
                return self.x0_given(x, sigma, condition)
            if not (isinstance(sigma, torch.Tensor) and sigma.dtype == levels and sigma.device == device):
                sigma = torch.as_tensor(sigma, device=device).to(levels)
            # a scalar level goes as it is: the preconditioner expands it to the batch (inside the graph, compiled)
            out = entry(x if model_dtype is None else x.to(model_dtype), sigma)
            if out.dtype != dtype:
                out = out.to(dtype)
            return out if to_x0 is None else to_x0(x, sigma, out)

        return evaluate

    def x0(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """``D`` at the schedule's time ``t``."""
        return self.x0_sigma(x, self.schedule.noise_level(torch.as_tensor(t, device=x.device)))

    def diffusion(self, t: Any) -> torch.Tensor:
        """``g(t)^2 = d sigma^2 / dt`` of the unscaled latent's SDE at the schedule's time ``t``."""
        return 2 * self.schedule.noise_level(t) * self.schedule.noise_level_derivative(t)

    def __call__(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """``d x_hat / dt`` at the schedule's time ``t`` (ODE, or reverse-SDE drift)."""
        t = torch.as_tensor(t, device=x.device)
        sigma = self.schedule.noise_level(t)
        rate = self.schedule.noise_level_derivative(t) / sigma
        if self.denoising_type == "sde":
            rate = 2 * rate
        rate = append_dims(rate, x.ndim)
        return rate.to(x.dtype) * (x - self.x0_sigma(x, sigma))

    def __repr__(self) -> str:
        bound = "" if self.condition is None else ", condition=..."
        return (
            f"Denoiser(prediction_type={self.prediction_type!r}, denoising_type={self.denoising_type!r}, "
            f"schedule={self.schedule!r}{bound})"
        )


def make_denoiser(
    schedule: Any,
    *,
    x0_predictor: Any = None,
    epsilon_predictor: Any = None,
    v_predictor: Any = None,
    score_predictor: Any = None,
    condition: Any = None,
    denoising_type: str = "ode",
) -> Denoiser:
    """Bind exactly one predictor to ``schedule`` as a :class:`Denoiser`.

    Each predictor is called as ``f(x, t, ...)`` on the unscaled latent (a preconditioner,
    or a ``functools.partial`` of one binding e.g. ``condition``, is called with the noise
    level instead). ``condition`` (a Tensor or TensorDict with the latent's batch size) is
    passed to it at every evaluation. ``denoising_type`` is ``"ode"`` or ``"sde"``.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "edm")
    >>> schedule.get_denoiser(x0_predictor=lambda x, t: x, score_predictor=lambda x, t: x)
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.InvalidArgumentError: give exactly one predictor, got 2 (x0_predictor, score_predictor); ...

    The four kinds of prediction give the same ``D`` for the same data (here a dataset holding
    the one point 0.5, whose exact predictors are known):

    >>> schedule = ds.create("noise_schedule", "edm")
    >>> x0 = lambda x, t: torch.full_like(x, 0.5)
    >>> eps = lambda x, t: (x - 0.5) / t                              # t = sigma on EDM's schedule
    >>> v = lambda x, t: ((x - 0.5) / t - t * 0.5) / (1 + t**2) ** 0.5     # alpha eps - sigma_vp x0
    >>> score = lambda x, t: (0.5 - x) / t**2
    >>> x = torch.tensor([[2.0, -1.0]])
    >>> [schedule.get_denoiser(**{name: f}).x0_sigma(x, 3.0).tolist()
    ...  for name, f in [("x0_predictor", x0), ("epsilon_predictor", eps), ("v_predictor", v), ("score_predictor", score)]]
    [[[0.5, 0.5]], [[0.5, 0.5]], [[0.5, 0.5]], [[0.5, 0.5]]]
    """
    predictors = (x0_predictor, epsilon_predictor, v_predictor, score_predictor)
    given = {k: v for k, v in zip(_PREDICTORS, predictors) if v is not None}
    if len(given) != 1:
        raise InvalidArgumentError(
            f"give exactly one predictor, got {len(given)}"
            + (f" ({', '.join(given)})" if given else "")
            + "; pass one of x0_predictor=, epsilon_predictor=, v_predictor=, score_predictor= (a preconditioner's output is "
            "an x0-prediction)"
        )
    if denoising_type not in DENOISING_TYPES:
        raise InvalidArgumentError(f"denoising_type must be one of {DENOISING_TYPES}, got {denoising_type!r}")
    (name, predictor), = given.items()
    if not callable(predictor):
        raise ArgumentTypeError(f"{name} must be callable as f(x, t, ...), got {type(predictor).__name__}")
    check_prediction_type(predictor, name.removesuffix("_predictor"), "get_denoiser")
    check_pair(predictor, schedule)
    if condition is not None:
        check_condition(condition)
    return Denoiser(schedule, predictor, name.removesuffix("_predictor"), denoising_type, condition)


def bind_condition(denoiser: Any, noise_schedule: Any, condition: Any, batch: int, who: str = "sample") -> Denoiser:
    """What ``ds.sample`` and ``ds.log_likelihood`` call the model through: a :class:`Denoiser` (a bare
    predictor becomes an ``x0_predictor`` of ``noise_schedule``) with ``condition`` bound, checked for
    ``batch`` samples. ``who`` names the caller in the error for a condition given twice."""
    if not isinstance(denoiser, Denoiser):
        denoiser = make_denoiser(noise_schedule, x0_predictor=denoiser)
    if condition is not None:
        if denoiser.condition is not None:
            raise ConditionError(
                f"the denoiser already carries a condition (get_denoiser(..., condition=...)) and {who} got "
                "condition= too; give it in one place"
            )
        denoiser = denoiser.with_condition(condition)
    check_condition(denoiser.condition, batch)
    return denoiser


def check_device(denoiser: Any, latents: torch.Tensor) -> None:
    """Refuse latents on another device than the model's parameters (the guide's too, when guided) or
    than the condition and the null condition."""
    guide = getattr(denoiser, "guide", None)
    for who, param in (("model", denoiser.parameter()), ("guide model", None if guide is None else guide.parameter())):
        if param is not None and param.device != latents.device:
            raise InvalidArgumentError(
                f"the latents are on {latents.device} but the {who}'s parameters are on {param.device}; "
                f"move one of them, e.g. latents.to({str(param.device)!r}) or model.to({str(latents.device)!r})"
            )
    conditions = (("condition", denoiser.condition), ("null condition", getattr(denoiser, "null_condition", None)))
    for who, condition in conditions:
        if condition is None:
            continue
        leaves = [condition] if isinstance(condition, torch.Tensor) else condition.values(True, True)
        for value in leaves:
            if value.device != latents.device:
                raise ConditionError(
                    f"the {who} is on {value.device} but the latents are on {latents.device}; move it with "
                    f".to({str(latents.device)!r})"
                )
