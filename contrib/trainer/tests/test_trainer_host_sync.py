"""The trainer's step reads no device value on the host.

A read of a tensor's value from Python (``.item()``, ``bool(t)``, ``float(t)``, ``.tolist()``,
``.cpu()``, ...) is a device synchronisation on an accelerator. The counter below wraps those
methods of ``torch.Tensor`` during CPU steps of the trainer and records which tensor was read.
The one read allowed is of Adam's step counters: torch keeps them on the CPU even when the
model is on a GPU (unless ``capturable=True``), so reading them never waits for the device.
The loss is read every ``log_every`` steps (for the log), not on every step.
"""

from __future__ import annotations

import contextlib
import pathlib

import pytest
import torch

from diffusion_schemes_trainer import load_config
from diffusion_schemes_trainer.training import Trainer, setup

READS = ("item", "tolist", "cpu", "__bool__", "__float__", "__int__", "__index__")
TINY = ["batch_size=32", "sampling_steps=3", "data.train_size=512", "data.eval_size=64", "model.hidden=16",
        "model.depth=1", "projections=16", "optimizer.warmup=5", "log_every=5", "checkpoint_every=1000",
        "ema_snapshot_every=1000", "steps=1000"]


@contextlib.contextmanager
def recording_reads(monkeypatch):
    """Yields the list of ``(method, tensor)`` read while the block runs."""
    reads: list[tuple[str, torch.Tensor]] = []
    with monkeypatch.context() as patch:
        for name in READS:
            original = getattr(torch.Tensor, name)

            def wrapped(self, *args, _name=name, _original=original, **kwargs):
                reads.append((_name, self))
                return _original(self, *args, **kwargs)

            patch.setattr(torch.Tensor, name, wrapped)
        yield reads


def _trainer(tmp_path: pathlib.Path, *extra: str) -> Trainer:
    config = load_config(overrides=[*TINY, *extra, f"run_dir='{tmp_path}'"])
    return Trainer(config, setup(config.device), tmp_path, None)


def _not_adam_steps(trainer: Trainer, reads: list[tuple[str, torch.Tensor]]) -> list[str]:
    steps = {id(state["step"]) for state in trainer.optimizer.state.values() if "step" in state}
    return [f"{name} of a tensor of shape {tuple(t.shape)}" for name, t in reads if id(t) not in steps]


@pytest.mark.parametrize("extra", [(), ("class_conditional=true",), ("uncertainty=true", "optimizer.grad_clip=1.0")],
                         ids=["default", "class-conditional", "uncertainty-clipped"])
def test_a_training_step_reads_nothing_on_the_host_but_adams_cpu_step_counters(tmp_path, monkeypatch, extra):
    trainer = _trainer(tmp_path, *extra)
    trainer.train_step()  # warm-up: the optimiser's state appears on its first step
    with recording_reads(monkeypatch) as reads:
        for _ in range(3):
            trainer.train_step()
    assert _not_adam_steps(trainer, reads) == []
    assert reads, "Adam reads its CPU step counter: a counter that records nothing is not counting"


def test_the_run_reads_the_loss_once_per_log_interval_not_per_step(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path)  # log_every = 5
    trainer.advance()
    while trainer.step % 5:
        trainer.advance()
    with recording_reads(monkeypatch) as reads:
        for _ in range(10):  # two log lines
            trainer.advance()
    others = _not_adam_steps(trainer, reads)
    assert len(others) == 2, others
    assert len(trainer.history["loss"]) >= 2


def test_the_recorder_sees_a_planted_read(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path)
    trainer.train_step()
    with recording_reads(monkeypatch) as reads:
        float(trainer.train_step())
    assert _not_adam_steps(trainer, reads) == ["__float__ of a tensor of shape ()"]
