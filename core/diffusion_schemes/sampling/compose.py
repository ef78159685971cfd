"""Checks on what is composed, made when the pieces meet rather than discovered after training.

- Schemes of one family that share a parameter (EDM's ``sigma_data`` in its preconditioner,
  schedule and weighting) must agree on it. A spec declares the parameters in
  :attr:`SchemeSpec.shared_parameters`, so a third-party family uses the same check.
- A preconditioner outputs an x0-prediction (Karras et al. 2022, eq. 7), so it is trained
  and sampled as one: ``prediction_type="x0"`` in the loss, ``x0_predictor=`` in the denoiser.

:class:`MSEDSMLoss` and :func:`make_denoiser` run both and raise :class:`PairingError`.

>>> import torch
>>> import diffusion_schemes as ds
>>> precond = ds.create("preconditioner", {"name": "edm", "sigma_data": 0.6}, model=torch.nn.Identity())
>>> ds.MSEDSMLoss(precond, ds.create("noise_schedule", "edm"))
Traceback (most recent call last):
  ...
diffusion_schemes.PairingError: the 'edm' preconditioner has sigma_data=0.6 but the 'edm' noise_schedule has sigma_data=0.5; ...
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from typing import Any

from diffusion_schemes.errors import ArgumentTypeError, PairingError
from diffusion_schemes.preconditioners.affine import BaseAffinePreconditioner
from diffusion_schemes.specs.base import SchemeSpec

__all__ = ["check_prediction_type", "check_shared_parameters"]


def _spec_of(part: Any) -> SchemeSpec | None:
    while isinstance(part, functools.partial):
        part = part.func
    if isinstance(part, SchemeSpec) or part is None:
        return part
    try:
        spec = part.spec
    except (AttributeError, NotImplementedError):
        return None
    return spec if isinstance(spec, SchemeSpec) else None


def _shared(spec: SchemeSpec) -> dict[str, tuple[str, Any]]:
    """``{shared name: (field, value)}`` of what ``spec`` declares shared with its family."""
    declared = type(spec).shared_parameters
    fields = dict(declared) if isinstance(declared, Mapping) else {f: f for f in declared}
    missing = [f for f in fields if f not in type(spec).model_fields]
    if missing:
        raise ArgumentTypeError(
            f"{type(spec).__qualname__}.shared_parameters names {missing}, which are not fields of the spec; "
            f"its fields are {[f for f in type(spec).model_fields if f != 'name']}"
        )
    return {shared: (field, getattr(spec, field)) for field, shared in fields.items()}


def check_shared_parameters(*parts: Any) -> None:
    """Raise :class:`PairingError` when two ``parts`` of one family disagree on a shared parameter.

    ``parts`` are specs or objects built from specs (anything else, and ``None``, is skipped);
    the family is the spec's ``shared_family``, else its scheme name.
    """
    specs = [s for s in map(_spec_of, parts) if s is not None]
    for a, b in itertools.combinations(specs, 2):
        family = type(a).shared_family or a.scheme_name()
        if family != (type(b).shared_family or b.scheme_name()):
            continue
        mine, theirs = _shared(a), _shared(b)
        for key in sorted(mine.keys() & theirs.keys()):
            (field_a, value_a), (field_b, value_b) = mine[key], theirs[key]
            if value_a != value_b:
                raise PairingError(
                    f"the {a.name!r} {a.kind} has {field_a}={value_a!r} but the {b.name!r} {b.kind} has "
                    f"{field_b}={value_b!r}; the schemes of the {family!r} family must agree on {key}. "
                    f"Give both the same value, e.g. {field_a}={value_a!r} in the {b.kind}'s config too."
                )


def check_prediction_type(model: Any, prediction_type: str, where: str) -> None:
    """Raise :class:`PairingError` when a preconditioner (or a ``partial`` of one) is used as anything but an x0-predictor."""
    precond = model.func if isinstance(model, functools.partial) else model
    if not isinstance(precond, BaseAffinePreconditioner) or prediction_type == "x0":
        return
    raise PairingError(
        f"{where}: {type(precond).__name__} is a preconditioner, whose output is an x0-prediction "
        f"(D = c_skip x + c_out F), so it cannot stand for a prediction of {prediction_type!r}. Use it with "
        "x0 (prediction_type='x0' in MSEDSMLoss, x0_predictor= in get_denoiser), or pass the backbone "
        f"itself if it predicts {prediction_type!r}."
    )
