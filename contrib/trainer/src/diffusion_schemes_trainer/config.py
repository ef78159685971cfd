"""The trainer's config: a pydantic model that embeds the schemes' spec types, read from TOML.

Schemes are fields typed with :func:`diffusion_schemes.spec_type`, so any installed
preconditioner, noise schedule, weighting or solver, ours or a third party's, is picked by
name and validated against its own spec. Data sets and backbones are the trainer's own
discriminated unions. Unknown fields are errors everywhere, with the closest field named.

>>> from diffusion_schemes_trainer import load_config
>>> cfg = load_config(overrides=["optimizer.lr=1e-3", "noise_schedule.P_mean=-1.0"])
>>> cfg.optimizer.lr, cfg.noise_schedule.P_mean
(0.001, -1.0)
>>> load_config(overrides=["optimiser.lr=1e-3"])
Traceback (most recent call last):
  ...
diffusion_schemes_trainer.errors.TrainerError: invalid trainer config (built-in defaults with overrides):
  - optimiser: unknown field. Did you mean 'optimizer'? ...
"""

from __future__ import annotations

import copy
import difflib
import functools
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import tomli_w
import torch
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

import diffusion_schemes as ds

from .data import DATA_CLASSES, DataConfig, GaussianMixtureConfig
from .errors import TrainerError
from .models import MLPConfig, ModelConfig
from .posthoc_ema import sigma_rel_to_gamma
from .schema import Section, no_bools

__all__ = ["DATA_CLASSES", "DEFAULT_CONFIG", "MAX_SAMPLING_STEPS", "TrainConfig", "config_model", "dumps", "load_config",
           "num_classes", "parse_overrides", "parse_value", "read_toml"]

#: The embedded default config (EDM on the 2-D Gaussian mixture, small MLP, CPU).
DEFAULT_CONFIG = "default.toml"
#: The most CPU threads a process may ask for (torch.set_num_threads(100_000) crashes the process).
MAX_THREADS = 256
#: The most solver steps a run may sample with: the solvers converge long before, and more would take hours.
MAX_SAMPLING_STEPS = 10_000
#: A number in (0, inf): a scale, a weight.
_Positive = Annotated[float, Field(gt=0)]


class OptimizerConfig(Section):
    """Adam(W) with linear warm-up, an optional cosine decay, gradient clipping and an EMA of the weights."""

    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(2e-3, gt=0, description="Peak learning rate.")
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.999), description="Adam's beta1, beta2, each in [0, 1)."
    )
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (decoupled for adamw).")
    warmup: int = Field(200, ge=0, description="Steps of linear learning-rate warm-up.")
    decay: Literal["constant", "cosine"] = Field("cosine", description="Learning rate after warm-up.")
    grad_clip: float | None = Field(None, gt=0, description="Clip the gradient norm to this value.")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="Decay of the weight EMA used for sampling (0: none).")


def _check_weighting(value: Any) -> Any:
    """``"default"``, a number, or a weighting spec validated by the registry (one clear error)."""
    if value == "default" or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, (str, Mapping, ds.SchemeSpec)):
        try:
            return ds.parse_spec("weighting", value)
        except ds.DiffusionSchemesError as exc:
            raise ValueError(str(exc)) from None
    raise ValueError(f"a weighting is 'default', a number or a weighting by name or config; got {value!r}")


