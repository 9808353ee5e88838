"""`ckdemo soak` without --json: the report's figures (soak.Report.as_dict) as lines of text."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from ..soak_dropouts import Leftovers


def lines(figures: dict[str, Any]) -> list[str]:
    out = [
        f"operations: {figures['operations']} in {figures['elapsed_s']} s; "
        f"application-visible failures: {figures['application_failures']}"
    ]
    out += [f"  failure: {sample}" for sample in figures["failure_samples"]]
    out.append(
        f"kills: {figures['kills']}, hangs: {figures['hangs']}, restores: {figures['restores']}, "
        f"p99 latency {figures['p99_ms']} ms overall, slowest call {figures['slowest_ms']} ms "
        f"(began at {figures['slowest_at_s']} s)"
    )
    if figures["around_failures"]:
        out.append(
            tabulate(
                [
                    (r["kind"], r["t_s"], r["member"], r["slowest_ms"], r["p99_ms"])
                    for r in figures["around_failures"]
                ],
                headers=["", "at s", "member", "slowest ms (in flight or next 2 s)", "p99 ms (same calls)"],
                disable_numparse=True,
            )
        )
    out += worst_added(figures)
    out += [
        f"  recovered {r['member']} at {r['t_s']} s, inside call {r['call']}" for r in figures["recoveries"]
    ]
    out += [given_up(g) for g in figures["given_up"]]
    out += [Leftovers(**left).line() for left in figures["leftovers"]]
    c = figures["consistency"]
    out.append(
        f"consistency: all members active {c.get('all_members_active')}"
        + (f" ({len(figures['given_up'])} given up)" if figures["given_up"] else "")
        + f", same objects and key material {c.get('identical')}"
    )
    out.append(
        f"RSS: {figures['rss_start_kb']} kB -> {figures['rss_end_kb']} kB ({figures['rss_growth_kb']:+d} kB)"
    )
    return out


def worst_added(figures: dict[str, Any]) -> list[str]:
    """The figure as measured; when negative, what that means (a clamp to 0 would hide it)."""
    added = figures["worst_added_p99_ms"]
    shown = [f"worst p99 added around a failure: {added} ms"]
    if added < 0:
        shown.append(
            f"  (negative: in the {figures['parameters'].get('window_s', 2.0):g} s after every failure the "
            f"calls' p99 stayed below the run's {figures['p99_ms']} ms: the run's slowest calls "
            "came away from the failures)"
        )
    return shown


def given_up(g: dict[str, Any]) -> str:
    attempts = (
        "automatic recovery off"
        if g["retry"] == 0
        else f"after {g['attempts']} of {g['retry']} recovery attempt(s), {g['interval_s']:g} s apart"
    )
    removed = (
        "the run's objects on it could not be removed"
        if g["removed"] is None
        else f"{g['removed']} object(s) of the run removed through its own slot"
    )
    return f"given up: member {g['member']} at {g['t_s']} s, {attempts}; {removed}"
