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
>>> metrics["step"], sorted(metrics["final"])[:3]
(20, ['nfe', 'num_samples', 'projections'])
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

import diffusion_schemes as ds

from ._checkpoint import CHECKPOINT_NAME, FORMAT, save_checkpoint
from ._distributed import Context, setup
from ._errors import TrainerError
from ._evaluate import evaluate
from ._fd import CLASSIFIER_NAME
from ._posthoc_ema import PowerEMA, save_snapshot
from ._progress import Progress

__all__ = ["num_classes", "step_generator", "train"]


def num_classes(config: Any, data: Any) -> int:
    """The number of classes the backbone is conditioned on: 0 unless ``class_conditional``."""
    if not config.class_conditional:
        return 0
    if not getattr(data, "num_classes", 0):
        raise TrainerError(
            f"--class-conditional needs a data set with classes; {config.data.name!r} has none. "
            "Use --data digits or --data gaussian_mixture (whose component is the class)."
        )
    return int(data.num_classes)

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
    """Create (or check) the run directory; a clear error when it cannot be written or would be overwritten."""
    path = Path(config.run_dir) if config.run_dir is not None else _default_run_dir(config)
    if not resume and (path / CHECKPOINT_NAME).exists() and not overwrite:
        raise TrainerError(
            f"the run directory {str(path)!r} already holds a checkpoint. Continue it with "
            f"`diffusion-schemes train --resume {path}`, start it again with --overwrite, or pick "
            "another --run-dir."
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


class _Trainer:
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
        self.splits = self.data.splits(config.data.train_size, config.data.eval_size, config.seed)
        self.judge = None
        from ._fd import digits_judge, has_judge

        if ctx.is_main and has_judge(self.data):  # digits: judged by fd_digits

            self.judge = digits_judge(self.data, config.data.train_size, config.data.eval_size, config.seed, run_dir)
        self.shard = self.splits.train[ctx.rank :: ctx.world_size].to(ctx.device)
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
        self.history: dict[str, list[Any]] = {"loss": [], "eval": []}
        self.train_time = 0.0
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
        self.step = int(payload["step"])
        self.history = {"loss": list(payload.get("history", {}).get("loss", [])),
                        "eval": list(payload.get("history", {}).get("eval", []))}
        self.train_time = float(payload.get("train_time_s", 0.0))

    def payload(self) -> dict[str, Any]:
        """Everything to resume or rebuild the run, as plain data."""
        return {
            "format": FORMAT,
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
        if self.ctx.is_main:
            save_checkpoint(self.run_dir / CHECKPOINT_NAME, self.payload())
        self.ctx.barrier()

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
                save_snapshot(self.run_dir, self.step, self.posthoc)
        return loss.detach()

    def sampler(self) -> Any:
        """The preconditioner around the EMA weights (or the trained ones), for sampling."""
        if self.ema is None:
            return ds.create("preconditioner", self.config.preconditioner, model=self.backbone)
        return ds.create("preconditioner", self.config.preconditioner, model=self.ema)

    def measure(self) -> dict[str, Any]:
        cfg = self.config
        if self.num_classes and self.classifier is None:
            from ._classifier import classifier_for

            self.classifier = classifier_for(self.data, self.splits, cfg.seed)
        return evaluate(
            self.sampler(), self.schedule, self.splits, self.data, solver=cfg.solver, num_steps=cfg.sampling_steps,
            projections=cfg.projections, seed=cfg.seed, device=self.ctx.device,
            conditional=bool(self.num_classes), classifier=self.classifier, judge=self.judge,
        )

    def run(self, progress: Progress | None, callback: Callable[[int], None] | None) -> None:
        cfg = self.config
        acc, count, last = torch.zeros((), device=self.ctx.device), 0, None
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            acc += self.train_step()
            count += 1
            if self.step % cfg.log_every == 0 or self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                last = self.ctx.mean(float(acc) / count)
                if not math.isfinite(last):
                    raise TrainerError(
                        f"the loss became {last} at step {self.step}; lower optimizer.lr or set optimizer.grad_clip"
                    )
                self.history["loss"].append([self.step, last])
                acc, count = torch.zeros((), device=self.ctx.device), 0
            self.train_time += time.perf_counter() - t0
            t_other = time.perf_counter()
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                self._record_eval()
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save()
            if progress is not None:
                progress.exclude(time.perf_counter() - t_other)
            if progress is not None:
                progress.update(self.step, last)
            if callback is not None:
                callback(self.step)

    def _record_eval(self) -> dict[str, Any] | None:
        result = self.measure() if self.ctx.is_main else None
        if result is not None:
            entry = {"step": self.step, "sw": result["sw_model"], "sw_floor": result["sw_floor"]}
            if "fd_digits" in result:
                entry.update(fd_digits=result["fd_digits"], fd_digits_floor=result["fd_digits_floor"])
            self.history["eval"] = [e for e in self.history["eval"] if e["step"] != self.step] + [entry]
        self.ctx.barrier()
        return result


def uncertainty_curve(trainer: _Trainer, points: int = 33) -> list[list[float]] | None:
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


def _write_outputs(trainer: _Trainer, result: dict[str, Any], wall: float, in_sync: bool) -> dict[str, Any]:
    from . import _plots

    cfg, run_dir = trainer.config, trainer.run_dir
    files = {"checkpoint": CHECKPOINT_NAME, "metrics": "metrics.json", "samples_tensor": "samples.pt"}
    torch.save(result["samples"], run_dir / "samples.pt")
    panels = [("held-out data", trainer.splits.eval_a),
              (f"model ({cfg.preconditioner.name} + {cfg.noise_schedule.name}, step {trainer.step})", result["samples"])]
    if result["exact_samples"] is not None:
        panels.append(("exact denoiser (perfect model)", result["exact_samples"]))
    if _plots.samples_picture(str(run_dir / "samples.png"), panels, trainer.data.kind):
        files["samples_picture"] = "samples.png"
    if _plots.loss_curve(str(run_dir / "loss.png"), trainer.history["loss"]):
        files["loss_picture"] = "loss.png"
    curve = uncertainty_curve(trainer)
    if curve is not None and _plots.uncertainty_curve(str(run_dir / "uncertainty.png"), curve):
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
    tmp = run_dir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(tmp, run_dir / "metrics.json")
    if "samples_picture" not in files:
        metrics["note"] = _plots.MISSING
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
    if config.threads:
        torch.set_num_threads(config.threads)
    ctx = setup(config.device)
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
        config = config.model_copy(update={"run_dir": str(run_dir)})
        trainer = _Trainer(config, ctx, run_dir, checkpoint)
        out = stream if stream is not None else sys.stderr
        show = ctx.is_main and not quiet
        if show:
            print(_header(trainer), file=out, flush=True)
        if trainer.step >= config.steps:
            if show:
                print(f"already at step {trainer.step} of {config.steps}; sampling only", file=out)
        else:
            progress = Progress(config.steps, trainer.step, out) if show else None
            trainer.run(progress, callback)
            if progress is not None:
                progress.close()
        in_sync = ctx.identical(trainer.backbone)
        if ctx.is_main:
            if show:
                print(f"sampling {config.data.eval_size} samples with {config.solver.name}, "
                      f"{config.sampling_steps} steps ...", file=out, flush=True)
            result = trainer._record_eval()
            trainer.save()
            return _write_outputs(trainer, result, time.perf_counter() - wall0, in_sync)
        trainer._record_eval()
        trainer.save()
        return {}
    finally:
        ctx.close()


def _header(trainer: _Trainer) -> str:
    cfg, ctx = trainer.config, trainer.ctx
    procs = f"{ctx.world_size} processes (DDP)" if ctx.distributed else "1 process"
    start = f", resuming at step {trainer.step}" if trainer.step else ""
    return (
        f"training preconditioner {cfg.preconditioner.name!r} with noise schedule {cfg.noise_schedule.name!r} "
        f"on {cfg.data.name} ({cfg.model.name} backbone): {cfg.steps} steps of batch {cfg.batch_size}, "
        f"{procs} on {ctx.device}{start}\nrun directory: {trainer.run_dir}"
    )
