"""The documentation site: it builds with warnings as errors, and every example on it runs.

- every fenced ```python block of a page (and of the README) runs, in order, in one namespace per page (a block right
  after ``<!-- no-test -->`` is skipped; only for output shown as an illustration);
- every ```pycon block runs as a doctest in the same namespace;
- every ``diffusion-schemes ...`` line of a ```bash block parses with the real command line;
- every image a page shows exists and is drawn by a line of ``docs/plots.txt`` (``make docs-plots``) or, for
  figures of trained runs, by the commands of a line of ``docs/figures.txt``;
- the API reference names every public name of ``diffusion_schemes``;
- ``mkdocs build --strict`` succeeds.

``docs/tutorial-plugin.md`` is left to ``tests/project/test_tutorial.py``, which runs it the way a reader
would (it installs a package), so it is not executed twice here.
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest

import diffusion_schemes as ds

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
TESTED_ELSEWHERE = {"tutorial-plugin.md"}
PAGES = sorted(p for p in DOCS.rglob("*.md") if p.name not in TESTED_ELSEWHERE) + [ROOT / "README.md"]
FENCE = re.compile(r"(?P<skip><!-- no-test -->\s*\n)?^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```\s*$", re.M | re.S)


def blocks(page: Path, langs: tuple[str, ...]) -> list[tuple[int, str]]:
    """``(line number, code)`` of the fenced blocks of ``page`` in ``langs``, without the skipped ones."""
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        if m.group("lang") in langs and not m.group("skip"):
            out.append((text.count("\n", 0, m.start("body")) + 1, m.group("body")))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page, tmp_path, monkeypatch, fresh_registry):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = types.ModuleType(f"docs_page_{page.stem.replace('-', '_')}")  # a real module: pydantic resolves
    monkeypatch.setitem(sys.modules, module.__name__, module)              # annotations through sys.modules
    namespace = module.__dict__
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    parser = doctest.DocTestParser()
    for line, code in blocks(page, ("python", "pycon")):
        if code.lstrip().startswith(">>>"):
            test = parser.get_doctest(code, namespace, f"{page.name}:{line}", str(page), line)
            result = runner.run(test, clear_globs=False)
            assert result.failed == 0, f"{page.name}, pycon block at line {line} failed (see the output above)"
        else:
            try:
                exec(compile(code, f"{page}:{line}", "exec"), namespace)
            except Exception as exc:  # noqa: BLE001 - name the page and line
                raise AssertionError(f"{page.name}: the python block at line {line} raised {exc!r}") from exc


def test_pages_have_examples_where_they_promise_them():
    """The extractor finds the blocks (a broken fence regex would make every page pass vacuously)."""
    assert len(blocks(DOCS / "concepts.md", ("python",))) >= 5


COMMAND = re.compile(r"^(?:\.venv/bin/)?diffusion-schemes (?P<args>[^#\n]*)", re.M)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cli_lines_parse(page, fresh_registry):
    from diffusion_schemes import cli

    parser = cli.build_parser()
    known = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001 - the real sub-commands
    for _, code in blocks(page, ("bash", "console", "shell")):
        for m in COMMAND.finditer(code):
            args = shlex.split(re.split(r"\s[>|&;]", m.group("args"))[0])  # the command, without redirections
            if args and args[0] in known and ("--help" in args or "-h" in args):
                continue  # a help line: the sub-command exists, that is all it claims
            if not args or args[0] not in known:
                # plugin commands (train, sample, ...) are checked only when their plugin is installed
                assert not args or args[0] in {"train", "sample", "compare", "conformance"}, (page.name, m.group(0))
                continue
            try:
                parser.parse_args(args)
            except SystemExit as exc:
                raise AssertionError(f"{page.name}: `{m.group(0).strip()}` does not parse") from exc
            if args[0] == "train" and not {"--config", "-c", "--resume"} & set(args):
                # the config the line describes must validate (the trainer checks it without training)
                code = cli.main([*args, "--print-config"]) if "--print-config" not in args else 0
                assert code == 0, f"{page.name}: `{m.group(0).strip()}` is not a valid trainer config"


# Figures of benchmark results, drawn from docs/performance.json by `make docs-plots` (see the Makefile).
BENCHMARK_FIGURES = {"img/solvers.png"}


def test_images_exist_and_are_drawn_by_the_plot_command():
    plotted = set(BENCHMARK_FIGURES)
    for line in (DOCS / "plots.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, *rest = line.split()
            names = [a for a in rest if not a.startswith("--")]
            if "--schedule" in rest:
                names.remove(rest[rest.index("--schedule") + 1])
            plotted.add(f"img/{kind}-{'+'.join(names)}.png")
    plotted |= set(trained_figures())
    for page in DOCS.rglob("*.md"):
        for ref in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text()):
            path = (page.parent / ref).resolve()
            assert path.is_file(), f"{page.name} shows {ref}, which does not exist; run `make docs-plots`"
            rel = path.relative_to(DOCS).as_posix()
            assert rel in plotted, f"{page.name} shows {ref}, which no line of docs/plots.txt or docs/figures.txt draws"


def trained_figures() -> dict[str, list[list[str]]]:
    """``docs/figures.txt``: figures of trained runs, ``IMAGE: command ; command ...`` (the commands that drew it)."""
    out = {}
    for line in (DOCS / "figures.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            image, _, commands = line.partition(":")
            out[image.strip()] = [shlex.split(c) for c in commands.split(";") if c.strip()]
    return out


def test_trained_figures_name_commands_that_parse(fresh_registry):
    from diffusion_schemes import cli

    parser = cli.build_parser()
    figures = trained_figures()
    assert figures
    for image, commands in figures.items():
        assert (DOCS / image).is_file(), f"docs/figures.txt lists {image}, which does not exist"
        runs = [c[1:] for c in commands if c[0] == "diffusion-schemes"]
        assert runs, f"{image}: no diffusion-schemes command"
        for args in runs:
            try:
                parser.parse_args(args)
            except SystemExit as exc:
                raise AssertionError(f"docs/figures.txt, {image}: `{' '.join(args)}` does not parse") from exc


def test_api_reference_names_every_public_name():
    text = (DOCS / "api.md").read_text()
    documented = set(re.findall(r"^::: diffusion_schemes(?:\.\w+)*\.(\w+)", text, re.M))
    missing = sorted(set(ds.__all__) - documented)
    assert not missing, f"docs/api.md has no `::: ...` entry for {missing}"


def test_plot_command_draws_a_file(tmp_path, fresh_registry):
    from diffusion_schemes import cli

    assert cli.main(["plot", "weighting", "snr", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "weighting-snr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_site_builds_strict(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()


def test_api_doctest_fences_wrap_doctest_blocks_only():
    """The griffe extension of the API reference fences ``>>>`` blocks and leaves fenced code alone."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("doctest_fences", DOCS / "_ext" / "doctest_fences.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = "Intro.\n\n    >>> f([1][0])\n    1\n\nAfter.\n\n```python\n>>> kept\n```"
    assert module.fence_doctests(text).splitlines() == [
        "Intro.", "", "    ```pycon", "    >>> f([1][0])", "    1", "    ```", "", "After.", "",
        "```python", ">>> kept", "```",
    ]


