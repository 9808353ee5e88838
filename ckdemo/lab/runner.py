"""`ckdemo lab run`: serve, start the application, play the scenario's timeline, stop, report.

The server is handed in, listening (the command wiring builds it from a home); this module runs
it in a thread, tells the application where it is (P11_KIT_SERVER_ADDRESS and friends in its
environment), applies each step at its time, and when the application has ended (or the
scenario's timeout has passed: it is stopped) stops everything and writes the report. No fault
outlives the run: the book is closed before the server stops.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

from ..serve.control import ControlledGroup
from ..serve.faults import FaultBook
from .analysis import RunResult, analyse
from .journal import Journal
from .member_faults import Cycle, flapping, server_flapping, slowdown
from .report import as_json, write
from .scenario import Scenario, Step

STOP_GRACE_S = 5.0
CALL_COUNT_POLL_S = 0.002  # how often a step that waits for the application's calls looks


@dataclass
class LabRun:
    result: RunResult
    report: dict
    written: list[Path]
    app_log: Path


class MemberProcess(Protocol):
    """A remote member's server process (ckdemo.members.remote.MemberServer offers it)."""
    label: str
    def kill(self) -> bool: ...
    def restart(self) -> int: ...
    def hang(self) -> bool: ...
    def resume(self) -> bool: ...
    def started_by_run(self) -> bool: ...
    def serve_again(self, for_runs: bool) -> int: ...


# the state a member is left in by each action (the report's member bands)
MEMBER_STATES = {"fail": "down", "kill": "down", "restore": "up", "restart": "up", "hang": "hung",
                 "resume": "up"}


class Timeline(threading.Thread):
    """Applies the steps at their times (seconds after `start`) until stopped."""

    def __init__(self, scenario: Scenario, book: FaultBook, groups: Sequence[ControlledGroup],
                 journal: Journal, log: Callable[[str], None],
                 processes: Mapping[str, MemberProcess] | None = None) -> None:
        super().__init__(name="lab-timeline", daemon=True)
        self.scenario, self.book, self.groups, self.journal, self.log = scenario, book, groups, journal, log
        self.processes = dict(processes or {})  # member label -> its server process (remote members)
        self.stopped = threading.Event()
        self.applied: dict[str, tuple[float, int | None]] = {}
        self.cycles: list[tuple[Step, Cycle]] = []  # slow and flap steps going on
        self._cycles_lock = threading.Lock()

    def run(self) -> None:
        for step in self.scenario.steps:
            if self.stopped.wait(max(0.0, self.journal.start + step.at - time.monotonic())):
                return
            while step.after_calls is not None and self.journal.count < step.after_calls:
                if self.stopped.wait(CALL_COUNT_POLL_S):
                    return
            self.end_cycles(until_next_step_only=True)  # their window ends where this one begins
            now = time.monotonic()  # before: a call its fault takes may come before it returns
            try:
                fault_id = self._apply(step)
            except Exception as error:  # a member that cannot be failed, ...: said, the run goes on
                self.log(f"lab: step {step.name!r} could not be applied: {error}")
                self.journal.mark(time.monotonic(), f"not applied: {error}", step.name)
                continue
            self.applied[step.name] = (now - self.journal.start, fault_id)
            if step.member is None:  # a member's change is marked with what it did
                self.journal.mark(now, step.describe(), step.name)
            self.log(f"lab: {now - self.journal.start:7.2f} s  {step.name}: {step.describe()}")

    def _apply(self, step: Step) -> int | None:
        if step.fault is not None:
            return self.book.add(step.fault).id
        if step.event == "restart_hsm":
            self.book.restart_hsm()
        elif step.event == "reset_library":
            self.book.reset_library()
        elif step.event == "remove_token":
            self.book.remove_token()
        elif step.event == "insert_token":
            self.book.insert_token()
        elif step.event == "change_serial":
            self.book.change_serial()
        elif step.event == "clear":
            self.book.clear()
        elif step.member is not None:
            self._member_step(step)
        return None

    def _member_step(self, step: Step) -> None:
        action = step.member.action
        group, member = self._member(step.member.name)
        process = self.processes.get(member.label)
        if action in ("fail", "restore"):
            how = group.fail_member(member) if action == "fail" else group.restore_member(member)
        elif action == "flap" and process is None:  # a member served here: through its HA group
            self._cycle(step, member.label, flapping(
                lambda: group.fail_member(member), lambda: group.restore_member(member),
                step.member.every_s, step.member.down_s, step.member.for_s),
                "failed in its HA group", "restored in its HA group")
            return
        elif process is None:
            raise LookupError(f"{action} needs a remote member (ckdemo init --remote): "
                              f"{member.label} is served in this process; fail, restore and flap "
                              "work on any member")
        elif action == "flap":
            self._cycle(step, member.label, server_flapping(
                process, step.member.every_s, step.member.down_s, step.member.for_s),
                "server process killed", "server process started again")
            return
        elif action == "slow":
            self._cycle(step, member.label, slowdown(process, step.member.ms, step.member.for_s),
                        f"server process stopped {step.member.ms:g} ms at a time (SIGSTOP, SIGCONT)",
                        "server process running on time again")
            return
        else:
            done = getattr(process, action)()
            how = {"kill": "server process killed", "restart": f"server process {done} started",
                   "hang": "server process stopped (SIGSTOP)",
                   "resume": "server process resumed (SIGCONT)"}[action] if done else "no process"
        self.journal.mark(time.monotonic(), f"member {member.label}: {action} ({how})", step.name,
                          member.label, MEMBER_STATES[action])

    def _cycle(self, step: Step, label: str, cycle: Cycle, first: str, second: str) -> None:
        """Start a slow or flap step's loop; each change it tells is marked."""
        action = step.member.action
        states = {"first": "slow" if action == "slow" else "down", "second": "up"}
        said = {"first": first, "second": second}

        def changed(which: str) -> None:
            self.journal.mark(time.monotonic(), f"member {label}: {action} ({said[which]})", step.name,
                              label, states[which])

        def failed(error: BaseException) -> None:
            self.log(f"lab: step {step.name!r}: {label}: {error}")
            self.journal.mark(time.monotonic(), f"member {label}: {action}: {error}", step.name)
        cycle.on_change, cycle.on_error = changed, failed
        with self._cycles_lock:
            self.cycles.append((step, cycle.start(f"lab-{action}-{label}")))

    def end_cycles(self, until_next_step_only: bool = False) -> None:
        """Stop the slow and flap loops (only those without a `for` of their own: their window
        ends at the next step); each leaves its member running and up."""
        with self._cycles_lock:
            ending = [(s, c) for s, c in self.cycles
                      if not until_next_step_only or s.member.for_s is None]
            self.cycles = [pair for pair in self.cycles if pair not in ending]
        for _, cycle in ending:
            cycle.stop()

    def _member(self, name: str):
        for group in self.groups:
            try:
                return group, group.member(name)
            except KeyError:
                continue
        known = ", ".join(m.label for g in self.groups for m in g.members) or "none"
        raise LookupError(f"no member {name!r} in the HA group(s) served (members: {known})")


