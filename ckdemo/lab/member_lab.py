"""Member faults applied and kept track of in one place: the lab runner's member steps and the
control channel of a running `ckdemo serve` (`ckdemo member ...`, FaultLab) both go through a
MemberLab, so they do the same thing.

At once: fail, restore, kill, restart, hang, resume. Lasting (member_faults.Cycle, in a thread):
slow and flap, until stop() or their `for`. A remote member whose `p11-kit server` ckdemo runs
is killed and stopped for real (signals to its process group); a member served inside the
serving process (or one served elsewhere) is failed and restored in its HA group instead (kill: fail, restart:
fail then restore, flap: fail and restore in turn), and hang, resume and slow are refused with
the reason: nothing can stop it without stopping the whole server. clear() ends every loop and
resumes every server: no member is left hung, slowed or flapping.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..serve.control import ControlError, ControlledGroup, ControlledMember
from .member_faults import MAX_SLOW_MS, MIN_FLAP_EVERY_S, Cycle, flapping, server_flapping, slowdown

ACTIONS = ("fail", "restore", "kill", "restart", "hang", "resume", "slow", "flap")
LASTING = ("slow", "flap")
MAX_SECONDS = 86_400.0  # every, down and for: at most a day
# the state each action leaves its member in (the report's member bands); slow and flap alternate
STATES = {"fail": "down", "kill": "down", "restore": "up", "restart": "up", "hang": "hung", "resume": "up"}
# the settings each lasting action takes, by their JSON / TOML names
SETTINGS = {"slow": ("ms", "for"), "flap": ("every", "down", "for")}

Tell = Callable[[str, str, "str | None"], None]  # (member label, what happened, its state or None)


class MemberFaultError(ControlError):
    """A member fault that cannot be applied (unknown member, bad number, a member that cannot
    be stopped ...): one line."""


class MemberProcess(Protocol):
    """A remote member's server process (ckdemo.members.remote.MemberServer offers it)."""

    label: str
    managed: bool  # false: served elsewhere, ckdemo only attaches to its socket

    def pid(self) -> int | None: ...
    def kill(self) -> bool: ...
    def restart(self) -> int: ...
    def hang(self) -> bool: ...
    def resume(self) -> bool: ...
    def started_by_run(self) -> bool: ...
    def serve_again(self, for_runs: bool) -> int: ...


def checked(action: str, given: Mapping[str, Any]) -> dict[str, float | None]:
    """The settings of a slow or flap (`ms`, `for`; `every`, `down`, `for`) as numbers, or one
    line saying what is wrong: ms_, every_s, down_s, for_s (None where not given)."""
    known = SETTINGS.get(action, ())
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise MemberFaultError(
            f"{action} takes no {', '.join(unknown)}" + (f" (it takes {', '.join(known)})" if known else "")
        )
    numbers = {key: _number(key, given[key]) for key in known if given.get(key) is not None}
    for_s = numbers.get("for")
    if for_s is not None and not 0 < for_s <= MAX_SECONDS:
        raise MemberFaultError(f"for is above 0 and at most {MAX_SECONDS:.0f} seconds, not {for_s:g}")
    if action == "slow":
        ms = numbers.get("ms")
        if ms is None:
            raise MemberFaultError("slow needs ms, how long each stop lasts (e.g. 300)")
        if not 0 < ms <= MAX_SLOW_MS:
            raise MemberFaultError(f"ms is above 0 and at most {MAX_SLOW_MS}, not {ms:g}")
        return {"ms": ms, "every_s": None, "down_s": None, "for_s": for_s}
    if action == "flap":
        every = numbers.get("every")
        if every is None:
            raise MemberFaultError("flap needs every, the seconds of one down-and-up (e.g. 2)")
        down = numbers.get("down", every / 2)
        if not MIN_FLAP_EVERY_S <= every <= MAX_SECONDS or not 0 < down < every:
            raise MemberFaultError(
                f"every is at least {MIN_FLAP_EVERY_S:g} s and at most "
                f"{MAX_SECONDS:.0f} s, and down above 0 and below every "
                f"(every {every:g}, down {down:g})"
            )
        return {"ms": None, "every_s": every, "down_s": down, "for_s": for_s}
    return {"ms": None, "every_s": None, "down_s": None, "for_s": None}


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MemberFaultError(f"{key} is a number, not {value!r}")
    return float(value)


