"""A dependency-free terminal progress bar fed by domain ``Progress`` reports."""

from __future__ import annotations

import sys
from typing import TextIO

from dprscope.jobs import Progress


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class ProgressBar:
    """Renders ``[stage] ####---- done/total  rate/s  ETA`` on one line (a line per report off a TTY)."""

    def __init__(self, unit: str = "items", stream: TextIO | None = None, width: int = 28) -> None:
        self.unit = unit
        self.stream = stream or sys.stderr
        self.width = width
        self._stage: str | None = None
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, p: Progress) -> None:
        if self._stage is not None and p.stage != self._stage and self._tty:
            self.stream.write("\n")
        self._stage = p.stage
        if p.total:
            frac = min(1.0, p.done / p.total)
            filled = int(frac * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            line = (f"[{p.stage}] {bar} {p.done}/{p.total} {self.unit} {frac * 100:5.1f}%  "
                    f"{p.rate:7.1f}/s  ETA {_duration(p.eta_s)}")
        else:
            line = f"[{p.stage}] {p.done} {self.unit}  {p.rate:7.1f}/s  {p.message}"
        if self._tty:
            self.stream.write("\r" + line.ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._tty and self._stage is not None:
            self.stream.write("\n")
            self.stream.flush()
