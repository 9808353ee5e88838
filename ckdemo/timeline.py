"""A run's calls over time, in bounded memory, and its picture: one timeline for the fault lab's
report, the soak and whoever else measures calls as they go.

`Bins` counts calls in time bins (calls, failures, the slowest and the summed latency): 0.1 s
wide at first, twice as wide (neighbours merged) whenever there would be more than MAX_BINS, so
a day-long run costs what a minute does. `svg()` draws calls per second (bars), the slowest call
of each bin (a line on its own axis), failures (red), shaded windows (faults, members down),
marks (dashed lines) and, under the plot, one band per member coloured by its state over time
(up, down, hung, slow): one self-contained SVG element, no script, no font from the network.
Standard library only.
"""

from __future__ import annotations

import html
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

MAX_BINS = 1000
FIRST_BIN_S = 0.1


@dataclass
class Bin:
    calls: int = 0
    failures: int = 0
    slowest_s: float = 0.0
    total_s: float = 0.0


@dataclass
class Bins:
    """Not thread-safe: the caller holds its own lock when several threads add."""

    bins: list[Bin] = field(default_factory=list)
    bin_s: float = FIRST_BIN_S

    def add(self, at_s: float, seconds: float, failed: bool) -> None:
        """One call, `at_s` after the run began, that took `seconds`."""
        at_s = max(0.0, at_s)
        while int(at_s / self.bin_s) >= MAX_BINS:
            self._coarser()
        index = int(at_s / self.bin_s)
        while len(self.bins) <= index:
            self.bins.append(Bin())
        slot = self.bins[index]
        slot.calls += 1
        slot.failures += failed
        slot.slowest_s = max(slot.slowest_s, seconds)
        slot.total_s += seconds

    def add_sampled(self, at_s: float, calls: int, failures: int, busy_s: float) -> None:
        """Calls counted together (a Sampler's): busy_s is the time they took together."""
        at_s = max(0.0, at_s)
        while int(at_s / self.bin_s) >= MAX_BINS:
            self._coarser()
        index = int(at_s / self.bin_s)
        while len(self.bins) <= index:
            self.bins.append(Bin())
        slot = self.bins[index]
        slot.calls += calls
        slot.failures += failures
        slot.total_s += busy_s  # (the slowest call is not known: slowest_s stays 0)

    def _coarser(self) -> None:
        merged = []
        for n in range(0, len(self.bins), 2):
            pair = self.bins[n : n + 2]
            merged.append(
                Bin(
                    sum(b.calls for b in pair),
                    sum(b.failures for b in pair),
                    max(b.slowest_s for b in pair),
                    sum(b.total_s for b in pair),
                )
            )
        self.bins = merged
        self.bin_s *= 2

    def as_json(self) -> list[dict]:
        return [
            {
                "at_s": round(n * self.bin_s, 3),
                "calls": b.calls,
                "failures": b.failures,
                "slowest_ms": round(b.slowest_s * 1000, 3),
                "mean_ms": round(b.total_s * 1000 / b.calls, 3) if b.calls else 0.0,
            }
            for n, b in enumerate(self.bins)
        ]


