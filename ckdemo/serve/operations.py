"""Cryptographic operations of one client session, kept server-side between calls.

The slot protocol has single-part calls (and streams driven by an iterator), while a client
calls Init, then Update ... Final or a single-part call. An operation remembers its key,
mechanism and parameter, buffers the parts, and does one single-part call on the slot at the
end. Its output is kept until it is delivered: a size query (buffer length 0) or a buffer too
small leaves the operation active with the same output, as PKCS#11 requires (so an ECDSA
signature asked twice is the same signature).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from ..codes import CKR_DEVICE_MEMORY, CKR_OPERATION_ACTIVE, CKR_OPERATION_NOT_INITIALIZED, CKRError
from ..model import MechanismParam
from ..rpc.structs import BufferSize

ENCRYPT, DECRYPT, DIGEST, SIGN, VERIFY = "encrypt", "decrypt", "digest", "sign", "verify"
# ECB mechanisms (all the 0.24.1 client lets through for multi-part ciphers) and their block
# sizes: each complete block is its own single-part call, so Update gives its output at once
# (clients such as pkcs11-tool expect most output from Update, not all of it at Final)
ECB_BLOCK = {0x1081: 16, 0x0132: 8, 0x0121: 8}  # CKM_AES_ECB, CKM_DES3_ECB, CKM_DES_ECB
MAX_BUFFERED = 64 * 1024 * 1024  # bytes one multi-part operation may collect before its final call
CONNECTION_BUFFERED = 64 * 1024 * 1024  # ... all operations of one application together
SERVER_BUFFERED = 256 * 1024 * 1024  # ... all applications together
# SoftHSM2 2.6.1 keeps about 2.8 KB for every object it refuses to make (C_CreateObject,
# C_CopyObject, a generation or unwrap whose template it refuses) and gives it back only when the
# library is unloaded (docs/FUZZ.md); the server keeps its members loaded for every application,
# so each such refusal is charged for good: per connection, and for the server
REFUSED_OBJECT_BYTES = 4096
CONNECTION_LOST = 16 * 1024 * 1024  # about 4,000 refused objects per application
SERVER_LOST = 64 * 1024 * 1024  # about 16,000 for the server's life: then CKR_DEVICE_MEMORY


class Budget:
    """Bytes that multi-part operations hold, bounded: one per connection, inside one for the
    server, so one application cannot take the memory every other one needs (CKR_DEVICE_MEMORY,
    as a token that is full answers)."""

    def __init__(self, limit: int, parent: "Budget | None" = None, what: str = "this application") -> None:
        self.limit = limit
        self.parent = parent
        self.what = what
        self.used = 0
        self._lock = threading.Lock()

    def take(self, size: int, function: str) -> None:
        with self._lock:
            if self.used + size > self.limit:
                raise CKRError(
                    CKR_DEVICE_MEMORY,
                    function,
                    f"{self.what} holds {self.used} bytes of multi-part input already (at most {self.limit})",
                )
            if self.parent is not None:
                self.parent.take(size, function)
            self.used += size

    def give(self, size: int) -> None:
        with self._lock:
            size = min(size, self.used)
            self.used -= size
            if self.parent is not None:
                self.parent.give(size)


@dataclass(slots=True)
class Operation:
    kind: str
    mechanism: int
    param: MechanismParam = None
    key: int | None = None
    parts: list[bytes] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)  # C_DigestKey parts
    key_at: list[int] = field(default_factory=list)  # ... each after that many data parts
    size: int = 0
    multi: bool = False
    carry: bytes = b""  # ECB: the incomplete block waiting for the next Update or Final
    _input: bytes | None = None
    _output: bytes | None = None
    size_key: tuple | None = None  # a signature's: what its size depends on (crypto_calls)
    _error: CKRError | None = None  # what computing the output for _input raised, kept for the caller
    init: tuple | None = None  # a signature's: the Init call's arguments, to predict it again
    budget: Budget | None = None  # what the buffered parts are charged to (Operations.start)
    # a CKA_ALWAYS_AUTHENTICATE key's: the context-specific login is still due; once given, its
    # PIN (checked) for the members' own logins, kept for this one operation only
    reauthenticate: bool = False
    context_pin: str | None = None

    def computed(self) -> bytes | None:
        """The output prepared for the last input, if it was computed without a refusal."""
        return self._output

    def add(self, data: bytes, function: str) -> None:
        self.multi = True
        if self.size + len(data) > MAX_BUFFERED:
            raise CKRError(
                CKR_DEVICE_MEMORY, function, f"more than {MAX_BUFFERED} bytes in one multi-part operation"
            )
        if self.budget is not None:
            self.budget.take(len(data), function)
        self.size += len(data)
        self.parts.append(bytes(data))

    def release(self) -> None:
        """The buffered parts go (the operation ended): their bytes back to the budget."""
        if self.budget is not None and self.size:
            self.budget.give(self.size)
        self.parts, self.size = [], 0

    def collected(self) -> bytes:
        return b"".join(self.parts)

    def output(self, data: bytes, compute: Callable[[bytes], bytes]) -> bytes:
        """compute(data), or the output (or the refusal) already computed for the same data."""
        if not self.ready_for(data):
            self.prepare(data, compute)
        if self._error is not None:
            raise self._error
        return self._output

    def ready_for(self, data: bytes) -> bool:
        return self._input == data and (self._output is not None or self._error is not None)

    def prepare(self, data: bytes, compute: Callable[[bytes], bytes]) -> None:
        """Compute the output for data now; a refusal is kept and raised when the output is asked."""
        self._input, self._output, self._error = data, None, None
        try:
            self._output = compute(data)
        except CKRError as error:
            self._error = error


class Operations:
    """At most one operation per session, whatever its kind (find is kept by the session itself,
    and excludes the others too): SoftHSM2 answers CKR_OPERATION_ACTIVE to a C_DigestInit while a
    signature is going on, and the HA slot answers as one token does."""

    def __init__(self, budget: Budget | None = None) -> None:
        self.active: dict[str, Operation] = {}
        self.budget = budget

    def start(self, operation: Operation, function: str) -> None:
        if self.active:  # one operation at a time in a session, of any kind, as SoftHSM2 keeps it
            raise CKRError(
                CKR_OPERATION_ACTIVE,
                function,
                f"a {next(iter(self.active))} operation is active in this session",
            )
        operation.budget = self.budget
        self.active[operation.kind] = operation

    def get(self, kind: str, function: str) -> Operation:
        try:
            return self.active[kind]
        except KeyError:
            raise CKRError(CKR_OPERATION_NOT_INITIALIZED, function) from None

    def end(self, kind: str) -> None:
        ended = self.active.pop(kind, None)
        if ended is not None:
            ended.release()

    def run(self, kind: str, function: str, body: Callable[[Operation], object]):
        """body(operation); any refusal ends the operation (PKCS#11), except a size answer."""
        operation = self.get(kind, function)
        try:
            return body(operation)
        except BaseException:
            self.end(kind)
            raise

    def deliver(self, kind: str, output: bytes, offered: int):
        """The output when the caller's buffer holds it (the operation ends), else its size."""
        if offered == 0 or offered < len(output):  # 0: a size query (p11-kit sends NULL as 0)
            return BufferSize(len(output))
        self.end(kind)
        return output

    def waiting_for_login(self) -> Operation | None:
        """The operation of a CKA_ALWAYS_AUTHENTICATE key whose context-specific login is due."""
        for operation in self.active.values():
            if operation.reauthenticate:
                return operation
        return None

    def clear(self) -> None:
        for operation in self.active.values():
            operation.release()
        self.active.clear()
