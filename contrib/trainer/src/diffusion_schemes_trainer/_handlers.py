"""What ``train`` and ``sample`` do with their parsed arguments (``compare`` is in ``_compare``).

>>> import argparse
>>> from diffusion_schemes_trainer._handlers import config_changes
>>> config_changes(argparse.Namespace(scheme="vp", data="digits", model=None, steps=50, weighting="1.0"))
{'preconditioner': 'vp', 'noise_schedule': 'vp', 'weighting': 1.0, 'data': 'digits', 'model': 'unet', 'steps': 50}
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._errors import TrainerError

__all__ = ["config_changes", "ema", "sample", "train"]

_PLAIN = ("uncertainty", "solver", "sampling_steps", "steps", "batch_size", "seed", "device", "eval_every",
          "class_conditional")


def config_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields set by command-line flags (those given), in the order they apply."""
    from ._config import DATA_CLASSES, _parse_value

    get = lambda name: getattr(args, name, None)  # noqa: E731
    changes: dict[str, Any] = {}
    if get("scheme"):
        changes["preconditioner"] = changes["noise_schedule"] = args.scheme
    for key in ("preconditioner", "noise_schedule"):
        if get(key):
            changes[key] = get(key)
    if get("weighting") is not None:
        changes["weighting"] = _parse_value(args.weighting)
    if get("ema_profiles") is not None:
        changes["ema_profiles"] = _widths(args.ema_profiles, "--ema-profiles")
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


def _widths(text: str, flag: str) -> list[float]:
    """Comma-separated EMA widths (``none``: an empty list)."""
    if text.strip().lower() == "none":
        return []
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise TrainerError(f"{flag} takes comma-separated numbers such as 0.05,0.10,0.15; got {text!r}") from None


def train(args: argparse.Namespace) -> int:
    """``diffusion-schemes train``."""
    from ._checkpoint import load_checkpoint
    from ._config import default_text, load_config
    from ._toml import dumps

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
    from ._summary import summary
    from ._train import train as run

    metrics = run(config, checkpoint=payload, overwrite=args.overwrite, quiet=args.quiet)
    if metrics:
        print(summary(metrics), flush=True)
    return 0


#: What makes a run's scheme: changing one on resume would continue a model trained for another.
SCHEME_FIELDS = ("preconditioner", "noise_schedule", "weighting")


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


def guidance_from_args(args: argparse.Namespace, config: Any, classes: int) -> Any:
    """The ``ds.Guidance`` the ``sample`` flags ask for (None: plain sampling); the guide run is rebuilt by name."""
    import torch

    import diffusion_schemes as ds

    from ._checkpoint import load_checkpoint, rebuild

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


def sample(args: argparse.Namespace) -> int:
    """``diffusion-schemes sample``."""
    import torch

    import diffusion_schemes as ds

    from . import _plots
    from ._checkpoint import load_checkpoint, rebuild, write_atomically
    from ._classifier import class_accuracy, classifier_for
    from ._config import parse_overrides
    from ._evaluate import evaluate, generate
    from ._progress import Progress
    from ._summary import fd_lines
    from ._train import num_classes

    path = Path(args.checkpoint)
    if args.guidance_scales is not None:
        return _sweep(args, path)
    payload = load_checkpoint(path)
    config, precond, schedule = rebuild(payload, ema=not args.no_ema)
    if config.threads:
        torch.set_num_threads(config.threads)
    solver: dict[str, Any] = {"name": args.solver} if args.solver else config.solver.model_dump(mode="json")
    for keys, value in parse_overrides(args.solver_option):
        solver[".".join(keys)] = value
    solver_spec = ds.parse_spec("solver", solver)
    steps = config.sampling_steps if args.steps is None else args.steps
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
    for flag, value in (("--steps", steps), ("--num-samples", n)):
        if value < 1:
            raise TrainerError(f"{flag} must be >= 1, got {value}")
    if not 0 <= seed < 2**63 - 1:
        raise TrainerError(f"--seed must be in [0, 2**63 - 1), got {seed}")
    out = Path(args.out) if args.out else (path if path.is_dir() else path.parent)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainerError(f"cannot create the output folder {str(out)!r}: {exc.strerror or exc}") from None
    stem = f"samples-{solver_spec.name}-{steps}"
    if guidance is not None:
        stem += f"-w{guidance.scale:g}"
    if args.label is not None:
        stem += f"-class{args.label}"
    weights = "trained" if args.no_ema or payload.get("ema") is None else "ema"
    print(f"sampling {n} samples at step {payload['step']} ({weights} weights) with {solver_spec.name}, {steps} steps"
          + (f", guidance {guidance!r}" if guidance is not None else ""), file=sys.stderr)
    splits = data.splits(config.data.train_size, config.data.eval_size, config.seed) if classes or n == config.data.eval_size else None
    judge = classifier_for(data, splits, config.seed, path if path.is_dir() else path.parent) if classes else None
    bar = Progress(steps, stream=sys.stderr, label="sample")
    callback = lambda info: bar.update(info["i"] + 1)  # noqa: E731 - one step of the solver done
    if n == config.data.eval_size and args.label is None:
        result = evaluate(precond, schedule, splits, data, solver_spec, steps, config.projections, seed,
                          conditional=bool(classes), guidance=guidance, classifier=judge,
                          judge=_judge(config, data, path if path.is_dir() else path.parent),
                          callback=callback)
        samples, nfe = result["samples"], result["nfe"]
        lines = [f"sliced Wasserstein distance to held-out data: {result['sw_model']:.4f} "
                 f"(floor {result['sw_floor']:.4f}, {result['sw_model'] / result['sw_floor']:.2f}x)"]
        lines += fd_lines(result)
        if result["sw_exact"] is not None:
            lines.append(f"exact denoiser with the same solver and steps: {result['sw_exact']:.4f}")
        if result["class_accuracy"] is not None:
            lines.append(f"class accuracy (held-out set B's labels, judged by a classifier): {result['class_accuracy']:.3f}")
    else:
        labels = None
        if classes:
            labels = torch.full((n,), args.label) if args.label is not None else torch.arange(n) % classes
        samples, nfe = generate(precond, schedule, (n, *data.shape), solver_spec, steps, seed + 1,
                                condition=labels, guidance=guidance, callback=callback)
        lines = [f"(no distance measured: it needs --num-samples {config.data.eval_size}, the held-out set's size, "
                 "and every class)"]
        if judge is not None:
            lines.append(f"class accuracy (judged by a classifier): {class_accuracy(judge, samples, labels):.3f}")
    bar.close()
    write_atomically(out / f"{stem}.pt", samples, what="the samples")
    title = f"{solver_spec.name}, {steps} steps" + (f", w = {guidance.scale:g}" if guidance is not None else "")
    picture = _plots.samples_picture(str(out / f"{stem}.png"), [(title, samples)], data.kind)
    print(f"{n} samples, {nfe} model evaluations")
    print("\n".join(lines))
    print(f"written: {out / (stem + '.pt')}" + (f", {picture}" if picture else f" ({_plots.MISSING})"))
    return 0


