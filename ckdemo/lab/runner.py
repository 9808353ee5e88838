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
from typing import Callable, Sequence

from ..serve.control import ControlledGroup
from ..serve.faults import FaultBook
from .analysis import RunResult, analyse
from .journal import Journal
from .member_lab import MemberLab
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


class Timeline(threading.Thread):
    """Applies the steps at their times (seconds after `start`) until stopped."""

    def __init__(
        self,
        scenario: Scenario,
        book: FaultBook,
        journal: Journal,
        log: Callable[[str], None],
        members: MemberLab,
    ) -> None:
        super().__init__(name="lab-timeline", daemon=True)
        self.scenario, self.book, self.journal, self.log = scenario, book, journal, log
        self.members = members
        self.stopped = threading.Event()
        self.applied: dict[str, tuple[float, int | None]] = {}
        self.lasting: list[str] = []  # members whose slow or flap ends at the next step

    def run(self) -> None:
        for step in self.scenario.steps:
            if self.stopped.wait(max(0.0, self.journal.start + step.at - time.monotonic())):
                return
            while step.after_calls is not None and self.journal.count < step.after_calls:
                if self.stopped.wait(CALL_COUNT_POLL_S):
                    return
            self.end_lasting()  # their window ends where this one begins
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
        elif step.event == "change_slot":
            self.book.change_slot()
        elif step.event == "clear":
            self.book.clear()
        elif step.member is not None:
            self._member_step(step)
        return None

    def _member_step(self, step: Step) -> None:
        given = step.member
        settings = {"ms": given.ms, "every": given.every_s, "down": given.down_s, "for": given.for_s}

        def tell(label: str, what: str, state: str | None) -> None:
            self.journal.mark(
                time.monotonic(), f"member {label}: {what}", step.name, label if state else "", state or ""
            )

        applied = self.members.apply(
            given.action, given.name, {k: v for k, v in settings.items() if v is not None}, tell
        )
        if given.lasts and given.for_s is None:
            self.lasting.append(applied.label)

    def end_lasting(self) -> None:
        """Stop the slow and flap loops without a `for` of their own (their window ends at the
        next step); each leaves its member running and up."""
        ending, self.lasting = self.lasting, []
        for label in ending:
            self.members.stop(label)


def run(
    scenario: Scenario,
    server,
    groups: Sequence[ControlledGroup],
    command: list[str],
    env: dict[str, str],
    folder: Path,
    version: str,
    extra: dict,
    log: Callable[[str], None],
    members: MemberLab | None = None,
) -> LabRun:
    """`members`: what applies the member steps (shared with serve's control channel, when it
    has one); default: one for `groups` with no member process of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    app_log = folder / "app.log"
    serving = threading.Thread(target=server.serve_forever, name="lab-serve", daemon=True)
    serving.start()
    book: FaultBook = server.faults
    app_exit: int | None = None
    with open(app_log, "wb") as output:
        journal = Journal(time.monotonic())
        book.watch(journal.record)
        members = members or MemberLab(groups, {}, log)
        timeline = Timeline(scenario, book, journal, log, members)
        try:
            process = subprocess.Popen(
                command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
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
            members.clear()  # no member left hung, slowed or flapping behind the run
            book.unwatch(journal.record)
            book.close()  # no fault outlives the run; held calls are answered
            server.stop()
            serving.join(STOP_GRACE_S)
    calls, bins, marks = journal.snapshot()
    result = analyse(
        scenario,
        command,
        calls,
        journal.start,
        timeline.applied,
        duration,
        app_exit,
        len(calls) + journal.dropped,
    )
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
