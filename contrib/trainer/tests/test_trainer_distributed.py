"""Two processes on the CPU under torchrun: DistributedDataParallel over gloo, rank 0 writes; sampling, its
measurements and the likelihood give on two processes what they give on one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes_trainer import MixtureData, TrainerError, load_checkpoint
from diffusion_schemes_trainer.evaluation import BLOCK, evaluate, generate, rank_blocks
from diffusion_schemes_trainer.storage import LOCK_NAME
from diffusion_schemes_trainer.training import setup

# 600 held-out samples: three blocks of sampling (rank 0 of 2 makes one, rank 1 two); 300 likelihood points: two chunks
TINY = ["--steps", "12", "--batch-size", "32", "--sampling-steps", "3", "-q", "--set", "data.train_size=512",
        "--set", "data.eval_size=600", "--set", "model.hidden=16", "--set", "model.depth=1",
        "--set", "projections=16", "--set", "checkpoint_every=6", "--set", "log_every=3",
        "--set", "nll_samples=300", "--set", "nll_steps=4"]


def torchrun(*args, cwd):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "diffusion_schemes_trainer", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def one_process(*args, cwd):
    """The same command on one process, with the thread count torchrun gives each of its processes."""
    cmd = [sys.executable, "-m", "diffusion_schemes_trainer", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def without_paths(text, *folders):
    """The printed output with the output folders' names taken out (the only place the two runs differ)."""
    for folder in folders:
        text = text.replace(str(folder), "OUT")
    return text


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

    # the final measurement was sampled by both ranks: the samples are those one process makes from the checkpoint
    alone = ok(one_process("sample", run_dir, "--out", tmp_path / "alone", "-q", cwd=tmp_path))
    again = torch.load(tmp_path / "alone" / "samples-heun-3.pt")
    assert again.shape == (600, 2) and torch.equal(torch.load(run_dir / "samples.pt"), again)
    assert f"sliced Wasserstein distance to held-out data: {metrics['final']['sw_model']:.4f}" in alone.stdout
    assert metrics["final"]["nll_num_samples"] == 300  # the likelihood ran on both ranks too (chunks 0 and 1)

    # a run started on 2 processes resumes on 1
    from diffusion_schemes import cli

    assert cli.main(["train", "--resume", str(run_dir), "--steps", "15", "-q"]) == 0
    assert load_checkpoint(run_dir)["step"] == 15


def test_one_process_needs_no_process_group():
    ctx = setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.distributed) == (0, 1, False)
    assert not torch.distributed.is_initialized()


@pytest.fixture(scope="module")
def mixture_run(tmp_path_factory):
    """A tiny run on the Gaussian mixture, trained once on one process."""
    where = tmp_path_factory.mktemp("distributed-mixture")
    ok(one_process("train", *TINY, "--run-dir", where / "run", cwd=where))
    return where / "run"


@pytest.mark.slow
def test_sample_on_two_processes_gives_the_samples_and_numbers_of_one(mixture_run, tmp_path):
    args = ["sample", mixture_run, "--solver", "euler_ancestral", "-q"]  # stochastic: noise at every step
    one = ok(one_process(*args, "--out", tmp_path / "one", cwd=tmp_path))
    two = ok(torchrun(*args, "--out", tmp_path / "two", cwd=tmp_path))
    samples = torch.load(tmp_path / "one" / "samples-euler_ancestral-3.pt")
    assert samples.shape == (600, 2)
    assert torch.equal(samples, torch.load(tmp_path / "two" / "samples-euler_ancestral-3.pt"))  # bit for bit
    # the distances (model, floor, exact denoiser) are measured by rank 0 on the same samples: the same numbers
    assert "sliced Wasserstein distance to held-out data" in one.stdout
    assert without_paths(one.stdout, tmp_path / "one") == without_paths(two.stdout, tmp_path / "two")
    assert two.stdout.count("600 samples") == 1  # rank 0 alone prints
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())

    # a sample count that is not the held-out set's (no measurement): the same samples too
    args = ["sample", mixture_run, "--solver", "edm_stochastic_heun", "--num-samples", "300", "-q"]
    ok(one_process(*args, "--out", tmp_path / "one", cwd=tmp_path))
    ok(torchrun(*args, "--out", tmp_path / "two", cwd=tmp_path))
    name = "samples-edm_stochastic_heun-3.pt"
    assert torch.equal(torch.load(tmp_path / "one" / name), torch.load(tmp_path / "two" / name))


