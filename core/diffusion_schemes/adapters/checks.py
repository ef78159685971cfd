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

__all__ = ["call_model", "check_output", "explain_call_error"]

_ADAPTER = "diffusion_schemes.adapters.BackboneAdapter"


# read by check_output instead of ``torch.Tensor``: under torch.compile each global the traced code reads is a guard
# evaluated before every call of the graph, and ``torch`` read here and in another traced module (the backbone's)
# adds a check, in Python, that both are the same module
_TENSOR = torch.Tensor


def check_output(out: Any, x: torch.Tensor, who: str) -> torch.Tensor:
    """Return ``out`` when it is a floating-point tensor shaped like ``x`` on its device; raise a clear
    error otherwise. Its floating dtype may differ (a half-precision network, autocast): callers cast."""
    if not isinstance(out, _TENSOR):
        if hasattr(out, "sample") or isinstance(out, (tuple, list)):
            raise ModelSignatureError(
                f"the {who} returned a {type(out).__name__}, not a tensor; wrap the network in {_ADAPTER}(net) "
                f"(which returns its output's .sample, as diffusers' models need) or in "
                f"{_ADAPTER}(net, output=0) for a tuple"
            )
        raise ModelSignatureError(f"the {who} must return a tensor shaped like its input, got {type(out).__name__}")
    if not out.is_floating_point() or out.device != x.device:
        raise ModelOutputError(
            f"the {who} returned a {out.dtype} tensor on {out.device} for an input of shape {tuple(x.shape)}, "
            f"{x.dtype} on {x.device}; it must return floating-point values shaped like its input, on its device"
        )
    if out.shape != x.shape:
        raise ModelOutputError(
            f"the {who} returned shape {tuple(out.shape)} but the latent has shape {tuple(x.shape)}; it must "
            "predict one value per latent element (a learned-variance network with 2x the channels: keep the "
            "first half, e.g. with BackboneAdapter(net, output=lambda out: out[:, :C]))"
        )
    return out


def call_model(model: Any, who: str, x: torch.Tensor, t: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
    """``model(x, t, *args, **kwargs)``, checked; a call that does not fit the signature says how to adapt it.

    A ``TypeError`` raised by the call itself (the arguments do not bind to the model's parameters)
    becomes :class:`ModelSignatureError`; one raised from inside the model propagates unchanged.
    When the signature can be read the arguments are bound against it; when it cannot, or reads
    ``(*args, **kwargs)`` (every ``nn.Module``, whose ``__call__`` forwards to ``forward``), the
    failed call is the probe: it failed in binding when no frame of the model's own code ran.

    >>> import torch
    >>> call_model(torch.nn.Linear(2, 2), "backbone", torch.zeros(1, 2), torch.ones(1))
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.ModelSignatureError: the backbone cannot be called as model(x, t): ...
    """
    try:
        out = model(x, t, *args, **kwargs)
    except TypeError as exc:
        explain_call_error(model, who, exc, (x, t, *args), kwargs)
        raise
    return check_output(out, x, who)


def _signature(model: Any) -> inspect.Signature | None:
    """The parameters a call of ``model`` binds to: ``forward``'s for a module; None when unreadable."""
    target = model.forward if isinstance(model, torch.nn.Module) else model
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def _forwards_everything(signature: inspect.Signature) -> bool:
    kinds = {p.kind for p in signature.parameters.values()}
    return kinds == {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}


#: Frames of torch's module-call machinery (``Module._call_impl`` and its wrappers), not the model's code.
_CALL_MACHINERY = (torch.nn.modules.module.__file__,)


def _failed_in_binding(exc: TypeError) -> bool:
    """Whether ``exc`` was raised by the call of the model itself, before any of the model's code ran.

    Its traceback then holds :func:`call_model`'s frame and, for a module, only the frames of
    torch's module-call machinery (which call ``forward`` with the arguments as given).
    """
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return all(name in _CALL_MACHINERY for name in frames[1:])


def explain_call_error(model: Any, who: str, exc: TypeError, args: tuple, kwargs: dict) -> None:
    """Raise :class:`ModelSignatureError` when ``exc``, raised by ``model(*args, **kwargs)`` called directly in
    the caller's frame, means the model cannot take ``args``/``kwargs`` at all; return when it came from
    inside the model (the caller then re-raises it unchanged). :func:`call_model` is the call with this
    check around it.

    >>> import torch
    >>> def net(x, t):  # takes no condition
    ...     return x
    >>> args = (torch.zeros(1, 2), torch.ones(1), None)
    >>> try:
    ...     net(*args)
    ... except TypeError as exc:
    ...     explain_call_error(net, "backbone", exc, args, {})
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.ModelSignatureError: the backbone cannot be called as model(x, t, condition=...): ...
    """
    signature = _signature(model)
    if signature is not None and not _forwards_everything(signature):
        try:
            signature.bind(*args, **kwargs)
            return  # the arguments fit: the TypeError came from inside the model
        except TypeError as bind_error:
            reason = f"{bind_error} (its signature is {signature})"
    elif _failed_in_binding(exc):
        shown = "" if signature is None else f" (its signature reads {signature})"
        reason = f"{exc}{shown}"
    else:
        return
    with_condition = len(args) > 2 or "condition" in kwargs
    call = "model(x, t, condition=...)" if with_condition else "model(x, t)"
    raise ModelSignatureError(
        f"the {who} cannot be called as {call}: {reason}. The pipeline "
        "calls every network as model(x, t, condition=None, **kw); wrap it, e.g. "
        "lambda x, t, condition=None: net(x, t), or use "
        f"{_ADAPTER}(net, condition='class_labels') to pass the condition under another name"
    ) from exc
