"""How a user's network meets the library.

A backbone is any callable ``F(x, c_noise, condition)``. This package checks what it is given and
what it returns: ``call_model`` and ``check_output`` turn a wrong signature or an output of the wrong
shape into an error that says what to wrap the network in; ``check_condition`` and
``expand_null_condition`` check a condition (a tensor, a TensorDict or None) against the batch;
:class:`BackboneAdapter` wraps networks from other libraries (an output object such as diffusers'
``.sample``, other argument names), :class:`ConcatConditionWrapper` concatenates an image-shaped
condition to the input.
"""

from __future__ import annotations

from diffusion_schemes.adapters.backbone import BackboneAdapter
from diffusion_schemes.adapters.checks import call_model, check_output
from diffusion_schemes.adapters.conditions import (
    ConcatConditionWrapper,
    batch_size_of,
    check_condition,
    expand_null_condition,
)

__all__ = [
    "BackboneAdapter",
    "ConcatConditionWrapper",
    "batch_size_of",
    "call_model",
    "check_condition",
    "check_output",
    "expand_null_condition",
]
