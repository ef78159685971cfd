"""How good a model is: sample it, and compare with held-out data by sliced Wasserstein distance.

Three numbers, measured with the same directions and sample size:

- ``sw_model``: generated samples against held-out set A;
- ``sw_floor``: held-out set B against held-out set A, what a perfect generator would score
  with this many samples;
- ``sw_exact`` (Gaussian mixture only): samples of the exact denoiser, the perfect model,
  through the same solver and steps, against set A; its gap to the floor is the solver's.

>>> import torch
>>> import diffusion_schemes as ds
>>> from diffusion_schemes_trainer import MixtureData
>>> from diffusion_schemes_trainer.evaluation import evaluate, exact_predictor
>>> data = MixtureData(means=[[-0.5, 0.0], [0.5, 0.0]], stds=[0.1, 0.1])
>>> splits = data.splits(train_size=10, eval_size=1000, seed=0)
>>> schedule = ds.create("noise_schedule", "edm")
>>> result = evaluate(exact_predictor(data.mixture, schedule), schedule, splits, data, solver="heun", num_steps=24)
>>> result["sw_model"] < 2 * result["sw_floor"]
True

Sampling is cut into blocks of :data:`BLOCK` samples by global index, each one ``ds.sample``
call, and sample ``i`` draws its latents and its solver noise from its own generator, seeded by
``(seed, i)`` (:func:`sample_generator`). Under ``torchrun`` rank ``r`` of ``W`` samples a
contiguous run of blocks (:func:`rank_blocks`) and the samples are gathered in index order, so
the samples, and every number measured on them, are the same on any number of processes; only
rank 0 measures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch

import diffusion_schemes as ds

from .errors import TrainerError
from .metrics import class_accuracy, sliced_wasserstein

__all__ = ["BLOCK", "evaluate", "exact_predictor", "generate", "rank_blocks", "sample_generator", "sampling_calls"]

#: Samples per ``ds.sample`` call: the blocks are fixed by the sample's index, never by the number of processes, so
#: the network sees the same batches (and gives the same bits) on any number of them.
BLOCK = 256

Gather = Callable[[Any], list[Any]]


def sample_generator(seed: int, index: int, device: Any = "cpu") -> torch.Generator:
    """The generator of sample ``index`` (its latents, then its solver noise): a function of ``(seed, index)`` only."""
    digest = hashlib.sha256(f"sample:{seed}:{index}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def rank_blocks(num_samples: int, rank: int = 0, world_size: int = 1) -> list[range]:
    """The sample indices ``rank`` of ``world_size`` generates: a contiguous run of the :data:`BLOCK`-sized blocks.

    >>> [[(b.start, b.stop) for b in rank_blocks(600, r, 2)] for r in range(2)]
    [[(0, 256)], [(256, 512), (512, 600)]]
    >>> [(b.start, b.stop) for b in rank_blocks(600)]
    [(0, 256), (256, 512), (512, 600)]
    """
    count = -(-num_samples // BLOCK)
    first, last = rank * count // world_size, (rank + 1) * count // world_size
    return [range(k * BLOCK, min((k + 1) * BLOCK, num_samples)) for k in range(first, last)]


def sampling_calls(data: Any, conditional: bool = False, exact: bool = True) -> int:
    """How many sampling runs :func:`evaluate` makes (the model's, and the exact denoiser's for a mixture)."""
    return 2 if exact and getattr(data, "mixture", None) is not None and not conditional else 1


def exact_predictor(mixture: Any, schedule: Any) -> Any:
    """The mixture's ideal x0-prediction as a predictor ``f(x, t)`` in the schedule's time."""

    def predict(x: torch.Tensor, t: torch.Tensor, condition: Any = None) -> torch.Tensor:
        return mixture.denoise(x, schedule.noise_level(t))

    return predict


def generate(model: Any, schedule: Any, shape: tuple[int, ...], solver: Any, num_steps: int, seed: int,
             device: Any = "cpu", condition: Any = None, guidance: Any = None, callback: Any = None,
             discretization: Any = None, *, rank: int = 0, world_size: int = 1,
             gather: Gather | None = None) -> tuple[torch.Tensor, int]:
    """``ds.sample`` ``shape[0]`` samples, sample ``i`` seeded by ``(seed, i)``; returns ``(samples, nfe)`` on the CPU.

    The samples are made in blocks of :data:`BLOCK` (``callback`` after every step of each block).
    Under several processes pass ``rank``, ``world_size`` and ``gather`` (every rank's object to the
    list of all, in rank order, on every rank, such as ``Context.gather``): this rank makes its
    blocks (:func:`rank_blocks`) and every rank gets all the samples, the same as one process
    makes. ``discretization`` (a name or config, e.g. an ``explicit`` calibrated grid; default the
    schedule's own grid) is handed to ``ds.sample``.

    Samples holding NaN or inf (a diverged solver, an extreme guidance weight), or a failure on any
    rank, are a :class:`TrainerError` on every rank (no rank is left waiting for the others).
    """
    n = shape[0]
    mine: list[torch.Tensor] = []
    nfe, failure = None, None
    try:
        for block in rank_blocks(n, rank, world_size):
            gens = [sample_generator(seed, i, device) for i in block]
            latents = schedule.init_latents((len(block), *shape[1:]), generator=gens, device=device)
            labels = None if condition is None else condition[block.start:block.stop].to(device)
            result = ds.sample(model, latents, schedule, num_steps, solver=solver, generator=gens, condition=labels,
                               guidance=guidance, callback=callback, discretization=discretization)
            mine.append(result.samples.cpu())
            nfe = result.nfe
    except Exception as exc:  # noqa: BLE001 - told to the other ranks, then raised here as it was
        if gather is None:
            raise
        failure = exc
    parts = [(mine, nfe, None if failure is None else str(failure))]
    if gather is not None:
        parts = gather(parts[0])
    if failure is not None:
        raise failure
    failed = [(r, part[2]) for r, part in enumerate(parts) if part[2] is not None]
    if failed:
        r, message = failed[0]
        raise TrainerError(f"sampling failed on rank {r} of {world_size}: {message}")
    samples = torch.cat([block for part in parts for block in part[0]])
    nfe = next(part[1] for part in parts if part[1] is not None)
    bad = int((~torch.isfinite(samples)).any(dim=tuple(range(1, samples.ndim))).sum())
    if bad:  # one read at the end: the samples are refused before anything is measured, drawn or written
        raise TrainerError(
            f"{bad} of {n} samples hold NaN or inf after {num_steps} steps"
            + (f" with guidance {guidance!r}" if guidance is not None else "")
            + ": the sampling diverged. Use a smaller guidance weight, more steps or another solver; nothing was "
            "written"
        )
    return samples, nfe


def evaluate(
    model: Any,
    schedule: Any,
    splits: Any,
    data: Any,
    solver: Any = "heun",
    num_steps: int = 32,
    projections: int = 512,
    seed: int = 0,
    exact: bool = True,
    device: Any = "cpu",
    conditional: bool = False,
    guidance: Any = None,
    classifier: Any = None,
    judge: Any = None,
    callback: Any = None,
    discretization: Any = None,
    *,
    rank: int = 0,
    world_size: int = 1,
    gather: Gather | None = None,
) -> dict[str, Any]:
    """Sample ``model`` (a preconditioner or x0-predictor) and measure it; see the module docstring.

    ``callback`` is passed to :func:`diffusion_schemes.sample` for the model's samples and the exact
    denoiser's (a progress bar: ``num_steps`` calls for each); ``discretization`` is the grid both
    sample on (see :func:`generate`).

    Returns ``sw_model``, ``sw_floor``, ``sw_exact`` (None without a mixture), ``nfe``,
    ``num_samples``, and the tensors ``samples`` and ``exact_samples`` (for pictures).
    ``conditional``: sample held-out set B's labels (with ``guidance``), so the samples have the
    class make-up of set B and their distance to set A is comparable with the floor (B against
    A); with a ``classifier`` (:func:`diffusion_schemes_trainer.runs.classifier_for`)
    ``class_accuracy`` is the fraction of samples it assigns the class they were generated for.
    With a ``judge`` (a :class:`~diffusion_schemes_trainer.metrics.DigitsJudge`), also what it
    measures: ``fd_digits``, ``fd_digits_floor``, ``class_confidence``, ... (and its class accuracy).
    Under several processes (``rank``, ``world_size``, ``gather``: see :func:`generate`) every rank
    samples its share and rank 0 measures all the samples; the other ranks get ``{}``.
    """
    ref = splits.eval_a
    shape = tuple(ref.shape)
    labels = splits.eval_b_labels if conditional else None
    ranks = {"rank": rank, "world_size": world_size, "gather": gather}
    samples, nfe = generate(model, schedule, shape, solver, num_steps, seed + 1, device, labels, guidance, callback,
                            discretization, **ranks)
    mixture = getattr(data, "mixture", None)
    exact_samples = None
    if exact and mixture is not None and not conditional:
        exact_samples, _ = generate(exact_predictor(mixture, schedule), schedule, shape, solver, num_steps, seed + 1,
                                    callback=callback, discretization=discretization, **ranks)
    if rank != 0:
        return {}
    out: dict[str, Any] = {
        "sw_model": float(sliced_wasserstein(samples, ref, projections, seed)),
        "sw_floor": float(sliced_wasserstein(splits.eval_b, ref, projections, seed)),
        "sw_exact": None,
        "nfe": nfe,
        "num_samples": shape[0],
        "samples": samples,
        "exact_samples": None,
        "class_accuracy": None,
    }
    if judge is not None:
        out.update(judge.measure(samples, labels))
    if labels is not None and classifier is not None and out["class_accuracy"] is None:
        out["class_accuracy"] = class_accuracy(classifier, samples, labels)
    if exact_samples is not None:
        out["sw_exact"] = float(sliced_wasserstein(exact_samples, ref, projections, seed))
        out["exact_samples"] = exact_samples
    return out
