"""``diffusion-schemes ema``: reconstruct EMAs of other lengths from a run's snapshots (EDM2's post-hoc EMA)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ..config import MAX_SAMPLING_STEPS
from ..errors import TrainerError
from ..evaluation import evaluate, sampling_calls
from ..posthoc_ema import reconstruct
from ..report import progress
from ..runs import digits_judge, rebuild, run_dir_of
from ..storage import load_checkpoint, load_snapshots, write_json
from .options import parse_widths

__all__ = ["add_parser", "run"]


def add_parser(cli: Any) -> argparse.ArgumentParser:
    """Add ``ema`` and its arguments to an argparse sub-parser collection."""
    p = cli.add_parser("ema", help="post-hoc EMA: reconstruct EMAs of other lengths from a run's snapshots and measure each",
                       description="Reconstruct the power-function EMA of each width sigma_rel from the snapshots a "
                       "training run kept (EDM2's post-hoc EMA) and measure each, so the EMA length is picked after "
                       "training. Writes ema.json in the run directory.")
    p.add_argument("run", help="a run directory (with its checkpoint.pt and ema/ snapshots)")
    p.add_argument("--sigma-rel", default="0.05,0.10,0.15", metavar="LIST",
                   help="comma-separated EMA widths relative to the run's length (default 0.05,0.10,0.15)")
    p.add_argument("--sampling-steps", type=int, metavar="N", help="solver steps (default: the run's)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Reconstruct, measure and rank each width; writes ``ema.json``."""
    widths = parse_widths(args.sigma_rel, "--sigma-rel")
    if not widths:
        raise TrainerError("--sigma-rel is empty; give widths such as 0.05,0.10,0.15")
    if args.sampling_steps is not None and not 1 <= args.sampling_steps <= MAX_SAMPLING_STEPS:
        raise TrainerError(f"--sampling-steps must be in [1, {MAX_SAMPLING_STEPS}], got {args.sampling_steps}")
    payload = load_checkpoint(args.run)
    run_dir = run_dir_of(Path(args.run))
    config, precond, schedule = rebuild(payload, ema=False)  # sets the run's threads first
    snapshots = load_snapshots(run_dir)  # each verified: checksum, structure, finite
    data = config.data.build()
    splits = data.splits(config.data.train_size, config.data.eval_size, config.seed)
    judge = digits_judge(data, config.data.train_size, config.data.eval_size, config.seed, run_dir)
    steps = args.sampling_steps or config.sampling_steps
    key = "fd_digits" if judge is not None else "sw_model"
    rows = []
    with progress(len(widths) * steps * sampling_calls(data), "ema", disable=getattr(args, "quiet", False)) as bar:
        for width in widths:
            state, report = reconstruct(snapshots, width)
            try:
                precond.model.load_state_dict(state)
            except RuntimeError as exc:
                raise TrainerError(f"the snapshots in {str(run_dir / 'ema')!r} do not fit the run's model "
                                   f"({str(exc).splitlines()[0]}); they belong to another run") from None
            result = evaluate(precond, schedule, splits, data, config.solver, steps, config.projections, config.seed,
                              judge=judge, callback=lambda info: bar.update())
            row = {**report, "sw_model": result["sw_model"], "sw_floor": result["sw_floor"]}
            if judge is not None:
                row.update(fd_digits=result["fd_digits"], fd_digits_floor=result["fd_digits_floor"],
                           class_confidence=result["class_confidence"])
            rows.append(row)
    ranked = [r for r in rows if math.isfinite(r[key])]
    if not ranked:
        raise TrainerError(f"no width gave a finite {key}; the snapshots cannot be ranked")
    best = min(ranked, key=lambda r: r[key])
    head = f"{'sigma_rel':>9}  {'gamma':>7}  {'SW':>8}  {'x floor':>7}" + (f"  {'fd_digits':>9}  {'x floor':>7}" if judge else "")
    print(f"post-hoc EMA at step {rows[0]['step']} from {len(snapshots)} snapshots "
          f"({config.solver.name}, {steps} steps, {config.data.eval_size} samples):")
    print(head)
    for r in rows:
        line = f"{r['sigma_rel']:>9.3f}  {r['gamma']:>7.2f}  {r['sw_model']:>8.4f}  {r['sw_model'] / r['sw_floor']:>7.2f}"
        if judge is not None:
            line += f"  {r['fd_digits']:>9.2f}  {r['fd_digits'] / r['fd_digits_floor']:>7.2f}"
        print(line)
    print(f"best by {key}: sigma_rel {best['sigma_rel']}")
    write_json(run_dir / "ema.json", {"step": rows[0]["step"], "snapshots": len(snapshots), "best": best["sigma_rel"],
                                      "by": key, "rows": ranked}, what="the post-hoc EMA table")
    print(f"written: {run_dir / 'ema.json'}")
    return 0