@dataclass(eq=False)
class Going:
    """A member fault that lasts: a slow or flap loop, or a hang (until resume)."""

    label: str
    action: str  # slow, flap or hang
    started: float
    ms: float | None = None
    every_s: float | None = None
    down_s: float | None = None
    for_s: float | None = None
    cycle: Cycle | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.cycle is None or self.cycle.running

    def describe(self) -> str:
        if self.action == "slow":
            said = f"slow (answers up to {self.ms:g} ms late)"
        elif self.action == "flap":
            said = f"flapping (down {self.down_s:g} s in every {self.every_s:g} s)"
        else:
            said = "hung (stopped, answers nothing)"
        return said + (f" for {self.for_s:g} s" if self.for_s is not None else "")

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "member": self.label,
            "action": self.action,
            "age_s": round(now - self.started, 3),
            "ms": self.ms,
            "every_s": self.every_s,
            "down_s": self.down_s,
            "for_s": self.for_s,
            "cycles": None if self.cycle is None else self.cycle.cycles,
            "describe": f"{self.label}: {self.describe()}",
        }


@dataclass(frozen=True)
class Applied:
    label: str
    how: str  # what was done, in words
    state: str  # up, down, hung, slow, flapping


class MemberLab:
    """Applies member faults to the members of `groups`; `processes`: member label -> its
    server process (remote members). `log` is told what a loop could not do."""

    def __init__(
        self,
        groups: Sequence[ControlledGroup],
        processes: Mapping[str, MemberProcess],
        log: Callable[[str], None] = lambda line: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.groups, self.processes, self.log, self.clock = list(groups), dict(processes), log, clock
        self._going: dict[str, Going] = {}  # member label -> what lasts on it
        self._lock = threading.Lock()

    # ---- finding a member ----------------------------------------------------------------------
    def member(self, name: str) -> tuple[ControlledGroup, ControlledMember]:
        if not isinstance(name, str) or not name:
            raise MemberFaultError("which member? (token label, serial or number in the group)")
        found = []
        for group in self.groups:
            try:
                found.append((group, group.member(name)))
            except KeyError:
                continue
        if not found:
            known = ", ".join(m.label or m.serial for g in self.groups for m in g.members) or "none"
            raise MemberFaultError(f"no member {name!r} in the HA group(s) served (members: {known})")
        if len(found) > 1:
            raise MemberFaultError(f"{name!r} names a member of {len(found)} groups: use its serial")
        return found[0]

    def _process(self, label: str) -> MemberProcess | None:
        process = self.processes.get(label)
        return process if process is not None and process.managed else None

    def _cannot_stop(self, action: str, label: str) -> MemberFaultError:
        where = (
            "is served elsewhere: ckdemo does not run its server"
            if label in self.processes
            else "is served inside the ckdemo process serving the HA slot (ckdemo init "
            "--remote makes members that can)"
        )
        return MemberFaultError(
            f"{action} needs a member whose p11-kit server process ckdemo runs: "
            f"{label} {where}; fail, restore, kill and flap work on any member"
        )

    # ---- applying -----------------------------------------------------------------------------
    def apply(
        self, action: str, name: str, settings: Mapping[str, Any] | None = None, tell: Tell | None = None
    ) -> Applied:
        """Do `action` to member `name` (settings: ms / every, down / for, as in a scenario);
        `tell(label, what, state)` hears each change a slow or flap makes, and its errors."""
        if action not in ACTIONS:
            raise MemberFaultError(f"unknown member action {action!r} (known: {', '.join(ACTIONS)})")
        given = checked(action, settings or {})
        group, member = self.member(name)
        label = member.label or member.serial
        process = self._process(label)
        tell = tell or (lambda label, what, state: None)
        with self._lock:
            going = self._going.get(label)
            if going is not None and not going.running:
                del self._going[label]
                going = None
            if going is not None and not (
                going.action == "hang" and action in ("resume", "kill", "fail", "restart")
            ):
                raise MemberFaultError(
                    f"{label} is {going.describe()}: stop that first "
                    f"(`ckdemo member {'resume' if going.action == 'hang' else 'stop'} "
                    f"{label}`)"
                )
            if action in ("hang", "resume", "slow") and process is None:
                raise self._cannot_stop(action, label)
            if action in ("hang", "slow") and process.pid() is None:
                raise MemberFaultError(
                    f"{label}'s server is not running (killed, or never served): "
                    f"`ckdemo member restore {label}` first"
                )
            if action in LASTING:
                return self._start(action, group, member, label, process, given, tell)
            how = self._at_once(action, group, member, process)
            if action == "hang":
                self._going[label] = Going(label, "hang", self.clock())
            elif going is not None:  # a hung member resumed, killed or restarted
                del self._going[label]
        tell(label, f"{action} ({how})", STATES[action])
        return Applied(label, how, STATES[action])

    def _at_once(
        self, action: str, group: ControlledGroup, member: ControlledMember, process: MemberProcess | None
    ) -> str:
        if action == "fail":
            return group.fail_member(member)
        if action == "restore":
            return group.restore_member(member)
        if action == "kill" and process is None:
            return f"failed in its HA group: {group.fail_member(member)}"
        if action == "restart" and process is None:
            group.fail_member(member)
            return f"failed and restored in its HA group: {group.restore_member(member)}"
        if action == "kill":
            return "server process killed" if process.kill() else "its server was not running"
        if action == "restart":
            return f"server process {process.restart()} started"
        if action == "hang":
            return "server process stopped (SIGSTOP)" if process.hang() else "its server was not running"
        return "server process resumed (SIGCONT)" if process.resume() else "its server was not running"

    def _start(
        self,
        action: str,
        group: ControlledGroup,
        member: ControlledMember,
        label: str,
        process: MemberProcess | None,
        given: dict,
        tell: Tell,
    ) -> Applied:
        ms, every_s, down_s, for_s = given["ms"], given["every_s"], given["down_s"], given["for_s"]
        if action == "slow":
            cycle = slowdown(process, ms, for_s)
            said = {
                "first": f"server process stopped {ms:g} ms at a time (SIGSTOP, SIGCONT)",
                "second": "server process running on time again",
            }
        elif process is None:
            cycle = flapping(
                lambda: group.fail_member(member),
                lambda: group.restore_member(member),
                every_s,
                down_s,
                for_s,
            )
            said = {"first": "failed in its HA group", "second": "restored in its HA group"}
        else:
            cycle = server_flapping(process, every_s, down_s, for_s)
            said = {"first": "server process killed", "second": "server process started again"}
        states = {"first": "slow" if action == "slow" else "down", "second": "up"}
        cycle.on_change = lambda which: tell(label, f"{action} ({said[which]})", states[which])

        def failed(error: BaseException) -> None:
            self.log(f"member {label}: {action}: {error}")
            tell(label, f"{action}: {error}", None)

        cycle.on_error = failed
        going = Going(label, action, self.clock(), ms, every_s, down_s, for_s, cycle)
        self._going[label] = going
        cycle.start(f"member-{action}-{label}")
        return Applied(label, going.describe(), "slow" if action == "slow" else "flapping")

    # ---- what goes on, and ending it -----------------------------------------------------------
    def going(self) -> list[Going]:
        with self._lock:
            return [g for g in self._going.values() if g.running]

    def stop(self, name: str) -> list[Going]:
        """End the slow or flap loop on member `name` (the member is left running and up); what
        ended ([] when nothing lasted on it)."""
        _, member = self.member(name)
        label = member.label or member.serial
        with self._lock:
            going = self._going.get(label)
            if going is None or going.cycle is None:
                return []
            del self._going[label]
        going.cycle.stop()
        return [going]

    def clear(self) -> list[Going]:
        """End every loop and resume every member's server (SIGCONT to each process group ckdemo
        runs): no member is left hung, slowed or flapping. What was going on."""
        with self._lock:
            ending, self._going = list(self._going.values()), {}
        for going in ending:
            if going.cycle is not None:
                going.cycle.stop()
        for process in self.processes.values():
            if process.managed:
                process.resume()
        return ending
