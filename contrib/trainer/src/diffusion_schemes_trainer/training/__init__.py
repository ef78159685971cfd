"""Training: the loop (:mod:`.trainer`) on one process or many (:mod:`.distributed`)."""

from __future__ import annotations

from .distributed import Context, setup
from .trainer import Trainer, check_resources, lr_factor, step_generator, train

__all__ = ["Context", "Trainer", "check_resources", "lr_factor", "setup", "step_generator", "train"]
