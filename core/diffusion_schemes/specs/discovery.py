"""The registry: finds plugin distributions through entry points and resolves schemes by name.

Discovery happens on the first lookup, not at import. Every distribution that exposes
a module under the entry-point group ``diffusion_schemes`` is loaded with pluggy; its
``register_schemes`` hook returns spec classes, and the kind of each comes from its base.
One broken plugin is skipped with a :class:`PluginWarning` naming its distribution (or
raises :class:`PluginError` in strict mode); the others keep working.

Environment variables (comma-separated distribution names; the core's own registrations
are never filtered):

- ``DIFFUSION_SCHEMES_PLUGINS``: load only these distributions (set but empty: none).
- ``DIFFUSION_SCHEMES_DISABLE_PLUGINS``: never load these.
- ``DIFFUSION_SCHEMES_STRICT_PLUGINS=1``: a broken plugin raises instead of warning.

Tests register spec classes in-process with :meth:`Registry.registered`:

>>> from typing import Literal
>>> import diffusion_schemes as ds
>>> class HalfSpec(ds.WeightingSpec):
...     '''Half weight everywhere.'''
...     name: Literal["half"] = "half"
>>> with ds.registry.registered(HalfSpec):
...     [(i.kind, i.name, i.distribution) for i in ds.list_schemes("weighting") if i.name == "half"]
[('weighting', 'half', '__main__')]
>>> "half" in [i.name for i in ds.list_schemes("weighting")]
False
"""

import contextlib
import dataclasses
import difflib
import importlib
import importlib.metadata as metadata
import os
import re
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pluggy

import diffusion_schemes.specs.hooks as _hookspecs
from diffusion_schemes.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    PluginError,
    PluginWarning,
    SchemeConfigError,
    SchemeConflictError,
    UnknownKindError,
    UnknownSchemeError,
)
from diffusion_schemes.specs.base import KINDS, SchemeSpec, validate_spec

__all__ = ["create", "list_schemes", "parse_spec", "registry"]

ENTRY_POINT_GROUP = "diffusion_schemes"
CORE_DISTRIBUTION = "diffusion-schemes"
#: The core's own plugins, named like entry points and loaded the same way: each package that ships
#: built-in schemes implements ``register_schemes`` in its ``__init__``. They are never filtered by
#: the plugin environment variables, and an error in them is raised, not reported.
CORE_PLUGINS = ("diffusion_schemes.weightings", "diffusion_schemes.solvers", "diffusion_schemes.discretizations")
ENV_ALLOW = "DIFFUSION_SCHEMES_PLUGINS"
ENV_BLOCK = "DIFFUSION_SCHEMES_DISABLE_PLUGINS"
ENV_STRICT = "DIFFUSION_SCHEMES_STRICT_PLUGINS"


