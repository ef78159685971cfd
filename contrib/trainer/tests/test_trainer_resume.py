"""Checkpoints: plain data read with weights_only, rebuilt by name, written atomically, and a resumed
run that ends exactly where an uninterrupted one does."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes_trainer import load_checkpoint, load_config, save_checkpoint, train
from diffusion_schemes_trainer.runs import rebuild

TINY = ["steps=30", "batch_size=32", "sampling_steps=3", "data.train_size=512", "data.eval_size=64",
        "model.hidden=16", "model.depth=1", "projections=16", "checkpoint_every=10", "log_every=5",
        "optimizer.warmup=5", "optimizer.decay='cosine'"]


class Killed(Exception):
    """Stands for the process dying."""


def tiny(run_dir, *extra):
    return load_config(overrides=[*TINY, *extra, f"run_dir='{run_dir}'"])


def assert_same_state(a, b, where="state"):
    """Equal structure and values, tensors bit for bit."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole = train(tiny(tmp_path / "whole"), quiet=True)

    def die_at_25(step):  # after the checkpoint at step 20: steps 21 to 25 are lost and redone
        if step == 25:
            raise Killed

    with pytest.raises(Killed):
        train(tiny(tmp_path / "cut"), quiet=True, callback=die_at_25)
    payload = load_checkpoint(tmp_path / "cut")
    assert payload["step"] == 20
    resumed = train(tiny(tmp_path / "cut"), checkpoint=payload, quiet=True)

    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "cut")
    assert a["step"] == b["step"] == 30
    for key in ("model", "ema", "posthoc_ema", "optimizer", "history"):
        assert_same_state(a[key], b[key], key)
    assert a["posthoc_ema"] is not None  # EDM2's two profiles are tracked by default and resume exactly
    assert whole["final"]["sw_model"] == resumed["final"]["sw_model"]
    assert torch.equal(torch.load(tmp_path / "whole" / "samples.pt"), torch.load(tmp_path / "cut" / "samples.pt"))


def test_resume_from_the_command_line_extends_a_run(tmp_path, capsys, fresh_registry):
    from diffusion_schemes import cli

    args = [f"--set={o}" for o in TINY if not o.startswith("steps=")]
    assert cli.main(["train", *args, "--steps", "10", "-q", "--run-dir", str(tmp_path)]) == 0
    assert cli.main(["train", "--resume", str(tmp_path), "--steps", "20", "-q"]) == 0
    out = capsys.readouterr().out
    assert "result after 20 steps" in out
    payload = load_checkpoint(tmp_path)
    assert payload["step"] == 20 and payload["config"]["steps"] == 20
    assert [s for s, _ in payload["history"]["loss"]] == [5, 10, 15, 20]


def test_checkpoint_is_plain_data_and_rebuilds_by_name(tmp_path):
    train(tiny(tmp_path, "steps=10"), quiet=True)
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)

    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, (str, int)) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, int, float, bool, torch.Tensor))

    assert plain(payload)
    assert payload["specs"] == {
        "preconditioner": {"name": "edm", "sigma_data": 0.5},
        "noise_schedule": ds.create("noise_schedule", payload["specs"]["noise_schedule"]).spec.model_dump(mode="json"),
    }
    config, precond, schedule = rebuild(payload)
    assert isinstance(precond, ds.BaseAffinePreconditioner) and precond.spec.name == "edm"
    assert schedule.spec.model_dump(mode="json") == payload["specs"]["noise_schedule"]
    # the rebuilt preconditioner carries the EMA weights: same output as a backbone loaded by hand
    backbone = config.model.build((2,))
    backbone.load_state_dict(payload["ema"])
    by_hand = ds.create("preconditioner", {"name": "edm", "sigma_data": 0.5}, model=backbone)
    x, sigma = torch.randn(5, 2), torch.rand(5) + 0.1
    with torch.no_grad():
        torch.testing.assert_close(precond(x, sigma), by_hand(x, sigma), rtol=0, atol=0)
        assert not torch.equal(precond(x, sigma), precond.forward_sigma(x, sigma) * 0)


def test_a_write_that_fails_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": "diffusion-schemes-trainer/1", "step": 1, "config": {}, "specs": {}, "model": {}})

    def full_disk(obj, fh):
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ds.DiffusionSchemesError, match="No space left"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_a_process_killed_mid_write_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": "diffusion-schemes-trainer/1", "step": 1, "config": {}, "specs": {}, "model": {}})
    script = textwrap.dedent(f"""
        import os, signal, torch
        from diffusion_schemes_trainer import save_checkpoint
        real_save = torch.save
        def save_then_die(obj, fh):
            real_save(obj, fh)          # the bytes are written, but not yet in place
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = save_then_die
        save_checkpoint({str(path)!r}, {{"format": "diffusion-schemes-trainer/1", "step": 2, "config": {{}},
                                         "specs": {{}}, "model": {{"w": torch.ones(1000)}}}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert load_checkpoint(path)["step"] == 1


def test_a_checkpoint_is_flushed_then_renamed_then_its_folder_flushed(tmp_path, monkeypatch):
    """The rename is an entry of the folder: the folder is flushed after it, so the new checkpoint survives a crash
    of the machine; the file's own bytes are flushed before it."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(tmp_path / "checkpoint.pt", {"format": "diffusion-schemes-trainer/1", "step": 1, "config": {},
                                                 "specs": {}, "model": {}})
    assert events == [("fsync", "file"), ("replace", "checkpoint.pt"), ("fsync", "folder")]


def test_a_folder_that_cannot_be_flushed_is_left_to_the_os_and_an_io_error_is_raised(tmp_path, monkeypatch):
    from diffusion_schemes_trainer.storage.atomic import sync_folder

    def unsupported(fd):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "fsync", unsupported)
    sync_folder(tmp_path)  # a file system that cannot flush a folder: nothing to do

    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError, match="Input/output"):
        sync_folder(tmp_path)
    path = tmp_path / "checkpoint.pt"
    monkeypatch.setattr(os, "fsync", lambda fd: failing(fd) if stat.S_ISDIR(os.fstat(fd).st_mode) else None)
    with pytest.raises(ds.DiffusionSchemesError, match="Input/output error"):
        save_checkpoint(path, {"format": "diffusion-schemes-trainer/1", "step": 1, "config": {}, "specs": {},
                               "model": {}})
