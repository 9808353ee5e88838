"""What the application did under each step of a lab run, and whether each expectation held.

A step's window runs from its start to the next step's (the last one's to the end of the run).
In it: the calls the application made, the failures it saw (by CKR), how it reacted to the first
one (retried the call, opened a new session, logged in again, reconnected, gave up), and how long
after the last failure the failing function next succeeded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..codes import ckr_name
from ..serve.faults import CallRecord
from .journal import failed
from .scenario import Expect, Scenario, Step

NO_REPLY = "no reply (disconnected)"


@dataclass
class Check:
    expectation: str
    held: bool
    seen: str


@dataclass
class StepResult:
    step: Step
    start: float  # s after the application started
    end: float
    reached: bool  # the step was applied while the application ran
    fault_id: int | None
    calls: int = 0
    injected: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    reactions: list[str] = field(default_factory=list)
    recovered_after_s: float | None = None  # None: never succeeded again (or nothing failed)
    faulted_ms: float | None = None  # the calls its fault took: their mean time to the reply
    unfaulted_ms: float | None = None  # ... and the same functions' other calls in the window
    checks: list[Check] = field(default_factory=list)

    @property
    def failed_calls(self) -> int:
        return sum(self.failures.values())

    @property
    def held(self) -> bool:
        return all(check.held for check in self.checks)


@dataclass
class RunResult:
    scenario: Scenario
    command: list[str]
    duration_s: float
    app_exit: int | None  # None: killed at the timeout
    steps: list[StepResult]
    checks: list[Check]  # run level
    calls: int  # every call, kept or not
    by_result: dict[str, int]

    @property
    def held(self) -> bool:
        return all(c.held for c in self.checks) and all(s.held for s in self.steps)


def result_name(result: int | None) -> str:
    return NO_REPLY if result is None else ckr_name(result)


def analyse(
    scenario: Scenario,
    command: list[str],
    calls: list[CallRecord],
    start: float,
    applied: dict[str, tuple[float, int | None]],
    duration_s: float,
    app_exit: int | None,
    total_calls: int,
) -> RunResult:
    """`applied`: step name -> (time applied, s after start; the fault id it added, if any)."""
    ordered = sorted(calls, key=lambda c: c.started)
    # a step's window: from when it was applied (a step never applied: from the end of the run)
    starts = [applied[s.name][0] if s.name in applied else max(s.at, duration_s) for s in scenario.steps]
    steps = []
    for n, step in enumerate(scenario.steps):
        begin = starts[n]
        end = max(begin, starts[n + 1] if n + 1 < len(starts) else duration_s)
        fault_id = applied[step.name][1] if step.name in applied else None
        steps.append(_step(step, begin, end, step.name in applied, fault_id, ordered, start))
    checks = []
    if app_exit is None:
        checks.append(
            Check(
                "the application ends before the timeout",
                False,
                f"still running after {scenario.timeout_s:g} s: stopped",
            )
        )
    if scenario.expect.app_exit is not None:
        checks.append(
            Check(
                f"the application exits {scenario.expect.app_exit}",
                app_exit == scenario.expect.app_exit,
                "killed at the timeout" if app_exit is None else f"exit {app_exit}",
            )
        )
    checks += _checks(scenario.expect, None, len(ordered), sum(failed(c.result) for c in ordered))
    by_result = Counter(result_name(c.result) for c in ordered)
    return RunResult(
        scenario, command, duration_s, app_exit, steps, checks, total_calls, dict(by_result.most_common())
    )


def _step(
    step: Step,
    begin: float,
    end: float,
    reached: bool,
    fault_id: int | None,
    ordered: list[CallRecord],
    start: float,
) -> StepResult:
    result = StepResult(step, begin, end, reached, fault_id)
    inside = [c for c in ordered if begin <= c.started - start < end]
    result.calls = len(inside)
    if fault_id is not None:
        taken = [c for c in ordered if c.injection and fault_id in c.injection.faults]
        result.injected = len(taken)
        if taken:
            names = {c.name for c in taken}
            others = [
                c for c in inside if c.name in names and not (c.injection and fault_id in c.injection.faults)
            ]
            result.faulted_ms = round(1000 * sum(c.seconds for c in taken) / len(taken), 3)
            if others:
                result.unfaulted_ms = round(1000 * sum(c.seconds for c in others) / len(others), 3)
    failures = [c for c in inside if failed(c.result)]
    result.failures = dict(Counter(result_name(c.result) for c in failures).most_common())
    if failures:
        first = failures[0]
        last = [c for c in failures if c.name == first.name][-1]  # the function the fault hit
        result.reactions = _reactions(first, last, ordered)
        after = next(
            (c for c in ordered if c.started > last.started and c.name == last.name and c.result == 0), None
        )
        if after is not None:
            result.recovered_after_s = round(after.started + after.seconds - (last.started + last.seconds), 6)
    else:
        result.recovered_after_s = 0.0 if inside else None
    if not reached:
        result.checks.append(
            Check("the step is reached", step.expect.empty(), "the application had ended before it")
        )
        return result
    result.checks += _checks(step.expect, result, len(inside), len(failures))
    return result


def _reactions(first: CallRecord, last: CallRecord, ordered: list[CallRecord]) -> list[str]:
    before = {c.connection for c in ordered if c.started <= first.started}
    later = [c for c in ordered if c.started > first.started]
    same = [c for c in later if c.connection == first.connection]
    seen = []
    base = first.name.removesuffix("Update").removesuffix("Final")
    if any(c.name in (first.name, base + "Init", base) for c in same):
        seen.append("retried")
    if any(c.name == "C_OpenSession" for c in later):
        seen.append("opened a new session")
    if any(c.name == "C_Login" for c in later):
        seen.append("logged in again")
    if any(c.connection not in before for c in later):
        seen.append("reconnected")
    if not any(c.result == 0 and c.started > last.started and c.name == last.name for c in ordered):
        seen.append("gave up")
    return seen


def _checks(expect: Expect, step: StepResult | None, calls: int, failures: int) -> list[Check]:
    checks = []
    if expect.app_failures is not None:
        checks.append(
            Check(
                f"the application sees {expect.app_failures} failure(s)",
                failures == expect.app_failures,
                f"{failures} seen",
            )
        )
    if expect.app_failures_max is not None:
        checks.append(
            Check(
                f"the application sees at most {expect.app_failures_max} failure(s)",
                failures <= expect.app_failures_max,
                f"{failures} seen",
            )
        )
    if expect.calls_min is not None:
        checks.append(
            Check(
                f"the application makes at least {expect.calls_min} call(s)",
                calls >= expect.calls_min,
                f"{calls} made",
            )
        )
    if expect.app_recovers_within is not None and step is not None:
        took = step.recovered_after_s
        checks.append(
            Check(
                f"the application recovers within {expect.app_recovers_within:g} s",
                took is not None and took <= expect.app_recovers_within,
                "never succeeded again" if took is None else f"after {took:.3f} s",
            )
        )
    return checks
