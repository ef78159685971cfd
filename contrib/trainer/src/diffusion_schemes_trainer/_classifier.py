"""The judge of class-conditional samples: a classifier, and the class accuracy of generated samples.

For a Gaussian mixture the classifier is exact: the most probable component of a point (the
Bayes classifier of the data density). For the digits it is the classifier behind ``fd_digits``
(:func:`~diffusion_schemes_trainer._fd.digits_classifier`), trained on the run's training split
only (never on the held-out sets it is then checked on), so the accuracy it gives generated
samples measures the model, not a leak. Its own held-out accuracy is reported beside, as the
ceiling of what the judge can tell.

>>> import torch
>>> from diffusion_schemes_trainer import MixtureData
>>> from diffusion_schemes_trainer._classifier import class_accuracy, classifier_for
>>> data = MixtureData(means=[[-1.0, 0.0], [1.0, 0.0]], stds=[0.1, 0.1])
>>> splits = data.splits(train_size=10, eval_size=100, seed=0)
>>> judge = classifier_for(data, splits)
>>> class_accuracy(judge, splits.eval_a, splits.eval_a_labels)
1.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["class_accuracy", "classifier_for"]


def classifier_for(
    data: Any, splits: Any, seed: int = 0, run_dir: Any = None
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A function from samples to predicted labels for ``data``; None for a set without a judge of its classes.

    A mixture's judge is its exact most probable component; the digits' is the classifier behind
    ``fd_digits``, trained once per run (and read back from ``run_dir`` when the run saved it).
    The other data sets have no classes.
    """
    mixture = getattr(data, "mixture", None)
    if mixture is not None:
        return mixture.classify
    from ._fd import digits_classifier, has_judge

    if not has_judge(data) or splits.train_labels is None:
        return None
    return digits_classifier(splits, seed, run_dir).predict


def class_accuracy(classifier: Callable[[torch.Tensor], torch.Tensor], samples: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of ``samples`` whose predicted class is the label they were generated for.

    ``classifier`` maps samples to predicted labels (:func:`classifier_for`).
    """
    with torch.no_grad():
        predicted = classifier(samples.cpu())
    return float((predicted.cpu() == labels.cpu()).double().mean())
