"""The structural interfaces every scheme and model is checked against.

They are runtime-checkable :class:`typing.Protocol` classes: anything with the right
methods satisfies them, no inheritance needed.

>>> import torch
>>> import diffusion_schemes as ds
>>> class Backbone(torch.nn.Module):
...     def forward(self, x, t, condition=None):
...         return x
>>> isinstance(Backbone(), ds.DiffusionModel)
True

When the affine form does not fit, a plain module that satisfies the protocol can do its
own preconditioning; it is used anywhere a model is expected:

>>> class OwnPreconditioning(torch.nn.Module):
...     def __init__(self, backbone):
...         super().__init__()
...         self.backbone = backbone
...     def forward(self, x, t, condition=None):
...         t = t.view(-1, *([1] * (x.ndim - 1)))
...         return x + t * self.backbone(x / (1 + t**2).sqrt(), t.flatten(), condition)
>>> model = OwnPreconditioning(Backbone())
>>> isinstance(model, ds.DiffusionModel)
True
>>> model(torch.randn(2, 3, 8, 8), torch.rand(2)).shape
torch.Size([2, 3, 8, 8])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

__all__ = ["DiffusionModel", "NoiseSchedule", "Preconditioner"]


@runtime_checkable
class DiffusionModel(Protocol):
    """A network called as ``model(x, t, condition=None, **model_kwargs) -> Tensor``.

    ``x`` is the (unscaled) latent of shape ``(B, *)``, ``t`` a diffusion time (or, behind a
    preconditioner, the noise label ``c_noise``) of shape ``(B,)``, ``condition`` a Tensor, a
    TensorDict or ``None`` with batch size ``B``. The output has the shape of ``x``.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> isinstance(torch.nn.Identity(), ds.DiffusionModel), isinstance("not a model", ds.DiffusionModel)
    (True, False)
    """

    def __call__(self, x: torch.Tensor, t: torch.Tensor, condition: Any = None, **model_kwargs: Any) -> torch.Tensor: ...


@runtime_checkable
class Preconditioner(DiffusionModel, Protocol):
    """A :class:`DiffusionModel` that maps time to noise level and computes affine coefficients.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> precond = ds.create("preconditioner", "edm", model=torch.nn.Identity())
    >>> isinstance(precond, ds.Preconditioner), isinstance(torch.nn.Identity(), ds.Preconditioner)
    (True, False)
    """

    def sigma(self, t: torch.Tensor) -> torch.Tensor: ...

    def compute_coefficients(
        self, sigma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class NoiseSchedule(Protocol):
    """A forward process ``z_t = alpha(t) x0 + sigma(t) eps`` described by its log-SNR.

    ``lambda(t) = log alpha(t)^2 - log sigma(t)^2`` decreases with t; the noise level is
    ``exp(-lambda / 2)``.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "ve")
    >>> isinstance(schedule, ds.NoiseSchedule), isinstance(torch.nn.Identity(), ds.NoiseSchedule)
    (True, False)
    >>> schedule.noise_level(torch.tensor([2.0])), schedule.get_log_snr(torch.tensor([1.0]))
    (tensor([2.]), tensor([-0.]))
    """

    def get_log_snr(self, t: Any, training: bool = False) -> torch.Tensor: ...

    def get_t_from_log_snr(self, log_snr: Any, training: bool = False) -> torch.Tensor: ...

    def derivative_log_snr(self, log_snr: Any, training: bool = False) -> torch.Tensor: ...

    def get_alpha_sigma(self, log_snr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def noise_level(self, t: Any) -> torch.Tensor: ...
