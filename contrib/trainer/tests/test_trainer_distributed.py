"""Two processes on the CPU under torchrun: DistributedDataParallel over gloo, rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from diffusion_schemes_trainer import load_checkpoint
from diffusion_schemes_trainer.storage import LOCK_NAME
from diffusion_schemes_trainer.training import setup

TINY = ["--steps", "12", "--batch-size", "32", "--sampling-steps", "3", "-q", "--set", "data.train_size=512",
        "--set", "data.eval_size=64", "--set", "model.hidden=16", "--set", "model.depth=1",
        "--set", "projections=16", "--set", "checkpoint_every=6", "--set", "log_every=3"]


def torchrun(*args, cwd):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "diffusion_schemes_trainer", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.slow
def test_two_processes_train_with_ddp_and_only_rank_0_writes(tmp_path):
    run_dir = tmp_path / "run"
    proc = torchrun("train", *TINY, "--run-dir", run_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("result after 12 steps") == 1  # the summary comes from rank 0 only
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["replicas_identical"] is True  # gradients were averaged: both ranks hold the same weights
    assert [s for s, _ in metrics["loss"]] == [3, 6, 9, 12]
    payload = load_checkpoint(run_dir)
    assert payload["step"] == 12 and payload["world_size"] == 2
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["checkpoint.pt", "metrics.json", "samples.pt", "samples.png", "loss.png", "ema", LOCK_NAME]
    )  # the lock file stays (an OS lock: released with the process, its file kept for the next one)
    assert [p.name for p in (run_dir / "ema").iterdir()] == ["ema-00000012.pt"]  # the post-hoc EMA snapshot, once

    # a run started on 2 processes resumes on 1
    from diffusion_schemes import cli

    assert cli.main(["train", "--resume", str(run_dir), "--steps", "15", "-q"]) == 0
    assert load_checkpoint(run_dir)["step"] == 15


def test_one_process_needs_no_process_group():
    ctx = setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.distributed) == (0, 1, False)
    assert not torch.distributed.is_initialized()
