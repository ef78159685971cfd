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
"""

from __future__ import annotations

from typing import Any

import torch

import diffusion_schemes as ds

from .errors import TrainerError
from .metrics import class_accuracy, sliced_wasserstein

__all__ = ["evaluate", "exact_predictor", "generate", "sampling_calls"]


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
             discretization: Any = None) -> Any:
    """``ds.sample`` from latents drawn with ``seed`` (``callback`` after every step); returns ``(samples, nfe)``.

    ``discretization`` (a name or config, e.g. an ``explicit`` calibrated grid; default the schedule's
    own grid) is handed to ``ds.sample``.

    Samples holding NaN or inf (a diverged solver, an extreme guidance weight) are a :class:`TrainerError`.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    latents = schedule.init_latents(shape, generator=g, device=device)
    if condition is not None:
        condition = condition.to(device)
    result = ds.sample(model, latents, schedule, num_steps, solver=solver, generator=g, condition=condition,
                       guidance=guidance, callback=callback, discretization=discretization)
    bad = int((~torch.isfinite(result.samples)).any(dim=tuple(range(1, result.samples.ndim))).sum())
    if bad:  # one read at the end: the samples are refused before anything is measured, drawn or written
        raise TrainerError(
            f"{bad} of {shape[0]} samples hold NaN or inf after {num_steps} steps"
            + (f" with guidance {guidance!r}" if guidance is not None else "")
            + ": the sampling diverged. Use a smaller guidance weight, more steps or another solver; nothing was "
            "written"
        )
    return result.samples, result.nfe


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
    """
    ref = splits.eval_a
    shape = tuple(ref.shape)
    labels = splits.eval_b_labels if conditional else None
    samples, nfe = generate(model, schedule, shape, solver, num_steps, seed + 1, device, labels, guidance, callback,
                            discretization)
    samples = samples.cpu()
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
    mixture = getattr(data, "mixture", None)
    if exact and mixture is not None and not conditional:
        exact_samples, _ = generate(exact_predictor(mixture, schedule), schedule, shape, solver, num_steps, seed + 1,
                                    callback=callback, discretization=discretization)
        out["sw_exact"] = float(sliced_wasserstein(exact_samples, ref, projections, seed))
        out["exact_samples"] = exact_samples
    return out
