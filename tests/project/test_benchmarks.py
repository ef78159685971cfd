"""The benchmarks' quick mode runs and writes a well-formed report (timings are not checked here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ["aims", "overhead", "training", "compilation", "startup", "sampling", "solvers", "guidance", "likelihood", "trainer", "gpu"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.slow
def test_quick_run_writes_markdown_and_json_beside_it(report):
    assert sorted(p.name for p in report.iterdir()) == ["performance.json", "performance.md"]


@pytest.mark.slow
def test_json_has_every_section_with_rows_aims_and_machine(report):
    data = json.loads((report / "performance.json").read_text())
    assert data["quick"] is True
    for key in ("date", "cpu_count", "torch", "torch_threads"):
        assert data["machine"][key] not in (None, "")
    assert [s["id"] for s in data["sections"]] == SECTIONS
    for section in data["sections"]:
        assert "error" not in section, section.get("error")
        for aim in section["aims"]:
            assert isinstance(aim["met"], bool) and aim["aim"] and aim["detail"]
        if section["id"] == "gpu" and data["machine"]["cuda"] == "not available":
            assert section["rows"] == [] and section["description"].startswith("not run: no GPU")
            continue
        assert section["rows"], section["id"]
        for row in section["rows"]:
            assert list(row) == section["columns"]
    overhead = next(s for s in data["sections"] if s["id"] == "overhead")
    ratios = [r["vs_precomputed"]["ratio"] for r in overhead["data"]]
    aims = next(s for s in data["sections"] if s["id"] == "aims")
    ratios += [r["aim"]["ratio"] for r in aims["data"]]
    assert {r["path"] for r in aims["data"]} == {"preconditioner forward", "loss step (forward + backward)",
                                                   "solver loop (Heun)"}
    assert {r["mode"] for r in aims["data"]} == {"eager", "compiled"}
    assert all(r["q1"] <= r["median"] <= r["q3"] and r["min"] <= r["q1"] for r in ratios)
    trainer = next(s for s in data["sections"] if s["id"] == "trainer")
    operations = " ".join(row["operation"] for row in trainer["rows"])
    for what in ("checkpoint save", "checkpoint load", "U-Net", "MLP", "post-hoc EMA", "guidance sweep"):
        assert what in operations, what


@pytest.mark.slow
def test_markdown_has_a_table_per_section_and_no_doctest_prompts(report):
    text = (report / "performance.md").read_text()
    data = json.loads((report / "performance.json").read_text())
    assert text.startswith("# Performance")
    assert ">>>" not in text  # docs/*.md are collected as doctests
    for section in data["sections"]:
        assert f"## {section['title']}" in text
        if section["rows"]:
            header = "| " + " | ".join(section["columns"]) + " |"
            assert header in text
    for line in text.splitlines():
        if line.startswith("|"):
            assert line.endswith("|")


def test_a_loss_miss_is_put_down_to_the_module_call_only_where_the_module_accounts_for_it():
    """Section 0 names the module call as the cause of a loss step's miss only where ours meets the aim against the
    same inline loss inside a module and that module costs the inline function more than the figure's noise; one
    unexplained case leaves the whole aim missed without a cause."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.aims import AIM, _aim, _module_call_explains
    finally:
        sys.path.remove(str(ROOT))

    def ratio(median, q1):
        return {"ratio": {"median": median, "q1": q1}}

    explained = {"vs_module": ratio(AIM - 0.01, 1.0), "module": ratio(1.08, 1.06)}
    ours_too_slow = {"vs_module": ratio(AIM + 0.01, 1.04), "module": ratio(1.08, 1.06)}
    module_within_noise = {"vs_module": ratio(AIM - 0.01, 1.0), "module": ratio(1.01, 0.99)}
    assert _module_call_explains(explained)
    assert not _module_call_explains(ours_too_slow) and not _module_call_explains(module_within_noise)
    assert not _module_call_explains({"aim": ratio(1.1, 1.09)})  # a path without the module comparison
    assert "cause" in _aim("loss step", [("a", True), ("b", True)])
    assert "cause" not in _aim("loss step", [("a", True), ("b", False)])
    met = _aim("loss step", [])
    assert met["met"] and "cause" not in met


def _bench(module: str):
    sys.path.insert(0, str(ROOT))
    try:
        return __import__(f"benchmarks.{module}", fromlist=["_"])
    finally:
        sys.path.remove(str(ROOT))


def _timing(ratios, ours_s, reference_s):
    from statistics import median
    return {"ratio": {"median": median(ratios)}, "ratios": list(ratios), "ours_s": ours_s, "reference_s": reference_s,
            "calls_per_block": {"ours": 10, "reference": 10}, "repeats": len(ratios)}


