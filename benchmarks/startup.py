"""Figure 4: start-up cost, each script in a fresh interpreter, against ``import torch`` alone.

Scripts run as subprocesses in interleaved rounds (the order rotates every round), so load
changes hit every script alike; the figure is the median over rounds of each script's CPU time
(its wall time beside it) divided by that round's ``import torch`` time. A reference row imports
the dependencies the design fixes (torch, pydantic, pluggy) and declares one pydantic model, with
no code of ours: the list row's difference to it, per round, is what diffusion_schemes itself
costs. Every script also reports the CPU time its garbage collector ran (a ``gc.callbacks`` timer
put before it): after torch's import, the first full collection walks every object torch created,
whichever import triggers it. The 50-plugin case puts 50 generated plugin distributions (a package
with one weighting spec and an ``.dist-info`` folder with ``METADATA`` and ``entry_points.txt``,
the layout ``pip install --target`` writes) on ``PYTHONPATH``; its cost is the median per-round
difference to the same script without them. A second reference row, the design's floor, adds to the dependencies
what listing asks of them under this design with no code of ours: the scan of the entry-point group and one pydantic
model class per installed scheme (a ``Literal`` name and as many constrained float fields as that scheme's spec).
"""

from __future__ import annotations

import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._settings import Settings
from ._timing import spread

AIM_RATIO = 1.10
AIM_PLUGINS_S = 0.050
N_PLUGINS = 50

ALLOWANCE_POINTS = (AIM_RATIO - 1) * 100  # what the aim allows on top of import torch, in points of it


def floor_explains(floor: dict[str, float], ours_points: dict[str, float]) -> bool:
    """Whether a start-up miss is caused by what the design asks of its dependencies rather than by diffusion_schemes:
    the design's floor (the dependencies, the entry-point scan and one pydantic model per installed scheme, no code of
    ours) already takes the aim or more beyond the noise (the lower quartile of its ratio to ``import torch``), so no
    library of this design could meet it, and what diffusion_schemes adds to that floor (median per-round difference,
    in points of ``import torch``) would be within the aim on its own."""
    return floor["q1"] >= AIM_RATIO and ours_points["median"] <= ALLOWANCE_POINTS


DEPENDENCIES = "import torch, pydantic, pluggy + one pydantic model (the dependencies alone)"
FLOOR = "... + the entry-point scan + one pydantic model per installed scheme (the design's floor)"
_DEPENDENCIES_CODE = "import torch, pydantic, pydantic.fields, pluggy\nclass Spec(pydantic.BaseModel):\n    name: str = 'x'"
#: What listing asks of the dependencies, with no code of ours: the entry-point group scanned as discovery scans it,
#: and per installed scheme a model class configured as a spec is (frozen, no extra fields, validators built on first
#: use) with a ``Literal`` name and that scheme's number of other fields, constrained floats with a description.
#: ``@FIELDS@`` becomes the list of those numbers (:func:`floor_script`).
FLOOR_CODE = _DEPENDENCIES_CODE + """
import importlib.metadata, typing
found = importlib.metadata.entry_points(group="diffusion_schemes")
config = pydantic.ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False, defer_build=True)
Base = type(Spec)("Base", (pydantic.BaseModel,), {"__module__": __name__, "model_config": config,
                                                  "__annotations__": {"name": str}})
for i, n in enumerate(@FIELDS@):
    fields = {f"f{j}": pydantic.Field(1.0, gt=0, description="A field.") for j in range(n)}
    type(Base)(f"Scheme{i}Spec", (Base,), {"__module__": __name__, "__doc__": "A scheme.", "name": f"s{i}", **fields,
               "__annotations__": {"name": typing.Literal[f"s{i}"], **{k: float for k in fields}}})"""


def floor_script(fields: list[int]) -> str:
    """The design's floor for schemes with these numbers of fields besides their name."""
    return FLOOR_CODE.replace("@FIELDS@", repr(list(fields)))


