"""A lab run's report: text for the terminal, JSON (docs/FAULTS.md, field by field), JUnit (one
case per step, for CI), and one self-contained HTML page with an SVG timeline (no script, no
font or style from the network: it reads the same offline)."""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ..serve.faults import CallRecord
from .analysis import RunResult, StepResult, result_name
from .. import timeline
from ..provenance import timestamp
from ..timeline import Bins, Line, Window
from .journal import Mark

REPORT_VERSION = 1


def bands(run: RunResult, marks: list[Mark], members: list[str]) -> list[timeline.Band]:
    """Each member's state over the run, from the marks of the lab's member changes."""
    changes = [(m.at, m.member, m.state, m.what) for m in marks if m.member and m.state]
    return timeline.member_bands(changes, members, run.duration_s)


def as_json(
    run: RunResult,
    calls: list[CallRecord],
    bins: Bins,
    marks: list[Mark],
    start: float,
    dropped: int,
    version: str,
    extra: dict[str, Any],
    members: list[str] = (),
) -> dict[str, Any]:
    scenario = run.scenario
    stamp = timestamp()
    return {
        "report_version": REPORT_VERSION,
        "ckdemo_version": version,
        "timestamp": stamp,
        "written": stamp[:19] + "+00:00",  # the same moment, as reports before `timestamp` had it
        "scenario": {
            "name": scenario.name,
            "file": scenario.path,
            "seed": scenario.seed,
            "timeout_s": scenario.timeout_s,
        },
        "command": run.command,
        **extra,
        "expectations_met": run.held,
        "app_exit": run.app_exit,
        "duration_s": round(run.duration_s, 3),
        "calls": {"total": run.calls, "kept": len(calls), "dropped": dropped, "by_result": run.by_result},
        "checks": [_check(c) for c in run.checks],
        "steps": [_step(s) for s in run.steps],
        "timeline_bin_s": bins.bin_s,
        "timeline": bins.as_json(),
        "marks": [
            {
                "at_s": round(m.at, 3),
                "what": m.what,
                "step": m.step,
                **({"member": m.member, "state": m.state} if m.member else {}),
            }
            for m in marks
        ],
        "member_states": [
            {
                "member": b.member,
                "state": b.state,
                "from_s": round(b.start_s, 3),
                "until_s": round(b.end_s, 3),
            }
            for b in bands(run, marks, list(members))
        ],
        "call_log": [
            {
                "at_s": round(c.started - start, 6),
                "connection": c.connection,
                "call": c.name,
                "ms": round(c.seconds * 1000, 3),
                "fault": c.injection.describe() if c.injection else None,
                "fault_ids": list(c.injection.faults) if c.injection else [],
                "result": result_name(c.result),
            }
            for c in calls
        ],
    }


def _check(check) -> dict[str, Any]:
    return {"expectation": check.expectation, "held": check.held, "seen": check.seen}


def _step(s: StepResult) -> dict[str, Any]:
    return {
        "name": s.step.name,
        "at_s": round(s.start, 3),
        "until_s": round(s.end, 3),
        "after_calls": s.step.after_calls,
        "injects": s.step.describe(),
        "reached": s.reached,
        "fault_id": s.fault_id,
        "calls": s.calls,
        "calls_faulted": s.injected,
        "failures": s.failures,
        "failed_calls": s.failed_calls,
        "reactions": s.reactions,
        "recovered_after_s": s.recovered_after_s,
        "faulted_ms": s.faulted_ms,
        "unfaulted_ms": s.unfaulted_ms,
        "held": s.held,
        "checks": [_check(c) for c in s.checks],
    }


def text(run: RunResult) -> list[str]:
    scenario = run.scenario
    lines = [
        f"Lab run of {scenario.name} (seed {scenario.seed}): {run.calls} call(s) in "
        f"{run.duration_s:.1f} s; the application "
        + ("was stopped at the timeout" if run.app_exit is None else f"exited {run.app_exit}")
    ]
    for s in run.steps:
        failures = ", ".join(f"{n} x{k}" for n, k in s.failures.items()) or "none"
        recovered = (
            ""
            if not s.failures
            else "; never succeeded again"
            if s.recovered_after_s is None
            else f"; succeeded again {s.recovered_after_s:.3f} s after the last failure"
        )
        lines.append(
            f"  {s.start:7.2f} s  {s.step.name}: {s.step.describe()}"
            + ("" if s.reached else " (not reached)")
        )
        lines.append(
            f"             {s.calls} call(s), {s.injected} faulted; failures seen: {failures}"
            + (f"; reactions: {', '.join(s.reactions)}" if s.reactions else "")
            + recovered
        )
        if s.faulted_ms is not None:
            lines.append(
                f"             a faulted call took {s.faulted_ms:.1f} ms on average"
                + (
                    ""
                    if s.unfaulted_ms is None
                    else f" (the same functions' other calls: {s.unfaulted_ms:.1f} ms)"
                )
            )
        for check in s.checks:
            lines.append(
                f"             [{'met' if check.held else 'NOT MET'}] {check.expectation} ({check.seen})"
            )
    for check in run.checks:
        lines.append(f"  [{'met' if check.held else 'NOT MET'}] {check.expectation} ({check.seen})")
    met = sum(c.held for c in run.checks) + sum(c.held for s in run.steps for c in s.checks)
    total = len(run.checks) + sum(len(s.checks) for s in run.steps)
    lines.append(
        "no expectation to check: the report tells what happened"
        if not total
        else f"{met} of {total} expectation(s) met" + ("" if run.held else ": FAILED")
    )
    return lines


