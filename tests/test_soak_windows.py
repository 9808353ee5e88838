"""The soak's latency around each kill (ckdemo/soak.py FailureWindows), with the clock in the
test's hands: a window holds every call running at the kill instant or begun within WINDOW_S
after it, a kill noted after calls that ran across it or started after it still counts them, a
window closes WINDOW_S after its kill and keeps only its figures."""

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
    """The call in flight at a kill (it waits for the member to be given up) is in the kill's
    window, whenever it began: the run's slowest call is then that window's slowest."""
    report = Report()
    report.kills.append((1.0, "member1"))
    report.record(0.5, 0.001)
    report.record(0.9, 2.5)  # began before the kill, blocked through its window
    report.record(3.5, 0.002)
    figures = report.as_dict()
    assert (figures["slowest_ms"], figures["slowest_at_s"]) == (2500.0, 0.9)
    assert figures["around_failures"][0]["slowest_ms"] == 2500.0


def test_a_window_holds_the_calls_running_at_the_kill_and_those_begun_after_it():
    """A call is (start, end): in the window when it ends at or after the kill and starts before
    the window's end; a call over before the kill, or begun after the window, is not."""
    windows, kills = FailureWindows(), [(1.0, "member2")]
    windows.record(kills, 0.2, 700 * MS)  # 0.2-0.9: over before the kill
    windows.record(kills, 0.95, 536 * MS)  # 0.95-1.486: in flight at the kill
    windows.record(kills, 1.5, 4 * MS)  # begun in the window
    windows.record(kills, 1.0 + WINDOW_S, 900 * MS)  # begun as the window ends: not in it
    [row] = windows.rows(kills)
    assert row["slowest_ms"] == 536.0
    assert abs(row["p99_ms"] - 536.0) <= 536.0 * RELATIVE_ERROR + 0.01


def test_a_kill_noted_after_the_call_in_flight_ended_still_counts_it():
    """The chaos thread notes the kill after making it: the call that was running at the kill
    instant may have ended (and been recorded) before the kill was noted."""
    windows, kills = FailureWindows(), []
    windows.record(kills, 0.1, 10 * MS)  # 0.1-0.11: over before the kill
    windows.record(kills, 0.8, 400 * MS)  # 0.8-1.2: running at the kill, recorded before it is noted
    kills.append((1.0, "member3"))
    windows.record(kills, 1.2, 2 * MS)
    [row] = windows.rows(kills)
    assert row["slowest_ms"] == 400.0


def test_the_recent_calls_kept_are_those_that_ended_in_the_last_window():
    """A long call that began more than WINDOW_S before the last one ended still ran across an
    instant a late-noted kill may name, so it is kept while it ended within WINDOW_S."""
    windows, kills = FailureWindows(), []
    windows.record(kills, 0.0, 3000 * MS)  # 0-3 s
    windows.record(kills, 3.0, 1 * MS)
    assert [t for t, _ in windows.recent] == [0.0, 3.0]
    kills.append((2.5, "member1"))
    windows.record(kills, 3.1, 1 * MS)
    [row] = windows.rows(kills)
    assert row["slowest_ms"] == 3000.0
