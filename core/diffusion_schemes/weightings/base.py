"""Loss weightings: functions of the log-SNR, each written for one loss type.

A weighting ``w(log_snr, schedule=None)`` states which loss it is written for
(``loss_type``: ``"epsilon"``, ``"x0"``, ``"v"`` or ``"score"``). Since
``||x0 - x0_hat||^2 = exp(-lambda) ||eps - eps_hat||^2``,
``||eps - eps_hat||^2 = sigmoid(lambda) ||v - v_hat||^2`` and
``||eps - eps_hat||^2 = exp(-lambda) ||s - s_hat||^2`` (score of the unscaled latent),
the same objective has the weights ``w_x0 = w_eps exp(lambda)``,
``w_v = w_eps sigmoid(lambda)`` and ``w_score = w_eps exp(-lambda)``;
:func:`convert_weight` applies that, so a weighting keeps its meaning when the prediction
type changes.

>>> import torch
>>> import diffusion_schemes as ds
>>> snr = ds.create("weighting", "snr")       # 1/sigma^2 on the x0-loss = uniform on epsilon
>>> lam = torch.tensor([-2.0, 0.0, 3.0])
>>> snr.convert(lam, "epsilon")
tensor([1., 1., 1.])
"""

import abc
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from diffusion_schemes.errors import ArgumentTypeError, InvalidArgumentError
from diffusion_schemes.specs.base import SpecBacked, WeightingSpec

__all__ = ["BaseWeighting"]

#: The loss types (prediction targets) a weighting can be written for.
LOSS_TYPES = ("epsilon", "x0", "v", "score")


def _log_factor(log_snr: torch.Tensor, loss_type: str) -> torch.Tensor:
    """``log(w_type / w_eps)`` for the same objective."""
    if loss_type == "epsilon":
        return torch.zeros_like(log_snr)
    if loss_type == "x0":
        return log_snr
    if loss_type == "v":
        return F.logsigmoid(log_snr)
    if loss_type == "score":
        return -log_snr
    raise InvalidArgumentError(f"unknown loss type {loss_type!r}; expected one of {LOSS_TYPES}")


def convert_weight(weight: torch.Tensor, log_snr: torch.Tensor, source: str, target: str) -> torch.Tensor:
    """Convert a weight written for the ``source`` loss into the ``target`` loss's weight.

    ``w_x0 = w_eps exp(lambda)``, ``w_v = w_eps sigmoid(lambda)``, ``w_score = w_eps exp(-lambda)``.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> lam = torch.tensor([0.0, 2.0], dtype=torch.float64)
    >>> w_x0 = convert_weight(torch.ones(2, dtype=torch.float64), lam, "epsilon", "x0")
    >>> w_x0
    tensor([1.0000, 7.3891], dtype=torch.float64)
    >>> w_v = convert_weight(w_x0, lam, "x0", "v")
    >>> convert_weight(w_v, lam, "v", "epsilon")
    tensor([1., 1.], dtype=torch.float64)
    """
    if source == target:
        # LOSS_TYPES written out: a constant of this code, where reading the module's tuple would add a guard
        # for each of its items to every call of a loss compiled with torch.compile
        if source not in ("epsilon", "x0", "v", "score"):
            _log_factor(log_snr, source)  # raises the error that names the loss types
        return weight
    return weight * torch.exp(_log_factor(log_snr, target) - _log_factor(log_snr, source))


def weight_for(weighting: Any, log_snr: torch.Tensor, prediction_type: str, schedule: Any = None) -> torch.Tensor:
    """``weighting``'s weight at ``log_snr`` for a loss on ``prediction_type`` (ones for ``None``).

    The weighting is called in its own ``loss_type`` (``epsilon`` when it states none) and
    converted with :func:`convert_weight`.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> weight_for(ds.create("weighting", "snr"), torch.tensor([0.0, 2.0]), "epsilon")
    tensor([1., 1.])
    """
    if weighting is None:
        return torch.ones_like(log_snr)
    source = getattr(weighting, "loss_type", "epsilon")
    return convert_weight(weighting(log_snr, schedule=schedule), log_snr, source, prediction_type)