SCRIPTS = {
    "import torch": "import torch",
    # What the design fixes, without a line of ours: torch, pydantic (the spec layer) and pluggy (the plugin
    # manager), imported as diffusion_schemes imports them, and one model class, which makes pydantic import the
    # rest of itself and scan the installed distributions for its own plugins (both once per process).
    DEPENDENCIES: _DEPENDENCIES_CODE,
    "import diffusion_schemes + list_schemes()": (  # prints the CPU time of list_schemes() (the discovery)
        "import time, diffusion_schemes as ds; t = time.process_time(); n = len(ds.list_schemes()); "
        "print(time.process_time() - t); assert n > 0"
    ),
    "... + create('preconditioner', 'edm')": (
        "import diffusion_schemes as ds, torch; "
        "ds.create('preconditioner', {'name': 'edm', 'sigma_data': 0.5}, model=torch.nn.Identity())"
    ),
    "... + create('noise_schedule', 'edm')": (
        "import diffusion_schemes as ds; ds.create('noise_schedule', 'edm')"
    ),
}
LIST = "import diffusion_schemes + list_schemes()"
#: Put before every script: the CPU time the cyclic garbage collector runs in the process, printed at exit.
GC_TIMER = """import atexit as _atexit, gc as _gc, time as _time
_gc_s = [0.0, 0.0]
def _gc_timer(phase, info):
    if phase == "start":
        _gc_s[1] = _time.process_time()
    else:
        _gc_s[0] += _time.process_time() - _gc_s[1]
_gc.callbacks.append(_gc_timer)
_atexit.register(lambda: print("gc_s", _gc_s[0]))
"""
WITH_PLUGINS = f"list_schemes() with {N_PLUGINS} extra plugins"

PLUGIN = '''"""Generated benchmark plugin {i}: one weighting spec, as a small third-party plugin writes it."""
from typing import Literal

from pydantic import Field

import diffusion_schemes as ds


class BenchWeighting{i}Spec(ds.WeightingSpec):
    """Constant weight (benchmark plugin {i})."""

    name: Literal["bench_weighting_{i}"] = "bench_weighting_{i}"
    value: float = Field(1.0, gt=0, description="The constant weight.")

    def build(self):
        from .impl import make
        return make(self.value)


@ds.hookimpl
def register_schemes():
    return [BenchWeighting{i}Spec]
'''


BREAKDOWN = """
import gc, json, time
clock = time.process_time
spent, started = [0.0], [0.0]
def on_gc(phase, info):
    if phase == "start":
        started[0] = clock()
    else:
        spent[0] += clock() - started[0]
t0 = clock()
import torch
t1 = clock()
gc.callbacks.append(on_gc)
import pydantic, pydantic.fields, pluggy
class Spec(pydantic.BaseModel):
    name: str = "x"
t2, g2 = clock(), spent[0]
import diffusion_schemes as ds
t3 = clock()
ds.list_schemes()
t4, g4 = clock(), spent[0]
ds.create("noise_schedule", "edm")
ds.create("preconditioner", "edm", model=torch.nn.Identity())
t5 = clock()
print(json.dumps({"torch": t1 - t0, @DEPS@: t2 - t1, "import diffusion_schemes": t3 - t2, "list_schemes()": t4 - t3,
                  "create('noise_schedule', 'edm') + create('preconditioner', 'edm')": t5 - t4,
                  @GC_DEPS@: g2, @GC_OURS@: g4 - g2}))
"""
BREAKDOWN_DEPS = "pydantic + pluggy + one pydantic model class"
BREAKDOWN_GC_DEPS = "garbage collection, within pydantic + pluggy + one model class"
BREAKDOWN_GC_OURS = "garbage collection, within import diffusion_schemes + list_schemes()"
for _key, _name in (("@DEPS@", BREAKDOWN_DEPS), ("@GC_DEPS@", BREAKDOWN_GC_DEPS), ("@GC_OURS@", BREAKDOWN_GC_OURS)):
    BREAKDOWN = BREAKDOWN.replace(_key, repr(_name))


def breakdown(env: dict[str, str], repeats: int, script: str = BREAKDOWN) -> dict[str, float]:
    """Median CPU seconds of each phase that ``script`` prints (default: torch, pydantic, ours, listing)."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


PLUGIN_BREAKDOWN = """
import importlib.metadata as md, json, time
import diffusion_schemes as ds
clock = time.process_time
t0 = clock()
eps = [ep for ep in md.entry_points(group="diffusion_schemes") if ep.module.startswith("bench_plugin_")]
t1 = clock()
meta = [(ep.dist.name, ep.dist.version) for ep in eps]
t2 = clock()
modules = [ep.load() for ep in eps]
t3 = clock()
ds.list_schemes()
t4 = clock()
print(json.dumps({"finding the entry points": t1 - t0, "reading each distribution's name and version once": t2 - t1,
                  "importing the 50 entry modules (one pydantic spec class each)": t3 - t2,
                  "list_schemes() once they are imported (registry: metadata, pluggy, specs)": t4 - t3}))