def normalize_distribution(name: str) -> str:
    """Normalise a distribution name as packaging does (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _env_names(var: str) -> set[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return {normalize_distribution(n.strip()) for n in value.split(",") if n.strip()}


def _strict() -> bool:
    return os.environ.get(ENV_STRICT, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclasses.dataclass(frozen=True)
class SchemeInfo:
    """One installed scheme, as :func:`list_schemes` reports it.

    >>> import diffusion_schemes as ds
    >>> info = next(i for i in ds.list_schemes("solver") if i.name == "heun")
    >>> info.kind, info.name, info.distribution, info.spec
    ('solver', 'heun', 'diffusion-schemes', <class 'diffusion_schemes.solvers.base.HeunSpec'>)
    >>> info.summary
    "Heun's second-order method, Euler on the last step (Karras et al. 2022, Algorithm 1)."
    """

    kind: str
    name: str
    distribution: str
    version: str
    summary: str
    spec: type[SchemeSpec] = dataclasses.field(repr=False, compare=False)


@dataclasses.dataclass
class PluginStatus:
    """What became of one plugin distribution: ``loaded``, ``failed`` or ``blocked``.

    >>> import diffusion_schemes as ds
    >>> core = next(p for p in ds.registry.plugins() if p.distribution == "diffusion-schemes")
    >>> core.status, core.error, ("solver", "heun") in core.schemes
    ('loaded', None, True)
    """

    distribution: str
    version: str
    entry_point: str
    status: str
    error: str | None = None
    schemes: list[tuple[str, str]] = dataclasses.field(default_factory=list)


#: A scheme name: a letter, then letters, digits, ``_`` or ``-`` (at most 64 characters), so a
#: name is safe in a file name, a command line and a ``PRECONDITIONER:SCHEDULE`` pair.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def spec_problem(spec: type[SchemeSpec]) -> str | None:
    """Why pydantic cannot build the validator of ``spec`` (the first line of its error), or None when it can.

    Specs build their validators on first use, not when their class is made (``defer_build``: listing builds
    none), so discovery does not see a field type pydantic cannot validate. Where a spec is used, the registry asks
    this first: a broken spec then fails alone, with its distribution named, instead of inside a schema that holds
    every scheme of its kind. A spec that builds is built once; one that does not is tried again on each ask.

    >>> from typing import Literal
    >>> import diffusion_schemes as ds
    >>> class Opaque:
    ...     pass
    >>> class OpaqueWeightingSpec(ds.WeightingSpec):
    ...     "A weighting with a field pydantic cannot validate."
    ...     name: Literal["opaque"] = "opaque"
    ...     table: Opaque = None
    >>> spec_problem(OpaqueWeightingSpec)
    "PydanticSchemaGenerationError: Unable to generate pydantic-core schema for <class '...Opaque'>. ..."
    >>> spec_problem(type(ds.parse_spec("weighting", "snr"))) is None
    True
    """
    if getattr(spec, "__pydantic_complete__", False):
        return None
    try:
        complete = spec.model_rebuild(raise_errors=True)
    except Exception as exc:  # noqa: BLE001 - pydantic raises several kinds for a type it cannot validate
        text = str(exc).strip()
        return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
    return None if complete is not False or spec.__pydantic_complete__ else "its annotations do not resolve"


def _kind_of(spec: Any) -> str:
    if not (isinstance(spec, type) and issubclass(spec, SchemeSpec)):
        raise ArgumentTypeError(f"register_schemes returned {spec!r}, which is not a SchemeSpec subclass")
    kind = spec.kind
    if kind not in KINDS:
        raise ArgumentTypeError(
            f"{spec.__qualname__} derives from SchemeSpec directly; derive from one of "
            "PreconditionerSpec, NoiseScheduleSpec, WeightingSpec, SolverSpec, DiscretizationSpec so its kind is known"
        )
    name = spec.scheme_name()  # raises TypeError when name is not a single Literal
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidArgumentError(
            f"{spec.__qualname__} is named {name!r}; a scheme name is a letter followed by letters, digits, "
            "'_' or '-' (at most 64 characters), with no path separator, dot, colon or space. Rename it."
        )
    return kind


class Registry:
    """Installed schemes by kind and name, discovered lazily from entry points.

    The one instance is :data:`diffusion_schemes.registry`; :func:`create`,
    :func:`parse_spec` and :func:`list_schemes` use it.

    >>> import diffusion_schemes as ds
    >>> "heun" in ds.registry.names("solver"), ds.registry.lookup("solver", "heun").__name__
    (True, 'HeunSpec')
    >>> ds.registry.parse_spec("solver", {"name": "edm_stochastic_heun", "S_churn": 0}).S_churn
    0.0
    >>> ds.registry.create("solver", "heun")
    Heun()
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._loaded = False
        self._pm: pluggy.PluginManager | None = None
        # (kind, name) -> list of (distribution, version, spec)
        self._schemes: dict[tuple[str, str], list[tuple[str, str, type[SchemeSpec]]]] = {}
        self._plugins: list[PluginStatus] = []
        self._manual: list[tuple[str, str, type[SchemeSpec]]] = []

    # ------------------------------------------------------------------ discovery
    def reload(self) -> None:
        """Forget everything found so far; the next lookup discovers plugins again.

        Call it after changing the environment variables or installing a distribution.
        """
        with self._lock:
            self._loaded = False
            self._pm = None
            self._schemes = {}
            self._plugins = []

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._discover()
            self._loaded = True

    def _new_manager(self) -> pluggy.PluginManager:
        pm = pluggy.PluginManager(_hookspecs.PROJECT)
        pm.add_hookspecs(_hookspecs)
        return pm

    def _discover(self) -> None:
        pm = self._new_manager()
        self._pm = pm
        self._schemes = {}
        self._plugins = []
        core_version = _version_of(CORE_DISTRIBUTION)
        for entry in CORE_PLUGINS:  # the core's own schemes: found by name and registered like any plugin
            plugin = importlib.import_module(entry)
            pm.register(plugin, name=f"{CORE_DISTRIBUTION}:{entry}")
            self._collect(plugin, CORE_DISTRIBUTION, core_version, entry, core=True)

        allow, block = _env_names(ENV_ALLOW), _env_names(ENV_BLOCK)
        seen: set[tuple[str, str]] = set()
        # dist.name and dist.version each read and parse METADATA: read it once per entry point.
        found = [(*_dist_info(ep), ep) for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
        for dist, version, ep in sorted(found, key=lambda e: (e[0], e[2].name)):
            key = (normalize_distribution(dist), ep.value)
            if key in seen:  # the same distribution seen twice on sys.path
                continue
            seen.add(key)
            norm = normalize_distribution(dist)
            if norm == CORE_DISTRIBUTION:
                continue
            if (allow is not None and norm not in allow) or (block is not None and norm in block):
                why = f"not in {ENV_ALLOW}" if allow is not None and norm not in allow else f"listed in {ENV_BLOCK}"
                self._plugins.append(PluginStatus(dist, version, ep.value, "blocked", why))
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=f"{dist}:{ep.name}")
            except Exception as exc:  # noqa: BLE001 - any failure of a plugin is reported, not fatal
                self._fail(dist, version, ep.value, f"failed to load: {type(exc).__name__}: {exc}", exc)
                continue
            self._collect(plugin, dist, version, ep.value)
        for (kind, name), dists in self._conflicts().items():
            text = (
                f"{kind} {name!r} is registered by several distributions ({', '.join(dists)}); that name is "
                f"left out of spec_type({kind!r}) and json_schema({kind!r}) and raises SchemeConflictError "
                f"when used, every other {kind} keeps working. Uninstall one of them or list one in "
                f"{ENV_BLOCK}; `diffusion-schemes doctor` shows every conflict."
            )
            warnings.warn(text, PluginWarning, stacklevel=4)
        for dist, version, spec in self._manual:
            self._add(spec.kind, spec.scheme_name(), dist, version, spec)

    def _collect(self, plugin: Any, dist: str, version: str, entry: str, core: bool = False) -> None:
        assert self._pm is not None
        try:
            found: list[tuple[str, str, type[SchemeSpec]]] = []
            for result in call_plugin_hook(self._pm, "register_schemes", plugin):
                if result is None:
                    continue
                if isinstance(result, (str, bytes)) or not hasattr(result, "__iter__"):
                    raise ArgumentTypeError(f"register_schemes must return a list of spec classes, got {result!r}")
                for spec in result:
                    found.append((_kind_of(spec), spec.scheme_name(), spec))
        except Exception as exc:  # noqa: BLE001
            if core:
                raise
            self._pm.unregister(plugin)
            self._fail(dist, version, entry, f"register_schemes failed: {type(exc).__name__}: {exc}", exc)
            return
        previous = self._plugins[-1] if core and self._plugins else None
        if previous is not None and previous.distribution == dist:  # the core is one distribution
            status = previous
            status.entry_point = f"{status.entry_point}, {entry}"
        else:
            status = PluginStatus(dist, version, entry, "loaded")
            self._plugins.append(status)
        if _strict():  # strict mode fails on what would otherwise fail only where the spec is used
            for kind, name, spec in found:
                problem = spec_problem(spec)
                if problem is not None:
                    raise self.unusable_error(kind, name, dist, spec, problem)
        for kind, name, spec in found:
            self._add(kind, name, dist, version, spec)
            status.schemes.append((kind, name))

    def _add(self, kind: str, name: str, dist: str, version: str, spec: type[SchemeSpec]) -> None:
        providers = self._schemes.setdefault((kind, name), [])
        if not any(p[0] == dist and p[2] is spec for p in providers):
            providers.append((dist, version, spec))

    def _fail(self, dist: str, version: str, entry: str, message: str, exc: BaseException) -> None:
        self._plugins.append(PluginStatus(dist, version, entry, "failed", message))
        text = (
            f"diffusion-schemes plugin distribution {dist!r} ({entry}) is skipped: {message}. "
            f"Run `diffusion-schemes doctor` for details; set {ENV_STRICT}=1 to make this an error."
        )
        if _strict():
            raise PluginError(text) from exc
        warnings.warn(text, PluginWarning, stacklevel=4)

    # ------------------------------------------------------------------ in-process registration
    @contextlib.contextmanager
    def registered(self, *specs: type[SchemeSpec], distribution: str = "__main__", version: str = "") -> Iterator[None]:
        """Register spec classes for the duration of a ``with`` block (for tests and notebooks)."""
        self.register(*specs, distribution=distribution, version=version)
        try:
            yield
        finally:
            self.unregister(*specs)

    def register(self, *specs: type[SchemeSpec], distribution: str = "__main__", version: str = "") -> None:
        """Register spec classes in-process, as if a distribution named ``distribution`` had."""
        self._ensure_loaded()
        with self._lock:
            for spec in specs:
                kind = _kind_of(spec)
                self._manual.append((distribution, version, spec))
                self._add(kind, spec.scheme_name(), distribution, version, spec)

    def unregister(self, *specs: type[SchemeSpec]) -> None:
        """Undo :meth:`register` for these spec classes."""
        with self._lock:
            self._manual = [m for m in self._manual if m[2] not in specs]
            for key in list(self._schemes):
                self._schemes[key] = [p for p in self._schemes[key] if p[2] not in specs]
                if not self._schemes[key]:
                    del self._schemes[key]

    # ------------------------------------------------------------------ queries
    def plugin_manager(self) -> pluggy.PluginManager:
        """The pluggy manager holding every loaded plugin (for hooks such as ``register_commands``)."""
        self._ensure_loaded()
        assert self._pm is not None
        return self._pm

    def plugins(self) -> list[PluginStatus]:
        """Every plugin distribution seen, loaded, failed or blocked."""
        self._ensure_loaded()
        return list(self._plugins)

    def conflicts(self) -> dict[tuple[str, str], list[str]]:
        """``(kind, name)`` registered by more than one distribution, with those distributions."""
        self._ensure_loaded()
        return self._conflicts()

    def _conflicts(self) -> dict[tuple[str, str], list[str]]:
        return {
            key: [p[0] for p in providers]
            for key, providers in sorted(self._schemes.items())
            if len({p[0] for p in providers}) > 1
        }

    def infos(self, kind: str | None = None) -> list[SchemeInfo]:
        """Installed schemes, sorted by kind (in :data:`KINDS` order) then name."""
        if kind is not None:
            check_kind(kind)
        self._ensure_loaded()
        out = []
        for (k, name), providers in self._schemes.items():
            if kind is not None and k != kind:
                continue
            for dist, version, spec in providers:
                out.append(SchemeInfo(k, name, dist, version, spec.summary(), spec))
        return sorted(out, key=lambda i: (KINDS.index(i.kind), i.name, i.distribution))

    def names(self, kind: str) -> list[str]:
        """The installed names of one kind, sorted."""
        check_kind(kind)
        self._ensure_loaded()
        return sorted(name for (k, name) in self._schemes if k == kind)

    def lookup(self, kind: str, name: str) -> type[SchemeSpec]:
        """The spec class of ``kind`` named ``name``; a clear error when there is none or two."""
        check_kind(kind)
        self._ensure_loaded()
        providers = self._schemes.get((kind, name))
        if not providers:
            raise self._unknown(kind, name)
        if len({p[0] for p in providers}) > 1:
            raise self.conflict_error(kind, name)
        return providers[0][2]

    def unusable(self) -> list[tuple[str, str, str, str]]:
        """``(kind, name, distribution, problem)`` of every installed spec whose validator pydantic cannot build
        (:func:`spec_problem`); it builds every spec's validator, which listing leaves to first use (``doctor``)."""
        self._ensure_loaded()
        found = []
        for (kind, name), providers in sorted(self._schemes.items()):
            for dist, _, spec in providers:
                problem = spec_problem(spec)
                if problem is not None:
                    found.append((kind, name, dist, problem))
        return found

    def usable_spec(self, kind: str, name: str) -> type[SchemeSpec]:
        """:meth:`lookup`, and a :class:`PluginError` naming the distribution when pydantic cannot build the spec's
        validator (:func:`spec_problem`)."""
        spec = self.lookup(kind, name)
        problem = spec_problem(spec)
        if problem is not None:
            dist = next(p[0] for p in self._schemes[(kind, name)] if p[2] is spec)
            raise self.unusable_error(kind, name, dist, spec, problem)
        return spec

    @staticmethod
    def unusable_error(kind: str, name: str, dist: str, spec: type[SchemeSpec], problem: str) -> PluginError:
        """The error for a spec whose validator pydantic cannot build."""
        return PluginError(
            f"{kind} {name!r} of distribution {dist!r} cannot be used: pydantic cannot build the validator of its "
            f"spec {spec.__module__}.{spec.__qualname__} ({problem}). Give its fields types pydantic validates, or "
            f"uninstall the distribution or list it in {ENV_BLOCK}; every other scheme keeps working, and "
            "`diffusion-schemes doctor` lists every such spec."
        )

    def conflict_error(self, kind: str, name: str) -> SchemeConflictError:
        """The error for a name that several distributions register (see :meth:`conflicts`)."""
        dists = ", ".join(sorted({p[0] for p in self._schemes.get((kind, name), [])}))
        return SchemeConflictError(
            f"{kind} {name!r} is registered by several distributions ({dists}), so the name is "
            "ambiguous. Uninstall one of them, or disable it with "
            f"{ENV_BLOCK}=<distribution>; `diffusion-schemes doctor` lists every conflict."
        )

    def _unknown(self, kind: str, name: str) -> UnknownSchemeError:
        installed = self.names(kind)
        close = difflib.get_close_matches(str(name), installed, n=1, cutoff=0.5)
        other_kinds = [k for (k, n) in self._schemes if n == name and k != kind]
        parts = [f"no {kind} named {name!r} is installed."]
        foreign = foreign_solver_hint(str(name), installed) if kind == "solver" else None
        if foreign:
            parts.append(foreign)
        elif close:
            parts.append(f"Did you mean {close[0]!r}?")
        if other_kinds:
            parts.append(f"{name!r} is a {other_kinds[0]}, not a {kind}.")
        parts.append(
            f"Installed {kind} schemes: {', '.join(installed) if installed else '(none)'}. "
            "`diffusion-schemes list` shows every scheme and the distribution that provides it."
        )
        return UnknownSchemeError(" ".join(parts), kind=kind, name=str(name), installed=installed)

    # ------------------------------------------------------------------ configs
    def parse_spec(self, kind: str, config: Any) -> SchemeSpec:
        """Validate a config (a name, a mapping with ``name``, or a spec) into a spec of ``kind``."""
        check_kind(kind)
        if isinstance(config, SchemeSpec):
            if config.kind != kind:
                raise SchemeConfigError(
                    f"expected a {kind} config, got a {config.kind} spec ({type(config).__qualname__}, "
                    f"name {config.name!r}). Pass it where a {config.kind} is expected."
                )
            return config
        if isinstance(config, str):
            config = {"name": config}
        if not isinstance(config, Mapping):
            raise SchemeConfigError(
                f"a {kind} config must be a scheme name, a mapping with a 'name' key or a spec; "
                f"got {type(config).__name__} {config!r}"
            )
        if "name" not in config:
            raise SchemeConfigError(
                f"the {kind} config {dict(config)!r} is missing 'name'. Add one of: {', '.join(self.names(kind))}"
            )
        return validate_spec(self.usable_spec(kind, config["name"]), dict(config))

    def create(self, kind: str, config: Any, **kwargs: Any) -> Any:
        """Validate ``config`` and build the scheme: ``parse_spec(kind, config).build(**kwargs)``."""
        return self.parse_spec(kind, config).build(**kwargs)


