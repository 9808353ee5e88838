"""One connection to a `p11-kit server` socket, speaking the p11-kit RPC protocol version 0
(ckdemo.rpc is the codec; docs/RPC.md the protocol).

The server forks a `p11-kit-remote` child per connection: the connection is the member's
module instance, and its sessions live and die with it. Calls go one at a time (a lock; the
child answers in order anyway). The socket gives every call its deadline (MemberTimeout): a
stopped server never answers, the call fails with CKR_DEVICE_ERROR once the deadline passes and
the connection is dropped. A dead or restarted server, a broken frame or a timeout all leave the
connection closed: every later call answers CKR_DEVICE_ERROR until the slot reconnects, which is
what p11-kit-client.so does until C_Finalize + C_Initialize.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from ..codes import CKR_ARGUMENTS_BAD, CKR_DEVICE_ERROR, CKRError
from ..rpc import CodecError, HANDSHAKE, PROTOCOL_VERSION, decode_response, encode_request
from ..rpc.calls import BY_NAME, CALL_ERROR
from ..rpc.framing import HEADER, FrameStream
from ..slots import in_fan_out

MAX_CALL_CODE = 0xFFFFFFFF
# calls whose time depends on neither the token's size nor a key nor the data: one the member
# has not answered often yet waits as long as the quick calls it is known to answer (a new
# application's first calls behind a hung member), not MemberTimeout
CONSTANT_TIME = frozenset(
    {
        "C_GetInfo",
        "C_GetSlotList",
        "C_GetSlotInfo",
        "C_GetTokenInfo",
        "C_GetMechanismList",
        "C_GetMechanismInfo",
        "C_OpenSession",
        "C_CloseSession",
        "C_GetSessionInfo",
    }
)
# the calls above and these change nothing a retry elsewhere could double: a member late on one
# of them by far more than its own recent answers is given up (hedged) and the HA group moves the
# call on. The others (logins, PIN changes; object changes and key generation outside the cases
# below) wait the whole MemberTimeout: an answer that may yet come must not be mistaken for none.
QUICK = CONSTANT_TIME | frozenset(
    {
        "C_FindObjectsInit",
        "C_FindObjects",
        "C_FindObjectsFinal",
        "C_GetAttributeValue",
        "C_GetObjectSize",
        "C_EncryptInit",
        "C_Encrypt",
        "C_EncryptUpdate",
        "C_EncryptFinal",
        "C_DecryptInit",
        "C_Decrypt",
        "C_DecryptUpdate",
        "C_DecryptFinal",
        "C_DigestInit",
        "C_Digest",
        "C_DigestUpdate",
        "C_DigestFinal",
        "C_SignInit",
        "C_Sign",
        "C_SignUpdate",
        "C_SignFinal",
        "C_VerifyInit",
        "C_Verify",
        "C_VerifyUpdate",
        "C_VerifyFinal",
        "C_GenerateRandom",
    }
)
# ... and these, when they reach one member of several making the same change (slots.fan_out):
# an answer that comes after the call was given up makes on the member what the group holds. A
# key generation is given up so only where the HA group generates (ha/session.py _generate_on):
# a key the late member makes after all is its orphan, replaced when it comes back
FANNED_OUT = frozenset(
    {
        "C_CreateObject",
        "C_CopyObject",
        "C_DestroyObject",
        "C_SetAttributeValue",
        "C_UnwrapKey",
        "C_WrapKey",
        "C_GenerateKey",
        "C_GenerateKeyPair",
    }
)
HEDGE_SPREAD = 8  # a quick call's deadline: its smoothed time + 8 x its smoothed deviation, and
# never less than the floor the settings give (MemberHedgeFloor) ...
HEDGE_AFTER = 3  # ... once the member has answered that call this often (before: MemberTimeout)


class Connection:
    """A connected, initialised p11-kit RPC client for one socket."""

    def __init__(
        self,
        path: str,
        name: str,
        timeout_s: float = 0.0,
        hedge_floor_s: float = 0.0,
        probe: bool = False,
        learnt: dict[str, list[float]] | None = None,
    ) -> None:
        """Connects, agrees on version 0 and sends C_Initialize with the handshake; failures
        raise CKRError(CKR_DEVICE_ERROR) with the reason. timeout_s 0: no deadline.
        hedge_floor_s > 0: a QUICK call gets a deadline of its own, learnt from this member's
        recent answers to that call (as TCP learns its retransmission timeout), at least the
        floor and at most timeout_s; 0: every call waits timeout_s. probe: a recovery attempt's
        connection: connecting and C_Initialize wait at most the floor (a member that still does
        not answer costs the application call that tries it no more); `learnt`: the times the
        member's earlier connection learnt."""
        self.path = path
        self.name = name
        self.timeout_s = timeout_s or None
        self.hedge_floor_s = hedge_floor_s
        # function -> [smoothed time, smoothed deviation, answers seen]
        self._times: dict[str, list[float]] = learnt if learnt is not None else {}
        self._probing = False
        self._sock_deadline = self.timeout_s  # what SO_RCVTIMEO says now
        if probe and hedge_floor_s and (self.timeout_s is None or hedge_floor_s < self.timeout_s):
            self._sock_deadline = hedge_floor_s
        self._lock = threading.RLock()
        self._lock_wait = -1 if self.timeout_s is None else self.timeout_s
        self._code = 0x0F  # the first call goes out as 0x10, as p11-kit's client numbers them
        self._closed_because = ""
        # dropped with a call unanswered: the server may still carry it out when it runs again
        self.left_a_call = False
        self._sock: socket.socket | None = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self._sock_deadline is not None:  # in the kernel: no poll() before every send and recv
            seconds = self._sock_deadline
            deadline = struct.pack("ll", int(seconds), int(seconds % 1 * 1e6))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, deadline)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, deadline)
        try:
            sock.connect(path)
            sock.sendall(bytes([PROTOCOL_VERSION]))
            agreed = sock.recv(1)
        except BlockingIOError:  # SO_RCVTIMEO passed: EAGAIN
            sock.close()
            raise CKRError(
                CKR_DEVICE_ERROR, "C_Initialize", self._no_answer("C_Initialize", self._sock_deadline)
            ) from None
        except OSError as exc:
            sock.close()
            raise CKRError(
                CKR_DEVICE_ERROR,
                "C_Initialize",
                f"cannot reach member {name} at {path}: {exc.strerror or exc}",
            ) from None
        if agreed != bytes([PROTOCOL_VERSION]):
            sock.close()
            raise CKRError(
                CKR_DEVICE_ERROR,
                "C_Initialize",
                f"member {name}'s server does not speak p11-kit RPC version 0 (answered {agreed!r})",
            )
        self._sock = sock
        self._probing = probe and self._sock_deadline != self.timeout_s
        try:
            self.call("C_Initialize", HANDSHAKE, 0, b"\0")  # the reserved byte p11-kit sends
        finally:
            self._probing = False

    def _no_answer(self, function: str = "", deadline: float | None = None, timed_as: str = "") -> str:
        if deadline is not None and deadline != self.timeout_s:
            times = self._times.get(timed_as or function)
            usual = f"its answers take {times[0] * 1000:.1f} ms" if times else "no answer to it yet"
            return (
                f"no answer from member {self.name} to {function} within {deadline:.3g} s "
                f"({usual}): given up (MemberHedgeFloor), the call moves to another member"
            )
        return f"no answer from member {self.name} within {self.timeout_s:g} s (MemberTimeout)"

    def _deadline(self, function: str, timed_as: str = "") -> float | None:
        """How long this call may wait for its answer (timed_as: what its answers are learnt as,
        when the function's time depends on its arguments: an RSA-4096 key pair is not an EC one)."""
        if self._probing:
            return self._sock_deadline  # a recovery attempt's C_Initialize: the floor
        if not self.hedge_floor_s or (
            function not in QUICK and not (function in FANNED_OUT and in_fan_out())
        ):
            return self.timeout_s
        times = self._times.get(timed_as or function)
        if times is not None and times[2] >= HEDGE_AFTER:
            wait = self._wait(times)
        elif function in CONSTANT_TIME and self._answered_quickly():
            # not answered often yet (a new application's first C_GetMechanismList): as long as
            # the slowest quick call it is known to answer (a search or an RSA-8192 signature
            # takes what it takes: those learn their own time first)
            wait = max(self._wait(t) for f, t in self._times.items() if f in QUICK and t[2] >= HEDGE_AFTER)
        else:
            return self.timeout_s  # too few answers to know this member's usual time
        return wait if self.timeout_s is None else min(wait, self.timeout_s)

    def _wait(self, times: list[float]) -> float:
        return max(self.hedge_floor_s, times[0] + HEDGE_SPREAD * times[1])

    def _answered_quickly(self) -> bool:
        return any(f in QUICK and t[2] >= HEDGE_AFTER for f, t in self._times.items())

    def _learn(self, function: str, took: float) -> None:
        """Smoothed time and deviation of this member's answers to `function` (RFC 6298's)."""
        times = self._times.get(function)
        if times is None:
            self._times[function] = [took, took / 2, 1]
            return
        times[1] += (abs(took - times[0]) - times[1]) / 4
        times[0] += (took - times[0]) / 8
        times[2] += 1

    def _set_deadline(self, sock: socket.socket, seconds: float | None) -> None:
        value = (
            struct.pack("ll", 0, 0)
            if seconds is None
            else struct.pack("ll", int(seconds), int(seconds % 1 * 1e6))
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        self._sock_deadline = seconds

    @property
    def learnt(self) -> dict[str, list[float]]:
        """What this connection learnt of the member's answer times (handed to the next one)."""
        return self._times

    @property
    def alive(self) -> bool:
        return self._sock is not None

    def close(self, why: str = "closed by ckdemo") -> None:
        """Drop the connection: the server's child ends and with it every session on it."""
        with self._lock:
            self._drop(why)

    def _drop(self, why: str) -> None:
        sock, self._sock = self._sock, None
        self._closed_because = self._closed_because or why
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _acquire(self, function: str) -> None:
        if not self._lock.acquire(timeout=self._lock_wait):
            raise CKRError(
                CKR_DEVICE_ERROR, function, f"member {self.name} is still busy with an earlier call (hung?)"
            )

    @contextmanager
    def exclusive(self, function: str) -> Iterator[None]:
        """Several calls that belong together (C_SignInit + C_Sign on one session) with no other
        call between them; waits at most the deadline for a call in progress."""
        self._acquire(function)
        try:
            yield
        finally:
            self._lock.release()

    def call(self, function: str, *args, timed_as: str = "") -> tuple:
        """One request and its reply's fields; an error reply raises CKRError(its CK_RV).
        timed_as: the name its answer times are learnt under (default: the function's)."""
        call = BY_NAME[function]
        try:
            body = encode_request(call, *args)
        except CodecError as exc:  # a value the protocol cannot carry: the caller's mistake
            raise CKRError(CKR_ARGUMENTS_BAD, function, f"not encodable for p11-kit RPC: {exc}") from None
        deadline = self._deadline(function, timed_as)
        # waiting for the connection is not the member's lateness (another thread's key generation
        # may hold it for seconds): that wait is MemberTimeout's, the answer's is the deadline
        self._acquire(function)
        try:
            sock = self._sock
            if sock is None:
                raise CKRError(
                    CKR_DEVICE_ERROR,
                    function,
                    f"connection to member {self.name} lost ({self._closed_because})",
                )
            self._code = code = self._code + 1 if self._code < MAX_CALL_CODE else 0x10
            if deadline != self._sock_deadline:
                self._set_deadline(sock, deadline)
            try:
                started = time.perf_counter()
                sock.sendall(HEADER.pack(code, 0, len(body)) + body)
                reply_code, reply = self._receive(sock)
                if deadline is not None and (function in QUICK or function in FANNED_OUT):
                    self._learn(timed_as or function, time.perf_counter() - started)
            except BlockingIOError:  # SO_RCVTIMEO/SO_SNDTIMEO passed: EAGAIN
                why = self._no_answer(function, deadline, timed_as)
                self.left_a_call = True
                self._drop(why)
                raise CKRError(CKR_DEVICE_ERROR, function, why) from None
            except (OSError, EOFError, CodecError) as exc:
                why = f"member {self.name}'s server went away ({exc})"
                self._drop(why)
                raise CKRError(CKR_DEVICE_ERROR, function, why) from None
            if reply_code != code:
                self._drop(f"reply {reply_code:#x} to call {code:#x}")
                raise CKRError(CKR_DEVICE_ERROR, function, f"member {self.name} answered out of turn")
            try:
                message = decode_response(reply, call)
            except CodecError as exc:
                self._drop(f"bad reply: {exc}")
                raise CKRError(
                    CKR_DEVICE_ERROR, function, f"bad reply from member {self.name}: {exc}"
                ) from None
        finally:
            self._lock.release()
        if message.call_id == CALL_ERROR:
            raise CKRError(message.args[0], function)
        return message.args

    @staticmethod
    def _receive(sock: socket.socket) -> tuple[int, bytes]:
        """One reply frame: (call code, body), read as the server reads requests (one recv in
        the usual case); every recv waits at most the deadline (SO_RCVTIMEO). A server sends
        nothing unasked: bytes after the reply break the connection."""
        frames = FrameStream(sock)
        code, body = frames.next()
        if frames.pending:
            raise CodecError(f"{len(frames.pending)} bytes after the reply")
        return code, body

    def __repr__(self) -> str:
        return f"Connection({self.path!r}, {'open' if self.alive else 'closed'})"
