"""Adapters that make an outside network callable as ``model(x, t, condition=None, **kw) -> Tensor``.

:class:`BackboneAdapter` fits a network that returns an output object (diffusers'
``UNet2DOutput`` and its ``.sample``), a tuple, or more channels than the latent, and one
that takes the condition under another name (``class_labels``, ``encoder_hidden_states``).

>>> import torch
>>> from types import SimpleNamespace
>>> from diffusion_schemes.adapters import BackboneAdapter
>>> class Net(torch.nn.Module):                     # shaped like a diffusers UNet2DModel
...     def forward(self, sample, timestep, class_labels=None, return_dict=True):
...         return SimpleNamespace(sample=sample * 2)
>>> model = BackboneAdapter(Net(), condition="class_labels")
>>> model(torch.ones(1, 2), torch.zeros(1))
tensor([[2., 2.]])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from diffusion_schemes.errors import ArgumentTypeError, ModelSignatureError

__all__ = ["BackboneAdapter"]


class BackboneAdapter(torch.nn.Module):
    """Call ``model(x, t, ...)`` and return a tensor: the output's ``output`` attribute, index or map.

    Args:
        model: the network (a ``torch.nn.Module`` or any callable).
        output: ``"sample"`` (an attribute, diffusers' output objects), an ``int`` (an index of a
            tuple output), a callable ``f(out) -> Tensor`` (e.g. ``lambda out: out[:, :3]`` to keep
            the mean of a learned-variance network) or ``None`` (the output as it is).
        condition: the keyword the condition is passed under (``"class_labels"``), ``None`` to
            pass it as the third positional argument, or ``False`` for a network that takes none
            (a condition given to it is then an error).

    >>> import torch
    >>> from diffusion_schemes.adapters import BackboneAdapter
    >>> learned_variance = lambda x, t: torch.cat([x, -x], dim=1)     # mean and variance channels
    >>> model = BackboneAdapter(learned_variance, output=lambda out: out[:, :1], condition=False)
    >>> model(torch.ones(2, 1), torch.zeros(2)).shape
    torch.Size([2, 1])
    >>> model(torch.ones(2, 1), torch.zeros(2), torch.zeros(2, 3))
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.ModelSignatureError: this BackboneAdapter was built with condition=False (the network takes no condition) but was given one
    """

    def __init__(self, model: Any, output: str | int | Callable[[Any], torch.Tensor] | None = "sample",
                 condition: str | bool | None = None) -> None:
        super().__init__()
        if condition is True or not (condition is None or condition is False or isinstance(condition, str)):
            raise ArgumentTypeError(f"condition must be a keyword name, None (positional) or False (none), got {condition!r}")
        if not (output is None or isinstance(output, (str, int)) or callable(output)):
            raise ArgumentTypeError(f"output must be an attribute name, an index, a callable or None, got {output!r}")
        self.model = model
        self.output = output
        self.condition = condition

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: Any = None, **model_kwargs: Any) -> torch.Tensor:
        if self.condition is False:
            if condition is not None:
                raise ModelSignatureError(
                    "this BackboneAdapter was built with condition=False (the network takes no condition) but was given one"
                )
            out = self.model(x, t, **model_kwargs)
        elif self.condition is None:
            out = self.model(x, t, condition, **model_kwargs)
        else:
            out = self.model(x, t, **{self.condition: condition}, **model_kwargs)
        if self.output is None:
            return out
        if isinstance(self.output, str):
            return getattr(out, self.output)
        if isinstance(self.output, int):
            return out[self.output]
        return self.output(out)

    def extra_repr(self) -> str:
        return f"output={self.output!r}, condition={self.condition!r}"
