"""``diffusion-schemes sample``: its arguments and what it does with them (plain, guided, or a guidance sweep).

Under ``torchrun`` the samples are shared among the processes in fixed blocks by sample index, each
sample seeded by ``(seed, index)`` (:func:`~diffusion_schemes_trainer.evaluation.generate`), so
the samples and the numbers measured on them are those of one process; rank 0 calibrates,
measures, prints and writes, the other ranks only sample. ``--guidance-scales`` runs on one process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

import diffusion_schemes as ds

from .. import plots
from ..calibration import GRID_NAME, calibrate, load_grid, save_grid
from ..config import MAX_SAMPLING_STEPS, num_classes, parse_overrides
from ..errors import TrainerError
from ..evaluation import evaluate, generate, rank_blocks, sampling_calls
from ..limits import check_fits, sampling_bytes
from ..metrics import class_accuracy
from ..report import fd_lines, progress
from ..runs import classifier_for, digits_judge, rebuild, run_dir_of, sweep_guidance
from ..storage import load_checkpoint, save_torch, write_json
from ..training import launched_world_size, setup
from .compare import guidance_table
from .options import parse_scales

#: Shares its work among the processes under torchrun.
DISTRIBUTED = True

__all__ = ["add_parser", "guidance_from_args", "run"]


def add_parser(cli: Any) -> argparse.ArgumentParser:
    """Add ``sample`` and its arguments to an argparse sub-parser collection."""
    p = cli.add_parser("sample", help="sample from a trained checkpoint with any solver and step count")
    p.add_argument("checkpoint", help="a run directory or its checkpoint.pt")
    p.add_argument("--solver", metavar="NAME",
                   help="solver by name (default: the run's; with --discretization calibrated, the grid's)")
    p.add_argument("--solver-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a field of the solver, e.g. S_churn=0")
    p.add_argument("--steps", type=int, metavar="N", help=f"solver steps (default: the run's; at most {MAX_SAMPLING_STEPS})")
    p.add_argument("--num-samples", type=int, metavar="N",
                   help="how many (default: the held-out set's size; at most what fits in memory)")
    p.add_argument("--seed", type=int, metavar="N", help="seed of the latents (default: the run's)")
    p.add_argument("--no-ema", action="store_true", help="use the trained weights, not their moving average")
    p.add_argument("--calibrate", type=int, metavar="N",
                   help="fit the grid of this solver and step count to the model on N fresh latents, store it in "
                   f"{GRID_NAME} and report the metric on the schedule's grid and on the calibrated one")
    p.add_argument("--discretization", metavar="NAME",
                   help=f"the grid: 'calibrated' (the one --calibrate stored in {GRID_NAME}) or a discretization "
                   "by name, e.g. karras (default: the schedule's own)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: the run directory)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
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
    return p


def guidance_from_args(args: argparse.Namespace, config: Any, classes: int) -> Any:
    """The ``ds.Guidance`` the ``sample`` flags ask for (None: plain sampling); the guide run is rebuilt by name."""
    asked = [f for f, v in (("--guidance", args.guidance), ("--guidance-interval", args.guidance_interval),
                            ("--guidance-rescale", args.guidance_rescale), ("--guide", args.guide)) if v is not None]
    if not asked:
        return None
    if not classes and args.guide is None:
        raise TrainerError(
            f"{', '.join(asked)} needs a class-conditional run (train it with --class-conditional) or a guide "
            "run for autoguidance (--guide RUN)"
        )
    interval = None
    if args.guidance_interval is not None:
        try:
            lo, hi = (float(v) for v in args.guidance_interval.split(","))
        except ValueError:
            raise TrainerError(
                f"--guidance-interval takes two noise levels LO,HI such as 0.3,5; got {args.guidance_interval!r}"
            ) from None
        interval = (lo, hi)
    guide = None
    if args.guide is not None:
        guide_config, guide, _ = rebuild(load_checkpoint(args.guide), ema=not args.no_ema)
        if (guide_config.data, guide_config.class_conditional) != (config.data, config.class_conditional):
            raise TrainerError(
                f"the guide run {args.guide!r} was trained on other data or classes ({guide_config.data.name}, "
                f"class_conditional={guide_config.class_conditional}) than this run ({config.data.name}, "
                f"class_conditional={config.class_conditional}); autoguidance needs the same data and conditioning"
            )
    null = torch.tensor([classes]) if classes and guide is None else None  # label K: "no class"
    scale = 2.0 if args.guidance is None else args.guidance
    return ds.Guidance(scale, null_condition=null, interval=interval, rescale=args.guidance_rescale or 0.0, guide=guide)


def run(args: argparse.Namespace) -> int:
    """Sample a run with the asked solver, steps and guidance; measure when the samples match the held-out set."""
    path = Path(args.checkpoint)
    if args.guidance_scales is not None:
        return _sweep(args, path)
    if args.calibrate is not None and args.discretization is not None:
        raise TrainerError("--calibrate fits a new grid and --discretization picks one; give one of them")
    for flag, value in (("--steps", args.steps), ("--num-samples", args.num_samples),
                        ("--calibrate", args.calibrate)):
        if value is not None and value < 1:
            raise TrainerError(f"{flag} must be >= 1, got {value}")
    if args.steps is not None and args.steps > MAX_SAMPLING_STEPS:
        raise TrainerError(f"--steps {args.steps} is more than the limit of {MAX_SAMPLING_STEPS} solver steps (the "
                           "solvers converge long before, and that many steps of a model take hours); use fewer")
    payload = load_checkpoint(path)
    config, precond, schedule = rebuild(payload, ema=not args.no_ema)  # sets the run's threads first
    run_dir = run_dir_of(path)
    out = Path(args.out) if args.out else run_dir
    stored, discretization = None, args.discretization
    if discretization == "calibrated":
        stored = load_grid([out, run_dir] if args.out else [run_dir], args.steps)
        discretization = stored["discretization"]
    elif discretization is not None:
        ds.parse_spec("discretization", discretization)  # a wrong name fails here, with the known ones
    solver: dict[str, Any] = {"name": args.solver} if args.solver else config.solver.model_dump(mode="json")
    if stored and not args.solver and isinstance(stored.get("solver"), dict):
        solver = dict(stored["solver"])  # the solver the grid was fitted for
    for keys, value in parse_overrides(args.solver_option):
        solver[".".join(keys)] = value
    solver_spec = ds.parse_spec("solver", solver)
    steps = (stored["num_steps"] if stored else config.sampling_steps) if args.steps is None else args.steps
    seed = config.seed if args.seed is None else args.seed
    data = config.data.build()
    classes = num_classes(config, data)
    if args.label is not None and not 0 <= args.label < max(classes, 1):
        raise TrainerError(
            f"--class {args.label} is not a class of this run" + (f"; its classes are 0..{classes - 1}" if classes
            else "; it was trained without classes (train with --class-conditional)")
        )
    guidance = guidance_from_args(args, config, classes)
    n = config.data.eval_size if args.num_samples is None else args.num_samples
    check_fits(f"sampling {n} samples", sampling_bytes(n, data.shape, config.model), "cpu",
               "use a smaller --num-samples")
    if not 0 <= seed < 2**63 - 1:
        raise TrainerError(f"--seed must be in [0, 2**63 - 1), got {seed}")
    ctx = setup("cpu")  # sampling runs on the CPU; under torchrun the processes share the samples over gloo
    try:
        ctx.on_main(lambda: _make_folder(out))
        return _sample(args, ctx, payload, config, precond, schedule, data, classes, guidance, solver_spec, steps,
                       seed, n, out, run_dir, discretization)
    finally:
        ctx.close()


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainerError(f"cannot create the output folder {str(out)!r}: {exc.strerror or exc}") from None


def _sample(args: argparse.Namespace, ctx: Any, payload: dict[str, Any], config: Any, precond: Any, schedule: Any,
            data: Any, classes: int, guidance: Any, solver_spec: Any, steps: int, seed: int, n: int, out: Path,
            run_dir: Path, discretization: Any) -> int:
    """Sample (this rank's share), and on rank 0 measure, print and write."""
    stem = f"samples-{solver_spec.name}-{steps}"
    if guidance is not None:
        stem += f"-w{guidance.scale:g}"
    if args.label is not None:
        stem += f"-class{args.label}"
    if args.calibrate is not None or args.discretization is not None:
        stem += f"-{args.discretization or 'calibrated'}"
    weights = "trained" if args.no_ema or payload.get("ema") is None else "ema"
    main = ctx.is_main
    if main:
        print(f"sampling {n} samples at step {payload['step']} ({weights} weights) with {solver_spec.name}, {steps} "
              "steps" + (f", guidance {guidance!r}" if guidance is not None else "")
              + (f", on {ctx.world_size} processes" if ctx.distributed else ""), file=sys.stderr)
    measured = n == config.data.eval_size and args.label is None
    before: list[str] = []
    record: dict[str, Any] = {}
    if args.calibrate is not None:
        record = ctx.on_main(lambda: _calibrate(args, out, precond, schedule, data, classes, guidance, solver_spec,
                                                steps, seed))
        discretization = record["discretization"]
    splits = data.splits(config.data.train_size, config.data.eval_size, config.seed) if classes or measured else None
    judges = lambda: (  # noqa: E731 - rank 0's: the class judge and the digits' fd_digits judge (None elsewhere)
        classifier_for(data, splits, config.seed, run_dir) if classes else None,
        digits_judge(data, config.data.train_size, config.data.eval_size, config.seed, run_dir) if measured else None)
    judge, judge_digits = ctx.on_main(judges, share=False) or (None, None)
    calls = sampling_calls(data, bool(classes)) if measured else 1
    grids = [None, discretization] if measured and args.calibrate is not None else [discretization]
    ranks = {"rank": ctx.rank, "world_size": ctx.world_size, "gather": ctx.gather}
    blocks = len(rank_blocks(n, ctx.rank, ctx.world_size))
    with progress(steps * calls * len(grids) * blocks, "sample", disable=args.quiet or not main) as bar:
        callback = lambda info: bar.update()  # noqa: E731 - one step of the solver done
        if measured:
            results = [evaluate(precond, schedule, splits, data, solver_spec, steps, config.projections, seed,
                                conditional=bool(classes), guidance=guidance, classifier=judge, judge=judge_digits,
                                callback=callback, discretization=grid, **ranks) for grid in grids]
            if not main:
                return 0
            result = results[-1]
            samples, nfe = result["samples"], result["nfe"]
            lines = _measured_lines(result)
            if len(results) == 2:
                key = "fd_digits" if "fd_digits" in result else "sw_model"
                before = [f"on the schedule's grid: {key} {results[0][key]:.4f}", *_measured_lines(results[0]),
                          f"on the calibrated grid: {key} {result[key]:.4f}"]
                record.update({"metric": key, "metric_before": results[0][key], "metric_after": result[key]})
                save_grid(out, record)
        else:
            labels = None
            if classes:
                labels = torch.full((n,), args.label) if args.label is not None else torch.arange(n) % classes
            samples, nfe = generate(precond, schedule, (n, *data.shape), solver_spec, steps, seed + 1,
                                    condition=labels, guidance=guidance, callback=callback,
                                    discretization=discretization, **ranks)
            if not main:
                return 0
            lines = [f"(no distance measured: it needs --num-samples {config.data.eval_size}, the held-out set's size, "
                     "and every class)"]
            if judge is not None:
                lines.append(f"class accuracy (judged by a classifier): {class_accuracy(judge, samples, labels):.3f}")
    save_torch(out / f"{stem}.pt", samples, what="the samples")
    title = f"{solver_spec.name}, {steps} steps" + (f", w = {guidance.scale:g}" if guidance is not None else "")
    picture = plots.samples_picture(str(out / f"{stem}.png"), [(title, samples)], data.kind)
    print(f"{n} samples, {nfe} model evaluations")
    print("\n".join(before + lines))
    print(f"written: {out / (stem + '.pt')}" + (f", {picture}" if picture else f" ({plots.MISSING})"))
    return 0


def _calibrate(args: argparse.Namespace, out: Path, precond: Any, schedule: Any, data: Any, classes: int,
               guidance: Any, solver_spec: Any, steps: int, seed: int) -> dict[str, Any]:
    """``--calibrate N``: fit the grid, store it in the output folder and say so; returns the record."""
    record = calibrate(precond, schedule, (args.calibrate, *data.shape), solver_spec, steps, seed,
                       torch.arange(args.calibrate) % classes if classes else None, guidance)
    save_grid(out, record)
    print(f"calibrated the {steps}-step grid on {args.calibrate} latents (seed {record['seed']}): error "
          f"{record['error_before']:.4g} -> {record['error_after']:.4g} against a fine-step solution, "
          f"{record['model_evaluations']} model evaluations, {record['seconds']:.3g} s; written: {out / GRID_NAME}")
    return record


def _measured_lines(result: dict[str, Any]) -> list[str]:
    """What :func:`~diffusion_schemes_trainer.evaluation.evaluate` measured, one line a number."""
    lines = [f"sliced Wasserstein distance to held-out data: {result['sw_model']:.4f} "
             f"(floor {result['sw_floor']:.4f}, {result['sw_model'] / result['sw_floor']:.2f}x)"]
    lines += fd_lines(result)
    if result["sw_exact"] is not None:
        lines.append(f"exact denoiser with the same solver and steps: {result['sw_exact']:.4f}")
    if result["class_accuracy"] is not None:
        lines.append("class accuracy (held-out set B's labels, judged by a classifier): "
                     f"{result['class_accuracy']:.3f}")
    return lines


def _sweep(args: argparse.Namespace, path: Path) -> int:
    """``sample RUN --guidance-scales LIST``: the run's own solver and steps at each weight, same seeds."""
    other = [f for f in ("label", "guidance", "guidance_interval", "guidance_rescale", "guide", "solver", "steps",
                         "num_samples", "seed", "calibrate", "discretization") if getattr(args, f) not in (None, [])]
    if other or args.solver_option:
        raise TrainerError("--guidance-scales samples with the run's own settings; drop the other sampling flags")
    if launched_world_size() > 1:
        raise TrainerError("--guidance-scales runs on one process; start it without torchrun")
    scales = parse_scales(args.guidance_scales)
    out = Path(args.out) if args.out else run_dir_of(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainerError(f"cannot create the output folder {str(out)!r}: {exc.strerror or exc}") from None
    rows = sweep_guidance(path, scales, ema=not args.no_ema, picture=str(out / "guidance.png"), quiet=args.quiet)
    write_json(out / "guidance.json", rows, what="the guidance sweep")
    print(guidance_table({str(path): rows}))
    print(f"written: {out / 'guidance.json'}" + (f", {out / 'guidance.png'}" if (out / "guidance.png").is_file() else ""))
    return 0