def test_plot_curves_come_from_the_public_api(fresh_registry):
    """The numbers behind the figures: noise level, lambda and weights match closed forms; the inverse CDF
    of training times gives the exact density of ln(noise level) (log-uniform for VE: 1 / ln(max/min));
    a schedule that states no inverse CDF is drawn from its samples alone."""
    import math

    import torch

    from diffusion_schemes.cli.plot import schedule_curves

    c = schedule_curves(ds.create("noise_schedule", "ve"), num=50, num_draws=2000)
    assert torch.allclose(c["noise_level"], c["t"]) and torch.allclose(c["lambda"], -2 * c["t"].log())
    assert torch.allclose(c["weights"]["epsilon"], torch.ones(50, dtype=torch.float64))
    assert torch.allclose(c["weights"]["x0"], c["t_train"] ** -2)
    points, density = c["log_noise_level_density"]
    assert torch.allclose(density, torch.full_like(density, 1 / math.log(100.0 / 0.02)))
    assert float(points.min()) > math.log(0.02) and float(points.max()) < math.log(100.0)

    class SamplesOnly(ds.SigmaTimeSchedule):  # log-uniform noise level in [0.01, 50], no inverse CDF
        def __init__(self):
            super().__init__("samples-only")

        def domain(self, training=False):
            return (0.01, 50.0)

        def sample_time(self, n, generator=None, device=None):
            return 0.01 * 5000.0 ** torch.rand(n, generator=generator, device=device)

        def timesteps(self, num_steps, device=None):
            i = torch.arange(num_steps, dtype=torch.float64) / max(num_steps - 1, 1)
            return self._with_zero(50.0 * (0.01 / 50.0) ** i)

    c = schedule_curves(SamplesOnly(), num=10, num_draws=100)
    assert "log_noise_level_density" not in c and c["t_draws"].shape == (100,)


def test_quickstart_shows_what_make_run_runs():
    """The quickstart describes the main job the Makefile actually runs."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^run:[^\n]*\n((?:\t[^\n]*\n)+)", makefile, re.M).group(1)
    commands = [line.strip().replace("$(VENV)/bin/", "") for line in recipe.splitlines()]
    quickstart = (DOCS / "quickstart.md").read_text()
    for command in commands:
        assert command in quickstart, f"`make run` runs `{command}`, which docs/quickstart.md does not show"


def test_plot_without_matplotlib_says_how_to_install_it(monkeypatch, tmp_path, capsys, fresh_registry):
    from diffusion_schemes import cli

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    assert cli.main(["plot", "weighting", "snr", "--out", str(tmp_path)]) == 2
    assert "pip install 'diffusion-schemes[plot]'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
