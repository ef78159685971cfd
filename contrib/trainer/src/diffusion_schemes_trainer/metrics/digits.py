"""``fd_digits``: a Frechet distance of the FID family for the 8x8 digits (Heusel et al. 2017, eq. 6).

A small classifier (:class:`DigitsClassifier`) is trained once, seeded, on the training split
of a run's digits (never on its held-out sets). Each image maps to the classifier's
penultimate-layer features; a set of images to the mean ``mu`` and covariance ``C`` of its
features, and two sets are compared by the Frechet distance of those Gaussians,

    ``FD = |mu_1 - mu_2|^2 + tr(C_1 + C_2 - 2 (C_1 C_2)^(1/2))``

(Dowson & Landau 1982), computed in float64. Generated samples are compared with held-out set
A (``fd_digits``); held-out set B against held-out set A, with the same number of images, is
the floor a perfect generator reaches (``fd_digits_floor``). The classifier also says how sure
it is of each sample's class (``class_confidence``, the mean top softmax probability), how the
samples spread over the ten classes (``class_counts``) and, for samples drawn for given
labels, how often it reads the requested class (``class_accuracy``).

This module is the measurement only; the classifier of a run is trained once and kept in the run
directory by :mod:`diffusion_schemes_trainer.runs`.

>>> import torch
>>> from diffusion_schemes_trainer.metrics.digits import frechet_distance
>>> x = torch.randn(2000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
>>> round(frechet_distance(x, x + torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64)), 6)  # a shift of 3: 3^2
9.0
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import TrainerError
from .classes import class_accuracy

__all__ = ["CLASSES", "DigitsClassifier", "DigitsJudge", "frechet_distance", "has_judge", "train_classifier"]

#: The number of classes of the digits.
CLASSES = 10


class DigitsClassifier(nn.Module):
    """An MLP on the 64 pixels: ``64 -> hidden -> features -> 10`` with SiLU; ``features`` is the penultimate layer."""

    def __init__(self, hidden: int = 256, features: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.SiLU(), nn.Linear(hidden, features), nn.SiLU())
        self.head = nn.Linear(features, CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 8, 8)`` images in ``[-1, 1]`` to ``(B, features)``."""
        return self.body(x.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, 10)``."""
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted class of each image, ``(B,)``."""
        return self(x).argmax(1)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, seed: int = 0, steps: int = 600) -> DigitsClassifier:
    """Train a :class:`DigitsClassifier` by full-batch Adam on ``(images, labels)``, seeded.

    Each step adds fresh Gaussian pixel noise of std 0.1 (from the seeded generator) to the
    images, so the classifier does not rely on exact pixel values a generator only approximates.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    x, y = images.float().cpu(), labels.cpu()
    for _ in range(steps):
        noisy = x + 0.1 * torch.randn(x.shape, generator=g)
        loss = nn.functional.cross_entropy(model(noisy), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    return x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])


def _sqrt_psd(c: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(c)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Frechet distance between the Gaussians fitted to feature sets ``x`` and ``y`` (rows are samples).

    ``tr (C_x C_y)^(1/2)`` is the sum of the square roots of the eigenvalues of the symmetric
    ``C_x^(1/2) C_y C_x^(1/2)``, which has the same spectrum.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise TrainerError(f"frechet_distance needs two (n, d) feature sets of the same d, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[0], y.shape[0]) < 2:
        raise TrainerError("frechet_distance needs at least 2 samples in each set to estimate a covariance")
    mu_x, c_x = _moments(x)
    mu_y, c_y = _moments(y)
    root = _sqrt_psd(c_x)
    cross = torch.linalg.eigvalsh(root @ c_y @ root).clamp_min(0).sqrt().sum()
    return float((mu_x - mu_y).pow(2).sum() + c_x.trace() + c_y.trace() - 2 * cross)


class DigitsJudge:
    """Measures generated digits against a run's held-out sets with a trained classifier."""

    def __init__(self, classifier: DigitsClassifier, eval_a: torch.Tensor, eval_b: torch.Tensor,
                 labels_a: torch.Tensor | None = None, labels_b: torch.Tensor | None = None) -> None:
        self.classifier = classifier
        with torch.no_grad():
            self.ref = classifier.features(eval_a.cpu())
            self.floor = frechet_distance(classifier.features(eval_b.cpu()), self.ref)
        self.classifier_accuracy = None
        if labels_a is not None and labels_b is not None:
            both = torch.cat([eval_a, eval_b]).cpu()
            self.classifier_accuracy = class_accuracy(classifier.predict, both, torch.cat([labels_a, labels_b]))

    def measure(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        """``fd_digits``, ``fd_digits_floor``, ``class_confidence``, ``class_counts`` and, given the
        requested ``labels``, ``class_accuracy`` (else None)."""
        samples = samples.detach().cpu().float()
        with torch.no_grad():
            feats = self.classifier.features(samples)
            probs = self.classifier.head(feats).softmax(1)
        return {
            "fd_digits": frechet_distance(feats, self.ref),
            "fd_digits_floor": self.floor,
            "class_confidence": float(probs.max(1).values.double().mean()),
            "class_counts": torch.bincount(probs.argmax(1), minlength=CLASSES).tolist(),
            "class_accuracy": None if labels is None else class_accuracy(self.classifier.predict, samples, labels),
            "classifier_accuracy": self.classifier_accuracy,
        }


def has_judge(data: Any) -> bool:
    """Whether ``data`` is judged by ``fd_digits``: 8x8 single-channel images in ten classes (the digits)."""
    return getattr(data, "kind", None) == "images" and tuple(getattr(data, "shape", ())) == (1, 8, 8) \
        and getattr(data, "num_classes", 0) == CLASSES
