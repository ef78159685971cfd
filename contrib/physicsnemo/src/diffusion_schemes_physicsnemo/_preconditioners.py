"""PhysicsNeMo's preconditioners as this library's, by name, with their networks and weights.

PhysicsNeMo 2.2.2 keeps two generations of the EDM-paper preconditioners (Karras et al. 2022,
Table 1): the legacy ``EDMPrecond``, ``VPPrecond``, ``VEPrecond`` and ``iDDPMPrecond``, called as
``precond(x, sigma, class_labels=None)`` at a noise level around a UNet called as
``net(x, c_noise, class_labels=...)``; and their bases ``EDMPreconditioner``,
``VPPreconditioner``, ``VEPreconditioner`` and ``IDDPMPreconditioner``, called as
``precond(x, t, condition=None)`` at a diffusion time around a network with that signature.
Both compute the same coefficients as this library's ``edm``, ``vp``, ``ve`` and ``iddpm``
preconditioners with the same parameters, so :func:`from_physicsnemo` builds the one of the same
name through ``ds.create`` around the same network object: the weights are shared, not copied.

A legacy network is wrapped in :class:`~diffusion_schemes_physicsnemo.ClassLabelsAdapter`: the
condition (a tensor, or a ``TensorDict`` with ``"class_labels"`` and, for ``EDMPrecond``, an image
``"cond_concat"`` concatenated after ``c_in`` scaling) becomes its ``class_labels``, missing labels
become zeros when the network has ``label_dim > 0``, and the learned-variance output of
``iDDPMPrecond``'s network is cut to its ``img_channels``. The legacy classes compute in
float32 (and in float16 on CUDA with ``use_fp16``); the result here computes in the latent's
dtype, float32 or wider (use ``torch.autocast`` for half precision).

The sampling range of a legacy object (``sigma_min``, ``sigma_max``) and VP's ``epsilon_t``
belong to the schedule here (``ds.create("noise_schedule", ...)``), not to the preconditioner.
"""

from __future__ import annotations

from typing import Any

import torch

import diffusion_schemes as ds
from diffusion_schemes.errors import ArgumentTypeError, InvalidArgumentError

from ._labels import ClassLabelsAdapter

__all__ = ["from_physicsnemo"]

#: PhysicsNeMo's class name -> (our scheme name, the parameters carried over, legacy or not).
_CLASSES: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "EDMPrecond": ("edm", ("sigma_data",), True),
    "VPPrecond": ("vp", ("beta_d", "beta_min", "M"), True),
    "VEPrecond": ("ve", (), True),
    "iDDPMPrecond": ("iddpm", ("C_1", "C_2", "M"), True),
    "EDMPreconditioner": ("edm", ("sigma_data",), False),
    "VPPreconditioner": ("vp", ("beta_d", "beta_min", "M"), False),
    "VEPreconditioner": ("ve", (), False),
    "IDDPMPreconditioner": ("iddpm", ("C_1", "C_2", "M"), False),
}


def _physicsnemo_class(precond: Any) -> str | None:
    """The nearest class of ``precond`` (itself or a base) that is one of PhysicsNeMo's listed above."""
    for cls in type(precond).__mro__:
        if cls.__name__ in _CLASSES and cls.__module__.split(".")[0] == "physicsnemo":
            return cls.__name__
    return None


def _number(precond: Any, field: str) -> float | int:
    value = torch.as_tensor(getattr(precond, field))
    if value.numel() != 1:
        raise InvalidArgumentError(
            f"{type(precond).__name__}.{field} has {value.numel()} entries (one per channel); the preconditioners "
            f"here take one number: give the network data of one scale, or write a preconditioner with per-channel {field}"
        )
    return int(value) if field == "M" else float(value)


def from_physicsnemo(precond: Any) -> Any:
    """The preconditioner of the same name here, around ``precond``'s own network (weights shared).

    ``precond`` is a PhysicsNeMo ``EDMPrecond``, ``VPPrecond``, ``VEPrecond``, ``iDDPMPrecond``
    (legacy) or ``EDMPreconditioner``, ``VPPreconditioner``, ``VEPreconditioner``,
    ``IDDPMPreconditioner``; the result is built by ``ds.create("preconditioner", {"name": ...,
    parameters})`` and keeps the training mode of ``precond``.

    >>> import torch
    >>> from diffusion_schemes_physicsnemo import from_physicsnemo
    >>> from_physicsnemo(torch.nn.Linear(2, 2))
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.ArgumentTypeError: from_physicsnemo takes a PhysicsNeMo preconditioner ...
    """
    found = _physicsnemo_class(precond)
    if found is None:
        raise ArgumentTypeError(
            f"from_physicsnemo takes a PhysicsNeMo preconditioner ({', '.join(_CLASSES)}), got {type(precond).__name__}; "
            "for another PhysicsNeMo module (EDMPrecondSuperResolution, a custom preconditioner) build the "
            "preconditioner by name with ds.create('preconditioner', ..., model=...) around its network"
        )
    name, fields, legacy = _CLASSES[found]
    config = {"name": name, **{field: _number(precond, field) for field in fields}}
    network = precond.model
    if legacy:
        label_dim = int(getattr(precond, "label_dim", 0) or 0)
        network = ClassLabelsAdapter(
            network,
            concat_key="cond_concat" if name == "edm" else None,
            label_dim=label_dim or None,
            out_channels=int(precond.img_channels) if name == "iddpm" else None,
        )
    return ds.create("preconditioner", config, model=network).train(precond.training)
