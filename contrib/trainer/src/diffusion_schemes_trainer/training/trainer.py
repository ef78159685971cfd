"""The training loop: any preconditioner, schedule and weighting by name, on one process or many.

Each step draws its batch indices, training times and noise from a generator seeded by
``(seed, step, rank)``, so a run resumed from a checkpoint continues exactly as if it had
never stopped: same batches, same noise, same weights. Under ``torchrun`` the backbone is
wrapped in DistributedDataParallel (inside the preconditioner, so the loss still calls the
preconditioner with the schedule's noise level), each rank trains on its own shard of the
training set with ``batch_size / world_size`` samples a step, and only rank 0 writes.

>>> import tempfile
>>> from diffusion_schemes_trainer import load_config, train
>>> cfg = load_config(overrides=["steps=20", "data.train_size=512", "data.eval_size=64",
...                              "model.hidden=16", "sampling_steps=4", f"run_dir='{tempfile.mkdtemp()}'"])
>>> metrics = train(cfg, quiet=True)
>>> metrics["step"], sorted(metrics["final"])[:2]
(20, ['nfe', 'nll_bpd'])
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

import diffusion_schemes as ds

from .. import plots
from ..config import num_classes
from ..errors import RunInterrupted, TrainerError
from ..evaluation import evaluate, rank_blocks, sampling_calls
from ..likelihood import held_out_nll, nll_calls
from ..limits import check_fits, sampling_bytes, training_bytes
from ..posthoc_ema import PowerEMA
from ..report import progress
from ..runs import CLASSIFIER_NAME, classifier_for, digits_judge
from ..storage import (CHECKPOINT_NAME, RunLock, clear_outputs, deferred_interrupt, first_nonfinite, save_checkpoint,
                       save_snapshot, save_torch, write_json)
from .distributed import Context, setup

__all__ = ["Trainer", "check_resources", "lr_factor", "step_generator", "train"]

#: What a digits run adds to ``metrics.json``'s ``final`` (``class_accuracy`` only for samples drawn for given classes).
FD_KEYS = ("fd_digits", "fd_digits_floor", "class_confidence", "class_counts", "classifier_accuracy", "class_accuracy")


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The CPU generator of one step on one rank: a function of ``(seed, step, rank)`` only."""
    digest = hashlib.sha256(f"{seed}:{step}:{rank}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def lr_factor(opt: Any, step: int, steps: int) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then constant or cosine to 0."""
    if opt.warmup and step < opt.warmup:
        return (step + 1) / opt.warmup
    if opt.decay == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (step - opt.warmup) / max(1, steps - opt.warmup)))
    return 1.0


def _default_run_dir(config: Any) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{config.preconditioner.name}-{config.noise_schedule.name}-{config.data.name}-{stamp}"
    path, i = base, 2
    while path.exists():
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    return path


