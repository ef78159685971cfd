"""Everything the trainer writes or reads on disk, and nothing else.

- :mod:`.atomic`: the one atomic-write helper (temporary file, fsync, ``os.replace``, SIGINT held back);
- :mod:`.verified`: files carrying a SHA-256 checksum over byte views of their tensors, verified with
  their structure on load;
- :mod:`.checkpoint`: the run's checkpoint; :mod:`.snapshots`: the post-hoc EMA snapshots;
- :mod:`.rundir`: the run-directory lock (an OS lock, ``filelock``) and the list of a run's outputs.

The digits classifier's file is a verified file too (:mod:`diffusion_schemes_trainer.runs`).
"""

from __future__ import annotations

from .atomic import deferred_interrupt, save_torch, write_atomically, write_json, write_text
from .checkpoint import CHECKPOINT_NAME, FORMAT, load_checkpoint, save_checkpoint
from .rundir import LOCK_NAME, RUN_OUTPUTS, RunLock, clear_outputs, outputs_in
from .snapshots import SNAPSHOT_DIR, load_snapshots, save_snapshot
from .verified import checksum, first_nonfinite, load_verified, save_verified

__all__ = ["CHECKPOINT_NAME", "FORMAT", "LOCK_NAME", "RUN_OUTPUTS", "SNAPSHOT_DIR", "RunLock", "checksum",
           "clear_outputs", "deferred_interrupt", "first_nonfinite", "load_checkpoint", "load_snapshots",
           "load_verified", "outputs_in", "save_checkpoint", "save_snapshot", "save_torch", "save_verified",
           "write_atomically", "write_json", "write_text"]
