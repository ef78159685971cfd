"""``compare``: train several schemes by name under the same budget and seed; a table and a plot.

Each scheme is a name (its preconditioner and noise schedule of that name, e.g. ``vp``) or a
``PRECONDITIONER:SCHEDULE`` pair (``edm:vp``). Every run uses the same config otherwise (data,
backbone, optimiser, steps, seed, solver), is measured ``--evals`` times along the way, and
lands in its own folder; the comparison is written as ``compare.md``, ``compare.json`` and
``compare.png`` (sliced Wasserstein distance against training step; on digits, ``fd_digits``, which
also ranks the schemes).

>>> from diffusion_schemes_trainer.commands.compare import parse_schemes
>>> parse_schemes("edm, vp,edm:vp")
[('edm', 'edm', 'edm'), ('vp', 'vp', 'vp'), ('edm:vp', 'edm', 'vp')]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .. import plots
from ..config import load_config
from ..errors import RunInterrupted, TrainerError
from ..report import guidance_table
from ..runs import sweep_guidance
from ..storage import CHECKPOINT_NAME, load_checkpoint, write_json, write_text
from ..training import train
from .options import add_config_flags, config_changes, parse_scales

__all__ = ["add_parser", "markdown_table", "parse_schemes", "run"]


def add_parser(cli: Any) -> argparse.ArgumentParser:
    """Add ``compare`` and its arguments to an argparse sub-parser collection."""
    p = cli.add_parser("compare", help="train several schemes under the same budget and seed; table and plot")
    p.add_argument("--schemes", default="edm,vp,ve,iddpm", metavar="LIST",
                   help="comma-separated scheme names (preconditioner and schedule of that name) or "
                   "PRECONDITIONER:SCHEDULE pairs (default: edm,vp,ve,iddpm)")
    add_config_flags(p)
    p.add_argument("--evals", type=int, default=5, metavar="K", help="measurements per run (default 5)")
    p.add_argument("--guidance-scales", metavar="LIST",
                   help="class-conditional runs: after training, sample each at these guidance weights "
                   "(e.g. 0,1,2,4) and tabulate class accuracy and distance")
    p.add_argument("--run-dir", metavar="DIR", help="output folder (default: a new one under runs/)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted comparison in --run-dir (same arguments): finished runs are kept, "
                   "interrupted ones continue from their checkpoint")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def parse_schemes(text: str) -> list[tuple[str, str, str]]:
    """``(label, preconditioner, schedule)`` for each comma-separated item."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        precond, _, schedule = item.partition(":")
        out.append((item, precond.strip(), (schedule or precond).strip()))
    if not out:
        raise TrainerError("--schemes is empty; give names such as edm,vp,ve,iddpm")
    if len({label for label, _, _ in out}) != len(out):
        raise TrainerError(f"--schemes lists a scheme twice: {text!r}")
    return out


def _finished(cfg: Any) -> dict[str, Any] | None:
    """The metrics of a run of this comparison that already finished with this config, else ``None``."""
    path = Path(cfg.run_dir) / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metrics if metrics.get("config") == cfg.model_dump(mode="json") else None


