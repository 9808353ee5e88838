"""A run's calls over time, in bounded memory, and its picture: one timeline for the fault lab's
report, the soak and whoever else measures calls as they go.

`Bins` counts calls in time bins (calls, failures, the slowest and the summed latency): 0.1 s
wide at first, twice as wide (neighbours merged) whenever there would be more than MAX_BINS, so
a day-long run costs what a minute does. `svg()` draws calls per second (bars), the slowest call
of each bin (a line on its own axis), failures (red), shaded windows (faults, members down) and
marks (dashed lines): one self-contained SVG element, no script, no font from the network.
Standard library only.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field

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

    def _coarser(self) -> None:
        merged = []
        for n in range(0, len(self.bins), 2):
            pair = self.bins[n:n + 2]
            merged.append(Bin(sum(b.calls for b in pair), sum(b.failures for b in pair),
                              max(b.slowest_s for b in pair), sum(b.total_s for b in pair)))
        self.bins = merged
        self.bin_s *= 2

    def as_json(self) -> list[dict]:
        return [{"at_s": round(n * self.bin_s, 3), "calls": b.calls, "failures": b.failures,
                 "slowest_ms": round(b.slowest_s * 1000, 3),
                 "mean_ms": round(b.total_s * 1000 / b.calls, 3) if b.calls else 0.0}
                for n, b in enumerate(self.bins)]


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


WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 960, 320, 56, 56, 24, 40
STYLE = """
.plot { fill: #fafafa; stroke: #999; } .window { fill: #f6c343; fill-opacity: 0.25; }
.calls { fill: #4a78c2; } .failure { fill: #b00020; } .latency { fill: none; stroke: #e07000; stroke-width: 1.5; }
.member { stroke: #6a3d9a; stroke-dasharray: 4 3; } .axis, .step { font-size: 11px; fill: #444; } .latency-label { fill: #e07000; }
"""


def svg(bins: Bins, duration_s: float, windows: list[Window] = (), lines: list[Line] = ()) -> str:
    seconds = max(1.0, duration_s, len(bins.bins) * bins.bin_s)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    rates = [b.calls / bins.bin_s for b in bins.bins]
    most_calls = max([round(r) for r in rates] + [1])
    slowest = max([b.slowest_s for b in bins.bins] + [0.001])

    def x(t: float) -> float:
        return LEFT + plot_w * min(max(t, 0.0), seconds) / seconds

    def y_calls(n: float) -> float:
        return TOP + plot_h * (1 - n / most_calls)

    def y_latency(s: float) -> float:
        return TOP + plot_h * (1 - s / slowest)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="timeline" class="timeline">',
             f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="plot"/>']
    for window in windows:
        parts.append(f'<rect class="window" x="{x(window.start_s):.1f}" y="{TOP}" '
                     f'width="{max(2.0, x(window.end_s) - x(window.start_s)):.1f}" height="{plot_h}">'
                     f'<title>{html.escape(window.title or window.label)}</title></rect>')
        parts.append(f'<text class="step" x="{x(window.start_s) + 3:.1f}" y="{TOP + 12}">'
                     f'{html.escape(window.label[:28])}</text>')
    width = max(1.0, plot_w * bins.bin_s / seconds - 0.5)
    for n, b in enumerate(bins.bins):
        at = n * bins.bin_s
        if b.calls:
            parts.append(f'<rect class="calls" x="{x(at):.1f}" y="{y_calls(rates[n]):.1f}" '
                         f'width="{width:.1f}" height="{TOP + plot_h - y_calls(rates[n]):.1f}">'
                         f'<title>{at:.1f} s: {b.calls} call(s), {b.failures} failed, slowest '
                         f'{b.slowest_s * 1000:.1f} ms</title></rect>')
        if b.failures:
            parts.append(f'<rect class="failure" x="{x(at):.1f}" y="{TOP + plot_h - 8}" '
                         f'width="{width:.1f}" height="8"><title>{at:.1f} s: {b.failures} failure(s)'
                         '</title></rect>')
    points = " ".join(f"{x((n + 0.5) * bins.bin_s):.1f},{y_latency(b.slowest_s):.1f}"
                      for n, b in enumerate(bins.bins) if b.calls)
    if points:
        parts.append(f'<polyline class="latency" points="{points}"/>')
    for line in lines:
        parts.append(f'<line class="member" x1="{x(line.at_s):.1f}" x2="{x(line.at_s):.1f}" y1="{TOP}" '
                     f'y2="{TOP + plot_h}"><title>{html.escape(line.title)}</title></line>')
    parts += [f'<text class="axis" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{most_calls}</text>',
              f'<text class="axis" x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end">0</text>',
              f'<text class="axis" x="{LEFT - 6}" y="{TOP + plot_h / 2:.0f}" text-anchor="end">calls/s</text>',
              f'<text class="axis latency-label" x="{WIDTH - RIGHT + 6}" y="{TOP + 4}">'
              f'{slowest * 1000:.0f} ms</text>',
              f'<text class="axis latency-label" x="{WIDTH - RIGHT + 6}" y="{TOP + plot_h / 2:.0f}">slowest</text>',
              f'<text class="axis" x="{LEFT}" y="{HEIGHT - 14}">0 s</text>',
              f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 14}" text-anchor="end">{seconds:.0f} s</text>',
              "</svg>"]
    return "\n".join(parts)


def legend(bin_s: float) -> str:
    return (f"Bars: calls per second in each {bin_s:g} s (blue), failures (red); line: the slowest "
            f"call of each {bin_s:g} s (orange); shaded: faults and members down; dashed: member "
            "changes.")