#: Sampler names of k-diffusion, AUTOMATIC1111's web UI and ComfyUI (normalised: lower case, ``++`` as
#: ``pp``, spaces as ``_``, no ``k_``/``sample_`` prefix) and what they are here: a solver, or None with
#: the nearest solvers when there is no such solver.
FOREIGN_SOLVERS: dict[str, tuple[str | None, str]] = {
    "euler_a": ("euler_ancestral", ""),
    "dpm2": ("dpm_2", ""),
    "dpm2_a": ("dpm_2_ancestral", ""),
    "dpm_2_a": ("dpm_2_ancestral", ""),
    "dpmpp_2s_a": ("dpmpp_2s_ancestral", ""),
    "dpm_adaptive": ("dpm_adaptive", ""),
    "dpm_ad": ("dpm_adaptive", ""),
    "uni_pc": ("unipc", ""),
    "uni_pc_bh2": ("unipc", ""),
    "ddim": ("euler", "DDIM is Euler on the probability-flow ODE in the noise level"),
    "dpmpp_sde": (None, "DPM-Solver++ SDE (single-step) is not built in; the nearest are dpmpp_2s_ancestral "
                        "(single-step, stochastic) and dpmpp_2m_sde"),
    "dpm_fast": (None, "DPM-Solver fast is not built in; dpm_adaptive or dpmpp_2m are the nearest"),
    "plms": (None, "PLMS is not built in; lms is the linear multistep method in the noise level"),
    "ddpm": ("euler_ancestral", "ancestral sampling with eta = 1 is DDPM's sampler"),
}
#: Grid suffixes of those names and the discretization each means.
FOREIGN_GRIDS = {"_karras": "karras", "_ka": "karras", "_exponential": "log_snr_uniform"}