def _config_errors(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "tagged-union")))]
        where = ".".join(str(p) for p in loc) or "(config)"
        if err["type"] == "extra_forbidden":
            fields = _fields_at(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            lines.append(f"  - {where}: unknown field.{hint} Valid fields here: {', '.join(fields) or '(none)'}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  - {where}: {msg} (got {err.get('input')!r})")
    return lines


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The field names of the (sub)model at ``loc``; a union's member is named by its tag in ``loc``."""
    current: Any = model
    i = 0
    while i < len(loc):
        fields = getattr(current, "model_fields", {})
        if loc[i] not in fields:
            return []
        members = _models_in(fields[loc[i]].annotation)
        i += 1
        if len(members) == 1:
            current = members[0]
            continue
        tagged = [m for m in members if i < len(loc) and m.model_fields["name"].default == loc[i]]
        if not tagged:
            return []
        current, i = tagged[0], i + 1
    return [f for f in getattr(current, "model_fields", {}) if f != "name"]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


@functools.lru_cache(maxsize=8)
def _build_model(installed: tuple[tuple[str, str], ...]) -> type[BaseModel]:
    preconditioner_type = ds.spec_type("preconditioner")
    schedule_type = ds.spec_type("noise_schedule")
    solver_type = ds.spec_type("solver")

    class TrainConfig(BaseModel):
        """Everything one training run needs; every scheme is picked by name among the installed ones."""

        model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

        preconditioner: preconditioner_type = Field("edm", description="Preconditioner wrapping the backbone.")
        noise_schedule: schedule_type = Field("edm", description="Noise schedule: training times and sampling steps.")
        weighting: Union[Literal["default"], _Positive, SerializeAsAny[ds.WeightingSpec]] = Field(
            "default",
            description="Loss weighting: 'default' (the schedule's own), a constant > 0, or a weighting by name.",
        )
        uncertainty: bool = Field(
            False, description="Learn the loss weight per noise level, u(sigma) (EDM2's uncertainty weighting)."
        )
        ema_profiles: tuple[float, ...] = Field(
            (0.05, 0.10), description="Widths sigma_rel of the power-function EMAs kept for post-hoc EMA (EDM2; () for none)."
        )
        ema_snapshot_every: int = Field(200, ge=1, description="Save the post-hoc EMA snapshots every this many steps.")
        solver: solver_type = Field("heun", description="Solver used to sample after training.")
        sampling_steps: int = Field(32, ge=1, le=MAX_SAMPLING_STEPS,
                                    description=f"Solver steps when sampling (at most {MAX_SAMPLING_STEPS}).")
        data: DataConfig = Field(default_factory=GaussianMixtureConfig, description="Training data.")
        model: ModelConfig = Field(default_factory=MLPConfig, description="Backbone network.")
        optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="Optimiser and EMA.")
        steps: int = Field(3000, ge=1, description="Optimiser steps.")
        batch_size: int = Field(256, ge=1, description="Global batch size (split over processes).")
        seed: int = Field(
            0, ge=0, lt=2**63, description="Seed of the data, initialisation, training noise and sampling (< 2**63)."
        )
        device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when available).")
        threads: int = Field(
            1, ge=0, le=MAX_THREADS,
            description=f"CPU threads per process (torch.set_num_threads, at most {MAX_THREADS}); 0 keeps torch's default.",
        )
        run_dir: str | None = Field(None, description="Output folder; a new one under runs/ when not set.")
        checkpoint_every: int = Field(500, ge=1, description="Write a checkpoint every this many steps.")
        eval_every: int = Field(0, ge=0, description="Measure the sliced Wasserstein distance every this many steps (0: at the end only).")
        log_every: int = Field(10, ge=1, description="Record the mean loss every this many steps.")
        projections: int = Field(512, ge=1, description="Random directions of the sliced Wasserstein distance.")
        nll_samples: int = Field(
            512, ge=0, description="Held-out points whose negative log-likelihood is measured at the end (0: none)."
        )
        nll_steps: int = Field(32, ge=1, le=MAX_SAMPLING_STEPS,
                               description="Fixed Runge-Kutta 4 steps of the likelihood's ODE (4 model calls each).")
        class_conditional: bool = Field(
            False, description="Condition the model on the data's class (digits, gaussian_mixture: the component)."
        )
        condition_dropout: float = Field(
            0.1, ge=0, le=1, description="Class-conditional: probability of training a sample without its class."
        )

        @model_validator(mode="before")
        @classmethod
        def _no_bools(cls, data: Any) -> Any:
            return no_bools(cls, data)

        @field_validator("ema_profiles")
        @classmethod
        def _ema_profiles(cls, value: tuple[float, ...]) -> tuple[float, ...]:
            for sigma_rel in value:
                try:
                    sigma_rel_to_gamma(sigma_rel)
                except TrainerError as exc:
                    raise ValueError(str(exc)) from None
            if len(set(value)) != len(value):
                raise ValueError("ema_profiles lists a width twice")
            return value

        @field_validator("weighting", mode="before")
        @classmethod
        def _weighting(cls, value: Any) -> Any:
            return _check_weighting(value)

        def use_threads(self) -> None:
            """Give torch the run's CPU threads (``threads = 0``: torch's default); call it before any work."""
            if self.threads:
                torch.set_num_threads(self.threads)

    TrainConfig.__module__ = __name__
    return TrainConfig


def config_model() -> type[BaseModel]:
    """The :class:`TrainConfig` model for the schemes installed now (rebuilt when they change)."""
    installed = tuple((i.kind, i.name, i.distribution) for i in ds.list_schemes())
    return _build_model(installed)