def prepare_run_dir(config: Any, resume: bool, overwrite: bool) -> Path:
    """Create (or check) the run directory; a clear error when it cannot be written or would be overwritten.

    Its old outputs are removed later, under the run lock (:func:`diffusion_schemes_trainer.storage.clear_outputs`).
    """
    path = Path(config.run_dir) if config.run_dir is not None else _default_run_dir(config)
    if not resume and (path / CHECKPOINT_NAME).exists() and not overwrite:
        raise TrainerError(
            f"the run directory {str(path)!r} already holds a checkpoint. Continue it with "
            f"`diffusion-schemes train --resume {path}`, start it again with --overwrite (which removes everything "
            "the previous run wrote there, its post-hoc EMA snapshots included), or pick another --run-dir."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise TrainerError(
            f"cannot write to the run directory {str(path)!r}: {exc.strerror or exc}. "
            "Pick a writable folder with --run-dir."
        ) from None
    return path


def check_resources(config: Any, data: Any, world_size: int = 1, device: Any = "cpu") -> None:
    """Refuse, before any work, a run whose data, batch or evaluation cannot fit in memory (the limit is named)."""
    size = config.data.train_size
    if config.batch_size > size:
        raise TrainerError(
            f"batch_size {config.batch_size} is larger than the training set (data.train_size = {size}): a batch "
            f"draws from the training set; use a batch of at most {size}"
        )
    check_fits(f"the training set (data.train_size = {size})", 3 * size * 8 * math.prod(data.shape), "cpu",
               "use a smaller data.train_size")
    local = config.batch_size // max(world_size, 1)
    check_fits(f"a training step of batch {local}", training_bytes(local, data.shape, config.model), device,
               "use a smaller --batch-size")
    check_fits(f"sampling the {config.data.eval_size} samples of an evaluation (data.eval_size)",
               sampling_bytes(config.data.eval_size, data.shape, config.model), device, "use a smaller data.eval_size")


class Trainer:
    """The state of one run (backbone, EMA, optimiser, history) and its steps."""

    def __init__(self, config: Any, ctx: Context, run_dir: Path, checkpoint: dict[str, Any] | None) -> None:
        self.config, self.ctx, self.run_dir = config, ctx, run_dir
        if config.batch_size % ctx.world_size:
            raise TrainerError(
                f"batch_size {config.batch_size} is not divisible by the {ctx.world_size} processes; "
                f"use a multiple of {ctx.world_size}"
            )
        self.local_batch = config.batch_size // ctx.world_size
        self.data = config.data.build()
        check_resources(config, self.data, ctx.world_size, ctx.device)
        self.splits = self.data.splits(config.data.train_size, config.data.eval_size, config.seed)
        self.judge = None
        if ctx.is_main:  # digits: judged by fd_digits (None for other data)
            self.judge = digits_judge(self.data, config.data.train_size, config.data.eval_size, config.seed, run_dir)
        self.shard = self.splits.train[ctx.rank :: ctx.world_size].to(ctx.device)
        bad = int((~torch.isfinite(self.splits.train)).sum())
        if bad:
            raise TrainerError(
                f"the training data ({config.data.name}) holds {bad} NaN or infinite values out of "
                f"{self.splits.train.numel()}; fix the data set or its config (data.*) before training"
            )
        self.num_classes = num_classes(config, self.data)
        self.labels = None
        if self.num_classes:
            self.labels = self.splits.train_labels[ctx.rank :: ctx.world_size].to(ctx.device)
        torch.manual_seed(config.seed)  # the backbone's initial weights
        self.backbone = config.model.build(self.data.shape, self.num_classes).to(ctx.device)
        self.ema = copy.deepcopy(self.backbone).requires_grad_(False) if config.optimizer.ema_decay > 0 else None
        self.posthoc = PowerEMA(self.backbone, config.ema_profiles) if config.ema_profiles else None
        net = self.backbone
        if ctx.distributed:
            ids = [ctx.device] if ctx.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(self.backbone, device_ids=ids)
        self.precond = ds.create("preconditioner", config.preconditioner, model=net)
        self.schedule = ds.create("noise_schedule", config.noise_schedule)
        dropout = {}
        if self.num_classes:  # the extra label K is "no class", the null condition of guidance
            null = torch.tensor([self.num_classes], device=ctx.device)
            dropout = {"condition_dropout": config.condition_dropout, "null_condition": null}
        self.loss_fn = ds.MSEDSMLoss(self.precond, self.schedule, weighting=config.weighting,
                                     uncertainty=config.uncertainty, **dropout)
        self.classifier = None
        params = list(self.backbone.parameters())
        if self.loss_fn.uncertainty is not None:  # EDM2's learned weighting u(sigma) trains with the model
            self.loss_fn.uncertainty.to(ctx.device)
            params += list(self.loss_fn.uncertainty.parameters())
        opt = config.optimizer
        cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
        self.optimizer = cls(params, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)
        self.step = 0
        self.saved_step: int | None = None  # the step of the checkpoint on disk, if any
        self.history: dict[str, list[Any]] = {"loss": [], "eval": []}
        self.train_time = 0.0
        self.last_loss: float | None = None
        self._acc: Any = 0
        self._count = 0
        if checkpoint is not None:
            self._restore(checkpoint)

    # ------------------------------------------------------------------ checkpoints
    def _restore(self, payload: dict[str, Any]) -> None:
        try:
            self.backbone.load_state_dict(payload["model"])
            if self.ema is not None:
                self.ema.load_state_dict(payload.get("ema") or payload["model"])
            if self.posthoc is not None and payload.get("posthoc_ema") is not None:
                self.posthoc.load_state_dict(payload["posthoc_ema"])
            if self.loss_fn.uncertainty is not None and payload.get("uncertainty") is not None:
                self.loss_fn.uncertainty.load_state_dict(payload["uncertainty"])
            if payload.get("optimizer"):
                self.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainerError(
                f"the checkpoint does not fit this run's model or optimiser ({exc}); resume without "
                "changing the model, or start a new run"
            ) from None
        if "rng" in payload and "torch" in payload["rng"]:
            torch.set_rng_state(payload["rng"]["torch"])
        self.step = self.saved_step = int(payload["step"])
        self.history = {"loss": list(payload.get("history", {}).get("loss", [])),
                        "eval": list(payload.get("history", {}).get("eval", []))}
        self.train_time = float(payload.get("train_time_s", 0.0))

    def payload(self) -> dict[str, Any]:
        """Everything to resume or rebuild the run, as plain data."""
        return {
            "step": self.step,
            "config": self.config.model_dump(mode="json"),
            "specs": {
                "preconditioner": self.precond.spec.model_dump(mode="json"),
                "noise_schedule": self.schedule.spec.model_dump(mode="json"),
            },
            "model": self.backbone.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "posthoc_ema": self.posthoc.state_dict() if self.posthoc is not None else None,
            "uncertainty": self.loss_fn.uncertainty.state_dict() if self.loss_fn.uncertainty is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "history": self.history,
            "train_time_s": self.train_time,
            "world_size": self.ctx.world_size,
        }

    def save(self) -> None:
        self.check_finite()
        with deferred_interrupt():  # Ctrl-C waits until the checkpoint and saved_step agree
            if self.ctx.is_main:
                save_checkpoint(self.run_dir / CHECKPOINT_NAME, self.payload())
            self.saved_step = self.step
        self.ctx.barrier()

    def resume_hint(self) -> str:
        """Which checkpoint is on disk and how to continue from it (for error and interrupt messages)."""
        if self.saved_step is None:
            return f"no checkpoint was written in {str(self.run_dir)!r} yet"
        return (f"the checkpoint of step {self.saved_step} in {str(self.run_dir)!r} is intact; continue it with "
                f"`diffusion-schemes train --resume {self.run_dir}`")

    def check_finite(self) -> None:
        """Stop, naming the first non-finite tensor, before NaN or inf weights reach a checkpoint."""
        parts = {"model": self.backbone.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "ema": self.ema.state_dict() if self.ema is not None else None}  # in the order they go bad
        bad = next((b for b in (first_nonfinite({k: v}) for k, v in parts.items()) if b is not None), None)
        if bad is not None:
            raise TrainerError(
                f"at step {self.step}, {bad} holds NaN or inf (the update diverged), so no checkpoint was written; "
                f"{self.resume_hint()} and a lower optimizer.lr (--set optimizer.lr=...) or optimizer.grad_clip"
            )

    # ------------------------------------------------------------------ training
    def train_step(self) -> torch.Tensor:
        g = step_generator(self.config.seed, self.step, self.ctx.rank)
        idx = torch.randint(0, self.shard.shape[0], (self.local_batch,), generator=g)
        x0 = self.shard[idx.to(self.shard.device)]
        t = self.loss_fn.sample_time(self.local_batch, generator=g)
        noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.optimizer.lr * lr_factor(self.config.optimizer, self.step, self.config.steps)
        if self.labels is None:
            loss = self.loss_fn(x0, t=t.to(x0.device), noise=noise.to(x0.device))
        else:
            labels = self.labels[idx.to(self.labels.device)]
            loss = self.loss_fn(x0, t=t.to(x0.device), noise=noise.to(x0.device), condition=labels, generator=g)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.optimizer.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.backbone.parameters(), self.config.optimizer.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            # warm-started average (TensorFlow's ExponentialMovingAverage with num_updates)
            decay = min(self.config.optimizer.ema_decay, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                for e, p in zip(self.ema.parameters(), self.backbone.parameters()):
                    e.lerp_(p.detach(), 1 - decay)
        self.step += 1
        if self.posthoc is not None:
            self.posthoc.update(self.step)
            if self.ctx.is_main and (self.step % self.config.ema_snapshot_every == 0 or self.step == self.config.steps):
                save_snapshot(self.run_dir, self.step, self.posthoc.sigma_rels, self.posthoc.states)
        return loss.detach()

    def sampler(self) -> Any:
        """The preconditioner around the EMA weights (or the trained ones), for sampling."""
        if self.ema is None:
            return ds.create("preconditioner", self.config.preconditioner, model=self.backbone)
        return ds.create("preconditioner", self.config.preconditioner, model=self.ema)

    def measure(self, bar: Any = None) -> dict[str, Any]:
        """Sample the EMA weights and measure them (``bar``: a progress bar advanced once per solver step).

        Every rank samples its share of the samples; rank 0 gets the measurements, the others ``{}``.
        """
        cfg, ctx = self.config, self.ctx
        if self.num_classes and self.classifier is None and ctx.is_main:
            self.classifier = classifier_for(self.data, self.splits, cfg.seed)
        return evaluate(
            self.sampler(), self.schedule, self.splits, self.data, solver=cfg.solver, num_steps=cfg.sampling_steps,
            projections=cfg.projections, seed=cfg.seed, device=ctx.device,
            conditional=bool(self.num_classes), classifier=self.classifier, judge=self.judge,
            callback=None if bar is None else lambda info: bar.update(),
            rank=ctx.rank, world_size=ctx.world_size, gather=ctx.gather,
        )

    def likelihood(self, bar: Any = None) -> dict[str, Any]:
        """The held-out negative log-likelihood of the sampled weights (``nll_samples`` points of held-out set A).

        A class-conditional model is asked for its unconditional density (the null class), the one
        the data's own density (the floor) describes.
        """
        cfg = self.config
        points = self.splits.eval_a[: cfg.nll_samples]
        null = torch.full((points.shape[0],), self.num_classes) if self.num_classes else None
        return held_out_nll(self.sampler(), self.schedule, self.data, points, num_steps=cfg.nll_steps, seed=cfg.seed,
                            device=self.ctx.device, condition=null,
                            callback=None if bar is None else lambda info: bar.update(),
                            rank=self.ctx.rank, world_size=self.ctx.world_size, gather=self.ctx.gather)

    def evaluation_steps(self) -> int:
        """Solver steps of one :meth:`measure` on this rank (for its progress bar)."""
        blocks = len(rank_blocks(self.config.data.eval_size, self.ctx.rank, self.ctx.world_size))
        return self.config.sampling_steps * sampling_calls(self.data, bool(self.num_classes)) * blocks

    def advance(self) -> None:
        """One step of the run as :meth:`run` takes it: the optimiser step (with the EMAs and their snapshots), the
        loss record every ``log_every`` steps, a measurement every ``eval_every`` and a checkpoint every
        ``checkpoint_every`` steps."""
        cfg = self.config
        t0 = time.perf_counter()
        self._acc = self.train_step() + (self._acc if self._count else 0)
        self._count += 1
        if self.step % cfg.log_every == 0 or self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
            last = self.ctx.mean(float(self._acc) / self._count)
            if not math.isfinite(last):
                self.check_finite()  # names the diverged tensor when the weights are to blame
                raise TrainerError(
                    f"the loss became {last} at step {self.step} with finite weights; check the schemes' "
                    f"settings and the weighting; {self.resume_hint()}"
                )
            self.history["loss"].append([self.step, last])
            self.last_loss, self._count = last, 0
        self.train_time += time.perf_counter() - t0
        if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
            self.record_eval()
        if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
            self.save()

    def run(self, bar: Any, callback: Callable[[int], None] | None) -> None:
        """:meth:`advance` to the last step (``bar``: a progress bar; ``callback(step)`` after every step)."""
        while self.step < self.config.steps:
            self.advance()
            if bar is not None:
                bar.update()
                if self.last_loss is not None and self.step % self.config.log_every == 0:
                    bar.set_postfix(loss=f"{self.last_loss:.4f}", refresh=False)
            if callback is not None:
                callback(self.step)

    def record_eval(self, bar: Any = None) -> dict[str, Any] | None:
        """Measure the model (every rank samples, rank 0 measures) and record the distances in the history."""
        result = self.measure(bar) or None  # {} on the ranks other than 0
        if result is not None:
            entry = {"step": self.step, "sw": result["sw_model"], "sw_floor": result["sw_floor"]}
            if "fd_digits" in result:
                entry.update(fd_digits=result["fd_digits"], fd_digits_floor=result["fd_digits_floor"])
            self.history["eval"] = [e for e in self.history["eval"] if e["step"] != self.step] + [entry]
        self.ctx.barrier()
        return result


def uncertainty_curve(trainer: Trainer, points: int = 33) -> list[list[float]] | None:
    """``[[sigma, u(sigma)], ...]`` of the learned uncertainty weighting over the schedule's sampling
    range of noise levels (geometric), or None when the run does not learn one."""
    u = trainer.loss_fn.uncertainty
    if u is None:
        return None
    levels = trainer.schedule.noise_level(trainer.schedule.timesteps(2)[:2].to(torch.float64))
    hi, lo = (float(v) for v in levels)
    sigma = torch.logspace(math.log10(lo), math.log10(hi), points, dtype=torch.float64)
    with torch.no_grad():
        values = u(sigma.to(next(u.parameters()).device)).cpu()
    return [[float(s), float(v)] for s, v in zip(sigma, values)]


def _write_outputs(trainer: Trainer, result: dict[str, Any], wall: float, in_sync: bool) -> dict[str, Any]:
    cfg, run_dir = trainer.config, trainer.run_dir
    files = {"checkpoint": CHECKPOINT_NAME, "metrics": "metrics.json", "samples_tensor": "samples.pt"}
    save_torch(run_dir / "samples.pt", result["samples"], what="the samples")
    panels = [("held-out data", trainer.splits.eval_a),
              (f"model ({cfg.preconditioner.name} + {cfg.noise_schedule.name}, step {trainer.step})", result["samples"])]
    if result["exact_samples"] is not None:
        panels.append(("exact denoiser (perfect model)", result["exact_samples"]))
    if plots.samples_picture(str(run_dir / "samples.png"), panels, trainer.data.kind):
        files["samples_picture"] = "samples.png"
    if plots.loss_curve(str(run_dir / "loss.png"), trainer.history["loss"]):
        files["loss_picture"] = "loss.png"
    curve = uncertainty_curve(trainer)
    if curve is not None and plots.uncertainty_curve(str(run_dir / "uncertainty.png"), curve):
        files["uncertainty_picture"] = "uncertainty.png"
    final = {k: result[k] for k in ("sw_model", "sw_floor", "sw_exact", "nfe", "num_samples")}
    if result["class_accuracy"] is not None:  # class-conditional runs
        final["class_accuracy"] = result["class_accuracy"]
    final.update(
        ratio_to_floor=result["sw_model"] / result["sw_floor"] if result["sw_floor"] > 0 else None,
        projections=cfg.projections,
        solver=trainer.config.solver.model_dump(mode="json"),
        sampling_steps=cfg.sampling_steps,
        weights="ema" if trainer.ema is not None else "trained",
    )
    if curve is not None:
        final["uncertainty"] = curve
    final.update({k: v for k, v in result.items() if k.startswith("nll_")})
    if "fd_digits" in result:
        final.update({k: result[k] for k in FD_KEYS if result[k] is not None})
        final["fd_ratio_to_floor"] = result["fd_digits"] / result["fd_digits_floor"]
        files["classifier"] = CLASSIFIER_NAME
    metrics = {
        "step": trainer.step,
        "run_dir": str(run_dir),
        "scheme": {
            "preconditioner": trainer.precond.spec.model_dump(mode="json"),
            "noise_schedule": trainer.schedule.spec.model_dump(mode="json"),
            "weighting": cfg.model_dump(mode="json")["weighting"],
        },
        "data": cfg.data.name,
        "world_size": trainer.ctx.world_size,
        "replicas_identical": in_sync,
        "device": str(trainer.ctx.device),
        "train_time_s": trainer.train_time,
        "wall_time_s": wall,
        "final": final,
        "loss": trainer.history["loss"],
        "eval": trainer.history["eval"],
        "files": files,
        "config": cfg.model_dump(mode="json"),
    }
    write_json(run_dir / "metrics.json", metrics, what="the metrics")
    if "samples_picture" not in files:
        metrics["note"] = plots.MISSING
    return metrics


def train(
    config: Any,
    checkpoint: dict[str, Any] | None = None,
    overwrite: bool = False,
    callback: Callable[[int], None] | None = None,
    quiet: bool = False,
    stream: IO[str] | None = None,
) -> dict[str, Any]:
    """Train ``config`` (continuing ``checkpoint`` when given), then sample, measure and write the outputs.

    Returns the metrics (also written to ``metrics.json``) on rank 0 and ``{}`` on the other
    ranks. ``callback(step)`` runs after every step (tests use it to interrupt a run).
    """
    wall0 = time.perf_counter()
    config.use_threads()
    ctx = setup(config.device)
    lock, trainer = None, None
    try:
        decided = None
        if ctx.is_main:
            try:
                decided = str(prepare_run_dir(config, resume=checkpoint is not None, overwrite=overwrite))
            except TrainerError as exc:
                decided = exc
        decided = ctx.broadcast(decided)
        if isinstance(decided, TrainerError):
            raise decided
        run_dir = Path(decided)
        if ctx.is_main:
            lock = RunLock(run_dir).acquire()
            if checkpoint is None:  # a fresh run: nothing of a previous one (EMA snapshots included) stays
                clear_outputs(run_dir)
        ctx.barrier()
        config = config.model_copy(update={"run_dir": str(run_dir)})
        trainer = Trainer(config, ctx, run_dir, checkpoint)
        out = stream if stream is not None else sys.stderr
        show = ctx.is_main and not quiet
        if show:
            print(_header(trainer), file=out, flush=True)
        if trainer.step >= config.steps:
            if show:
                print(f"already at step {trainer.step} of {config.steps}; sampling only", file=out)
        else:
            with progress(config.steps, "train", out, initial=trainer.step, disable=not show) as bar:
                trainer.run(bar, callback)
        trainer.check_finite()
        in_sync = ctx.identical(trainer.backbone)
        if show:
            print(f"sampling {config.data.eval_size} samples with {config.solver.name}, {config.sampling_steps} steps"
                  + (f" on {ctx.world_size} processes" if ctx.distributed else "") + " ...", file=out, flush=True)
        with progress(trainer.evaluation_steps(), "sample", out, disable=not show) as bar:
            result = trainer.record_eval(bar)  # every rank samples its share; the result is rank 0's
        if config.nll_samples:
            n = min(config.nll_samples, config.data.eval_size)
            with progress(nll_calls(n, config.nll_steps, ctx.rank, ctx.world_size), "likelihood", out, unit="call",
                          disable=not show) as bar:
                likelihood = trainer.likelihood(bar)
            if result is not None:
                result.update(likelihood)
        trainer.save()
        if ctx.is_main:
            return _write_outputs(trainer, result, time.perf_counter() - wall0, in_sync)
        return {}
    except KeyboardInterrupt:
        if trainer is not None:
            where = f"at step {trainer.step}; {trainer.resume_hint()}"
        elif checkpoint is not None:
            where = f"before training resumed; the checkpoint of step {checkpoint['step']} is intact"
        else:
            where = "before training started; nothing was written"
        raise RunInterrupted(f"interrupted {where}") from None
    finally:
        if lock is not None:
            lock.release()
        ctx.close()


def _header(trainer: Trainer) -> str:
    cfg, ctx = trainer.config, trainer.ctx
    procs = f"{ctx.world_size} processes (DDP)" if ctx.distributed else "1 process"
    start = f", resuming at step {trainer.step}" if trainer.step else ""
    return (
        f"training preconditioner {cfg.preconditioner.name!r} with noise schedule {cfg.noise_schedule.name!r} "
        f"on {cfg.data.name} ({cfg.model.name} backbone): {cfg.steps} steps of batch {cfg.batch_size}, "
        f"{procs} on {ctx.device}{start}\nrun directory: {trainer.run_dir}"
    )
