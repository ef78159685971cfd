"""How good samples are, as pure functions of tensors (no files): sliced Wasserstein distance, the
Frechet distance of the digits (``fd_digits``) with its classifier, and class accuracy."""

from __future__ import annotations

from .classes import class_accuracy
from .digits import DigitsClassifier, DigitsJudge, frechet_distance, has_judge, train_classifier
from .sliced import sliced_wasserstein

__all__ = ["DigitsClassifier", "DigitsJudge", "class_accuracy", "frechet_distance", "has_judge", "sliced_wasserstein",
           "train_classifier"]