def test_paired_runs_cancel_a_factor_that_favours_each_side_in_one_run():
    """A compiled comparison runs once with each side compiled first; a compile-order factor k multiplies one run's
    ratios and divides the other's, and pairing the runs repeat by repeat (geometric means) recovers the ratios
    without it, keeps each run's own spread, and refuses runs of different lengths."""
    paired = _bench("_timing").paired
    true, k = [1.01, 1.03, 0.99, 1.02, 1.00], 1.04
    a = _timing([r * k for r in true], 2.0e-4 * k, 2.0e-4)
    b = _timing([r / k for r in true], 2.0e-4, 2.0e-4 * k)
    both = paired(a, b)
    assert both["ratios"] == pytest.approx(true, rel=1e-12)
    assert both["ratio"]["median"] == pytest.approx(1.01, rel=1e-12)
    assert both["ours_s"] == pytest.approx(both["reference_s"], rel=1e-12)
    assert both["runs"] == [a["ratio"], b["ratio"]]
    with pytest.raises(ValueError, match="as many repeats"):
        paired(a, _timing(true[:3], 1.0, 1.0))


def test_each_compiled_case_runs_in_both_compile_orders_and_pairs_them():
    """Section 0 runs a compiled case with the library's modules compiled first and then the inline code's first
    (the first calls in that order and its reverse), pairs every comparison, keeps the faster of a time measured
    on its own in each run, and recomputes the solver loop's time per evaluation from the paired aim."""
    aims = _bench("aims")
    calls = []
    aims._first_calls([lambda: calls.append("ours"), lambda: calls.append("inline")], "ours")
    aims._first_calls([lambda: calls.append("ours"), lambda: calls.append("inline")], "inline")
    assert calls == ["ours", "inline", "inline", "ours"]

    true, k, seen = [1.0, 1.02, 1.04], 1.05, []

    def case(name, batch, compiled, settings, first):
        seen.append((compiled, first))
        f = k if first == "ours" else 1 / k
        return {"aim": _timing([r * f for r in true], 3e-4 * f, 3e-4), "nfe": 3, "grid_s": 1e-5 * f}

    out = aims._both_orders(case, "tiny", 1, None)
    assert seen == [(True, "ours"), (True, "inline")]
    assert out["aim"]["ratios"] == pytest.approx(true, rel=1e-12)
    assert out["grid_s"] == pytest.approx(1e-5 / k)
    assert out["aim"]["per_eval_extra_s"] == pytest.approx((out["aim"]["ours_s"] - out["aim"]["reference_s"]) / 3)


def test_a_start_up_miss_is_put_down_to_the_design_only_where_its_floor_misses_alone_and_ours_fits_the_aim():
    """Section 4 names what the design asks of its dependencies as the cause of a start-up miss only where the
    design's floor (no code of ours) already takes the aim or more beyond its spread (its lower quartile), and what
    diffusion_schemes adds to that floor is within the aim's allowance."""
    startup = _bench("startup")
    aim, allowance = startup.AIM_RATIO, startup.ALLOWANCE_POINTS
    assert allowance == pytest.approx((aim - 1) * 100)
    explain = startup.floor_explains
    assert explain({"median": aim + 0.01, "q1": aim + 0.001}, {"median": 3.1})
    assert explain({"median": aim + 0.01, "q1": aim}, {"median": allowance})
    assert not explain({"median": aim - 0.01, "q1": aim - 0.02}, {"median": 3.1})  # the floor alone meets it
    assert not explain({"median": aim + 0.02, "q1": aim - 0.001}, {"median": 3.1})  # at the aim within its spread
    assert not explain({"median": aim + 0.02, "q1": aim + 0.01}, {"median": allowance + 0.1})  # ours alone misses


def test_the_design_floor_declares_one_spec_like_model_per_scheme_and_scans_the_entry_points():
    """The floor row's script declares, per installed scheme, a frozen model that refuses unknown fields, with a
    Literal name and that scheme's number of constrained float fields, and scans the plugins' entry-point group."""
    startup = _bench("startup")
    code = startup.floor_script([2, 0, 3])
    assert 'entry_points(group="diffusion_schemes")' in code
    namespace: dict = {"__name__": "floor_under_test"}
    exec(compile(code, "<floor>", "exec"), namespace)  # noqa: S102 - the benchmark's own generated script
    models = namespace["Base"].__subclasses__()
    assert [sorted(m.model_fields) for m in models] == [["f0", "f1", "name"], ["name"], ["f0", "f1", "f2", "name"]]
    assert [m().name for m in models] == ["s0", "s1", "s2"]
    with pytest.raises(Exception, match="greater than 0"):
        models[0](f0=0.0)
    with pytest.raises(Exception, match="Extra inputs"):
        models[1](f0=1.0)
    assert models[2].model_config["frozen"] and models[2].model_config["defer_build"]