def _judge(config: Any, data: Any, run_dir: Path) -> Any:
    """The digits judge of a run (its cached classifier), or None for other data."""
    from ._fd import digits_judge, has_judge

    if not has_judge(data):
        return None

    return digits_judge(data, config.data.train_size, config.data.eval_size, config.seed, run_dir)


def ema(args: argparse.Namespace) -> int:
    """``diffusion-schemes ema``."""
    import json
    import os

    import torch

    from ._checkpoint import load_checkpoint, rebuild
    from ._evaluate import evaluate
    from ._posthoc_ema import load_snapshots, reconstruct

    widths = _widths(args.sigma_rel, "--sigma-rel")
    if not widths:
        raise TrainerError("--sigma-rel is empty; give widths such as 0.05,0.10,0.15")
    run_dir = Path(args.run)
    payload = load_checkpoint(run_dir)
    run_dir = run_dir if run_dir.is_dir() else run_dir.parent
    snapshots = load_snapshots(run_dir)
    config, precond, schedule = rebuild(payload, ema=False)
    if config.threads:
        torch.set_num_threads(config.threads)
    data = config.data.build()
    splits = data.splits(config.data.train_size, config.data.eval_size, config.seed)
    judge = _judge(config, data, run_dir)
    steps = args.sampling_steps or config.sampling_steps
    rows = []
    for width in widths:
        state, report = reconstruct(snapshots, width)
        precond.model.load_state_dict(state)
        result = evaluate(precond, schedule, splits, data, config.solver, steps, config.projections, config.seed,
                          judge=judge)
        row = {**report, "sw_model": result["sw_model"], "sw_floor": result["sw_floor"]}
        if judge is not None:
            row.update(fd_digits=result["fd_digits"], fd_digits_floor=result["fd_digits_floor"],
                       class_confidence=result["class_confidence"])
        rows.append(row)
    key = "fd_digits" if judge is not None else "sw_model"
    best = min(rows, key=lambda r: r[key])
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
    tmp = run_dir / ".ema.json.tmp"
    tmp.write_text(json.dumps({"step": rows[0]["step"], "snapshots": len(snapshots), "best": best["sigma_rel"],
                               "by": key, "rows": rows}, indent=2) + "\n")
    os.replace(tmp, run_dir / "ema.json")
    print(f"written: {run_dir / 'ema.json'}")
    return 0


def _sweep(args: argparse.Namespace, path: Path) -> int:
    """``sample RUN --guidance-scales LIST``: the run's own solver and steps at each weight, same seeds."""
    import json

    from ._compare import guidance_table, parse_scales, sweep_guidance

    other = [f for f in ("label", "guidance", "guidance_interval", "guidance_rescale", "guide", "solver", "steps",
                         "num_samples", "seed") if getattr(args, f) not in (None, [])]
    if other or args.solver_option:
        raise TrainerError("--guidance-scales samples with the run's own settings; drop the other sampling flags")
    out = Path(args.out) if args.out else (path if path.is_dir() else path.parent)
    out.mkdir(parents=True, exist_ok=True)
    rows = sweep_guidance(path, parse_scales(args.guidance_scales), ema=not args.no_ema, picture=str(out / "guidance.png"))
    (out / "guidance.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(guidance_table({str(path): rows}))
    print(f"written: {out / 'guidance.json'}" + (f", {out / 'guidance.png'}" if (out / "guidance.png").is_file() else ""))
    return 0


def compare(args: argparse.Namespace) -> int:
    """``diffusion-schemes compare``."""
    from ._compare import compare as run

    return run(args)
