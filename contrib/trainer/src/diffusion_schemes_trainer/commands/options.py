"""What several commands share: the config flags (``train`` and ``compare``) and the parsing of list flags.

>>> import argparse
>>> from diffusion_schemes_trainer.commands.options import config_changes
>>> config_changes(argparse.Namespace(scheme="vp", data="digits", model=None, steps=50, weighting="1.0"))
{'preconditioner': 'vp', 'noise_schedule': 'vp', 'weighting': 1.0, 'data': 'digits', 'model': 'unet', 'steps': 50}
"""

from __future__ import annotations

import argparse
from typing import Any

from ..config import DATA_CLASSES, parse_value
from ..errors import TrainerError

__all__ = ["add_config_flags", "config_changes", "parse_scales", "parse_widths"]

_PLAIN = ("uncertainty", "solver", "sampling_steps", "steps", "batch_size", "seed", "device", "eval_every",
          "class_conditional")


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """The flags that set config fields (``train`` and ``compare``)."""
    g = p.add_argument_group("config (flags override the config file; --set overrides everything)")
    g.add_argument("-c", "--config", metavar="FILE", help="TOML config (default: the embedded one, see --print-config)")
    g.add_argument("--scheme", metavar="NAME", help="preconditioner and noise schedule of this name (e.g. vp)")
    g.add_argument("--preconditioner", metavar="NAME", help="preconditioner by name (diffusion-schemes list)")
    g.add_argument("--schedule", dest="noise_schedule", metavar="NAME", help="noise schedule by name")
    g.add_argument("--weighting", metavar="NAME", help="loss weighting: 'default' (the schedule's), a number or a name")
    g.add_argument("--uncertainty", action="store_true", default=None,
                   help="learn the loss weight per noise level, u(sigma) (EDM2's uncertainty weighting)")
    g.add_argument("--ema-profiles", metavar="LIST",
                   help="widths sigma_rel of the two post-hoc EMAs (EDM2), e.g. 0.05,0.10 (the default); 'none' for none")
    g.add_argument("--solver", metavar="NAME", help="solver used to sample after training")
    g.add_argument("--sampling-steps", type=int, metavar="N", help="solver steps")
    g.add_argument("--data", metavar="NAME", help="gaussian_mixture, two_moons, checkerboard or digits")
    g.add_argument("--model", metavar="NAME", help="backbone: mlp, conv, unet, unet2d (a diffusers UNet2DModel) or songunet (PhysicsNeMo's) (default: the data's usual one)")
    g.add_argument("--steps", type=int, metavar="N", help="optimiser steps")
    g.add_argument("--batch-size", type=int, metavar="N", help="global batch size")
    g.add_argument("--seed", type=int, metavar="N", help="seed of data, weights, noise and sampling")
    g.add_argument("--device", metavar="DEV", help="cpu, cuda, cuda:N or auto")
    g.add_argument("--eval-every", type=int, metavar="N", help="measure the model every N steps")
    g.add_argument("--class-conditional", action="store_true", default=None,
                   help="condition on the class (digits; gaussian_mixture: the component), with condition dropout "
                   "so that sampling can use classifier-free guidance")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any field, dotted, value in TOML syntax: optimizer.lr=1e-3, data.name=two_moons")


def config_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields set by command-line flags (those given), in the order they apply."""
    get = lambda name: getattr(args, name, None)  # noqa: E731
    changes: dict[str, Any] = {}
    if get("scheme"):
        changes["preconditioner"] = changes["noise_schedule"] = args.scheme
    for key in ("preconditioner", "noise_schedule"):
        if get(key):
            changes[key] = get(key)
    if get("weighting") is not None:
        changes["weighting"] = parse_value(args.weighting)
    if get("ema_profiles") is not None:
        changes["ema_profiles"] = parse_widths(args.ema_profiles, "--ema-profiles")
    if get("data"):
        changes["data"] = args.data
        if not get("model") and args.data in DATA_CLASSES:
            changes["model"] = DATA_CLASSES[args.data].default_model
    if get("model"):
        changes["model"] = args.model
    for key in _PLAIN:
        if get(key) is not None:
            changes[key] = get(key)
    return changes


def parse_widths(text: str, flag: str) -> list[float]:
    """Comma-separated EMA widths (``none``: an empty list).

    >>> parse_widths("0.05, 0.1", "--sigma-rel"), parse_widths("none", "--ema-profiles")
    ([0.05, 0.1], [])
    """
    if text.strip().lower() == "none":
        return []
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise TrainerError(f"{flag} takes comma-separated numbers such as 0.05,0.10,0.15; got {text!r}") from None


def parse_scales(text: str) -> list[float]:
    """Guidance weights from a comma-separated list.

    >>> parse_scales("0, 1,2.5")
    [0.0, 1.0, 2.5]
    """
    try:
        scales = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise TrainerError(f"--guidance-scales takes numbers such as 0,1,2,4; got {text!r}") from None
    if not scales:
        raise TrainerError("--guidance-scales is empty; give weights such as 0,1,2,4")
    return scales
