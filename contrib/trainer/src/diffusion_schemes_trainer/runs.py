"""A finished (or checkpointed) run: its model rebuilt by name, the judges of its data, its guidance sweep.

:func:`rebuild` turns a checkpoint back into ``(config, preconditioner, noise_schedule)``, building
every scheme by name from whichever distribution provides it. The digits classifier behind
``fd_digits`` and the class accuracy is trained once per run and kept in the run directory as a
verified file (:data:`CLASSIFIER_NAME`: checksum and structure checked on load), so ``sample``,
``ema`` and ``compare`` reuse it.

>>> import torch
>>> from diffusion_schemes_trainer import MixtureData
>>> from diffusion_schemes_trainer.metrics import class_accuracy
>>> from diffusion_schemes_trainer.runs import classifier_for
>>> data = MixtureData(means=[[-1.0, 0.0], [1.0, 0.0]], stds=[0.1, 0.1])
>>> splits = data.splits(train_size=10, eval_size=100, seed=0)
>>> class_accuracy(classifier_for(data, splits), splits.eval_a, splits.eval_a_labels)
1.0
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import diffusion_schemes as ds

from .config import load_config, num_classes
from .errors import TrainerError
from .evaluation import evaluate
from .metrics import DigitsClassifier, DigitsJudge, has_judge, train_classifier
from .plots import guidance_picture
from .report import progress
from .storage import load_checkpoint, load_verified, save_verified

__all__ = ["CLASSIFIER_NAME", "classifier_for", "digits_classifier", "digits_judge", "rebuild", "run_dir_of",
           "sweep_guidance"]

#: The cached classifier's file in a run directory.
CLASSIFIER_NAME = "digits_classifier.pt"
_CLASSIFIER_FORMAT = "diffusion-schemes-trainer/digits-classifier/1"
_CACHE: dict[tuple[int, int, int], DigitsClassifier] = {}


def run_dir_of(path: str | os.PathLike[str]) -> Path:
    """The run directory of a path that is the directory or a file in it (its checkpoint)."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def rebuild(payload: dict[str, Any], ema: bool = True) -> tuple[Any, Any, Any]:
    """``(config, preconditioner, noise_schedule)`` from a checkpoint, built by name; the run's threads are set first.

    The backbone comes from the config's ``model`` section and gets the EMA weights when
    ``ema`` (and the checkpoint has them), else the trained weights.
    """
    config = load_config(base=payload["config"])
    config.use_threads()
    data = config.data.build()
    backbone = config.model.build(data.shape, num_classes(config, data))
    state = payload.get("ema") if ema and payload.get("ema") is not None else payload["model"]
    try:
        backbone.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise TrainerError(f"the checkpoint's weights do not fit its model config: {exc}") from None
    # the config is the one source of a run's schemes, for sampling as for --resume
    precond = ds.create("preconditioner", config.preconditioner, model=backbone)
    schedule = ds.create("noise_schedule", config.noise_schedule)
    return config, precond, schedule


