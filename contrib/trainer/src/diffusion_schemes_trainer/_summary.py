"""The text a person reads at the end of a run: the distances beside their floor, and where the outputs are.

>>> from diffusion_schemes_trainer._summary import summary
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

from typing import Any

from ._progress import format_duration

__all__ = ["fd_lines", "summary"]


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
        *([f"class accuracy of the samples (conditional, w = 1), judged by a classifier: {f['class_accuracy']:.3f}"]
          if f.get("class_accuracy") is not None else []),
        f"outputs in {metrics['run_dir']}: {'  '.join(metrics['files'].values())}",
    ]
    if metrics.get("note"):
        lines.append(f"({metrics['note']})")
    return "\n".join(lines)
