"""A network taking ``class_labels`` (PhysicsNeMo's UNets) called with this library's ``condition``.

PhysicsNeMo's ``SongUNet`` and ``DhariwalUNet`` are called as ``net(x, noise_labels,
class_labels=None, ...)``; this library calls a backbone as ``model(x, c_noise, condition)``,
where ``condition`` is a tensor, a ``TensorDict`` or ``None``. :class:`ClassLabelsAdapter` maps
one onto the other:

- a tensor condition is the class labels;
- a ``TensorDict`` gives its ``key`` entry (``"class_labels"``) as the class labels and, when
  ``concat_key`` is set, its image entry concatenated to the input's channels, after ``c_in``
  scaling, which is what PhysicsNeMo's legacy ``EDMPrecond`` does with its ``condition``;
- with ``label_dim`` set, missing labels become zeros of shape ``(1, label_dim)`` and given ones
  are reshaped to ``(-1, label_dim)``, as PhysicsNeMo's legacy preconditioners do;
- with ``out_channels`` set, only the first ``out_channels`` output channels are kept (a
  learned-variance network such as the one inside ``iDDPMPrecond``).

>>> import torch
>>> from tensordict import TensorDict
>>> from diffusion_schemes_physicsnemo import ClassLabelsAdapter
>>> def net(x, noise_labels, class_labels=None):      # stands for a SongUNet
...     return x + class_labels.sum(dim=1)[:, None, None, None]
>>> model = ClassLabelsAdapter(net)
>>> labels = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
>>> model(torch.zeros(2, 1, 2, 2), torch.zeros(2), TensorDict({"class_labels": labels}, batch_size=[2]))[:, 0, 0, 0]
tensor([1., 2.])
"""

from __future__ import annotations

from typing import Any

import torch

from diffusion_schemes.adapters import check_condition
from diffusion_schemes.errors import ArgumentTypeError, ConditionError, InvalidArgumentError

__all__ = ["ClassLabelsAdapter"]


def _positive_or_none(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer or None, got {value!r}")
    return value


class ClassLabelsAdapter(torch.nn.Module):
    """``net(x, noise_labels, class_labels=...)`` as ``model(x, c_noise, condition=None, **kw)``.

    Args:
        net: the network (its parameters stay its own: wrapping copies nothing).
        key: the ``TensorDict`` entry holding the class labels.
        concat_key: the ``TensorDict`` entry holding an image condition to concatenate to the
            input's channels, or ``None`` for none.
        label_dim: the number of label entries, for PhysicsNeMo's legacy handling (zeros when no
            labels are given); ``None`` passes labels as they are (``None`` when absent).
        out_channels: keep only this many output channels (``None``: all).
    """

    def __init__(
        self,
        net: Any,
        key: str = "class_labels",
        concat_key: str | None = None,
        label_dim: int | None = None,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        if not callable(net):
            raise ArgumentTypeError(f"net must be callable as net(x, noise_labels, class_labels=...), got {type(net).__name__}")
        for name, value in (("key", key), ("concat_key", concat_key)):
            if not (isinstance(value, str) or value is None and name == "concat_key"):
                raise ArgumentTypeError(f"{name} must be the name of a TensorDict entry, got {value!r}")
        if key == concat_key:
            raise InvalidArgumentError(f"key and concat_key must name different entries, both are {key!r}")
        self.net = net
        self.key = key
        self.concat_key = concat_key
        self.label_dim = _positive_or_none(label_dim, "label_dim")
        self.out_channels = _positive_or_none(out_channels, "out_channels")

    def _split(self, condition: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(class_labels, image)`` from a condition."""
        if condition is None or isinstance(condition, torch.Tensor):
            return condition, None
        known = {self.key, self.concat_key} - {None}
        unknown = sorted(set(condition.keys()) - known)
        if unknown:
            raise ConditionError(
                f"the condition has entries {unknown} that this ClassLabelsAdapter does not use; it reads "
                f"{sorted(known)} (key=, concat_key=). Rename the entries or build the adapter with those names"
            )
        image = condition.get(self.concat_key) if self.concat_key is not None else None
        return condition.get(self.key), image

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: Any = None, **model_kwargs: Any) -> torch.Tensor:
        check_condition(condition, x.shape[0])
        if "class_labels" in model_kwargs:
            raise ConditionError("give the class labels once: as the condition, not also as class_labels=")
        labels, image = self._split(condition)
        if image is not None:
            x = torch.cat([x, image.to(x.dtype)], dim=1)
        if self.label_dim is not None:
            labels = (
                torch.zeros(1, self.label_dim, device=x.device, dtype=x.dtype)
                if labels is None
                else labels.to(x.dtype).reshape(-1, self.label_dim)
            )
        out = self.net(x, t, class_labels=labels, **model_kwargs)
        return out if self.out_channels is None else out[:, : self.out_channels]

    def extra_repr(self) -> str:
        return f"key={self.key!r}, concat_key={self.concat_key!r}, label_dim={self.label_dim}, out_channels={self.out_channels}"