@pytest.mark.slow
def test_a_failure_on_rank_0_stops_both_processes_instead_of_leaving_one_waiting(mixture_run, tmp_path):
    (tmp_path / "a-file").write_text("")
    proc = torchrun("sample", mixture_run, "--out", tmp_path / "a-file" / "out", "-q", cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.count("cannot create the output folder") == 2  # rank 0's own error, and rank 1 told of it
    assert "rank 0 failed: cannot create the output folder" in proc.stderr


@pytest.mark.slow
def test_nll_on_two_processes_gives_the_number_of_one(mixture_run, tmp_path):
    ok(one_process("nll", mixture_run, "-q", cwd=tmp_path))
    one = json.loads((mixture_run / "nll.json").read_text())
    ok(torchrun("nll", mixture_run, "-q", cwd=tmp_path))
    two = json.loads((mixture_run / "nll.json").read_text())
    assert (one["world_size"], two["world_size"], one["nll_num_samples"]) == (1, 2, 300)
    same = ["nll_bpd", "nll_bpd_stderr", "nll_bpd_floor", "nll_nfe", "nll_num_samples", "nll_divergence", "nll_steps"]
    assert {k: two[k] for k in same} == {k: one[k] for k in same}  # exact: each chunk's sum is made on one rank


@pytest.mark.slow
def test_fd_digits_on_two_processes_is_the_number_of_one(tmp_path):
    ok(one_process("train", "--data", "digits", "--steps", "5", "--batch-size", "32", "--sampling-steps", "2", "-q",
                   "--set", "data.eval_size=300", "--set", "nll_samples=0", "--run-dir", tmp_path / "run",
                   cwd=tmp_path))
    args = ["sample", tmp_path / "run", "--solver", "edm_stochastic_heun", "-q"]
    one = ok(one_process(*args, "--out", tmp_path / "one", cwd=tmp_path))
    two = ok(torchrun(*args, "--out", tmp_path / "two", cwd=tmp_path))
    name = "samples-edm_stochastic_heun-2.pt"
    samples = torch.load(tmp_path / "one" / name)
    assert samples.shape == (300, 1, 8, 8) and torch.equal(samples, torch.load(tmp_path / "two" / name))
    assert "Frechet distance in the digits classifier's features (fd_digits)" in one.stdout
    assert without_paths(one.stdout, tmp_path / "one") == without_paths(two.stdout, tmp_path / "two")


def _mixture():
    data = MixtureData(means=[[-0.5, 0.0], [0.5, 0.0]], stds=[0.1, 0.1])
    splits = data.splits(train_size=10, eval_size=BLOCK + 40, seed=0)
    return data, splits, ds.create("noise_schedule", "edm")


def test_rank_blocks_cover_every_sample_once_in_order_for_any_number_of_processes():
    for n in (1, BLOCK - 1, BLOCK, 5 * BLOCK + 3):
        for world in (1, 2, 3, 8):
            blocks = [b for r in range(world) for b in rank_blocks(n, r, world)]
            assert [i for b in blocks for i in b] == list(range(n))
            assert all(b.start % BLOCK == 0 and len(b) <= BLOCK for b in blocks)  # the blocks do not move


def test_evaluate_gathers_the_ranks_samples_into_what_one_process_makes():
    data, splits, schedule = _mixture()
    from diffusion_schemes_trainer.evaluation import exact_predictor

    model = exact_predictor(data.mixture, schedule)
    kw = dict(solver="euler_ancestral", num_steps=4, projections=16, seed=3)
    alone = evaluate(model, schedule, splits, data, **kw)
    handed = []
    assert evaluate(model, schedule, splits, data, rank=1, world_size=2,
                    gather=lambda mine: handed.append(mine) or [([], None, None), mine], **kw) == {}  # rank 1: nothing
    got = evaluate(model, schedule, splits, data, rank=0, world_size=2,
                   gather=lambda mine: [mine, handed.pop(0)], **kw)
    assert torch.equal(got["samples"], alone["samples"]) and torch.equal(got["exact_samples"], alone["exact_samples"])
    assert (got["sw_model"], got["sw_exact"], got["nfe"]) == (alone["sw_model"], alone["sw_exact"], alone["nfe"])


def test_a_failure_on_one_rank_is_raised_on_every_rank():
    data, splits, schedule = _mixture()
    told = []

    def broken(x, t, condition=None):
        raise RuntimeError("the network broke")

    with pytest.raises(RuntimeError, match="the network broke"):  # the failing rank raises its own error ...
        generate(broken, schedule, (BLOCK + 40, 2), "heun", 2, 0, rank=0, world_size=2,
                 gather=lambda mine: told.append(mine) or [mine, ([], 3, None)])
    assert told and "the network broke" in told[0][2]  # ... after telling the others, who raise too
    with pytest.raises(TrainerError, match="sampling failed on rank 0 of 2: .*the network broke"):
        generate(lambda x, t, condition=None: x, schedule, (BLOCK + 40, 2), "heun", 2, 0, rank=1, world_size=2,
                 gather=lambda mine: [told[0], mine])


@pytest.mark.parametrize("command", ["ema", "compare"])
def test_commands_that_run_on_one_process_refuse_torchrun(tmp_path, monkeypatch, command):
    """``ema`` and ``compare`` would each do the whole job on every process and write the same files."""
    import argparse

    from diffusion_schemes_trainer.commands import add_commands

    parser = argparse.ArgumentParser(prog="diffusion-schemes")
    add_commands(parser.add_subparsers(dest="command"))
    run_dir = str(tmp_path / "run")
    args = parser.parse_args([command, run_dir] if command == "ema" else [command, "--run-dir", run_dir])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TrainerError, match=rf"`{command}` runs on one process.*without torchrun.*train, sample, nll"):
        args.func(args)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: the command starts (and fails on the missing run)
    if command == "ema":
        with pytest.raises(TrainerError, match="run"):
            args.func(args)