def foreign_solver_hint(name: str, installed: Sequence[str]) -> str | None:
    """What a k-diffusion / A1111 / ComfyUI sampler name is called here, or None when it is none of them.

    >>> foreign_solver_hint("dpmpp_2m_karras", ["dpmpp_2m", "heun"])
    "That is the solver 'dpmpp_2m' on the Karras grid: solver='dpmpp_2m', discretization='karras'."
    >>> foreign_solver_hint("Euler a", ["euler_ancestral"])
    "That is the solver 'euler_ancestral': solver='euler_ancestral'."
    """
    key = name.strip().lower().replace("++", "pp").replace(" ", "_").replace("-", "_")
    for prefix in ("sample_", "k_"):
        key = key.removeprefix(prefix)
    grid = None
    for suffix, discretization in FOREIGN_GRIDS.items():
        if key.endswith(suffix):
            key, grid = key.removesuffix(suffix), discretization
            break
    target, note = FOREIGN_SOLVERS.get(key, (key if key != name else None, ""))
    if target is not None and target not in installed:
        return None if not note else f"{note[0].upper()}{note[1:]}."
    if target is None:
        return None if not note else f"{note[0].upper()}{note[1:]}" + (
            f"; the grid is discretization={grid!r}." if grid else "."
        )
    where = f" on the {'Karras' if grid == 'karras' else grid} grid" if grid else ""
    call = f"solver={target!r}" + (f", discretization={grid!r}" if grid else "")
    return f"That is the solver {target!r}{where}: {call}." + (f" ({note}.)" if note else "")


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is one of :data:`KINDS`; raise :class:`UnknownKindError` otherwise."""
    if kind not in KINDS:
        close = difflib.get_close_matches(str(kind), KINDS, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownKindError(f"unknown scheme kind {kind!r}.{hint} The kinds are: {', '.join(KINDS)}")
    return kind


def call_plugin_hook(pm: pluggy.PluginManager, hook: str, plugin: Any, **kwargs: Any) -> list[Any]:
    """Call ``hook`` through pluggy for ``plugin`` alone, so each result is attributed to its plugin.

    >>> import diffusion_schemes as ds
    >>> from diffusion_schemes import weightings
    >>> pm = ds.registry.plugin_manager()
    >>> [spec.scheme_name() for spec in call_plugin_hook(pm, "register_schemes", weightings)[0]][:2]
    ['snr', 'likelihood_weighting']
    """
    others = [p for p in pm.get_plugins() if p is not plugin]
    return pm.subset_hook_caller(hook, remove_plugins=others)(**kwargs)


def _dist_info(ep: metadata.EntryPoint) -> tuple[str, str]:
    """``(name, version)`` of the distribution exposing ``ep`` (its METADATA parsed once)."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ep.module.split(".")[0], ""
    meta = dist.metadata
    return meta["Name"], meta["Version"]