def __getattr__(name: str) -> Any:
    if name == "TrainConfig":
        return config_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a :class:`TrainerError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TrainerError(f"cannot read the config file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TrainerError(
            f"the config file {str(path)!r} is not UTF-8 text (byte {exc.start}); TOML files are UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TrainerError(f"the config file {str(path)!r} is not valid TOML: {exc}") from None


def default_text() -> str:
    """The text of the embedded default config (what ``train --print-config`` starts from)."""
    return resources.files(__package__).joinpath(DEFAULT_CONFIG).read_text(encoding="utf-8")


def default_config() -> dict[str, Any]:
    """The embedded default config as a dict."""
    return tomllib.loads(default_text())


def parse_value(text: str) -> Any:
    """A command-line value in TOML syntax (``1e-3``, ``[0.9, 0.99]``, ``true``); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string: --set solver=euler


def parse_overrides(items: Sequence[str]) -> list[tuple[list[str], Any]]:
    """``["a.b=1", ...]`` to ``[(["a", "b"], 1), ...]``; values are TOML values, bare words strings.

    >>> from diffusion_schemes_trainer.config import parse_overrides
    >>> parse_overrides(["optimizer.lr=1e-3", "solver=euler", "optimizer.betas=[0.9, 0.99]"])
    [(['optimizer', 'lr'], 0.001), (['solver'], 'euler'), (['optimizer', 'betas'], [0.9, 0.99])]
    """
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TrainerError(f"--set expects key=value (e.g. optimizer.lr=1e-3), got {item!r}")
        out.append(([k.strip() for k in key.strip().split(".")], parse_value(value.strip())))
    return out


#: Top-level fields whose value is picked by ``name``; a new name drops the old one's fields.
NAMED = ("preconditioner", "noise_schedule", "solver", "data", "model")


def apply_override(raw: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``raw[path[0]][path[1]]... = value``; a scheme given by name becomes ``{"name": ...}`` first.

    Naming a different scheme, data set or backbone (``solver=euler``, ``data.name=two_moons``)
    starts that table afresh, since the old one's fields are not the new one's.
    """
    if path[0] in NAMED and isinstance(value, str) and (len(path) == 1 or path[1:] == ["name"]):
        set_scheme(raw, path[0], value)
        return
    node = raw
    for i, key in enumerate(path[:-1]):
        child = node.get(key)
        if isinstance(child, str):
            child = {"name": child}
        elif child is None:
            child = {}
        elif not isinstance(child, dict):
            raise TrainerError(f"cannot set {'.'.join(path)}: {'.'.join(path[: i + 1])} is {child!r}, not a table")
        node[key] = child
        node = child
    node[path[-1]] = value


def set_scheme(raw: dict[str, Any], key: str, name: str) -> None:
    """Pick a scheme by name, dropping the fields of the one it replaces (they belong to that scheme)."""
    current = raw.get(key)
    if isinstance(current, Mapping) and current.get("name") == name:
        return
    raw[key] = {"name": name}


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
    changes: Mapping[str, Any] | None = None,
) -> Any:
    """Validate a config: the embedded default (or ``base``, or the TOML file at ``path``), then
    ``changes`` (top-level values, e.g. from command-line flags), then ``--set`` ``overrides``.

    Raises :class:`TrainerError` listing every invalid or unknown field.
    """
    if path is not None:
        raw, source = read_toml(path), repr(str(path))
    elif base is not None:
        raw, source = copy.deepcopy(dict(base)), "the checkpoint's config"
    else:
        raw, source = default_config(), "built-in defaults"
    for key, value in (changes or {}).items():
        if key in NAMED and isinstance(value, str):
            set_scheme(raw, key, value)
        else:
            raw[key] = value
    parsed = parse_overrides(overrides)
    for keys, value in parsed:
        apply_override(raw, keys, value)
    model = config_model()
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        how = f"{source} with overrides" if parsed or changes else source
        lines = _config_errors(exc, model)
        raise TrainerError(
            f"invalid trainer config ({how}):\n" + "\n".join(lines) + "\n"
            "`diffusion-schemes train --print-config` shows a valid config; "
            "`diffusion-schemes show <kind> <name>` shows a scheme's fields."
        ) from None


def dumps(config: Mapping[str, Any]) -> str:
    """``config`` (plain data) as TOML text; ``None`` is left out (TOML has no null: the field's default applies).

    >>> from diffusion_schemes_trainer.config import dumps
    >>> print(dumps({"steps": 10, "run_dir": None, "model": {"name": "mlp", "hidden": 8}}))
    steps = 10
    <BLANKLINE>
    [model]
    name = "mlp"
    hidden = 8
    <BLANKLINE>
    """

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return tomli_w.dumps(clean(config))


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
