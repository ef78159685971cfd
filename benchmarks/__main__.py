"""``python -m benchmarks [--quick] [--out DIR] [--only NAME ...]``: run the benchmarks, write the report."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

SECTIONS = ("aims", "overhead", "training", "compilation", "startup", "sampling", "solvers", "guidance", "likelihood", "trainer", "gpu")
ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds (numbers not meaningful)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for performance.md/.json")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module="torch")
    import importlib

    from ._report import machine, write
    from ._settings import Settings

    settings = Settings.make(args.quick)
    report = {"quick": settings.quick, "machine": machine(), "settings": settings.__dict__, "sections": []}
    start = time.perf_counter()
    failed = False
    for name in args.only or SECTIONS:
        t0 = time.perf_counter()
        print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
        try:
            section = importlib.import_module(f".{name}", __package__).run(settings)
        except Exception as exc:  # noqa: BLE001 - recorded in the report, and the exit code says so
            traceback.print_exc()
            failed = True
            section = {"id": name, "title": name, "error": f"{type(exc).__name__}: {exc}", "aims": []}
        section["seconds"] = time.perf_counter() - t0
        print(f"[benchmarks] {name}: {section['seconds']:.1f} s", file=sys.stderr, flush=True)
        report["sections"].append(section)
    report["duration_s"] = time.perf_counter() - start
    report["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    md, js = write(report, args.out)
    print(f"[benchmarks] wrote {md} and {js} in {report['duration_s']:.0f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