def run(scenario: Scenario, server, groups: Sequence[ControlledGroup], command: list[str],
        env: dict[str, str], folder: Path, version: str, extra: dict,
        log: Callable[[str], None], processes: Mapping[str, MemberProcess] | None = None) -> LabRun:
    folder.mkdir(parents=True, exist_ok=True)
    app_log = folder / "app.log"
    serving = threading.Thread(target=server.serve_forever, name="lab-serve", daemon=True)
    serving.start()
    book: FaultBook = server.faults
    app_exit: int | None = None
    with open(app_log, "wb") as output:
        journal = Journal(time.monotonic())
        book.watch(journal.record)
        timeline = Timeline(scenario, book, groups, journal, log, processes)
        try:
            process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        except OSError as error:
            book.close()
            server.stop()
            raise LabError(f"cannot start {command[0]}: {error.strerror or error}") from None
        journal.start = time.monotonic()
        timeline.start()
        try:
            app_exit = process.wait(scenario.timeout_s)
        except subprocess.TimeoutExpired:
            log(f"lab: the application still runs after {scenario.timeout_s:g} s: stopped")
            _stop(process)
        except KeyboardInterrupt:
            _stop(process)
            raise
        finally:
            duration = time.monotonic() - journal.start
            timeline.stopped.set()
            timeline.join(STOP_GRACE_S)
            timeline.end_cycles()  # before the resume below: a loop would stop a member again
            for process in (processes or {}).values():
                process.resume()  # no member left stopped behind the run
            book.unwatch(journal.record)
            book.close()  # no fault outlives the run; held calls are answered
            server.stop()
            serving.join(STOP_GRACE_S)
    calls, bins, marks = journal.snapshot()
    result = analyse(scenario, command, calls, journal.start, timeline.applied, duration, app_exit,
                     len(calls) + journal.dropped)
    members = [m.label for group in groups for m in group.members]
    report = as_json(result, calls, bins, marks, journal.start, journal.dropped, version, extra, members)
    return LabRun(result, report, write(folder, report, result, bins, marks, members), app_log)


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(STOP_GRACE_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


class LabError(Exception):
    """The run could not be made (the application did not start, ...): one line."""
