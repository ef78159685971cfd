"""The judge of class-conditional samples: a classifier, and the class accuracy of generated samples.

For a Gaussian mixture the classifier is exact: the most probable component of a point (the
Bayes classifier of the data density). For images it is a small MLP trained here on the run's
training split only (never on the held-out sets it is then checked on), so the accuracy it
gives generated samples measures the model, not a leak. Its own held-out accuracy is reported
beside, as the ceiling of what the judge can tell.

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
from torch import nn

__all__ = ["ImageClassifier", "class_accuracy", "classifier_for"]


class ImageClassifier(nn.Module):
    """A two-layer MLP on flattened images, trained with Adam on ``(images, labels)``.

    ``fit`` draws its initial weights and mini-batches from ``seed`` only, so the judge of a run
    is a function of its training split. Training also sees the images with a little Gaussian
    noise (std ``noise``) so that the near-misses of a generator are judged by their shape.
    """

    def __init__(self, shape: tuple[int, ...], num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        features = int(torch.tensor(shape).prod())
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.SiLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def fit(self, images: torch.Tensor, labels: torch.Tensor, steps: int = 600, seed: int = 0,
            noise: float = 0.1) -> ImageClassifier:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():  # a seeded initialisation, independent of the global RNG
                p.copy_(torch.randn(p.shape, generator=g) * (0.0 if p.ndim == 1 else 1 / p.shape[1] ** 0.5))
        opt = torch.optim.Adam(self.parameters(), lr=3e-3, weight_decay=1e-4)
        for _ in range(steps):
            idx = torch.randint(0, images.shape[0], (256,), generator=g)
            x = images[idx] + noise * torch.randn(images[idx].shape, generator=g)
            loss = nn.functional.cross_entropy(self(x), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return self.eval()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted label of each image."""
        return self(x.float()).argmax(1)


def classifier_for(data: Any, splits: Any, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A function from samples to predicted labels for ``data``, or None when the set has no classes."""
    mixture = getattr(data, "mixture", None)
    if mixture is not None:
        return mixture.classify
    if not getattr(data, "num_classes", 0) or splits.train_labels is None:
        return None
    from ._fd import digits_classifier, has_judge

    if has_judge(data):  # the digits: the classifier behind fd_digits, trained once per run
        digits = digits_classifier(splits, seed)
        return lambda x: digits(x.float()).argmax(1)
    model = ImageClassifier(tuple(data.shape), data.num_classes)
    with torch.enable_grad():
        model.fit(splits.train, splits.train_labels, seed=seed)
    return model.predict


def class_accuracy(classifier: Callable[[torch.Tensor], torch.Tensor], samples: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of ``samples`` whose predicted class is the label they were generated for."""
    predicted = classifier(samples.cpu())
    return float((predicted.cpu() == labels.cpu()).double().mean())