def _checkpoint_of(cfg: Any) -> dict[str, Any] | None:
    """The checkpoint of an interrupted run of this comparison (``None`` when it never wrote one)."""
    path = Path(cfg.run_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    payload = load_checkpoint(path)
    if payload["config"] != cfg.model_dump(mode="json"):
        raise TrainerError(
            f"{str(path)!r} was written with another config than these arguments give; resume the comparison with "
            "the arguments it was started with, or pick another --run-dir"
        )
    return payload


def markdown_table(rows: list[dict[str, Any]], floor: float, fd_floor: float | None = None) -> str:
    """The comparison as a markdown table (one row per scheme, best first, one column per measured step).

    Rows are ranked by ``fd_digits`` when measured (digits), else by the final sliced Wasserstein
    distance; the curve columns show that same measure.
    """
    fd = fd_floor is not None
    measure = "fd_digits" if fd else "sw"
    steps = sorted({e["step"] for r in rows for e in r["curve"]})
    head = ["rank", "scheme", "preconditioner", "schedule", *(f"{'FD' if fd else 'SW'} @ {s}" for s in steps)]
    head += ["fd_digits", "x floor", "SW", "x floor"] if fd else ["x floor", "exact denoiser"]
    nll = all(r.get("nll_bpd") is not None for r in rows)
    nll_floor = next((r["nll_bpd_floor"] for r in rows if r.get("nll_bpd_floor") is not None), None) if nll else None
    if nll:
        head += ["NLL bits/dim", "NLL rank"] + (["- floor"] if nll_floor is not None else [])
    head.append("train s")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ranked = sorted(rows, key=lambda r: r["fd_digits"] if fd else r["sw_model"])
    by_nll = {r["scheme"]: i for i, r in enumerate(sorted(rows, key=lambda r: r["nll_bpd"]), 1)} if nll else {}
    for rank, r in enumerate(ranked, 1):
        at = {e["step"]: e.get(measure) for e in r["curve"]}
        fmt = "{:.2f}" if fd else "{:.4f}"
        cells = [str(rank), r["scheme"], r["preconditioner"], r["noise_schedule"],
                 *(fmt.format(at[s]) if at.get(s) is not None else "-" for s in steps)]
        if fd:
            cells += [f"{r['fd_digits']:.2f}", f"{r['fd_digits'] / fd_floor:.2f}", f"{r['sw_model']:.4f}",
                      f"{r['sw_model'] / floor:.2f}"]
        else:
            cells += [f"{r['sw_model'] / floor:.2f}", f"{r['sw_exact']:.4f}" if r["sw_exact"] is not None else "-"]
        if nll:
            cells += [f"{r['nll_bpd']:.4f}", str(by_nll[r["scheme"]])]
            if nll_floor is not None:
                cells.append(f"{r['nll_bpd'] - nll_floor:.4f}")
        cells.append(f"{r['train_time_s']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if fd:
        lines.append(f"Ranked by fd_digits, the Frechet distance of generated samples to held-out digits in the features of "
                     f"a digits classifier; floor (held-out vs held-out) {fd_floor:.2f}. SW: sliced Wasserstein distance "
                     f"(floor {floor:.4f}).")
    else:
        lines.append(f"Sliced Wasserstein distance (SW) of generated samples to held-out data; floor (held-out vs "
                     f"held-out) {floor:.4f}. 'exact denoiser': the perfect model through the same solver and schedule.")
    if nll:
        lines.append("NLL: negative log-likelihood of held-out data in bits per dimension (probability-flow ODE), and "
                     "each scheme's rank by it" + (f"; '- floor': its excess over the data's own density "
                     f"({nll_floor:.4f} bits/dim), a KL divergence estimate" if nll_floor is not None else "") + ".")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """Run the comparison; returns the exit code."""
    if args.scheme or args.preconditioner or args.noise_schedule:
        raise TrainerError("compare takes its schemes from --schemes (e.g. --schemes edm,vp or edm:vp)")
    if getattr(args, "resume", False) and not args.run_dir:
        raise TrainerError("compare --resume continues the comparison in --run-dir; give that folder")
    schemes = parse_schemes(args.schemes)
    changes = config_changes(args)
    root = Path(args.run_dir) if args.run_dir else Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    configs = []
    for label, precond, schedule in schemes:  # validate every scheme before training any
        run_changes = {**changes, "preconditioner": precond, "noise_schedule": schedule,
                       "run_dir": str(root / label.replace(":", "-"))}
        configs.append((label, load_config(args.config, overrides=args.set, changes=run_changes)))
    if args.evals < 1:
        raise TrainerError(f"--evals must be >= 1, got {args.evals}")
    scales = parse_scales(args.guidance_scales) if getattr(args, "guidance_scales", None) else None
    if scales and not configs[0][1].class_conditional:
        raise TrainerError("--guidance-scales needs class-conditional runs; add --class-conditional")
    sweeps: dict[str, list[dict[str, Any]]] = {}
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainerError(f"cannot create the run directory {str(root)!r}: {exc.strerror or exc}") from None
    rows, floor, fd_floor = [], None, None
    resume = getattr(args, "resume", False)
    started = [label for label, cfg in configs if (Path(cfg.run_dir) / CHECKPOINT_NAME).exists()]
    if started and not resume:
        raise TrainerError(
            f"{str(root)!r} already holds runs of a comparison ({', '.join(started)}). Continue it with the same "
            "arguments and --resume (finished runs are kept, interrupted ones continue from their checkpoint), "
            "or pick another --run-dir."
        )
    for label, cfg in configs:
        if changes.get("eval_every") is None:
            cfg = cfg.model_copy(update={"eval_every": max(1, cfg.steps // args.evals)})
        if not args.quiet:
            print(f"\n=== {label} ===", file=sys.stderr, flush=True)
        metrics = _finished(cfg) if resume else None
        if metrics is None:
            checkpoint = _checkpoint_of(cfg) if resume else None
            try:
                metrics = train(cfg, checkpoint=checkpoint, quiet=args.quiet)
            except RunInterrupted as exc:
                raise RunInterrupted(f"{exc.message}. Continue the whole comparison with the same arguments and "
                                     "--resume") from None
        if not metrics:  # a rank other than 0
            continue
        final = metrics["final"]
        floor = final["sw_floor"]
        fd_floor = final.get("fd_digits_floor")
        curve = [{k: e[k] for k in ("step", "sw", "fd_digits") if k in e} for e in metrics["eval"]]
        rows.append({
            "scheme": label,
            "preconditioner": cfg.preconditioner.name,
            "noise_schedule": cfg.noise_schedule.name,
            "sw_model": final["sw_model"],
            "sw_exact": final["sw_exact"],
            "ratio_to_floor": final["ratio_to_floor"],
            "train_time_s": metrics["train_time_s"],
            "run_dir": metrics["run_dir"],
            "curve": curve,
        })
        if fd_floor is not None:
            rows[-1].update(fd_digits=final["fd_digits"], fd_ratio_to_floor=final["fd_ratio_to_floor"])
        rows[-1].update({k: final.get(k) for k in ("nll_bpd", "nll_bpd_floor", "nll_bpd_stderr")})
        if not args.quiet:
            fd = f"; fd_digits {final['fd_digits']:.2f} ({final['fd_ratio_to_floor']:.2f}x)" if fd_floor is not None else ""
            nll = f"; NLL {final['nll_bpd']:.4f} bits/dim" if final.get("nll_bpd") is not None else ""
            print(f"{label}: SW {final['sw_model']:.4f} ({final['sw_model'] / floor:.2f}x the floor {floor:.4f}){fd}{nll}",
                  file=sys.stderr, flush=True)
        if scales:
            path = str(root / f"guidance-{label.replace(':', '-')}.png")
            sweeps[label] = rows[-1]["guidance"] = sweep_guidance(metrics["run_dir"], scales, picture=path,
                                                                 quiet=args.quiet)
    if not rows:
        return 0
    table = markdown_table(rows, floor, fd_floor)
    if sweeps:
        table += "\n" + guidance_table(sweeps)
    write_text(root / "compare.md", table, what="the comparison table")
    if fd_floor is not None:
        rows.sort(key=lambda r: r["fd_digits"])
    report = {"floor": floor, "fd_digits_floor": fd_floor, "ranked_by": "fd_digits" if fd_floor is not None else "sw",
              "schemes": rows, "config": configs[0][1].model_dump(mode="json", exclude={"run_dir"})}
    write_json(root / "compare.json", report, what="the comparison")
    if fd_floor is not None:
        picture = plots.compare_curves(str(root / "compare.png"), {r["scheme"]: r["curve"] for r in rows}, fd_floor,
                                        measure="fd_digits")
    else:
        picture = plots.compare_curves(str(root / "compare.png"), {r["scheme"]: r["curve"] for r in rows}, floor)
    print(table)
    print(f"written: {root / 'compare.md'}, {root / 'compare.json'}" + (f", {picture}" if picture else f" ({plots.MISSING})"))
    return 0