def _load_classifier(path: Path, key: tuple[int, int, int]) -> DigitsClassifier | None:
    """The classifier stored at ``path`` if it was trained for ``key``; a damaged file is an error naming it."""
    hint = "Delete it: the next command trains the classifier again (a few seconds)."
    stored = load_verified(path, _CLASSIFIER_FORMAT, {"key": list, "state": dict}, what="digits classifier file",
                           hint=hint, finite=True)
    if tuple(stored["key"]) != key:
        return None
    classifier = DigitsClassifier()
    try:
        classifier.load_state_dict(stored["state"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise TrainerError(f"{str(path)!r} does not hold a digits classifier ({str(exc).splitlines()[0]}). {hint}") from None
    return classifier.eval().requires_grad_(False)


def digits_classifier(splits: Any, seed: int, run_dir: str | os.PathLike[str] | None = None) -> DigitsClassifier:
    """The classifier of a run's digits ``splits``, trained once on ``splits.train`` with ``seed``.

    It is kept in memory for the process and, with ``run_dir``, in ``run_dir/digits_classifier.pt``
    (verified on load), so ``sample`` and ``ema`` reuse it. The class-accuracy judge of
    class-conditional runs (:func:`classifier_for`) is this one too.
    """
    key = (seed, int(splits.train.shape[0]), int(splits.eval_a.shape[0]))
    classifier = _CACHE.get(key)
    path = Path(run_dir) / CLASSIFIER_NAME if run_dir is not None else None
    if classifier is None and path is not None and path.exists():
        classifier = _load_classifier(path, key)
    if classifier is None:
        with torch.enable_grad():
            classifier = train_classifier(splits.train, splits.train_labels, seed=seed)
    _CACHE[key] = classifier
    if path is not None and not path.exists():
        save_verified(path, {"format": _CLASSIFIER_FORMAT, "key": list(key), "state": classifier.state_dict()},
                      what="the digits classifier")
    return classifier


def digits_judge(data: Any, train_size: int, eval_size: int, seed: int,
                 run_dir: str | os.PathLike[str] | None = None) -> DigitsJudge | None:
    """The ``fd_digits`` judge of a run (:func:`digits_classifier` and its two held-out sets); None for other data."""
    if not has_judge(data):
        return None
    splits = data.splits(train_size, eval_size, seed)
    classifier = digits_classifier(splits, seed, run_dir)
    return DigitsJudge(classifier, splits.eval_a, splits.eval_b, splits.eval_a_labels, splits.eval_b_labels)


def classifier_for(data: Any, splits: Any, seed: int = 0,
                   run_dir: str | os.PathLike[str] | None = None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A function from samples to predicted labels for ``data``; None for a set without a judge of its classes.

    A mixture's judge is its exact most probable component (the Bayes classifier of the data
    density); the digits' is the classifier behind ``fd_digits``, trained on the run's training split
    only (never on the held-out sets it is then checked on), so the accuracy it gives generated
    samples measures the model, not a leak. The other data sets have no classes.
    """
    mixture = getattr(data, "mixture", None)
    if mixture is not None:
        return mixture.classify
    if not has_judge(data) or splits.train_labels is None:
        return None
    return digits_classifier(splits, seed, run_dir).predict


def sweep_guidance(run_dir: str | os.PathLike[str], scales: Sequence[float], ema: bool = True,
                   picture: str | None = None, quiet: bool = False) -> list[dict[str, Any]]:
    """Sample a class-conditional run at each guidance weight: class accuracy, distance and nfe per weight.

    Every weight uses the same latents (the run's seed) and held-out set B's labels, and the
    same judge (:func:`classifier_for`), so the rows differ by the guidance only. On digits the
    rows also hold ``fd_digits`` and ``fd_digits_floor``, measured with the run's cached classifier
    (the same one that judges the classes). ``picture``: also draw the samples of every weight,
    same seeds side by side.
    """
    config, precond, schedule = rebuild(load_checkpoint(run_dir), ema=ema)
    data = config.data.build()
    classes = num_classes(config, data)
    if not classes:
        raise TrainerError("--guidance-scales needs class-conditional runs; add --class-conditional")
    splits = data.splits(config.data.train_size, config.data.eval_size, config.seed)
    folder = run_dir_of(run_dir)
    judge = classifier_for(data, splits, config.seed, folder)
    fd_judge = digits_judge(data, config.data.train_size, config.data.eval_size, config.seed, folder)
    null = torch.tensor([classes])
    rows, drawn = [], []
    with progress(len(scales) * config.sampling_steps, "guidance sweep", disable=quiet) as bar:
        for w in scales:
            result = evaluate(precond, schedule, splits, data, config.solver, config.sampling_steps,
                              config.projections, config.seed, conditional=True,
                              guidance=ds.Guidance(w, null_condition=null), classifier=judge, judge=fd_judge,
                              callback=lambda info: bar.update())
            rows.append({"scale": w, "class_accuracy": result["class_accuracy"], "sw": result["sw_model"],
                         "sw_floor": result["sw_floor"], "nfe": result["nfe"]})
            if fd_judge is not None:
                rows[-1].update(fd_digits=result["fd_digits"], fd_digits_floor=result["fd_digits_floor"])
            drawn.append((f"w = {w:g} (accuracy {result['class_accuracy']:.2f})", result["samples"]))
    if picture is not None:
        guidance_picture(picture, drawn, splits.eval_b_labels, data.kind)
    return rows
