"""The exceptions of diffusion-schemes, documented in one place.

Every error the library raises on bad input derives from :class:`DiffusionSchemesError`
and from the built-in exception a caller would expect (``ValueError``, ``LookupError``,
``TypeError``), so ``except ValueError`` keeps working for code that knows nothing of us.

>>> import diffusion_schemes as ds
>>> issubclass(ds.UnknownSchemeError, LookupError)
True
"""

from __future__ import annotations

__all__ = [
    "ArgumentTypeError",
    "ConditionError",
    "DiffusionSchemesError",
    "DomainError",
    "GuidanceError",
    "InvalidArgumentError",
    "ModelOutputError",
    "ModelSignatureError",
    "NonFiniteSamplesError",
    "PairingError",
    "PluginError",
    "PluginWarning",
    "SchemeConfigError",
    "SamplingError",
    "SchemeConflictError",
    "UnknownKindError",
    "UnknownSchemeError",
]


class DiffusionSchemesError(Exception):
    """Base class of every error raised by diffusion-schemes.

    Catch it to handle any of the library's errors at once:

    >>> import diffusion_schemes as ds
    >>> try:
    ...     ds.create("solver", "hune")
    ... except ds.DiffusionSchemesError as exc:
    ...     print(type(exc).__name__)
    UnknownSchemeError
    """


class UnknownKindError(DiffusionSchemesError, ValueError):
    """A scheme kind that does not exist (the kinds are fixed by the core).

    >>> import diffusion_schemes as ds
    >>> ds.create("sampler", "heun")
    Traceback (most recent call last):
      ...
    diffusion_schemes.UnknownKindError: unknown scheme kind 'sampler'. Did you mean 'solver'? ...
    """


class UnknownSchemeError(DiffusionSchemesError, LookupError):
    """No installed scheme of that kind has that name.

    ``kind``, ``name`` and ``installed`` (the names that do exist) are kept on the
    exception so a caller can show its own message.

    >>> import diffusion_schemes as ds
    >>> ds.create("solver", "hune")
    Traceback (most recent call last):
      ...
    diffusion_schemes.UnknownSchemeError: no solver named 'hune' is installed. Did you mean 'heun'? ...
    >>> try:
    ...     ds.create("solver", "hune")
    ... except ds.UnknownSchemeError as exc:
    ...     print(exc.kind, exc.name, "heun" in exc.installed)
    solver hune True
    """

    def __init__(self, message: str, *, kind: str, name: str, installed: list[str]):
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.installed = installed

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0])


class SchemeConfigError(DiffusionSchemesError, ValueError):
    """A scheme's configuration does not validate against its spec.

    ``errors`` holds pydantic's structured error list (``loc``, ``msg``, ``type``, ``input``).

    >>> import diffusion_schemes as ds
    >>> ds.create("solver", {"name": "edm_stochastic_heun", "S_churn": -1})
    Traceback (most recent call last):
      ...
    diffusion_schemes.SchemeConfigError: invalid config for solver 'edm_stochastic_heun' (EDMStochasticHeunSpec):
      - S_churn: Input should be greater than or equal to 0 (got -1)
    ...
    >>> try:
    ...     ds.create("solver", {"name": "edm_stochastic_heun", "S_churn": -1})
    ... except ds.SchemeConfigError as exc:
    ...     print(exc.errors[0]["loc"])
    ('S_churn',)
    """

    def __init__(self, message: str, *, errors: list[dict] | None = None):
        super().__init__(message)
        self.errors = errors or []


class SchemeConflictError(DiffusionSchemesError, LookupError):
    """Two distributions register the same kind and name; the name cannot be resolved.

    >>> from typing import Literal
    >>> import diffusion_schemes as ds
    >>> class OneSpec(ds.WeightingSpec):
    ...     name: Literal["twice"] = "twice"
    >>> class OtherSpec(ds.WeightingSpec):
    ...     name: Literal["twice"] = "twice"
    >>> with ds.registry.registered(OneSpec, distribution="dist-a"), \\
    ...         ds.registry.registered(OtherSpec, distribution="dist-b"):
    ...     ds.create("weighting", "twice")
    Traceback (most recent call last):
      ...
    diffusion_schemes.SchemeConflictError: weighting 'twice' is registered by several distributions (dist-a, dist-b), ...
    """

    def __str__(self) -> str:
        return str(self.args[0])