def junit(run: RunResult) -> bytes:
    cases = [(s.step.name, s.checks, s.step.describe()) for s in run.steps] + [
        ("the whole run", run.checks, "application exit and run-level expectations")
    ]
    failures = sum(1 for _, checks, _ in cases if not all(c.held for c in checks))
    suite = ET.Element(
        "testsuite",
        name=f"ckdemo lab: {run.scenario.name}",
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        time=f"{run.duration_s:.3f}",
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="seed", value=str(run.scenario.seed))
    ET.SubElement(properties, "property", name="command", value=" ".join(run.command))
    for name, checks, what in cases:
        case = ET.SubElement(suite, "testcase", classname=f"lab.{run.scenario.name}", name=name)
        bad = [c for c in checks if not c.held]
        if bad:
            failure = ET.SubElement(case, "failure", message="; ".join(c.expectation for c in bad))
            failure.text = "\n".join(f"{c.expectation}: {c.seen}" for c in bad)
        out = ET.SubElement(case, "system-out")
        out.text = what + "".join(
            f"\n[{'met' if c.held else 'NOT MET'}] {c.expectation} ({c.seen})" for c in checks
        )
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True)


# ---- the HTML page ----------------------------------------------------------------------------
def timeline_svg(run: RunResult, bins: Bins, marks: list[Mark], members: list[str] = ()) -> str:
    """The run's timeline (ckdemo.timeline): the steps that inject something shaded, each
    member's state as a band under the plot (its changes dashed when there is no band to show)."""
    windows = [
        Window(s.start, s.end, s.step.name, f"{s.step.name}: {s.step.describe()}")
        for s in run.steps
        if s.step.fault is not None or s.step.event or s.step.member
    ]
    member_bands = bands(run, marks, list(members))
    lines = (
        [] if member_bands else [Line(mark.at, mark.what) for mark in marks if mark.what.startswith("member")]
    )
    return timeline.svg(bins, run.duration_s, windows, lines, member_bands)


STYLE = (
    """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } .met { color: #176f2c; } .notmet { color: #b00020; font-weight: bold; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
"""
    + timeline.STYLE
)


def page(run: RunResult, bins: Bins, marks: list[Mark], members: list[str] = ()) -> str:
    scenario = run.scenario
    verdict = "every expectation met" if run.held else "expectations NOT met"
    rows = []
    for s in run.steps:
        checks = (
            "<br>".join(
                f'<span class="{"met" if c.held else "notmet"}">'
                f"{'met' if c.held else 'NOT MET'}</span>: {html.escape(c.expectation)} "
                f"({html.escape(c.seen)})"
                for c in s.checks
            )
            or "-"
        )
        failures = ", ".join(f"{html.escape(n)} x{k}" for n, k in s.failures.items()) or "none"
        recovered = (
            "-"
            if not s.failures
            else ("never" if s.recovered_after_s is None else f"{s.recovered_after_s:.3f} s")
        )
        rows.append(
            f"<tr><td>{s.start:.2f} s</td><td>{html.escape(s.step.name)}</td>"
            f"<td>{html.escape(s.step.describe())}</td><td>{s.calls}</td><td>{s.injected}</td>"
            f"<td>{failures}</td><td>{html.escape(', '.join(s.reactions) or '-')}</td>"
            f"<td>{recovered}</td><td>{checks}</td></tr>"
        )
    run_checks = "".join(
        f'<li class="{"met" if c.held else "notmet"}">{html.escape(c.expectation)} '
        f"({html.escape(c.seen)})</li>"
        for c in run.checks
    )
    results = ", ".join(f"{html.escape(k)}: {v}" for k, v in run.by_result.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ckdemo lab: {html.escape(scenario.name)}</title>
<style>{STYLE}</style></head><body>
<h1>ckdemo lab: {html.escape(scenario.name)} <span class="{"met" if run.held else "notmet"}">({verdict})</span></h1>
<p>Seed {scenario.seed}; command <code>{html.escape(" ".join(run.command))}</code>;
{run.calls} call(s) in {run.duration_s:.1f} s; the application
{"was stopped at the timeout" if run.app_exit is None else f"exited {run.app_exit}"}. Results: {results or "none"}.</p>
<h2>Timeline</h2>
{timeline_svg(run, bins, marks, members)}
<p>{timeline.legend(bins.bin_s, bool(members) or any(m.member for m in marks))}</p>
<h2>Steps</h2>
<table><tr><th>at</th><th>step</th><th>injects</th><th>calls</th><th>faulted</th><th>failures seen</th>
<th>reactions</th><th>succeeded again after</th><th>expectations</th></tr>
{"".join(rows)}</table>
<h2>The whole run</h2><ul>{run_checks or "<li>no run-level expectation</li>"}</ul>
</body></html>
"""


def write(
    folder: Path,
    report: dict[str, Any],
    run: RunResult,
    bins: Bins,
    marks: list[Mark],
    members: list[str] = (),
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in (
        ("report.json", json.dumps(report, indent=1).encode()),
        ("report.xml", junit(run)),
        ("report.html", page(run, bins, marks, members).encode()),
        ("report.txt", ("\n".join(text(run)) + "\n").encode()),
    ):
        path = folder / name
        path.write_bytes(content)
        written.append(path)
    return written
