"""The one progress line of a long run (`bench`, `soak`, `bench-serve`) on a terminal, and the
pieces its text is made of (a bar, an ETA in m:ss)."""

from __future__ import annotations

import shutil
import sys
import threading
from typing import Callable, TextIO

BAR_WIDTH = 24
REDRAW_S = 0.2  # a person sees the line move; the run does not notice the cost


class ProgressLine:
    """One line on a terminal, redrawn every REDRAW_S while a long run goes on, left showing the
    final state. Nothing at all when the stream is not a terminal: CI logs and pipes stay clean.
    A notice (`say`) is a line of its own, terminal or not: written above the progress line."""

    def __init__(self, render: Callable[[], str], stream: TextIO | None = None) -> None:
        self.render, self.stream = render, stream or sys.stderr
        self.shown = self.stream.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._redraw, daemon=True)
        self._lock = threading.Lock()  # a notice and a redraw never interleave

    def say(self, line: str) -> None:
        with self._lock:
            self.stream.write(("\r\x1b[K" if self.shown else "") + line + "\n")
            self.stream.flush()

    def __enter__(self) -> "ProgressLine":
        if self.shown:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.shown:
            self._stop.set()
            self._thread.join()
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def _redraw(self) -> None:
        while not self._stop.wait(REDRAW_S):
            self._draw()

    def _draw(self) -> None:
        width = shutil.get_terminal_size((100, 24)).columns - 1
        text = self.render()[:width]
        with self._lock:
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()


def bar(fraction: float) -> str:
    filled = round(BAR_WIDTH * max(0.0, min(1.0, fraction)))
    return "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"


def minutes(seconds: float | None) -> str:
    """m:ss, or --:-- when not known yet."""
    if seconds is None:
        return "--:--"
    whole = int(round(seconds))
    return f"{whole // 60}:{whole % 60:02d}"
