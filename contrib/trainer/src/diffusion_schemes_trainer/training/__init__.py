"""Training: the loop (:mod:`.trainer`) on one process or many (:mod:`.distributed`)."""

from __future__ import annotations

from .distributed import Context, launched_world_size, setup
from .trainer import Trainer, check_resources, lr_factor, step_generator, train

__all__ = [
    "Context", "Trainer", "check_resources", "launched_world_size", "lr_factor", "setup", "step_generator", "train",
]
