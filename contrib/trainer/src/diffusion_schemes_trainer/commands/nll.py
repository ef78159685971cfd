"""``diffusion-schemes nll``: the held-out negative log-likelihood of a run, in bits per dimension, beside its floor.

Under ``torchrun`` the held-out points are shared among the processes in fixed chunks (each with
its own seeded generator), so the number is the same on any number of processes; rank 0 prints
and writes ``nll.json``.

>>> import argparse
>>> from diffusion_schemes_trainer.commands import nll
>>> parser = argparse.ArgumentParser(prog="diffusion-schemes")
>>> _ = nll.add_parser(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["nll", "runs/x", "--probes", "4", "--num-samples", "256"])
>>> args.probes, args.exact, args.num_samples
(4, False, 256)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from ..config import MAX_SAMPLING_STEPS, num_classes
from ..errors import TrainerError
from ..likelihood import held_out_nll, nll_calls
from ..report import nll_lines, progress
from ..runs import rebuild, run_dir_of
from ..storage import load_checkpoint, write_json
from ..training import setup

#: Shares its work among the processes under torchrun.
DISTRIBUTED = True

__all__ = ["add_parser", "run"]

#: Where ``nll`` writes its result in the run directory.
NLL_NAME = "nll.json"


def add_parser(cli: Any) -> argparse.ArgumentParser:
    """Add ``nll`` and its arguments to an argparse sub-parser collection."""
    p = cli.add_parser(
        "nll", help="negative log-likelihood of held-out data under a run (bits/dim), beside the data's own",
        description="Integrate the probability-flow ODE of a trained run on held-out points (fixed RK4 steps) and "
        "print the negative log-likelihood in bits per dimension beside the data's own density where it is known "
        "(2-D sets): the difference estimates the KL divergence. Digits are dequantised with their grid. Runs on "
        "several processes under torchrun. Writes nll.json in the run directory.",
    )
    p.add_argument("run", help="a run directory or its checkpoint.pt")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--exact", action="store_true", help="the exact Jacobian trace (the default up to 16 dimensions)")
    g.add_argument("--probes", type=int, metavar="K",
                   help="Hutchinson's estimate of the trace with K Rademacher probes (the default above 16 dimensions: 1)")
    p.add_argument("--num-samples", type=int, metavar="N",
                   help="held-out points (default: the run's nll_samples; at most its eval_size)")
    p.add_argument("--steps", type=int, metavar="N", help="fixed RK4 steps of the ODE (default: the run's nll_steps)")
    p.add_argument("--no-ema", action="store_true", help="use the trained weights, not their moving average")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Measure, print and write ``nll.json`` (rank 0)."""
    if args.probes is not None and args.probes < 1:
        raise TrainerError(f"--probes must be >= 1, got {args.probes}")
    if args.steps is not None and not 1 <= args.steps <= MAX_SAMPLING_STEPS:
        raise TrainerError(f"--steps must be in [1, {MAX_SAMPLING_STEPS}], got {args.steps}")
    payload = load_checkpoint(args.run)
    config, precond, schedule = rebuild(payload, ema=not args.no_ema)  # sets the run's threads first
    data = config.data.build()
    n = args.num_samples if args.num_samples is not None else (config.nll_samples or config.data.eval_size)
    if not 1 <= n <= config.data.eval_size:
        raise TrainerError(f"--num-samples must be in [1, {config.data.eval_size}] (the run's held-out set), got {n}")
    steps = config.nll_steps if args.steps is None else args.steps
    divergence = "exact" if args.exact else "hutchinson" if args.probes is not None else None
    points = data.splits(config.data.train_size, config.data.eval_size, config.seed).eval_a[:n]
    classes = num_classes(config, data)
    null = torch.full((n,), classes) if classes else None  # the unconditional density, the one the floor describes
    ctx = setup(config.device)
    try:
        precond.to(ctx.device)
        with progress(nll_calls(n, steps, ctx.rank, ctx.world_size), "likelihood", unit="call",
                      disable=args.quiet or not ctx.is_main) as bar:
            result = held_out_nll(precond, schedule, data, points, divergence=divergence, num_probes=args.probes or 1,
                                  num_steps=steps, seed=config.seed, device=ctx.device, condition=null,
                                  rank=ctx.rank, world_size=ctx.world_size, gather=ctx.gather,
                                  callback=lambda info: bar.update())
    finally:
        ctx.close()
    if not result:  # a rank other than 0
        return 0
    weights = "trained" if args.no_ema or payload.get("ema") is None else "ema"
    result.update(step=payload["step"], weights=weights, world_size=ctx.world_size)
    print(f"step {payload['step']}, {weights} weights, {ctx.world_size} process(es)", file=sys.stderr)
    print("\n".join(nll_lines(result)))
    path = run_dir_of(Path(args.run)) / NLL_NAME
    write_json(path, result, what="the likelihood")
    print(f"written: {path}")
    return 0
