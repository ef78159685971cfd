"""How long and how hard the benchmarks run: the full run or the quick smoke run."""

from __future__ import annotations

import dataclasses
import shutil


def compile_backend(quick: bool) -> tuple[str, str]:
    """The torch.compile backend to time, and why: inductor where a C compiler is found."""
    if quick:
        return "eager", "quick mode: dynamo tracing only (backend='eager'), not representative of compiled speed"
    compiler = shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")
    if compiler:
        return "inductor", f"inductor (C++ kernels built with {compiler})"
    return "aot_eager", "aot_eager: no C compiler found, inductor cannot build CPU kernels"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Repeats and sizes of one run; ``quick`` shrinks everything to a smoke test of seconds."""

    quick: bool
    repeats: int
    block_s: float
    startup_repeats: int
    samples: int
    budgets: tuple[int, ...]
    backend: str
    backend_note: str

    @classmethod
    def make(cls, quick: bool) -> Settings:
        backend, note = compile_backend(quick)
        if quick:
            return cls(True, 3, 0.002, 1, 512, (10, 20), backend, note)
        return cls(False, 15, 0.05, 12, 10000, (10, 20, 35, 50, 75, 100), backend, note)
