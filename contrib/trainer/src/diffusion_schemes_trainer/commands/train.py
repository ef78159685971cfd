"""``diffusion-schemes train``: its arguments and what it does with them.

>>> import argparse
>>> from diffusion_schemes_trainer.commands import train
>>> parser = argparse.ArgumentParser(prog="diffusion-schemes")
>>> _ = train.add_parser(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["train", "--scheme", "vp", "--steps", "100", "--set", "optimizer.lr=1e-3"])
>>> args.scheme, args.steps, args.set
('vp', 100, ['optimizer.lr=1e-3'])
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..config import default_text, dumps, load_config
from ..errors import TrainerError
from ..report import summary
from ..storage import load_checkpoint
from ..training import train
from .options import add_config_flags, config_changes

#: Shares its work among the processes under torchrun.
DISTRIBUTED = True

__all__ = ["SCHEME_FIELDS", "add_parser", "run"]

#: What makes a run's scheme: changing one on resume would continue a model trained for another.
SCHEME_FIELDS = ("preconditioner", "noise_schedule", "weighting")


def add_parser(cli: Any) -> argparse.ArgumentParser:
    """Add ``train`` and its arguments to an argparse sub-parser collection."""
    p = cli.add_parser(
        "train", help="train a diffusion model with schemes picked by name (no argument: EDM on a 2-D mixture)",
        description="Train, sample and measure a diffusion model. With no argument: the EDM scheme on a 2-D "
        "Gaussian mixture with a small MLP on the CPU (about two minutes on 2 cores). Under torchrun it uses "
        "DistributedDataParallel.",
    )
    add_config_flags(p)
    p.add_argument("--run-dir", metavar="DIR", help="output folder (default: a new one under runs/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in a run directory that has a checkpoint (removes what the previous run wrote)")
    p.add_argument("--print-config", action="store_true", help="print the config as TOML and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Train (or continue) a run, then print its summary."""
    changes = config_changes(args)
    payload = None
    if args.resume:
        if args.config or args.run_dir:
            raise TrainerError("--resume continues a run with its own config and folder; drop --config and --run-dir")
        payload = load_checkpoint(args.resume)
        folder = Path(args.resume)
        changes["run_dir"] = str(folder if folder.is_dir() else folder.parent)
        config = load_config(base=payload["config"], changes=changes, overrides=args.set)
        _check_same_scheme(payload["config"], config, changes["run_dir"])
    else:
        if args.run_dir:
            changes["run_dir"] = args.run_dir
        config = load_config(args.config, overrides=args.set, changes=changes)
    if args.print_config:
        if not (args.config or changes or args.set or args.resume):
            sys.stdout.write(default_text())
        else:
            sys.stdout.write(dumps(config.model_dump(mode="json")))
        return 0
    metrics = train(config, checkpoint=payload, overwrite=args.overwrite, quiet=args.quiet)
    if metrics:
        print(summary(metrics), flush=True)
    return 0


def _check_same_scheme(before: dict[str, Any], config: Any, run_dir: str) -> None:
    """Refuse a ``--resume`` that changes the preconditioner, noise schedule or weighting of a run."""
    after = config.model_dump(mode="json")
    changed = [k for k in SCHEME_FIELDS if before.get(k) != after[k]]
    if changed:
        name = lambda v: v.get("name") if isinstance(v, dict) else v  # noqa: E731
        what = "; ".join(
            f"{k}: {name(before.get(k))!r} -> {name(after[k])!r}" if name(before.get(k)) != name(after[k])
            else f"{k}: its settings" for k in changed
        )
        raise TrainerError(
            f"--resume would change the scheme of the run in {run_dir!r} ({what}). A run keeps its scheme; "
            "start a new run (without --resume) to train another one."
        )
