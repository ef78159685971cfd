"""Checks on what a network is called with and what it returns, with errors that say what to wrap.

The pipeline calls networks as ``model(x, t, condition, **kw)`` (a backbone inside a
preconditioner gets ``c_in x`` and ``c_noise``). These helpers run on the call's result, or
only after the call failed, so a network that fits costs one ``isinstance`` and one shape
comparison.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from diffusion_schemes.errors import ModelOutputError, ModelSignatureError

__all__ = ["call_model", "check_output"]

_ADAPTER = "diffusion_schemes.adapters.BackboneAdapter"


def check_output(out: Any, x: torch.Tensor, who: str) -> torch.Tensor:
    """Return ``out`` when it is a tensor shaped like ``x``; raise a clear error otherwise."""
    if not isinstance(out, torch.Tensor):
        if hasattr(out, "sample") or isinstance(out, (tuple, list)):
            raise ModelSignatureError(
                f"the {who} returned a {type(out).__name__}, not a tensor; wrap the network in {_ADAPTER}(net) "
                f"(which returns its output's .sample, as diffusers' models need) or in "
                f"{_ADAPTER}(net, output=0) for a tuple"
            )
        raise ModelSignatureError(f"the {who} must return a tensor shaped like its input, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ModelOutputError(
            f"the {who} returned shape {tuple(out.shape)} but the latent has shape {tuple(x.shape)}; it must "
            "predict one value per latent element (a learned-variance network with 2x the channels: keep the "
            "first half, e.g. with BackboneAdapter(net, output=lambda out: out[:, :C]))"
        )
    return out


def call_model(model: Any, who: str, x: torch.Tensor, t: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
    """``model(x, t, *args, **kwargs)``, checked; a call that does not fit the signature says how to adapt it."""
    try:
        out = model(x, t, *args, **kwargs)
    except TypeError as exc:
        _explain_signature(model, who, exc, (x, t, *args), kwargs)
        raise
    return check_output(out, x, who)


def _explain_signature(model: Any, who: str, exc: TypeError, args: tuple, kwargs: dict) -> None:
    """Raise :class:`ModelSignatureError` when ``model`` cannot take ``args``/``kwargs`` at all."""
    try:
        signature = inspect.signature(model)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as bind_error:
        with_condition = len(args) > 2 or "condition" in kwargs
        call = "model(x, t, condition=...)" if with_condition else "model(x, t)"
        raise ModelSignatureError(
            f"the {who} cannot be called as {call}: {bind_error} (its signature is {signature}). The pipeline "
            "calls every network as model(x, t, condition=None, **kw); wrap it, e.g. "
            "lambda x, t, condition=None: net(x, t), or use "
            f"{_ADAPTER}(net, condition='class_labels') to pass the condition under another name"
        ) from exc