class BaseWeighting(SpecBacked, abc.ABC):
    """A loss weighting written for ``loss_type``; called as ``w(log_snr, schedule=None)``.

    Subclasses set ``loss_type`` and implement :meth:`weight`; give them a ``spec_class``
    to make them buildable by name (its fields become the constructor's arguments).

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> class Truncated(ds.BaseWeighting):
    ...     loss_type = "epsilon"
    ...     def weight(self, log_snr, schedule=None):
    ...         return (log_snr < 4).to(log_snr.dtype)
    >>> Truncated()(torch.tensor([0.0, 5.0]))
    tensor([1., 0.])
    """

    loss_type: ClassVar[str] = "epsilon"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if self._built_from_spec(args, kwargs):
            self._bind_spec(args, kwargs)
        elif args or kwargs:
            raise ArgumentTypeError(f"{type(self).__qualname__} takes no arguments (it has no spec_class)")

    @abc.abstractmethod
    def weight(self, log_snr: torch.Tensor, schedule: Any = None) -> torch.Tensor:
        """The weight for the loss type this weighting is written for.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> ds.create("weighting", "snr").weight(torch.tensor([0.0, 2.0]))
        tensor([1.0000, 7.3891])
        """

    def __call__(self, log_snr: Any, schedule: Any = None) -> torch.Tensor:
        # a tensor is kept as it is: no call, and no guard under torch.compile (only tensors have new_tensor; reading
        # torch.Tensor would be a guard on torch, and a Python check that it is the module the backbone reads)
        if not hasattr(log_snr, "new_tensor"):
            log_snr = torch.as_tensor(log_snr)
        if not log_snr.is_floating_point():
            log_snr = log_snr.float()
        return self.weight(log_snr, schedule)

    def convert(self, log_snr: Any, to: str, schedule: Any = None) -> torch.Tensor:
        """The weight for a loss on ``to`` that expresses the same objective.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> ds.create("weighting", "snr").convert(torch.tensor([0.0, 2.0], dtype=torch.float64), "v")
        tensor([0.5000, 0.8808], dtype=torch.float64)
        """
        return weight_for(self, torch.as_tensor(log_snr), to, schedule=schedule)



class SNRWeightingSpec(WeightingSpec):
    """1/sigma^2 on the x0-loss (uniform on epsilon): Karras et al. 2022, Table 1, VE/VP/iDDPM.

    >>> import torch
    >>> weighting = SNRWeightingSpec().build()
    >>> weighting, weighting.loss_type, weighting(torch.tensor([0.0, 2.0]))   # exp(lambda) = 1 / sigma^2
    (SNRWeighting(), 'x0', tensor([1.0000, 7.3891]))
    """

    name: Literal["snr"] = "snr"
    builds = "SNRWeighting"


class LikelihoodWeightingSpec(WeightingSpec):
    """-d lambda/dt on the epsilon-loss: likelihood weighting (Song et al. 2021).

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("weighting", "likelihood_weighting")
    LikelihoodWeightingSpec(name='likelihood_weighting')
    >>> weighting = ds.create("weighting", "likelihood_weighting")
    >>> ve = ds.create("noise_schedule", "ve")                   # t = sigma: -d lambda/dt = 2 / t
    >>> weighting(ve.get_log_snr(torch.tensor([1.0, 0.5])), schedule=ve)
    tensor([2., 4.])
    """

    name: Literal["likelihood_weighting"] = "likelihood_weighting"
    builds = "LikelihoodWeighting"


class SNRWeighting(BaseWeighting):
    """``w = exp(lambda) = 1 / sigma^2`` on the x0-loss (uniform on the epsilon-loss).

    The weighting of the VE, VP and iDDPM rows of Karras et al. 2022, Table 1.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> sigma = torch.tensor([0.5, 2.0])
    >>> ds.create("weighting", "snr")(-2 * sigma.log())
    tensor([4.0000, 0.2500])
    """

    loss_type = "x0"
    spec_class = SNRWeightingSpec

    def weight(self, log_snr: torch.Tensor, schedule: Any = None) -> torch.Tensor:
        return torch.exp(log_snr)


class LikelihoodWeighting(BaseWeighting):
    """``w = -d lambda / dt`` on the epsilon-loss: the likelihood weighting of Song et al. 2021.

    With ``g^2 = -lambda'(t) sigma^2`` (see :class:`BaseNoiseSchedule`), Song et al.'s
    ``g(t)^2 ||score - score_hat||^2`` on the scaled latent equals
    ``-lambda'(t) ||eps - eps_hat||^2``, the continuous-time ELBO weighting of Kingma et
    al. 2021 (eq. 17) for t drawn uniformly. It needs the schedule.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> ve = ds.create("noise_schedule", "ve")                  # lambda = -2 ln t: -lambda' = 2/t
    >>> w = ds.create("weighting", "likelihood_weighting")
    >>> w(ve.get_log_snr(torch.tensor([0.5, 4.0])), schedule=ve)
    tensor([4.0000, 0.5000])
    """

    loss_type = "epsilon"
    spec_class = LikelihoodWeightingSpec

    def weight(self, log_snr: torch.Tensor, schedule: Any = None) -> torch.Tensor:
        if schedule is None:
            raise InvalidArgumentError("likelihood_weighting needs the noise schedule: call it as w(log_snr, schedule=...)")
        t = schedule.get_t_from_log_snr(log_snr, training=True)
        return -schedule.dlog_snr_dt(t, training=True)
