"""A remote member's slot, reached by speaking p11-kit RPC to its `p11-kit server` directly
(members/rpcclient.py): the same slot interface as PhysicalSlot, with no client library loaded.

The member's server serves one token; its slot id is the server's own (p11-kit numbers it). A
connection lost (server killed, stopped past MemberTimeout, restarted) answers CKR_DEVICE_ERROR
until reconnect(), which connects anew and finds the token by serial: every session from before
is gone, as after C_Finalize + C_Initialize of a client module.
"""

from __future__ import annotations

import time

from ..codes import CKR_DEVICE_ERROR, CKR_FUNCTION_NOT_SUPPORTED, CKR_TOKEN_NOT_PRESENT, CKRError
from ..model import LibraryInfo, MechanismInfo, SessionInfo, SlotInfo, TokenInfo
from ..slots import MemberSlot
from .names import mechanism_name, slot_description
from .raw import MECHANISM_FLAGS, SESSION_FLAGS, SLOT_FLAGS, TOKEN_FLAGS
from .rpcclient import Connection
from .rpcsession import RemoteSession

LATE_CALL_WAIT_S = 10.0  # the longest a recovery waits for a late call to land (a running server
# carries out a signature in milliseconds, an RSA-4096 key pair in seconds on a loaded machine;
# a server still stopped does not answer the reconnection)
LATE_CALL_POLL_S = 0.01

CKF_RW_SESSION, CKF_SERIAL_SESSION, CKF_DONT_BLOCK = 0x2, 0x4, 0x1
SLOT_LIST_ROOM = 64  # a member server serves one token; room for any list it could send


def _text(raw: bytes) -> str:
    return bytes(raw).decode("utf-8", errors="replace").rstrip(" \x00")


def _version(version) -> tuple[int, int]:
    return (version.major, version.minor)


def _flag_names(flags: int, table: dict[int, str]) -> tuple[str, ...]:
    return tuple(name for bit, name in table.items() if flags & bit)


