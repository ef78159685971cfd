"""The class accuracy of generated samples: how often a classifier reads the class they were generated for.

The classifier of a run (the mixture's exact one, or the digits classifier) is picked by
:func:`diffusion_schemes_trainer.runs.classifier_for`.

>>> import torch
>>> from diffusion_schemes_trainer.metrics.classes import class_accuracy
>>> class_accuracy(lambda x: (x[:, 0] > 0).long(), torch.tensor([[1.0], [-1.0], [2.0]]), torch.tensor([1, 0, 0]))
0.6666666666666666
"""

from __future__ import annotations

from collections.abc import Callable
import torch

__all__ = ["class_accuracy"]


def class_accuracy(classifier: Callable[[torch.Tensor], torch.Tensor], samples: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of ``samples`` whose predicted class is the label they were generated for.

    ``classifier`` maps samples to predicted labels.
    """
    with torch.no_grad():
        predicted = classifier(samples.cpu())
    return float((predicted.cpu() == labels.cpu()).double().mean())