class PluginError(DiffusionSchemesError, RuntimeError):
    """A plugin failed to load or to register (raised only in strict mode), or one of its schemes cannot be used.

    Strict mode is ``DIFFUSION_SCHEMES_STRICT_PLUGINS=1``; otherwise a :class:`PluginWarning`
    is issued and the plugin skipped. A scheme whose spec pydantic cannot build a validator for
    raises it where it is used (``create``, ``parse_spec``, a config field): specs build their
    validators on first use, and every other scheme keeps working.

    >>> import os
    >>> import diffusion_schemes as ds
    >>> os.environ["DIFFUSION_SCHEMES_STRICT_PLUGINS"] = "1"
    >>> try:
    ...     with broken_plugin_on_path():                        # a distribution whose module is missing
    ...         type(ds.registry)().plugins()                    # a fresh registry discovers again
    ... finally:
    ...     del os.environ["DIFFUSION_SCHEMES_STRICT_PLUGINS"]
    Traceback (most recent call last):
      ...
    diffusion_schemes.PluginError: diffusion-schemes plugin distribution 'broken-plugin' (no_such_module) is skipped: failed to load: ModuleNotFoundError: ...
    """


class DomainError(DiffusionSchemesError, ValueError):
    """A time, noise level or log-SNR outside the domain where a formula is defined.

    >>> import diffusion_schemes as ds
    >>> ds.create("noise_schedule", "ve").get_log_snr(-1.0)
    Traceback (most recent call last):
      ...
    diffusion_schemes.DomainError: ve: diffusion time t=[-1.0] is outside (0, inf), ...
    """


class InvalidArgumentError(DiffusionSchemesError, ValueError):
    """An argument whose value a function cannot use (a step count, a shape, an option).

    >>> import diffusion_schemes as ds
    >>> ds.create("noise_schedule", "edm").sigmas(0)
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.InvalidArgumentError: num_steps must be an int >= 1 (the number of solver steps), got 0
    """


class ArgumentTypeError(DiffusionSchemesError, TypeError):
    """An argument of a type a function does not accept.

    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "edm")
    >>> ds.sample(lambda x, t: x, schedule.init_latents((1, 2)), schedule, num_steps=2.5)
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.ArgumentTypeError: num_steps must be an int >= 1 (the number of solver steps), got 2.5
    """


class PairingError(DiffusionSchemesError, ValueError):
    """Pieces composed together that disagree, found when they meet rather than after training.

    A preconditioner and a schedule of the same scheme whose ``sigma(t)`` and noise level
    disagree; schemes of one family that disagree on a parameter they declare shared
    (EDM's ``sigma_data``); a preconditioner used as anything but an x0-predictor.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> precond = ds.create("preconditioner", {"name": "vp", "beta_min": 0.2}, model=torch.nn.Identity())
    >>> ds.MSEDSMLoss(precond, ds.create("noise_schedule", "vp"))
    Traceback (most recent call last):
      ...
    diffusion_schemes.PairingError: the 'vp' preconditioner and the 'vp' schedule disagree on the noise level: ...
    """


class ConditionError(DiffusionSchemesError, ValueError):
    """A condition whose type or batch size does not fit the latent it goes with.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> from diffusion_schemes.adapters import check_condition
    >>> check_condition({"label": torch.zeros(2)}, batch_size=2)
    Traceback (most recent call last):
      ...
    diffusion_schemes.ConditionError: a condition must be a Tensor, a TensorDict or None, got dict. ...
    """


class GuidanceError(DiffusionSchemesError, ValueError):
    """A guidance setting that cannot be applied: a scale that is not finite, an empty interval, ...

    >>> import diffusion_schemes as ds
    >>> ds.Guidance(float("inf"))
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.GuidanceError: the guidance scale must be finite, got inf; ...
    """


