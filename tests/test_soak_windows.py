"""The soak's latency around each kill (ckdemo/soak.py FailureWindows), with the clock in the
test's hands: a kill noted after calls that started after it still counts them, a window closes
WINDOW_S after its kill and keeps only its figures."""

from __future__ import annotations

from ckdemo.histogram import RELATIVE_ERROR
from ckdemo.soak import WINDOW_S, FailureWindows, Report

MS = 1_000_000  # ns


def test_a_kill_noted_late_still_counts_the_calls_after_it():
    windows, kills = FailureWindows(), []
    windows.record(kills, 0.5, 1 * MS)  # before the kill: not in its window
    windows.record(kills, 1.0, 2 * MS)  # after the kill, which the chaos thread has not noted yet
    kills.append((0.9, "member2"))
    windows.record(kills, 1.1, 3 * MS)
    windows.record(kills, 0.9 + WINDOW_S, 50 * MS)  # the window is over: this one is not in it
    assert windows.open == {}  # closed: only its figures are kept
    [row] = windows.rows(kills)
    assert (row["t_s"], row["member"], row["slowest_ms"]) == (0.9, "member2", 3.0)
    assert abs(row["p99_ms"] - 3.0) <= 3.0 * RELATIVE_ERROR + 0.01


def test_recent_calls_kept_cover_one_window_only():
    windows = FailureWindows()
    for n in range(10_000):  # 10 s of calls, one per millisecond, no kill
        windows.record([], n / 1000, MS)
    assert len(windows.recent) <= WINDOW_S * 1000 + 1


def test_the_report_figures_come_from_the_histograms():
    report = Report()
    report.kills.append((1.0, "member1"))
    for n in range(100):
        report.record(n / 10, (5 if 1.0 <= n / 10 < 1.0 + WINDOW_S else 1) / 1000)
    figures = report.as_dict()
    assert abs(figures["p99_ms"] - 5.0) <= 5.0 * RELATIVE_ERROR + 0.01
    assert figures["around_failures"][0]["slowest_ms"] == 5.0


def test_the_run_s_slowest_call_is_reported_with_when_it_began():
    """A call blocked across a whole window starts in none (a window counts the calls that began
    in it): the run's slowest call and its start show it wherever it fell."""
    report = Report()
    report.kills.append((1.0, "member1"))
    report.record(0.5, 0.001)
    report.record(0.9, 2.5)  # began before the kill, blocked through its window
    report.record(3.5, 0.002)
    figures = report.as_dict()
    assert (figures["slowest_ms"], figures["slowest_at_s"]) == (2500.0, 0.9)
    assert figures["around_failures"][0]["slowest_ms"] < 2500.0