class Sampler:
    """A run's timeline from counters read every `every_s` by a thread of its own, for runs whose
    calls take microseconds (bench): nothing is added to the calls themselves. read() gives
    (calls so far, failures so far, seconds measured so far, what is measured now); each sample
    adds the calls and failures since the one before. In a closed loop (each of `callers` threads
    calls again as soon as it has its answer) the calls of an interval took callers x the time
    measured in it together: their mean is that over their count. The slowest call of an
    interval is not known, so the line drawn is the mean (svg(latency="mean")). Stretches
    measuring one thing (a slot) become windows, labelled by what read() names."""

    def __init__(
        self,
        read: Callable[[], tuple[int, int, float, str]],
        callers: int = 1,
        every_s: float = FIRST_BIN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read, self.callers, self.every_s, self.clock = read, callers, every_s, clock
        self.bins = Bins()
        self.windows: list[Window] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline-sampler", daemon=True)
        self._start = 0.0
        self._last = (0, 0, 0.0, "")
        self._phase: tuple[float, str] | None = None

    def start(self) -> "Sampler":
        self._start = self.clock()
        self._last = self.read()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopped.wait(self.every_s):
            self.sample()

    def sample(self) -> None:
        calls, failures, measured_s, what = now = self.read()
        at = self.clock() - self._start
        last_calls, last_failures, last_measured, _ = self._last
        self._last = now
        if calls > last_calls:
            self.bins.add_sampled(
                at - self.every_s / 2,
                calls - last_calls,
                failures - last_failures,
                self.callers * max(0.0, measured_s - last_measured),
            )
        if self._phase is None or self._phase[1] != what:
            if self._phase is not None and self._phase[1]:
                self.windows.append(Window(self._phase[0], at, self._phase[1]))
            self._phase = (at, what)

    def stop(self) -> Bins:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()
        if self._phase is not None and self._phase[1]:
            self.windows.append(Window(self._phase[0], self.clock() - self._start, self._phase[1]))
            self._phase = None
        return self.bins

    @property
    def duration_s(self) -> float:
        return self.clock() - self._start


@dataclass(frozen=True)
class Window:
    """A shaded stretch of the timeline: a fault in force, a member down."""

    start_s: float
    end_s: float
    label: str
    title: str = ""


@dataclass(frozen=True)
class Line:
    """A dashed line: something that happened at one moment (a member killed, restored)."""

    at_s: float
    title: str


@dataclass(frozen=True)
class Band:
    """One stretch of one member's band: its state from start_s to end_s."""

    member: str
    start_s: float
    end_s: float
    state: str  # one of BAND_STATES
    title: str = ""


BAND_STATES = ("up", "down", "hung", "slow")
BAND_ROW, BAND_HEIGHT = 18, 12  # px per member row, and the band's own height in it


WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 960, 320, 72, 56, 24, 40
STYLE = """
.plot { fill: #fafafa; stroke: #999; } .window { fill: #f6c343; fill-opacity: 0.25; }
.calls { fill: #4a78c2; } .failure { fill: #b00020; } .latency { fill: none; stroke: #e07000; stroke-width: 1.5; }
.member { stroke: #6a3d9a; stroke-dasharray: 4 3; } .axis, .step { font-size: 11px; fill: #444; } .latency-label { fill: #e07000; }
.band-up { fill: #7cc47f; } .band-down { fill: #e34a33; } .band-hung { fill: #555; } .band-slow { fill: #f0a030; }
"""


def svg(
    bins: Bins,
    duration_s: float,
    windows: list[Window] = (),
    lines: list[Line] = (),
    bands: list[Band] = (),
    latency: str = "slowest",
) -> str:
    """latency: "slowest" (each bin's slowest call) or "mean" (its mean: a Sampler's bins)."""
    seconds = max(1.0, duration_s, len(bins.bins) * bins.bin_s)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    rows = list(dict.fromkeys(band.member for band in bands))  # members, in their first band's order
    height = HEIGHT + (len(rows) * BAND_ROW + 8 if rows else 0)
    rates = [b.calls / bins.bin_s for b in bins.bins]
    most_calls = max([round(r) for r in rates] + [1])

    def late(b: Bin) -> float:
        return b.slowest_s if latency == "slowest" else (b.total_s / b.calls if b.calls else 0.0)

    slowest = max([late(b) for b in bins.bins] + [0.001 if latency == "slowest" else 1e-6])

    def x(t: float) -> float:
        return LEFT + plot_w * min(max(t, 0.0), seconds) / seconds

    def y_calls(n: float) -> float:
        return TOP + plot_h * (1 - n / most_calls)

    def y_latency(s: float) -> float:
        return TOP + plot_h * (1 - s / slowest)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="timeline" class="timeline">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="plot"/>',
    ]
    for window in windows:
        parts.append(
            f'<rect class="window" x="{x(window.start_s):.1f}" y="{TOP}" '
            f'width="{max(2.0, x(window.end_s) - x(window.start_s)):.1f}" height="{plot_h}">'
            f"<title>{html.escape(window.title or window.label)}</title></rect>"
        )
        parts.append(
            f'<text class="step" x="{x(window.start_s) + 3:.1f}" y="{TOP + 12}">'
            f"{html.escape(window.label[:28])}</text>"
        )
    width = max(1.0, plot_w * bins.bin_s / seconds - 0.5)
    for n, b in enumerate(bins.bins):
        at = n * bins.bin_s
        if b.calls:
            parts.append(
                f'<rect class="calls" x="{x(at):.1f}" y="{y_calls(rates[n]):.1f}" '
                f'width="{width:.1f}" height="{TOP + plot_h - y_calls(rates[n]):.1f}">'
                f"<title>{at:.1f} s: {b.calls} call(s), {b.failures} failed, {latency} "
                f"{late(b) * 1000:.3g} ms</title></rect>"
            )
        if b.failures:
            parts.append(
                f'<rect class="failure" x="{x(at):.1f}" y="{TOP + plot_h - 8}" '
                f'width="{width:.1f}" height="8"><title>{at:.1f} s: {b.failures} failure(s)'
                "</title></rect>"
            )
    points = " ".join(
        f"{x((n + 0.5) * bins.bin_s):.1f},{y_latency(late(b)):.1f}"
        for n, b in enumerate(bins.bins)
        if b.calls
    )
    if points:
        parts.append(f'<polyline class="latency" points="{points}"/>')
    for line in lines:
        parts.append(
            f'<line class="member" x1="{x(line.at_s):.1f}" x2="{x(line.at_s):.1f}" y1="{TOP}" '
            f'y2="{TOP + plot_h}"><title>{html.escape(line.title)}</title></line>'
        )
    parts += [
        f'<text class="axis" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{most_calls}</text>',
        f'<text class="axis" x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end">0</text>',
        f'<text class="axis" x="{LEFT - 6}" y="{TOP + plot_h / 2:.0f}" text-anchor="end">calls/s</text>',
        f'<text class="axis latency-label" x="{WIDTH - RIGHT + 6}" y="{TOP + 4}">'
        f"{_time_label(slowest)}</text>",
        f'<text class="axis latency-label" x="{WIDTH - RIGHT + 6}" y="{TOP + plot_h / 2:.0f}">{latency}</text>',
        f'<text class="axis" x="{LEFT}" y="{HEIGHT - 14}">0 s</text>',
        f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 14}" text-anchor="end">{seconds:.0f} s</text>',
    ]
    for row, member in enumerate(rows):
        top = HEIGHT + row * BAND_ROW
        parts.append(
            f'<text class="axis band-label" x="{LEFT - 6}" y="{top + BAND_HEIGHT - 2}" '
            f'text-anchor="end">{html.escape(member[:10])}</text>'
        )
        for band in (b for b in bands if b.member == member):
            parts.append(
                f'<rect class="band band-{html.escape(band.state)}" data-member="{html.escape(member)}" '
                f'data-state="{html.escape(band.state)}" x="{x(band.start_s):.1f}" y="{top}" '
                f'width="{max(1.0, x(band.end_s) - x(band.start_s)):.1f}" height="{BAND_HEIGHT}">'
                f"<title>{html.escape(member)} {html.escape(band.state)} from {band.start_s:.2f} s "
                f"to {band.end_s:.2f} s"
                + (f": {html.escape(band.title)}" if band.title else "")
                + "</title></rect>"
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _time_label(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.001 else f"{seconds * 1e6:.3g} \u00b5s"


def member_bands(
    changes: list[tuple[float, str, str, str]], members: list[str], duration_s: float
) -> list[Band]:
    """Each member's band from its state changes (at_s, member, state, what), in time order:
    up from the start until its first change, each state until the next change, the last until
    duration_s. A change to the state it is in already changes nothing."""
    order = list(dict.fromkeys([*members, *(member for _, member, _, _ in changes)]))
    bands = []
    for member in order:
        start, state, title = 0.0, "up", ""
        for at, who, new, what in sorted(changes, key=lambda change: change[0]):
            if who != member or new == state:
                continue
            if at > start:
                bands.append(Band(member, start, at, state, title))
            start, state, title = max(start, at), new, what
        end = max(start, duration_s)
        if end > start or not bands:
            bands.append(Band(member, start, end, state, title))
    return bands


def legend(bin_s: float, bands: bool = False) -> str:
    return (
        f"Bars: calls per second in each {bin_s:g} s (blue), failures (red); line: the slowest "
        f"call of each {bin_s:g} s (orange); shaded: faults and members down; "
        + (
            "bands under the plot: each member's state as the lab set it: up (green), down "
            "(red), hung (grey), slow (amber)."
            if bands
            else "dashed: member changes."
        )
    )
