"""Conditions (a Tensor, a TensorDict or None) and the channel-concatenation wrapper.

A condition travels untouched from the caller to the backbone: it is never scaled by
``c_in``. Its batch size must match the latent's.

>>> import torch
>>> from tensordict import TensorDict
>>> import diffusion_schemes as ds
>>> model = ds.ConcatConditionWrapper(CondBackbone())
>>> condition = TensorDict(
...     {"cond_concat": torch.rand(2, 1, 8, 8), "cond_vec": torch.rand(2, 4)}, batch_size=[2]
... )
>>> model(torch.rand(2, 3, 8, 8), torch.rand(2), condition).shape
torch.Size([2, 3, 8, 8])
"""

from __future__ import annotations

from typing import Any

import torch

from diffusion_schemes.errors import ConditionError

__all__ = ["ConcatConditionWrapper"]


def check_condition(condition: Any, batch_size: int | None = None) -> None:
    """Raise :class:`ConditionError` unless ``condition`` is None or a Tensor/TensorDict with a batch
    dimension, of ``batch_size`` entries when that is given (a condition checked before any latent
    is seen, such as a null condition, is given none).

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> check_condition(None, 2)
    >>> check_condition(torch.zeros(2, 5), 2)
    >>> check_condition(torch.zeros(3, 5), 2)
    Traceback (most recent call last):
      ...
    diffusion_schemes.ConditionError: the condition's batch size is 3 but the latent's is 2; ...
    >>> check_condition(torch.tensor(1.0))
    Traceback (most recent call last):
      ...
    diffusion_schemes.ConditionError: a condition needs a leading batch dimension (one entry per sample), got a 0-d tensor; ...
    """
    if condition is None:
        return
    if isinstance(condition, torch.Tensor):
        got = condition.shape[0] if condition.ndim else None
    elif hasattr(condition, "batch_size") and hasattr(condition, "keys"):  # a TensorDict, without importing it
        dims = tuple(condition.batch_size)
        got = dims[0] if dims else None
    else:
        hint = " Wrap a dict in TensorDict(d, batch_size=[B])." if isinstance(condition, dict) else ""
        raise ConditionError(
            f"a condition must be a Tensor, a TensorDict or None, got {type(condition).__name__}.{hint}"
        )
    if got is None:
        raise ConditionError(
            f"a condition needs a leading batch dimension (one entry per sample), got a 0-d {type(condition).__name__.lower()}; "
            "give it shaped (B, ...) with B the number of samples"
        )
    if batch_size is not None and got != batch_size:
        raise ConditionError(
            f"the condition's batch size is {got} but the latent's is {batch_size}; "
            "give one condition per sample (leading dimension equal to the latent's)"
        )


def batch_size_of(condition: Any) -> int | None:
    """The leading batch size of a Tensor or TensorDict condition (None for a scalar or no batch)."""
    if isinstance(condition, torch.Tensor):
        return condition.shape[0] if condition.ndim else None
    dims = tuple(getattr(condition, "batch_size", ()))
    return dims[0] if dims else None


def expand_null_condition(null: Any, condition: Any, batch: int) -> Any:
    """A null condition (for classifier-free guidance) checked against ``condition``, expanded to ``batch``.

    ``null`` is given for the whole batch or for one sample (batch size 1, broadcast); it must
    be of the condition's type (Tensor or TensorDict) with the same shapes after the batch
    dimension and the same dtypes. ``None`` stays ``None`` (the model is then called with ``condition=None``).

    >>> import torch
    >>> expand_null_condition(torch.zeros(1, 3), torch.ones(4, 3), 4).shape
    torch.Size([4, 3])
    >>> expand_null_condition(torch.zeros(1, 2), torch.ones(4, 3), 4)
    Traceback (most recent call last):
      ...
    diffusion_schemes.ConditionError: the null condition has shape (1, 2) but the condition (4, 3); ...
    >>> expand_null_condition(torch.zeros(1), torch.tensor([3, 1, 4, 1]), 4)     # float next to int64 labels
    Traceback (most recent call last):
      ...
    diffusion_schemes.ConditionError: the null condition has dtype torch.float32 but the condition torch.int64; ...
    """
    if null is None:
        return None
    got = batch_size_of(null)
    if got not in (1, batch):
        raise ConditionError(
            f"the null condition's batch size is {got}; give it for the whole batch ({batch}) or for one sample (1)"
        )
    if isinstance(null, torch.Tensor) != isinstance(condition, torch.Tensor):
        raise ConditionError(
            f"the null condition is a {type(null).__name__} but the condition a {type(condition).__name__}; "
            "give both as Tensors or both as TensorDicts"
        )
    if isinstance(null, torch.Tensor):
        if null.shape[1:] != condition.shape[1:]:
            raise ConditionError(
                f"the null condition has shape {tuple(null.shape)} but the condition {tuple(condition.shape)}; "
                "they must agree after the batch dimension"
            )
        _same_dtype("the null condition", null, condition)
        return null.expand(batch, *null.shape[1:]) if got == 1 else null
    mine = {k: tuple(v.shape[1:]) for k, v in null.items(include_nested=True, leaves_only=True)}
    theirs = {k: tuple(v.shape[1:]) for k, v in condition.items(include_nested=True, leaves_only=True)}
    if mine != theirs:
        raise ConditionError(
            f"the null condition's entries {mine} do not match the condition's {theirs} (shapes after the batch "
            "dimension)"
        )
    for key, value in null.items(include_nested=True, leaves_only=True):
        _same_dtype(f"the null condition's entry {key!r}", value, condition.get(key))
    return null.expand(batch) if got == 1 else null


