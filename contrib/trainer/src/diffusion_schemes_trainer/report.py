"""What a person reads: progress bars (tqdm) while a command works, and at the end of a run the distances
beside their floor and where the outputs are.

>>> from diffusion_schemes_trainer.report import summary
>>> print(summary({"step": 10, "train_time_s": 1.0, "wall_time_s": 2.0, "run_dir": "runs/x",
...                "final": {"sw_model": 0.03, "sw_floor": 0.02, "sw_exact": None, "nfe": 7,
...                          "num_samples": 100, "projections": 64, "solver": {"name": "heun"},
...                          "sampling_steps": 4, "weights": "ema"},
...                "files": {"metrics": "metrics.json"}}))
result after 10 steps (training 0:01, in all 0:02)
sliced Wasserstein distance to held-out data (100 samples, 64 directions; heun, 4 steps, 7 model evaluations):
  trained model (ema weights)       0.0300   1.50x the floor
  held-out vs held-out (the floor)  0.0200
within 2x of the floor: yes
outputs in runs/x: metrics.json
"""

from __future__ import annotations

import sys

from typing import IO, Any

from tqdm import tqdm

__all__ = ["fd_lines", "format_duration", "guidance_table", "nll_lines", "progress", "summary"]


def format_duration(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``.

    >>> format_duration(3725)
    '1:02:05'
    """
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress(total: int, label: str, stream: IO[str] | None = None, initial: int = 0, unit: str = "step",
             disable: bool = False) -> tqdm:
    """A progress bar of ``total`` steps on ``stream`` (stderr): redrawn on a terminal, a line every
    half minute otherwise (a log file, a pipe), so logs stay short.

    >>> import io
    >>> stream = io.StringIO()
    >>> with progress(10, "sample", stream) as bar:
    ...     bar.update(10)
    >>> "sample: 100%" in stream.getvalue() and "10/10" in stream.getvalue()
    True
    """
    stream = stream if stream is not None else sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(total=total, initial=initial, desc=label, file=stream, unit=unit, disable=disable, leave=True,
                mininterval=0.2 if tty else 30.0, dynamic_ncols=tty, ascii=not tty)


def _ratio(value: float | None, floor: float) -> str:
    if value is None or not floor > 0:
        return ""
    return f"   {value / floor:.2f}x the floor"


def fd_lines(f: dict[str, Any]) -> list[str]:
    """The digits judge's numbers (``fd_digits`` and the class read-out), when measured.

    >>> for line in fd_lines({"fd_digits": 20.0, "fd_digits_floor": 10.0, "class_confidence": 0.9,
    ...                       "classifier_accuracy": 0.98}):
    ...     print(line)
    Frechet distance in the digits classifier's features (fd_digits):
      trained model                     20.00   2.00x the floor
      held-out vs held-out (the floor)  10.00
    within 3x of the floor: yes
    classifier's mean confidence in the samples' classes: 0.900 (its accuracy on held-out digits: 0.980)
    """
    if f.get("fd_digits") is None:
        return []
    floor = f["fd_digits_floor"]
    lines = [
        "Frechet distance in the digits classifier's features (fd_digits):",
        f"  {'trained model'.ljust(32)}  {f['fd_digits']:.2f}{_ratio(f['fd_digits'], floor)}",
        f"  {'held-out vs held-out (the floor)'.ljust(32)}  {floor:.2f}",
        f"within 3x of the floor: {'yes' if f['fd_digits'] <= 3 * floor else 'no'}",
    ]
    held_out = f.get("classifier_accuracy")
    lines.append(f"classifier's mean confidence in the samples' classes: {f['class_confidence']:.3f}"
                 + (f" (its accuracy on held-out digits: {held_out:.3f})" if held_out is not None else ""))
    return lines


def nll_lines(f: dict[str, Any]) -> list[str]:
    """The held-out negative log-likelihood beside the data's own (the floor), when measured.

    >>> for line in nll_lines({"nll_bpd": 1.25, "nll_bpd_stderr": 0.02, "nll_bpd_floor": 1.2, "nll_num_samples": 512,
    ...                        "nll_divergence": "exact", "nll_probes": None, "nll_steps": 16, "nll_nfe": 128,
    ...                        "nll_seconds": 1.5}):
    ...     print(line)
    negative log-likelihood of held-out data in bits/dim (512 points; exact divergence, 16 RK4 steps, 128 model calls, 1.5 s):
      trained model                     1.2500 +- 0.0200
      the data's own density (floor)    1.2000
      difference (a KL estimate)        0.0500
    """
    if f.get("nll_bpd") is None:
        return []
    how = f["nll_divergence"] + (f" ({f['nll_probes']} probes)" if f.get("nll_probes") else "")
    err = f" +- {f['nll_bpd_stderr']:.4f}" if f.get("nll_bpd_stderr") is not None else ""
    lines = [
        f"negative log-likelihood of held-out data in bits/dim ({f['nll_num_samples']} points; {how} divergence, "
        f"{f['nll_steps']} RK4 steps, {f['nll_nfe']} model calls, {f['nll_seconds']:.1f} s):",
        f"  {'trained model'.ljust(32)}  {f['nll_bpd']:.4f}{err}",
    ]
    if f.get("nll_bpd_floor") is not None:
        floor = "the data's own density (floor)"
        lines += [f"  {floor.ljust(32)}  {f['nll_bpd_floor']:.4f}",
                  f"  {'difference (a KL estimate)'.ljust(32)}  {f['nll_bpd'] - f['nll_bpd_floor']:.4f}"]
    return lines


def summary(metrics: dict[str, Any]) -> str:
    """The final report of :func:`train`'s metrics."""
    f = metrics["final"]
    floor = f["sw_floor"]
    rows = [(f"trained model ({f['weights']} weights)", f["sw_model"], _ratio(f["sw_model"], floor))]
    if f.get("sw_exact") is not None:
        rows.append(("exact denoiser (perfect model)", f["sw_exact"], _ratio(f["sw_exact"], floor)))
    rows.append(("held-out vs held-out (the floor)", floor, ""))
    width = max(len(r[0]) for r in rows)
    lines = [
        f"result after {metrics['step']} steps (training {format_duration(metrics['train_time_s'])}, "
        f"in all {format_duration(metrics['wall_time_s'])})",
        f"sliced Wasserstein distance to held-out data ({f['num_samples']} samples, {f['projections']} directions; "
        f"{f['solver']['name']}, {f['sampling_steps']} steps, {f['nfe']} model evaluations):",
        *(f"  {name.ljust(width)}  {value:.4f}{extra}" for name, value, extra in rows),
        f"within 2x of the floor: {'yes' if f['sw_model'] <= 2 * floor else 'no'}",
        *fd_lines(f),
        *nll_lines(f),
        *([f"class accuracy of the samples (conditional, w = 1), judged by a classifier: {f['class_accuracy']:.3f}"]
          if f.get("class_accuracy") is not None else []),
        f"outputs in {metrics['run_dir']}: {'  '.join(metrics['files'].values())}",
    ]
    if metrics.get("note"):
        lines.append(f"({metrics['note']})")
    return "\n".join(lines)


def guidance_table(sweeps: dict[str, list[dict[str, Any]]]) -> str:
    """Class accuracy and distances of each scheme (rows) at each guidance weight (columns).

    On digits each cell also holds ``fd_digits``, and the note below the table its floor:

    >>> table = guidance_table({"run": [{"scale": 1.0, "class_accuracy": 0.99, "sw": 0.0737, "fd_digits": 11.08,
    ...                                  "fd_digits_floor": 10.55}]}).splitlines()
    >>> table[:3]
    ['| scheme | w = 1 |', '|---|---|', '| run | 0.990 / 0.0737 / 11.08 |']
    >>> "/ fd_digits (floor 10.55)." in table[-1]
    True
    """
    scales = [r["scale"] for r in next(iter(sweeps.values()))]
    fd = all("fd_digits" in r for rows in sweeps.values() for r in rows)
    head = ["scheme", *(f"w = {w:g}" for w in scales)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, rows in sweeps.items():
        cells = [f"{r['class_accuracy']:.3f} / {r['sw']:.4f}" + (f" / {r['fd_digits']:.2f}" if fd else "")
                 for r in rows]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    lines.append("")
    floors = sorted({f"{r['fd_digits_floor']:.2f}" for rows in sweeps.values() for r in rows}) if fd else []
    lines.append("Each cell: class accuracy of the samples (judged by a classifier trained on the training split) / "
                 "sliced Wasserstein distance to held-out data"
                 + (f" / fd_digits (floor {', '.join(floors)})" if fd else "")
                 + ". w = 1 is plain conditional sampling, w = 0 unconditional.")
    return "\n".join(lines) + "\n"
