"""The control channel of a running `ckdemo serve`: HA Status, fault injection and manual
recovery for the groups the server holds, from another process (`ckdemo hagroup status`,
`ckdemo member fail NAME` and `ckdemo member restore NAME`).

With local members only the serving process can reach its members, so this is the one way in.
Protocol: JSON lines on a Unix socket (HOME/run/ckdemo.ctl, mode 0600, peers of another user
refused), one request and one reply per line:

    {"command": "status"}                          -> {"ok": true, "lines": [...], "groups": [...]}
    {"command": "fail", "member": "member1"}       -> {"ok": true, "lines": ["HSM ... is down: ..."]}
    {"command": "restore", "member": "member1"}
    {"command": "recover"} / {"command": "recover", "group": "LABEL or serial"}
    {"command": "fault_add", "fault": {"calls": "C_Sign", "error": "CKR_DEVICE_ERROR", "count": 3}}
                                                   -> {"ok": true, "fault": {"id": 1, ...}, "lines": [...]}
    {"command": "fault_list"}                      -> {"ok": true, "faults": [...], "lines": [...]}
    {"command": "fault_clear"} / {"command": "fault_clear", "id": 1}
    {"command": "restart_hsm"} / {"command": "reset_library"} / {"command": "remove_token"} /
    {"command": "insert_token"} / {"command": "change_serial"} / {"command": "change_slot"}
    {"command": "member_kill", "member": "member2"} / member_restart / member_hang / member_resume
    {"command": "member_slow", "member": "member2", "ms": 300}   ("for": S optional)
    {"command": "member_flap", "member": "member2", "every": 2}  ("down", "for" optional)
    {"command": "member_stop", "member": "member2"}              -> {"ok": true, "stopped": [...], ...}
    anything else                                  -> {"ok": false, "error": "..."}

A fault's settings are the ones `ckdemo fault add` takes (ckdemo.serve.faults.FaultSpec.parse);
docs/FAULTS.md describes them field by field. Member faults are handed over to the MemberFaults
the wiring gives (ckdemo.lab.member_lab.MemberLab): this module only carries them.

The groups are handed in by the cli wiring; this module sees them only through `ControlledGroup`.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import struct
import threading
import time
from typing import Any, Callable, Protocol, Sequence

from ..codes import CKRError, ckr_name
from ..screens import (
    attempts_most,
    exhausted_notices,
    ha_status_row,
    recovering_notices,
    recovery_line,
    restored_line,
    standby_notices,
)
from . import unixsocket
from .faults import CallRecord, FaultBook, FaultError, FaultSpec

CONTROL_NAME = "ckdemo.ctl"  # beside ckdemo.sock in HOME/run
MAX_REQUEST_BYTES = 4096  # a request is one short JSON object
MEMBER_FAULTS = (
    "member_kill",
    "member_restart",
    "member_hang",
    "member_resume",
    "member_slow",
    "member_flap",
)  # each "member_" + an action of the lab's member faults
COMMANDS = (
    "status",
    "fail",
    "restore",
    "recover",
    "fault_add",
    "fault_list",
    "fault_clear",
    "restart_hsm",
    "reset_library",
    "remove_token",
    "insert_token",
    "change_serial",
    "change_slot",
    "journal_start",
    "journal_read",
    *MEMBER_FAULTS,
    "member_stop",
)
JOURNAL_KEPT = 100_000  # calls the journal keeps (the oldest go first)
JOURNAL_READ_MAX = 5_000  # calls one journal_read answers (read again from "next" for more)


class RecoveryCount(Protocol):
    recover_attempt_count: int  # the attempts made since it failed (Luna's counter)


class ControlledMember(Protocol):
    serial: str
    label: str
    standby: bool
    calls: int  # calls it has served (its share of the load)
    recovering: bool  # back, and catching up before it serves again (ha/rejoin.py)
    recovery: RecoveryCount | None  # while it is out of service


class RecoveryTiming(Protocol):
    interval_s: float  # Luna's X
    retries: int  # Luna's N


class ControlledGroup(Protocol):
    """What the control channel asks of an HA group (ckdemo.ha.group.HAGroup offers it)."""

    serial: str
    label: str
    members: Sequence[ControlledMember]
    policy: RecoveryTiming
    recovery_mode: str  # activeBasic or activeEnhanced

    def status(self) -> list[tuple[ControlledMember, int]]: ...
    def member(self, ref: str) -> ControlledMember: ...
    def fail_member(self, member: ControlledMember) -> str: ...
    def restore_member(self, member: ControlledMember) -> str: ...
    def recover_now(self) -> list[tuple[ControlledMember, bool]]: ...
    def recovery_exhausted(self) -> list[tuple[ControlledMember, int]]: ...


class MemberFaultGoing(Protocol):
    label: str

    def as_json(self, now: float) -> dict[str, Any]: ...


class MemberFaults(Protocol):
    """The lab's member faults (ckdemo.lab.member_lab.MemberLab offers them): kill, restart,
    hang, resume at once; slow and flap until stopped; clear() leaves every member running."""

    clock: Callable[[], float]

    def apply(
        self,
        action: str,
        name: str,
        settings: dict[str, Any] | None = None,
        tell: Callable[[str, str, str | None], None] | None = None,
    ) -> Any: ...
    def stop(self, name: str) -> list[MemberFaultGoing]: ...
    def going(self) -> list[MemberFaultGoing]: ...
    def clear(self) -> list[MemberFaultGoing]: ...


class ControlError(Exception):
    """A request the channel cannot carry out: the reply's error text."""