def _version_of(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


#: The process-wide registry behind :func:`list_schemes`, :func:`create` and friends.
registry = Registry()


def list_schemes(kind: str | None = None) -> list[SchemeInfo]:
    """What is installed: one :class:`SchemeInfo` (kind, name, distribution, version, summary) per scheme.

    >>> import diffusion_schemes as ds
    >>> [(i.name, i.distribution) for i in ds.list_schemes("solver") if i.name == "heun"]
    [('heun', 'diffusion-schemes')]
    """
    return registry.infos(kind)


def parse_spec(kind: str, config: Any) -> SchemeSpec:
    """Validate ``config`` (a name, a mapping with ``name``, or a spec) into the spec of ``kind``.

    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("solver", "heun").name
    'heun'
    """
    return registry.parse_spec(kind, config)


def create(kind: str, config: Any, **kwargs: Any) -> Any:
    """Build a scheme by name: validate ``config`` against its spec, then ``spec.build(**kwargs)``.

    ``config`` is a name (``"edm"``), a mapping (``{"name": "edm", "sigma_data": 0.5}``) or a
    spec instance; ``kwargs`` go to ``build`` (a preconditioner takes ``model=``).

    >>> import diffusion_schemes as ds
    >>> ds.create("solver", "nope")
    Traceback (most recent call last):
      ...
    diffusion_schemes.UnknownSchemeError: no solver named 'nope' is installed. ...
    """
    return registry.create(kind, config, **kwargs)