def _same_dtype(what: str, null: torch.Tensor, condition: torch.Tensor) -> None:
    """A null condition of another dtype would be promoted or truncated where the two meet (int64 labels
    next to a float null label): refuse it."""
    if null.dtype != condition.dtype:
        raise ConditionError(
            f"{what} has dtype {null.dtype} but the condition {condition.dtype}; give it in the condition's "
            f"dtype, e.g. null_condition.to({condition.dtype}) (for class labels: an integer label such as the "
            "'no class' index)"
        )


class ConcatConditionWrapper(torch.nn.Module):
    """Adapt a backbone to conditions: an image condition is concatenated, a vector one passed on.

    Called as ``wrapper(x, t, condition)`` with ``condition`` a TensorDict (or None). The entry
    ``image_cond_key`` (shape ``(B, C_cond, *spatial)``) is concatenated to ``x`` along the
    channel dimension; the entry ``vector_cond_key`` is given to the backbone as its
    ``condition``. Inside a preconditioner ``x`` is already ``c_in``-scaled, and the condition
    is not. The backbone's input channels must be ``C_x + C_cond``.

    >>> import torch
    >>> from tensordict import TensorDict
    >>> import diffusion_schemes as ds
    >>> seen = {}
    >>> def backbone(x, t, condition=None):
    ...     seen["x"], seen["condition"] = x, condition
    ...     return x[:, :2]
    >>> wrapper = ds.ConcatConditionWrapper(backbone)
    >>> condition = TensorDict({"cond_concat": torch.ones(2, 1), "cond_vec": torch.zeros(2, 4)}, batch_size=[2])
    >>> wrapper(torch.zeros(2, 2), torch.rand(2), condition).shape
    torch.Size([2, 2])
    >>> seen["x"]                                    # the image condition joined as a third channel
    tensor([[0., 0., 1.],
            [0., 0., 1.]])
    >>> seen["condition"].shape                      # the vector condition passed on
    torch.Size([2, 4])
    """

    def __init__(self, model: torch.nn.Module, image_cond_key: str = "cond_concat", vector_cond_key: str = "cond_vec"):
        super().__init__()
        self.model = model
        self.image_cond_key = image_cond_key
        self.vector_cond_key = vector_cond_key

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: Any = None, **model_kwargs: Any) -> torch.Tensor:
        check_condition(condition, x.shape[0])
        vector = None
        if condition is not None:
            if isinstance(condition, torch.Tensor):
                raise ConditionError(
                    "ConcatConditionWrapper needs a TensorDict condition with the keys "
                    f"{self.image_cond_key!r} and/or {self.vector_cond_key!r}, got a plain Tensor"
                )
            keys = set(condition.keys())
            unknown = keys - {self.image_cond_key, self.vector_cond_key}
            if unknown:
                raise ConditionError(
                    f"unexpected condition keys {sorted(unknown)}; ConcatConditionWrapper reads "
                    f"{self.image_cond_key!r} (concatenated) and {self.vector_cond_key!r} (passed on)"
                )
            if self.image_cond_key in keys:
                image = condition[self.image_cond_key]
                x = torch.cat([x, image.to(x.dtype)], dim=1)
            if self.vector_cond_key in keys:
                vector = condition[self.vector_cond_key]
        return self.model(x, t, vector, **model_kwargs)