def status_lines(group: ControlledGroup, report: list[tuple[ControlledMember, int]]) -> list[str]:
    """HA Status as menu choice 52 prints it (CKDemo's format on Luna)."""
    return (
        [f"HA group {group.serial} status:"]
        + [ha_status_row(member.serial, code) for member, code in report]
        + standby_notices(report)
        + recovering_notices(report)
        + exhausted_notices(
            group.policy.retries, group.recovery_exhausted(), "`ckdemo hagroup recover` recovers it now"
        )
    )


def recovery_lines(group: ControlledGroup) -> list[str]:
    """After HA Status: the group's recovery mode, X and N, and the attempts made on each member
    out of service (menu 122's counters)."""
    most = attempts_most(group.policy.retries)
    return [
        f"HA group {group.serial}: {recovery_line(group.recovery_mode, group.policy.interval_s, group.policy.retries)}"
    ] + [
        f"   HSM {m.serial}: recovery attempt {m.recovery.recover_attempt_count} of {most}"
        for m in group.members
        if m.recovery is not None
    ]


class ControlServer:
    """Answers control requests on `path` in a thread of its own, one thread per client."""

    def __init__(
        self,
        path: str | os.PathLike,
        groups: list[ControlledGroup],
        log: Callable[[str], None] = print,
        on_error: Callable[[str, BaseException], None] | None = None,
        faults: FaultBook | None = None,
        members: MemberFaults | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.groups = groups
        self.faults = faults
        self.members = members
        self._journal: collections.deque | None = None  # (seq, CallRecord), when asked for
        self._journal_next = 0
        self._journal_lock = threading.Lock()
        self.log = log
        self.on_error = on_error or (
            lambda where, error: log(f"{where}: internal error {type(error).__name__}: {error}")
        )
        self._stopping = False
        self.listener = unixsocket.listen(self.path, backlog=8)
        self.thread = threading.Thread(target=self._accept, name="control", daemon=True)

    def start(self) -> "ControlServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self.stop_journal()
        unixsocket.close(self.listener, self.path)
        if self.thread.is_alive():
            self.thread.join(2)

    def _accept(self) -> None:
        while not self._stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:  # closed by stop()
                return
            threading.Thread(target=self._serve, args=(sock,), name="control-client", daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            uid = _peer_uid(sock)
            if uid not in (os.getuid(), 0):
                self.log(f"control: refused a client of uid {uid}")
                return
            reader = sock.makefile("rb")
            while True:
                line = reader.readline(MAX_REQUEST_BYTES + 1)
                if not line:
                    return
                if len(line) > MAX_REQUEST_BYTES:
                    _send(sock, {"ok": False, "error": f"request longer than {MAX_REQUEST_BYTES} bytes"})
                    return
                _send(sock, self.answer(line))

    def answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ControlError("a request is a JSON object")
            command = request.get("command")
            if command not in COMMANDS:
                raise ControlError(f"unknown command {command!r} (known: {', '.join(COMMANDS)})")
            if command in MEMBER_FAULTS:
                reply = self._member_fault(command.removeprefix("member_"), request)
            else:
                reply = getattr(self, f"_{command}")(request)
        except (ValueError, UnicodeDecodeError) as error:
            return {"ok": False, "error": f"not a JSON request: {error}"}
        except (ControlError, FaultError) as error:
            return {"ok": False, "error": str(error)}
        except CKRError as error:
            return {"ok": False, "error": str(error), "ckr": ckr_name(error.ckr)}
        except Exception as error:  # never a traceback: logged in errors.log, the server goes on
            self.on_error("control", error)
            return {"ok": False, "error": f"internal error {type(error).__name__}: {error}"}
        return {"ok": True, **reply}

    # ---- the commands ------------------------------------------------------------------------
    def _status(self, request: dict) -> dict:
        lines, groups = [], []
        for group in self.groups:
            report = group.status()
            lines += status_lines(group, report) + recovery_lines(group)
            spent = {id(m) for m, _ in group.recovery_exhausted()}
            groups.append(
                {
                    "label": group.label,
                    "serial": group.serial,
                    "recovery_mode": group.recovery_mode,
                    "interval_s": group.policy.interval_s,
                    "retry": group.policy.retries,
                    "members": [
                        {
                            "serial": m.serial,
                            "label": m.label,
                            "status": ckr_name(code),
                            "standby": m.standby,
                            "recovering": m.recovering,
                            "recovery_attempts": m.recovery.recover_attempt_count if m.recovery else None,
                            "recovery_exhausted": id(m) in spent,
                            "calls": m.calls,
                        }
                        for m, code in report
                    ],
                }
            )
        return {"lines": lines, "groups": groups}

    def _fail(self, request: dict) -> dict:
        group, member = self._member(request)
        how = self._fail_or_restore("fail", request, group, member)
        self.log(f"control: HSM {member.serial} ({member.label}) failed: {how}")
        return {"lines": [f"HSM {member.serial} ({member.label}) is down: {how}."]}

    def _restore(self, request: dict) -> dict:
        group, member = self._member(request)
        how = self._fail_or_restore("restore", request, group, member)
        self.log(f"control: HSM {member.serial} ({member.label}) restored: {how}")
        spent = any(m is member for m, _ in group.recovery_exhausted())
        return {
            "lines": [
                restored_line(
                    member,
                    how,
                    group.policy.interval_s,
                    spent,
                    "`ckdemo hagroup recover`",
                    group.recovery_mode == "activeEnhanced",
                    group.policy.retries,
                )
            ]
        }

    def _fail_or_restore(
        self, action: str, request: dict, group: ControlledGroup, member: ControlledMember
    ) -> str:
        """Through the member faults when there are (a member that is slow, flapping or hung is
        refused with the reason, and a hang ended by a fail is forgotten), else the group."""
        if self.members is not None:
            return self.members.apply(action, request["member"]).how
        return group.fail_member(member) if action == "fail" else group.restore_member(member)

    def _recover(self, request: dict) -> dict:
        lines, named = [], request.get("group")
        groups = [g for g in self.groups if named in (None, g.label, g.serial)]
        if not groups:
            raise ControlError(
                f"no HA group {named!r} here (groups: {', '.join(g.label for g in self.groups)})"
            )
        for group in groups:
            tried = group.recover_now()
            for member, back in tried:
                lines.append(f"HSM {member.serial} ({member.label}): {'recovered' if back else 'still down'}")
                self.log(
                    f"control: manual recovery of HSM {member.serial}: "
                    f"{'recovered' if back else 'still down'}"
                )
        return {"lines": lines or ["Every member is in service: nothing to recover."]}

    # ---- the fault lab ------------------------------------------------------------------------
    def _book(self) -> FaultBook:
        if self.faults is None:
            raise ControlError("this server injects no faults")
        return self.faults

    def _fault_add(self, request: dict) -> dict:
        fault = self._book().add(FaultSpec.parse(request.get("fault")))
        shown = fault.as_json(self._book().clock())
        return {"fault": shown, "lines": [f"fault {fault.id}: {shown['describe']}"]}

    def _fault_list(self, request: dict) -> dict:
        book = self._book()
        now = book.clock()
        faults = [fault.as_json(now) for fault in book.faults()]
        lines = [
            f"fault {f['id']}: {f['describe']} ({f['injected']} of {f['matched']} matching "
            f"call(s) taken{', spent' if f['spent'] else ''})"
            for f in faults
        ]
        going = [g.as_json(now) for g in self.members.going()] if self.members is not None else []
        lines += [f"member {g['describe']}" for g in going]
        return {
            "faults": faults,
            "restarts": book.restarts,
            "resets": book.resets,
            "members": going,
            "lines": lines or ["No fault in force."],
        }

    def _fault_clear(self, request: dict) -> dict:
        which = request.get("id")
        if which is not None and (isinstance(which, bool) or not isinstance(which, int)):
            raise ControlError(f"a fault id is a number (ckdemo fault list), not {which!r}")
        gone = self._book().clear(which)
        ended = self._member_faults().clear() if which is None and self.members is not None else []
        now = self._book().clock()
        return {
            "cleared": [f.id for f in gone],
            "members": [g.as_json(now) for g in ended],
            "lines": [f"fault {f.id} cleared ({f.injected} call(s) taken)" for f in gone]
            + [f"member {g.as_json(now)['describe']}: ended, running" for g in ended]
            or ["No fault in force."],
        }

    def _member_faults(self) -> MemberFaults:
        if self.members is None:
            raise ControlError("this server applies no member faults")
        return self.members

    def _member_fault(self, action: str, request: dict) -> dict:
        settings = {k: v for k, v in request.items() if k not in ("command", "member")}
        applied = self._member_faults().apply(
            action,
            request.get("member"),
            settings,
            lambda label, what, state: self.log(f"control: member {label}: {what}"),
        )
        return {"member": applied.label, "state": applied.state, "lines": [f"{applied.label}: {applied.how}"]}

    def _member_stop(self, request: dict) -> dict:
        members = self._member_faults()
        stopped = [g.as_json(members.clock()) for g in members.stop(request.get("member"))]
        for g in stopped:
            self.log(f"control: member {g['describe']}: stopped")
        return {
            "stopped": stopped,
            "lines": [f"{g['describe']}: stopped after {g['cycles']} time(s); running" for g in stopped]
            or [f"{request.get('member')}: neither slow nor flapping"],
        }

    def _restart_hsm(self, request: dict) -> dict:
        self._book().restart_hsm()
        return {"lines": ["HSM restart: every application's sessions and login end at its next call."]}

    def _reset_library(self, request: dict) -> dict:
        self._book().reset_library()
        return {
            "lines": [
                "Library reset: every application gets CKR_CRYPTOKI_NOT_INITIALIZED until "
                "it calls C_Initialize again."
            ]
        }

    def _remove_token(self, request: dict) -> dict:
        self._book().remove_token()
        return {
            "lines": [
                "Token removed: sessions end, CKR_TOKEN_NOT_PRESENT until `ckdemo fault add "
                "--insert-token`; each application gets a slot event."
            ]
        }

    def _insert_token(self, request: dict) -> dict:
        self._book().insert_token()
        return {"lines": ["Token inserted: applications may open sessions again; each gets a slot event."]}

    def _change_serial(self, request: dict) -> dict:
        changes = self._book().change_serial()
        return {"lines": [f"The token's serial number reads differently from now on (change {changes})."]}

    def _change_slot(self, request: dict) -> dict:
        changes = self._book().change_slot()
        return {
            "lines": [
                f"The token is in another slot from now on (change {changes}): slot ids "
                "kept from before are CKR_SLOT_ID_INVALID."
            ]
        }

    def _journal_start(self, request: dict) -> dict:
        book = self._book()
        with self._journal_lock:
            self._journal = collections.deque(maxlen=JOURNAL_KEPT)
        book.watch(self._keep)
        return {"next": self._journal_next, "lines": ["Every call is kept from now on (journal_read)."]}

    def _keep(self, call: CallRecord) -> None:
        with self._journal_lock:
            if self._journal is not None:
                self._journal.append((self._journal_next, call))
                self._journal_next += 1

    def _journal_read(self, request: dict) -> dict:
        after = request.get("after", 0)
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ControlError(f"after is a call number from 0, not {after!r}")
        with self._journal_lock:
            if self._journal is None:
                raise ControlError("no journal: journal_start first")
            found = [(n, c) for n, c in self._journal if n >= after][:JOURNAL_READ_MAX]
            following = found[-1][0] + 1 if found else max(after, self._journal_next)
        now = time.monotonic()
        calls = [
            {
                "seq": n,
                "connection": c.connection,
                "call": c.name,
                "ago_s": round(now - c.started, 6),
                "ms": round(c.seconds * 1000, 3),
                "fault": c.injection.describe() if c.injection else None,
                "result": "no reply" if c.result is None else ckr_name(c.result),
            }
            for n, c in found
        ]
        return {"calls": calls, "next": following, "lines": [f"{len(calls)} call(s)"]}

    def stop_journal(self) -> None:
        if self.faults is not None:
            self.faults.unwatch(self._keep)

    def _member(self, request: dict) -> tuple[ControlledGroup, ControlledMember]:
        ref = request.get("member")
        if not isinstance(ref, str) or not ref:
            raise ControlError("which member? (token label, serial or number in the group)")
        found = []
        for group in self.groups:
            try:
                found.append((group, group.member(ref)))
            except KeyError:
                continue
        if not found:
            known = ", ".join(m.label or m.serial for g in self.groups for m in g.members)
            raise ControlError(f"no member {ref!r} in the HA group(s) served (members: {known})")
        if len(found) > 1:
            raise ControlError(f"{ref!r} names a member of {len(found)} groups: use its serial")
        return found[0]


def _peer_uid(sock: socket.socket) -> int | None:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", raw)[1]
    except OSError:
        return None


def _send(sock: socket.socket, reply: dict) -> None:
    try:
        sock.sendall(json.dumps(reply).encode() + b"\n")
    except OSError:
        pass  # the client went away: nothing to tell
