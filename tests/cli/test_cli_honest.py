"""The command line ends quietly on a closed pipe, wraps its long cells, and the README names what it lists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import diffusion_schemes as ds
from diffusion_schemes.cli import commands as cli

ROOT = Path(__file__).resolve().parents[2]


def test_a_closed_output_pipe_ends_quietly_with_exit_0():
    """``list | head -1`` where the reader has gone before the command writes (the command takes a second
    to start; its whole output fits a pipe's buffer, so a reader that left later would never be seen)."""
    proc = subprocess.Popen([sys.executable, "-m", "diffusion_schemes.cli", "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away, as head does after its lines
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, stderr
    assert stderr == ""


class _ClosedPipe:
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_pipe_inside_a_command_returns_0(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert cli.main(["list"]) == cli.EXIT_OK
    assert capsys.readouterr().err == ""


def test_doctor_wraps_its_long_cells(capsys):
    assert cli.main(["doctor"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("distribution"))
    detail_column = header.index("detail")
    assert max(len(line) for line in out.splitlines()) <= detail_column + cli.CELL_WIDTH
    # every scheme of the core is still named, across the wrapped lines
    text = " ".join(out.split())
    for name in ds.registry.names("solver"):
        assert f"solver:{name}" in text


def test_table_wraps_only_the_last_column_and_keeps_every_word():
    words = " ".join(f"w{i}" for i in range(40))
    table = cli._table([["a", "b", words]], ["x", "y", "z"], wrap=20)
    lines = table.splitlines()
    assert all(len(line) <= len("a  b  ") + 20 for line in lines)
    assert " ".join(line[6:].strip() for line in lines[2:]) == words


def test_the_readme_table_names_what_list_shows():
    """Each row of the README's table is 'kinds | names | distribution'; together they are exactly the
    installed (kind, name) pairs of the repository's distributions."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What is installed", 1)[1].split("\n## ", 1)[0]
    documented = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("kind", "---"):
            continue
        kinds = [k.strip() for k in cells[0].split(",")]
        names = re.findall(r"`([^`]+)`", cells[1])
        documented |= {(k, n) for k in kinds for n in names}
    repository = {"diffusion-schemes"} | {
        line.split('"')[1] for p in ROOT.glob("*/*/pyproject.toml")
        for line in p.read_text(encoding="utf-8").splitlines() if line.startswith("name = ")
    }
    installed = {(i.kind, i.name) for i in ds.registry.infos() if i.distribution in repository}
    assert documented == installed
