"""What a connection keeps per client session, and the small pieces every group of calls uses."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..codes import CKR_ARGUMENTS_BAD, CKR_PIN_INVALID, CKRError
from ..rpc.structs import BufferSize
from .operations import Operations


CKF_DONT_BLOCK, CKF_RW_SESSION, CKF_SERIAL_SESSION = 0x1, 0x2, 0x4
RO_PUBLIC, RO_USER, RW_PUBLIC, RW_USER, RW_SO = range(5)  # CKS_*


@dataclass
class ClientSession:
    handle: int
    slot: "ExposedSlot"  # noqa: F821  (exposed.ExposedSlot)
    rw: bool
    operations: Operations = field(default_factory=Operations)
    found: list[int] | None = None
    session_objects: set[int] = field(default_factory=set)  # CKA_TOKEN false, made here
    wrapped: tuple | None = None  # (request, output) kept for a C_WrapKey size query
    random_ahead: bytes | None = None  # made after a C_GenerateRandom for the same one again


def arg_bytes(value) -> bytes:
    """An `ay` argument: bytes, or a NULL array (BufferSize) of length 0."""
    return b"" if isinstance(value, BufferSize) else bytes(value)


def quietly(call) -> None:
    try:
        call()
    except CKRError:
        pass  # gone already (a failed member, a closed session): the state we wanted


def pin_text(pin, function: str) -> str:
    """A PIN argument as text: a NULL one (protected authentication path) is not served."""
    if isinstance(pin, BufferSize):
        raise CKRError(
            CKR_ARGUMENTS_BAD, function, "no PIN given (protected authentication path is not served)"
        )
    try:
        return bytes(pin).decode("utf-8")
    except UnicodeDecodeError:
        raise CKRError(CKR_PIN_INVALID, function, "the PIN is not UTF-8") from None
