"""A plain-text progress bar on stderr: step, loss, speed, elapsed and remaining time.

On a terminal it redraws one line (at most five times a second); otherwise (a log file, a
pipe) it prints a line at every tenth of the run, so logs stay short.

>>> import io
>>> from diffusion_schemes_trainer._progress import Progress, format_duration
>>> stream = io.StringIO()
>>> bar = Progress(total=10, start=0, stream=stream, label="train")
>>> for step in range(1, 11):
...     bar.update(step, loss=0.5)
>>> bar.close()
>>> stream.getvalue().splitlines()[-1].split()[:3]
['train', '10/10', '[########################]']
>>> format_duration(3725)
'1:02:05'
"""

from __future__ import annotations

import sys
import time
from typing import IO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Progress of ``total`` steps, starting at ``start`` (a resumed run)."""

    width = 24

    def __init__(self, total: int, start: int = 0, stream: IO[str] | None = None, label: str = "train") -> None:
        self.total, self.start, self.label = total, start, label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self.last_draw = 0.0
        self.next_tenth = start * 10 // max(total, 1) + 1
        self.line = ""

    def update(self, step: int, loss: float | None = None) -> None:
        """Record that ``step`` steps are done (``loss``: the latest loss)."""
        now = time.perf_counter()
        done = step - self.start
        rate = (now - self.t0) / done if done > 0 else 0.0
        frac = step / max(self.total, 1)
        fill = int(round(self.width * frac))
        parts = [
            f"{self.label} {step}/{self.total}",
            f"[{'#' * fill}{'.' * (self.width - fill)}]",
            f"{100 * frac:3.0f}%",
        ]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        parts.append(f"{1000 * rate:.1f} ms/step")
        parts.append(f"elapsed {format_duration(now - self.t0)}")
        parts.append(f"left {format_duration(rate * (self.total - step))}")
        self.line = "  ".join(parts)
        if self.tty:
            if now - self.last_draw >= 0.2 or step >= self.total:
                self.stream.write("\r" + self.line + "\033[K")
                self.stream.flush()
                self.last_draw = now
        elif step * 10 >= self.next_tenth * self.total or step >= self.total:
            self.stream.write(self.line + "\n")
            self.stream.flush()
            self.next_tenth = step * 10 // max(self.total, 1) + 1

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` spent on something else (a measurement) out of the speed and time left."""
        self.t0 += seconds

    def close(self) -> None:
        """End the bar's line."""
        if self.tty and self.line:
            self.stream.write("\n")
            self.stream.flush()
