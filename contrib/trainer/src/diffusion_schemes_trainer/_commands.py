"""The ``train``, ``sample`` and ``compare`` subcommands (arguments here; the work is imported when they run).

Exit codes: 0 success; 2 bad input (unknown scheme, invalid config, missing or corrupt
checkpoint, unwritable run directory), printed as ``error: ...`` by ``diffusion-schemes``;
130 interrupted.

>>> import argparse
>>> from diffusion_schemes_trainer._commands import add_commands
>>> parser = argparse.ArgumentParser(prog="diffusion-schemes")
>>> add_commands(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["train", "--scheme", "vp", "--steps", "100", "--set", "optimizer.lr=1e-3"])
>>> args.scheme, args.steps, args.set
('vp', 100, ['optimizer.lr=1e-3'])
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_commands"]

EXIT_INTERRUPTED = 130


def _add_config_flags(p: argparse.ArgumentParser) -> None:
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
    g.add_argument("--model", metavar="NAME", help="backbone: mlp, conv or unet (default: the data's usual one)")
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


def add_commands(cli: Any) -> None:
    """Add the trainer's subcommands to an argparse sub-parser collection."""
    p = cli.add_parser(
        "train", help="train a diffusion model with schemes picked by name (no argument: EDM on a 2-D mixture)",
        description="Train, sample and measure a diffusion model. With no argument: the EDM scheme on a 2-D "
        "Gaussian mixture with a small MLP on the CPU (about a minute). Under torchrun it uses "
        "DistributedDataParallel.",
    )
    _add_config_flags(p)
    p.add_argument("--run-dir", metavar="DIR", help="output folder (default: a new one under runs/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start again in a run directory that has a checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the config as TOML and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run("train"))

    p = cli.add_parser("sample", help="sample from a trained checkpoint with any solver and step count")
    p.add_argument("checkpoint", help="a run directory or its checkpoint.pt")
    p.add_argument("--solver", metavar="NAME", help="solver by name (default: the run's)")
    p.add_argument("--solver-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a field of the solver, e.g. S_churn=0")
    p.add_argument("--steps", type=int, metavar="N", help="solver steps (default: the run's)")
    p.add_argument("--num-samples", type=int, metavar="N", help="how many (default: the held-out set's size)")
    p.add_argument("--seed", type=int, metavar="N", help="seed of the latents (default: the run's)")
    p.add_argument("--no-ema", action="store_true", help="use the trained weights, not their moving average")
    p.add_argument("--out", metavar="DIR", help="output folder (default: the run directory)")
    g = p.add_argument_group("class-conditional runs (trained with --class-conditional)")
    g.add_argument("--class", dest="label", type=int, metavar="K", help="sample only class K (default: every class)")
    g.add_argument("--guidance", type=float, metavar="W",
                   help="guidance weight w: D = D_null + w (D_cond - D_null); 1 is plain conditional sampling "
                   "(default 2 when another guidance flag is given)")
    g.add_argument("--guidance-interval", metavar="LO,HI",
                   help="guide only at noise levels in [LO, HI] (e.g. 0.3,5); elsewhere w = 1")
    g.add_argument("--guidance-rescale", type=float, metavar="PHI", help="rescale the guided estimate (0 to 1)")
    g.add_argument("--guide", metavar="RUN",
                   help="autoguidance: a weaker run of the same data and classes guides in place of the null class")
    g.add_argument("--guidance-scales", metavar="LIST",
                   help="sample held-out set B's classes at each of these weights (e.g. 0,1,2,4) from the same "
                   "seeds: a table of class accuracy and distance, and guidance.png")
    p.set_defaults(func=_run("sample"))

    p = cli.add_parser("ema", help="post-hoc EMA: reconstruct EMAs of other lengths from a run's snapshots and measure each",
                       description="Reconstruct the power-function EMA of each width sigma_rel from the snapshots a "
                       "training run kept (EDM2's post-hoc EMA) and measure each, so the EMA length is picked after "
                       "training. Writes ema.json in the run directory.")
    p.add_argument("run", help="a run directory (with its checkpoint.pt and ema/ snapshots)")
    p.add_argument("--sigma-rel", default="0.05,0.10,0.15", metavar="LIST",
                   help="comma-separated EMA widths relative to the run's length (default 0.05,0.10,0.15)")
    p.add_argument("--sampling-steps", type=int, metavar="N", help="solver steps (default: the run's)")
    p.set_defaults(func=_run("ema"))

    p = cli.add_parser("compare", help="train several schemes under the same budget and seed; table and plot")
    p.add_argument("--schemes", default="edm,vp,ve,iddpm", metavar="LIST",
                   help="comma-separated scheme names (preconditioner and schedule of that name) or "
                   "PRECONDITIONER:SCHEDULE pairs (default: edm,vp,ve,iddpm)")
    _add_config_flags(p)
    p.add_argument("--evals", type=int, default=5, metavar="K", help="measurements per run (default 5)")
    p.add_argument("--guidance-scales", metavar="LIST",
                   help="class-conditional runs: after training, sample each at these guidance weights "
                   "(e.g. 0,1,2,4) and tabulate class accuracy and distance")
    p.add_argument("--run-dir", metavar="DIR", help="output folder (default: a new one under runs/)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run("compare"))


def _run(command: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        from . import _handlers

        try:
            return getattr(_handlers, command)(args)
        except KeyboardInterrupt:
            import sys

            print("\ninterrupted; the last checkpoint is intact (resume with `diffusion-schemes train --resume "
                  "RUN_DIR`)", file=sys.stderr)
            return EXIT_INTERRUPTED

    handler.__name__ = f"cmd_{command}"
    return handler