"""


def write_plugins(root: Path, n: int = N_PLUGINS) -> None:
    """Write ``n`` installed plugin distributions (package + ``.dist-info``) under ``root``."""
    for i in range(n):
        module = f"bench_plugin_{i:02d}"
        (root / module).mkdir(parents=True)
        (root / module / "__init__.py").write_text(PLUGIN.format(i=i))
        info = root / f"{module}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: bench-plugin-{i:02d}\nVersion: 1.0\n"
            "Summary: generated benchmark plugin\nRequires-Dist: diffusion-schemes\n"
        )
        (info / "entry_points.txt").write_text(f"[diffusion_schemes]\n{module} = {module}\n")
        (info / "INSTALLER").write_text("benchmarks\n")
        (info / "RECORD").write_text("")


def _env(extra_path: str | None) -> dict[str, str]:
    # Bytecode is written and reused, as for an installed package (pip compiles what it installs):
    # a PYTHONDONTWRITEBYTECODE inherited from a CI or sandbox would recompile our sources every run.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONWARNINGS"] = "ignore"
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    return env


def _run(code: str, env: dict[str, str]) -> tuple[float, float, float, str]:
    """Wall time, CPU time (user + system, from the child's own resource usage), the CPU time of the child's
    garbage collector (its own count, :data:`GC_TIMER`) and the rest of its stdout, for one run."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([sys.executable, "-c", GC_TIMER + code], env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"start-up script failed ({proc.returncode}): {code}\n{err.read().decode()}")
        out.seek(0)
        *lines, last = out.read().decode().strip().splitlines()
        return wall, usage.ru_utime + usage.ru_stime, float(last.removeprefix("gc_s ")), "\n".join(lines)


def _count(code_env: dict[str, str]) -> int:
    code = "import diffusion_schemes as ds; print(sum(i.name.startswith('bench_weighting_') for i in ds.list_schemes()))"
    out = subprocess.run([sys.executable, "-c", code], env=code_env, check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def installed_fields(code_env: dict[str, str]) -> list[int]:
    """For each scheme ``list_schemes()`` finds, the number of its spec's fields besides ``name``."""
    code = "import diffusion_schemes as ds; print([len(i.spec.model_fields) - 1 for i in ds.list_schemes()])"
    out = subprocess.run([sys.executable, "-c", code], env=code_env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(settings: Settings) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ds-bench-plugins-") as tmp:
        write_plugins(Path(tmp))
        plain, plugged = _env(None), _env(tmp)
        found = _count(plugged)
        if found != N_PLUGINS:
            raise RuntimeError(f"expected {N_PLUGINS} generated plugins in list_schemes(), found {found}")
        fields = installed_fields(plain)
        cases = [(name, code, plain) for name, code in SCRIPTS.items()]
        cases.insert(2, (FLOOR, floor_script(fields), plain))
        cases.append((WITH_PLUGINS, SCRIPTS[LIST], plugged))
        compileall.compile_dir(tmp, quiet=1)  # as pip does on install
        for _, code, env in cases[1:] if not settings.quick else ():  # write bytecode, warm the cache (not timed)
            _run(code, env)
        wall: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        cpu: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        collector: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        discovery: dict[str, list[float]] = {LIST: [], WITH_PLUGINS: []}
        for r in range(settings.startup_repeats):
            k = r % len(cases)
            for name, code, env in cases[k:] + cases[:k]:
                w, c, g, printed = _run(code, env)
                wall[name].append(w)
                cpu[name].append(c)
                collector[name].append(g)
                if name in discovery:
                    discovery[name].append(float(printed.strip().splitlines()[-1]))
        phases = breakdown(plain, 1 if settings.quick else 3)
        plugin_phases = breakdown(plugged, 1 if settings.quick else 3, PLUGIN_BREAKDOWN)
    results = {}
    for name in wall:
        results[name] = {
            "cpu_s": spread(cpu[name]), "wall_s": spread(wall[name]),
            "cpu_ratio": spread([a / b for a, b in zip(cpu[name], cpu["import torch"])]),
            "gc_cpu_s": spread(collector[name]),
            "wall_ratio": spread([a / b for a, b in zip(wall[name], wall["import torch"])]),
        }
    for clock, times in (("cpu", cpu), ("wall", wall)):
        extra = [a - b for a, b in zip(times[WITH_PLUGINS], times[LIST])]
        results[WITH_PLUGINS][f"extra_{clock}_s"] = spread(extra)
    rows = []
    for name, res in results.items():
        r, w = res["cpu_ratio"], res["wall_ratio"]
        rows.append({
            "script (fresh interpreter)": name,
            "CPU time": f"{res['cpu_s']['median'] * 1e3:.0f} ms",
            "CPU / import torch [IQR]": f"{r['median']:.3f} [{r['q1']:.3f}, {r['q3']:.3f}]",
            "of which garbage collection": f"{res['gc_cpu_s']['median'] * 1e3:.0f} ms",
            "wall time": f"{res['wall_s']['median'] * 1e3:.0f} ms",
            "wall / import torch [IQR]": f"{w['median']:.3f} [{w['q1']:.3f}, {w['q3']:.3f}]",
        })
    list_ratio = results[LIST]["cpu_ratio"]["median"]
    create_name = max((n for n in SCRIPTS if n.startswith("...")), key=lambda n: results[n]["cpu_ratio"]["median"])
    create_ratio = results[create_name]["cpu_ratio"]["median"]
    # What is ours, per round: the list script against the dependencies alone, in CPU time and in points of torch.
    ours_s = spread([a - b for a, b in zip(cpu[LIST], cpu[DEPENDENCIES])])
    ours_points = spread([(a - b) / t * 100 for a, b, t in zip(cpu[LIST], cpu[DEPENDENCIES], cpu["import torch"])])
    results[LIST]["over_dependencies_cpu_s"], results[LIST]["over_dependencies_points"] = ours_s, ours_points
    # ... and against the design's floor: what diffusion_schemes adds to what listing asks of the dependencies
    floor_s = spread([a - b for a, b in zip(cpu[LIST], cpu[FLOOR])])
    floor_points = spread([(a - b) / t * 100 for a, b, t in zip(cpu[LIST], cpu[FLOOR], cpu["import torch"])])
    results[LIST]["over_floor_cpu_s"], results[LIST]["over_floor_points"] = floor_s, floor_points
    deps, deps_gc = results[DEPENDENCIES]["cpu_ratio"], results[DEPENDENCIES]["gc_cpu_s"]["median"]
    floor = results[FLOOR]["cpu_ratio"]
    torch_gc = results["import torch"]["gc_cpu_s"]["median"]
    e = spread([a - b for a, b in zip(discovery[WITH_PLUGINS], discovery[LIST])])
    results[WITH_PLUGINS]["extra_discovery_cpu_s"] = e
    ew = results[WITH_PLUGINS]["extra_cpu_s"]

    def by(ratio: float) -> str:
        return "" if ratio < AIM_RATIO else f"; missed by {(ratio - AIM_RATIO) * 100:.1f} points"

    def iqr(name: str) -> str:
        r = results[name]["cpu_ratio"]
        return f" [IQR {r['q1']:.3f}, {r['q3']:.3f}]"

    create_points = spread([(a - b) / t * 100 for a, b, t in zip(cpu[create_name], cpu[DEPENDENCIES],
                                                                   cpu["import torch"])])
    results[create_name]["over_dependencies_points"] = create_points
    create_floor = spread([(a - b) / t * 100 for a, b, t in zip(cpu[create_name], cpu[FLOOR], cpu["import torch"])])
    results[create_name]["over_floor_points"] = create_floor
    left = (AIM_RATIO - floor["median"]) * 100
    aims = [
        {"aim": f"import + list_schemes() under {AIM_RATIO:.2f}x import torch (CPU time)",
         "met": list_ratio < AIM_RATIO,
         "detail": f"{list_ratio:.3f}x{iqr(LIST)}{by(list_ratio)}. The dependencies alone (`{DEPENDENCIES}` row) take "
                   f"{deps['median']:.3f}x{iqr(DEPENDENCIES)}; their garbage collector runs "
                   f"{(deps_gc - torch_gc) * 1e3:.0f} ms more than in `import torch` "
                   f"({(deps_gc - torch_gc) / results['import torch']['cpu_s']['median'] * 100:.1f} points: the first "
                   "full collection after torch's import walks torch's objects). diffusion_schemes' own import and "
                   f"discovery add {ours_points['median']:.1f} points [IQR {ours_points['q1']:.1f}, "
                   f"{ours_points['q3']:.1f}] ({ours_s['median'] * 1e3:.0f} ms, per-round difference to that row). "
                   f"The design's floor (`{FLOOR}` row: those dependencies doing what listing asks of them, "
                   f"{len(fields)} model classes, no code of ours) takes {floor['median']:.3f}x{iqr(FLOOR)}, which "
                   + (f"leaves {left:.1f} points of the aim to the library's own code" if left > 0 else
                      "is the aim or more on its own" + ("" if floor["q1"] >= AIM_RATIO else
                                                           ", though not beyond its spread"))
                   + f"; diffusion_schemes adds {floor_points['median']:.1f} points [IQR {floor_points['q1']:.1f}, "
                   f"{floor_points['q3']:.1f}] ({floor_s['median'] * 1e3:.0f} ms) to it"},
        {"aim": f"creating a scheme by name under {AIM_RATIO:.2f}x import torch (CPU time)",
         "met": create_ratio < AIM_RATIO, "detail": f"{create_ratio:.3f}x{iqr(create_name)} for `{create_name}` (the worst){by(create_ratio)}; "
                   "creating costs about 1 ms in-process (see the breakdown), the rest of the gap to the list "
                   f"row is noise between processes; the dependencies alone take {deps['median']:.3f}x (see above)"},
        {"aim": f"{N_PLUGINS} extra plugin distributions cost under {AIM_PLUGINS_S * 1e3:.0f} ms together (CPU time)",
         "met": e["median"] < AIM_PLUGINS_S,
         "detail": f"{e['median'] * 1e3:.0f} ms [IQR {e['q1'] * 1e3:.0f}, {e['q3'] * 1e3:.0f}] more CPU time in "
                   f"list_schemes() (whole process: {ew['median'] * 1e3:.0f} ms, noisier)"
                   + ("" if e["median"] < AIM_PLUGINS_S else
                      f"; missed by {(e['median'] - AIM_PLUGINS_S) * 1e3:.0f} ms")},
    ]
    for aim, points in zip(aims, (floor_points, create_floor)):
        if not aim["met"] and floor_explains(floor, points):
            aim["cause"] = (f"what the design asks of its dependencies: with the entry-point scan and one pydantic "
                            f"model per installed scheme and no code of ours they take {floor['median']:.3f}x "
                            f"import torch [IQR {floor['q1']:.3f}, {floor['q3']:.3f}], at or above the aim, and "
                            f"diffusion_schemes adds "
                            f"{points['median']:.1f} points to that, within the aim's {ALLOWANCE_POINTS:.0f}")
    after = sum(v for k, v in phases.items() if k != "torch" and not k.startswith("garbage"))
    ours = phases["import diffusion_schemes"] + phases["list_schemes()"]
    notes = [
        f"Why: in one process, everything after `import torch` ({phases['torch'] * 1e3:.0f} ms) adds "
        f"{after * 1e3:.0f} ms ({after / phases['torch']:.1%} of it). pydantic (the spec layer the design requires), "
        f"pluggy and pydantic's first model class take {phases[BREAKDOWN_DEPS] * 1e3:.0f} ms, "
        f"{phases[BREAKDOWN_GC_DEPS] * 1e3:.0f} ms of it the garbage collector: the first allocations after torch "
        "trigger a full collection that walks every object torch created, which any import after torch triggers. "
        f"diffusion_schemes' own modules and the discovery of the installed plugins take {ours * 1e3:.0f} ms "
        f"({ours / phases['torch']:.1%}), {phases[BREAKDOWN_GC_OURS] * 1e3:.0f} ms of it collections. "
        "Creating a scheme by name costs about a millisecond on top (it imports one implementation module); the "
        "spread between the create rows and the list row is load noise, see their interquartile ranges.",
        "Measured and not adopted: pausing the collector during our import and discovery (and restoring it) takes "
        "the full collection out of these rows but not out of the process: the caller's first work after "
        "`list_schemes()` (60,000 small lists and a 200-layer `nn.Sequential`) then ran it, on a larger heap "
        "(190 ms of collection there instead of 163 ms in the import), and import, discovery and that work "
        "together took the same CPU time either way (595 ms and 594 ms, medians of 12 interleaved rounds on a "
        "loaded machine, 2026-12-02): a pause moves the cost to the caller, it does not remove it. "
        "`gc.freeze()` would save the walks for good, but it changes the collector of the whole process (what is "
        "frozen is never collected), which a library must not do behind its caller's back.",
        f"Plugins: each of the {N_PLUGINS} generated plugins costs about "
        f"{e['median'] / N_PLUGINS * 1e3:.1f} ms, most of it the pydantic model class its entry module declares "
        "(see the table). Changed after profiling (core/diffusion_schemes/specs/discovery.py): discovery read and parsed "
        "each distribution's METADATA three times (its name twice, its version once); it now parses it once, "
        "which took the 50 plugins from about 74 ms to about 56 ms on this machine; and every spec builds its "
        "pydantic validator on its first use (`defer_build=True` on SchemeSpec), not when its class is made, so "
        "listing builds none of them: a spec whose fields pydantic cannot validate now fails when it is first "
        "parsed or created, not at discovery.",
    ]
    return {
        "notes": notes,
        "id": "startup",
        "title": "4. Start-up",
        "description": (
            f"Each script in a fresh `{Path(sys.executable).name}` process, {settings.startup_repeats} interleaved "
            "rounds; ratio = script / `import torch` in the same round, median [interquartile range]. CPU time "
            "(user + system of the child process) is the figure: it is robust to other load on the machine; "
            "wall time is shown beside it, and the CPU time the process's garbage collector ran (its own count). "
            f"The `{DEPENDENCIES}` row is what the design fixes without a line of ours: what the list row adds to it "
            "is diffusion_schemes' own. The next row, the design's floor, also does what listing asks of those "
            "dependencies under this design, again with no code of ours: it scans the `diffusion_schemes` entry-point "
            f"group and declares one pydantic model per installed scheme ({len(fields)}), each configured as a spec "
            "is, with a `Literal` name and as many constrained float fields as that scheme's spec. "
            f"The last row adds {N_PLUGINS} generated plugin distributions (one weighting spec each) on PYTHONPATH; "
            f"they cost {e['median'] * 1e3:.0f} ms of CPU time together: the median per-round difference of the "
            "CPU time that `list_schemes()` (where discovery happens) takes in the two processes, printed by the "
            "script itself, which is far less noisy than the difference of whole processes."
        ),
        "columns": list(rows[0]),
        "rows": rows,
        "aims": aims,
        "extra_tables": [{
            "title": "Where the start-up time goes",
            "description": (
                "CPU time of each phase of `import torch; import pydantic, pydantic.fields, pluggy; one pydantic "
                "model class; import diffusion_schemes; list_schemes()` in one fresh process (median of runs). The "
                "garbage collection rows are the time the collector ran within the phases named (included in "
                "them): a full collection walks every object torch created, and the first allocations after "
                "torch's import are what trigger it."
            ),
            "columns": ["phase", "CPU time"],
            "rows": [{"phase": k, "CPU time": f"{v * 1e3:.0f} ms"} for k, v in phases.items()],
        }, {
            "title": f"Where the {N_PLUGINS} plugins' time goes",
            "description": (
                f"CPU time of each phase of discovering the {N_PLUGINS} generated plugins, in one fresh process "
                "(median of runs), per phase and per plugin. A plugin's entry module declares its pydantic spec "
                "class, and building a pydantic model class costs about a millisecond: that is most of a plugin's "
                "cost, and it belongs to the plugin's declaration, not to the registry."
            ),
            "columns": ["phase", "CPU time", "per plugin"],
            "rows": [{"phase": k, "CPU time": f"{v * 1e3:.1f} ms", "per plugin": f"{v / N_PLUGINS * 1e3:.2f} ms"}
                     for k, v in plugin_phases.items()],
        }],
        "data": {"import_torch_cpu_s": statistics.median(cpu["import torch"]), "cases": results, "phases": phases,
                 "over_dependencies_cpu_s": ours_s, "over_dependencies_points": ours_points,
                 "over_floor_cpu_s": floor_s, "over_floor_points": floor_points, "floor_fields": fields,
                 "plugin_phases": plugin_phases},
    }