class RemoteSlot(MemberSlot):
    """One member token behind a p11-kit server socket."""

    def __init__(self, server, timeout_s: float = 0.0, hedge_floor_s: float = 0.0) -> None:
        """server: the member's MemberServer (socket, and the process to kill/stop when ckdemo
        runs it). Connects at once; an unreachable member starts with slot_id None."""
        self.server = server
        self.member_label: str | None = server.label
        self.fallback_description = f"p11-kit remote member {server.label}"
        self.timeout_s = timeout_s
        self.hedge_floor_s = hedge_floor_s  # rpcclient.Connection: quick calls' own deadlines
        self.slot_id: int | None = None
        self.connection: Connection | None = None
        self._simulated_failure = False  # a member ckdemo only attaches to cannot be killed
        self._child: int | None = None  # the server's child serving this connection, if known
        self._late: set[int] = set()  # ... those of connections dropped with a call unanswered
        try:
            self._connect()
            ids = self.call("C_GetSlotList", 1, SLOT_LIST_ROOM)[0]
            self.slot_id = ids[0] if ids else None
        except CKRError:
            self.slot_id = None  # down at start: the member starts failed; recovery finds it

    @property
    def path(self) -> str:
        return str(self.server.socket)

    def _connect(self, probe: bool = False) -> Connection:
        old, self.connection = self.connection, None
        if old is not None:
            old.close("reconnecting")
            if old.left_a_call and self._child is not None:
                self._late.add(self._child)  # it may still carry out the call it was given
        before = self.server.children()
        self.connection = Connection(
            self.path,
            self.server.label,
            self.timeout_s,
            self.hedge_floor_s,
            probe=probe,
            learnt=old.learnt if old is not None else None,
        )
        new = self.server.children() - before
        self._child = new.pop() if len(new) == 1 else None  # (unknown when others connected too)
        return self.connection

    def _let_late_calls_land(self) -> None:
        """The server's children whose connection was dropped with a call unanswered (a hung
        member given up) carry that call out once the server runs again, a key generation
        included: waited for (at most LATE_CALL_WAIT_S), so that what they make is on the token
        before the member is compared and brought up to date."""
        deadline = time.monotonic() + LATE_CALL_WAIT_S
        while self._late:
            self._late = {child for child in self._late if not self.server.ended(child)}
            if not self._late or time.monotonic() >= deadline:
                self._late.clear()
                return
            time.sleep(LATE_CALL_POLL_S)

    def call(self, function: str, *args) -> tuple:
        if self._simulated_failure:
            raise CKRError(CKR_DEVICE_ERROR, function, "member failed (simulated)")
        connection = self.connection
        if connection is None:
            raise CKRError(CKR_TOKEN_NOT_PRESENT, function, "member not reachable")
        return connection.call(function, *args)

    def _slot_call(self, function: str, *args) -> tuple:
        if self.slot_id is None:
            raise CKRError(CKR_TOKEN_NOT_PRESENT, function, "member not reachable")
        return self.call(function, self.slot_id, *args)

    def reconnect(self, serial: str) -> None:
        """A new connection (the server's new child: a fresh module instance), the token found
        again by serial."""
        if self._simulated_failure:
            raise CKRError(CKR_DEVICE_ERROR, "C_Initialize", "member failed (simulated)")
        self._connect(probe=True)  # a recovery attempt: a member still hung costs the floor
        self._let_late_calls_land()
        for slot_id in self.call("C_GetSlotList", 1, SLOT_LIST_ROOM)[0]:
            try:
                info = self.call("C_GetTokenInfo", slot_id)[0]
            except CKRError:
                continue
            if _text(info.serial_number) == serial:
                self.slot_id = slot_id
                return
        raise CKRError(CKR_TOKEN_NOT_PRESENT, "C_GetSlotList", f"token {serial} not found")

    # ---- the slot interface ------------------------------------------------------------------
    def slot_info(self) -> SlotInfo:
        info = self._slot_call("C_GetSlotInfo")[0]
        return SlotInfo(
            self.slot_id,
            _text(info.slot_description),
            _text(info.manufacturer_id),
            info.flags,
            _flag_names(info.flags, SLOT_FLAGS),
            _version(info.hardware_version),
            _version(info.firmware_version),
        )

    def token_info(self) -> TokenInfo:
        i = self._slot_call("C_GetTokenInfo")[0]
        return TokenInfo(
            _text(i.label),
            _text(i.manufacturer_id),
            _text(i.model),
            _text(i.serial_number),
            i.flags,
            _flag_names(i.flags, TOKEN_FLAGS),
            i.max_session_count,
            i.session_count,
            i.max_rw_session_count,
            i.rw_session_count,
            i.max_pin_len,
            i.min_pin_len,
            i.total_public_memory,
            i.free_public_memory,
            i.total_private_memory,
            i.free_private_memory,
            _version(i.hardware_version),
            _version(i.firmware_version),
            _text(i.utc_time),
        )

    def description(self) -> str:
        return slot_description(self, "remote")

    def library_info(self) -> LibraryInfo:
        info = self.call("C_GetInfo")[0]
        return LibraryInfo(
            _version(info.cryptoki_version),
            _text(info.manufacturer_id),
            _text(info.library_description),
            _version(info.library_version),
            f"p11-kit RPC unix:path={self.path}",
        )

    def mechanisms(self) -> list[tuple[int, str]]:
        codes = self._slot_call("C_GetMechanismList", 1024)[0]
        return [(code, mechanism_name(code)) for code in codes]

    def mechanism_info(self, mechanism: int) -> MechanismInfo:
        info = self._slot_call("C_GetMechanismInfo", mechanism)[0]
        return MechanismInfo(
            mechanism,
            mechanism_name(mechanism),
            info.min_key_size,
            info.max_key_size,
            info.flags,
            _flag_names(info.flags, MECHANISM_FLAGS),
        )

    def init_token(self, so_pin: str, label: str) -> None:
        encoded = label.encode("utf-8")
        if len(encoded) > 32:
            raise ValueError("token label is longer than 32 bytes")
        self._slot_call("C_InitToken", so_pin.encode("utf-8"), encoded.ljust(32, b" "))

    def open_session(self, rw: bool = True) -> RemoteSession:
        connection = self.connection
        flags = CKF_SERIAL_SESSION | (CKF_RW_SESSION if rw else 0)
        handle = self._slot_call("C_OpenSession", flags)[0]
        return RemoteSession(self, connection, handle, rw)

    def session_info(self, connection: Connection, handle: int) -> SessionInfo:
        info = connection.call("C_GetSessionInfo", handle)[0]
        return SessionInfo(
            handle,
            info.slot_id,
            info.state,
            info.flags,
            _flag_names(info.flags, SESSION_FLAGS),
            info.device_error,
        )

    def login_counter(self) -> None:
        return None  # the token counts wrong PINs itself

    def extractability_note(self, extractable: bool) -> str:
        return ""  # CKA_EXTRACTABLE means what the token says

    def wait_for_event(self) -> int:
        return self.call("C_WaitForSlotEvent", CKF_DONT_BLOCK)[0]

    def close_all_sessions(self) -> None:
        self._slot_call("C_CloseAllSessions")

    def exports(self, symbol: str) -> list[str]:
        """No library is loaded for a remote member: no vendor extension can be found by dlsym."""
        return []

    # ---- failures, real ones for a server ckdemo runs ------------------------------------------
    def fail(self) -> str:
        if self.server.managed:
            self.server.kill()
            return "its p11-kit server was killed (SIGKILL to the process group)"
        self._simulated_failure = True  # attached: not ours to kill; our connection goes
        if self.connection is not None:
            self.connection.close("failed (simulated)")
        return "simulated: its connection is closed and every call returns CKR_DEVICE_ERROR"

    def restore(self) -> str:
        if self.server.managed:
            return f"its p11-kit server is serving again (pid {self.server.serve()})"
        self._simulated_failure = False
        return "simulated failure lifted"

    def hang(self) -> str:
        if not self.server.managed:
            raise CKRError(
                CKR_FUNCTION_NOT_SUPPORTED,
                "Hang member",
                f"{self.server.label} is served elsewhere: ckdemo cannot stop it",
            )
        self.server.hang()
        return "its p11-kit server was stopped (SIGSTOP): calls get no answer"

    def resume(self) -> str:
        self.server.resume()
        return "its p11-kit server runs again (SIGCONT)"

    @property
    def failed(self) -> bool:
        return self._simulated_failure or self.connection is None or not self.connection.alive

    def __repr__(self) -> str:
        return f"RemoteSlot({self.path!r}, {self.slot_id})"