class ModelOutputError(DiffusionSchemesError, ValueError):
    """A network's output does not have the latent's shape (no silent broadcasting).

    A learned-variance network with twice the channels, or one that drops a dimension, would
    otherwise train through broadcasting; the loss and the denoiser refuse it.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "edm")
    >>> two_channels = lambda x, t: torch.cat([x, x], dim=1)
    >>> schedule.get_denoiser(x0_predictor=two_channels).x0_sigma(torch.zeros(2, 1, 4), 1.0)
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.ModelOutputError: the x0_predictor returned shape (2, 2, 4) but the latent has shape (2, 1, 4); ...
    """


class ModelSignatureError(DiffusionSchemesError, TypeError):
    """A network that cannot be called as ``model(x, t, condition)`` or does not return a tensor.

    The message says what to wrap the network in (``diffusion_schemes.adapters.BackboneAdapter``
    for an output object such as diffusers' ``UNet2DOutput``).

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "edm")
    >>> denoiser = schedule.get_denoiser(x0_predictor=lambda x: x, condition=torch.zeros(2, 3))
    >>> denoiser.x0_sigma(torch.zeros(2, 4), 1.0)
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.ModelSignatureError: the x0_predictor cannot be called as model(x, t, condition=...): ...
    """


class SamplingError(DiffusionSchemesError, ValueError):
    """Arguments of :func:`diffusion_schemes.sample` that cannot be used together or as given.

    A grid of noise levels that does not decrease to a final 0, a grid given twice (``sigmas``
    and ``discretization``) or not at all, a ``mask`` without ``known``, shapes that do not fit
    the latents.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "edm")
    >>> ds.sample(lambda x, t: x, torch.zeros(1, 2), schedule, sigmas=[1.0, 2.0, 0.0])
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.SamplingError: sigmas must decrease strictly from positive noise levels to a final 0, ...
    """


class NonFiniteSamplesError(SamplingError):
    """Sampling produced NaN or inf: the message names the first step where it happened and the likely cause.

    ``step`` is that step (None when no step reported it), ``cause`` one of ``"noise"`` (the noise
    sampler), ``"denoised"`` (the model's output, or a guidance scale that overflows it),
    ``"state"`` (the solver's own arithmetic) or ``"unknown"``; ``samples`` holds the raw result.
    ``ds.sample(..., check_finite=False)`` returns such samples without the check.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "edm")
    >>> def broken(x, t):                                  # NaN once the noise level falls below 1
    ...     return torch.where((t < 1).reshape(-1, 1), float("nan"), 0.0).expand_as(x)
    >>> latents = schedule.init_latents((2, 3), generator=torch.Generator().manual_seed(0))
    >>> schedule.sigmas(8)[4:6]                            # Heun's second evaluation of step 4 is at 0.2675
    tensor([1.2866, 0.2675], dtype=torch.float64)
    >>> ds.sample(broken, latents, schedule, num_steps=8)
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.NonFiniteSamplesError: sampling produced NaN or inf: the model's output (the denoised estimate D) was first NaN or inf at step 4 (noise level 1.287 -> 0.2675), ...
    >>> try:
    ...     ds.sample(broken, latents, schedule, num_steps=8)
    ... except ds.errors.SamplingError as exc:
    ...     print(exc.step, exc.cause, exc.samples.shape)
    4 denoised torch.Size([2, 3])
    """

    def __init__(self, message: str, *, step: int | None = None, cause: str = "unknown", samples: object = None):
        super().__init__(message)
        self.step, self.cause, self.samples = step, cause, samples


class PluginWarning(UserWarning):
    """A plugin distribution was skipped because it failed to load or to register.

    >>> import warnings
    >>> import diffusion_schemes as ds
    >>> with warnings.catch_warnings(record=True) as caught, broken_plugin_on_path():
    ...     warnings.simplefilter("always")
    ...     statuses = type(ds.registry)().plugins()             # a fresh registry discovers again
    >>> [str(w.message) for w in caught if w.category is ds.PluginWarning]
    ["diffusion-schemes plugin distribution 'broken-plugin' (no_such_module) is skipped: failed to load: ModuleNotFoundError: ..."]
    >>> [s.status for s in statuses if s.distribution == "broken-plugin"]
    ['failed']
    """
