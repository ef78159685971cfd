"""Interleaved timing: the ratio of two callables measured block by block, with its spread."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable


Clock = Callable[[], float]


def _block(fn: Callable[[], object], number: int, clock: Clock = time.perf_counter) -> float:
    start = clock()
    for _ in range(number):
        fn()
    return (clock() - start) / number


def calibrate(fn: Callable[[], object], block_s: float, clock: Clock = time.perf_counter) -> int:
    """How many calls of ``fn`` make a block of about ``block_s`` seconds (at least 1)."""
    fn()
    number = 1
    while True:
        took = _block(fn, number, clock) * number
        if took >= block_s / 4 or number >= 1 << 16:
            return max(1, int(number * block_s / max(took, 1e-9)))
        number *= 4


def spread(values: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max of ``values``."""
    values = sorted(values)
    if len(values) >= 4:
        q1, _, q3 = statistics.quantiles(values, n=4)
    else:
        q1, q3 = values[0], values[-1]
    return {"median": statistics.median(values), "q1": q1, "q3": q3, "min": values[0], "max": values[-1]}


def compare(
    ours: Callable[[], object],
    reference: Callable[[], object],
    repeats: int,
    block_s: float,
    clock: Clock = time.perf_counter,
) -> dict[str, object]:
    """Time ``ours`` against ``reference`` in alternating blocks; return the ratio ours / reference.

    Each repeat times one block of each (their order alternates from repeat to repeat), so
    a change in the machine's load between repeats affects both sides of a ratio alike.
    Returns the spread of the per-repeat ratios and the median time per call of each side.
    ``clock`` measures a block: wall time by default; ``time.process_time`` (this process's CPU
    time) leaves out the time other processes hold the CPUs, which on a shared machine is most
    of the noise of a microsecond-scale ratio.
    """
    ours(), reference()  # warm up
    # Each side gets its own call count, so a block of either lasts about block_s.
    n_ours, n_ref = calibrate(ours, block_s, clock), calibrate(reference, block_s, clock)
    ratios, t_ours, t_ref = [], [], []
    for i in range(repeats):
        if i % 2:
            b = _block(reference, n_ref, clock)
            a = _block(ours, n_ours, clock)
        else:
            a = _block(ours, n_ours, clock)
            b = _block(reference, n_ref, clock)
        t_ours.append(a)
        t_ref.append(b)
        ratios.append(a / b)
    return {
        "ratio": spread(ratios),
        "ratios": ratios,  # per repeat, in the order run: results of two runs of the same pair pair up (paired)
        "ours_s": statistics.median(t_ours),
        "reference_s": statistics.median(t_ref),
        "calls_per_block": {"ours": n_ours, "reference": n_ref},
        "repeats": repeats,
    }


def paired(a: dict[str, object], b: dict[str, object]) -> dict[str, object]:
    """Two :func:`compare` results of the same pair, measured in two set-ups that bias the ratio in opposite
    directions alike (each side compiled first in one of them), as one: repeat ``i``'s ratio is the geometric
    mean of both runs' repeat ``i``, so a factor that multiplies one run's ratios and divides the other's cancels;
    the times are the geometric means of both runs' medians. Each run's own spread is kept under ``"runs"``."""
    if len(a["ratios"]) != len(b["ratios"]):
        raise ValueError(f"paired needs runs of as many repeats, got {len(a['ratios'])} and {len(b['ratios'])}")
    ratios = [math.sqrt(x * y) for x, y in zip(a["ratios"], b["ratios"])]
    return {
        "ratio": spread(ratios),
        "ratios": ratios,
        "ours_s": math.sqrt(a["ours_s"] * b["ours_s"]),
        "reference_s": math.sqrt(a["reference_s"] * b["reference_s"]),
        "calls_per_block": a["calls_per_block"],
        "repeats": a["repeats"],
        "runs": [a["ratio"], b["ratio"]],
    }


def fmt_ratio(result: dict[str, object]) -> str:
    """``1.03 [1.01, 1.05]``: the median ratio and its interquartile range."""
    r = result["ratio"]
    return f"{r['median']:.3f} [{r['q1']:.3f}, {r['q3']:.3f}]"


def fmt_time(seconds: float) -> str:
    """A duration with a unit that keeps three significant digits."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"
