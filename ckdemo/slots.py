"""The one declared shape of a slot and of a session on it, whatever stands behind them.

A physical slot (ckdemo.members.slot.PhysicalSlot), a remote member (ckdemo.members.rpcslot.
RemoteSlot) and the HA virtual slot (ckdemo.ha.group.HAGroup) all subclass `Slot`, and their
sessions `Session`: a missing operation stops the class from being instantiated, and
tests/test_slots_contract.py checks every signature against these. The menu handlers and the
RPC server (ckdemo.serve) drive slots through them only, so neither can tell which one it holds.
Members of an HA group also sign `MemberSlot` / `MemberSession` (what recovery and fault
injection need). Modelled on python-pkcs11's `pkcs11/types.py` (`Slot`, `Token`, `Session`),
with integer object handles.

Values, both ways: templates are `{CKA_*: value}` dicts with plain Python values -- bool for
CK_BBOOL attributes, int for CK_ULONG ones, str for the UTF-8 text attributes in
TEXT_ATTRIBUTES, datetime.date for DATE_ATTRIBUTES, bytes for everything else (a nested
template is a dict, allowed mechanisms a list of int): the kinds of ckdemo.attribute_table,
which checks every template before a member library sees it. Refusals are `codes.CKRError` with the
module's CKR_* code.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Iterable, Iterator

from .model import KeySpec, LibraryInfo, MechanismInfo, MechanismParam, SessionInfo, SlotInfo, TokenInfo

from .attribute_table import DATE_ATTRIBUTES, TEXT_ATTRIBUTES  # noqa: F401 (the kinds named above)


class Session(ABC):
    """An open session; object handles are the session's own integers."""

    handle: int

    # session and login state
    @abstractmethod
    def login(self, user_type: int, pin: str) -> None: ...
    @abstractmethod
    def logout(self) -> None: ...
    @abstractmethod
    def close(self) -> None: ...
    @abstractmethod
    def info(self) -> SessionInfo: ...
    @abstractmethod
    def init_pin(self, pin: str) -> None: ...
    @abstractmethod
    def set_pin(self, old_pin: str, new_pin: str) -> None: ...

    # objects
    @abstractmethod
    def find_objects(self, template: dict[int, object]) -> list[int]: ...
    @abstractmethod
    def get_attributes(self, handle: int, attributes: list[int]) -> dict[int, object]:
        """The readable ones; an attribute left out of the result could not be read."""

    @abstractmethod
    def read_attribute(self, handle: int, attribute: int) -> object:
        """One attribute; CKRError(CKR_ATTRIBUTE_SENSITIVE / _TYPE_INVALID) when unreadable."""

    @abstractmethod
    def create_object(self, template: dict[int, object]) -> int: ...
    @abstractmethod
    def destroy_object(self, handle: int) -> None: ...
    @abstractmethod
    def copy_object(self, handle: int, template: dict[int, object]) -> int: ...
    @abstractmethod
    def set_attributes(self, handle: int, template: dict[int, object]) -> None: ...
    @abstractmethod
    def object_size(self, handle: int) -> int: ...

    # keys
    @abstractmethod
    def generate(self, spec: KeySpec) -> list[int]:
        """[secret key] or [public key, private key]."""

    @abstractmethod
    def wrap_key(self, wrapping: int, key: int, mechanism: int, param: MechanismParam = None) -> bytes: ...
    @abstractmethod
    def unwrap_key(
        self,
        unwrapping: int,
        object_class: int,
        key_type: int,
        data: bytes,
        mechanism: int,
        template: dict[int, object],
        param: MechanismParam = None,
    ) -> int: ...
    @abstractmethod
    def derive_key(
        self,
        base: int,
        mechanism: int,
        param: MechanismParam,
        key_type: int,
        length: int,
        template: dict[int, object],
    ) -> int: ...

    # cryptography, single-part and streamed
    @abstractmethod
    def sign(
        self,
        handle: int,
        mechanism: int,
        data: bytes,
        param: MechanismParam = None,
        context_pin: str | None = None,
    ) -> bytes:
        """context_pin: the context-specific login a CKA_ALWAYS_AUTHENTICATE key asks for."""

    @abstractmethod
    def verify(
        self, handle: int, mechanism: int, data: bytes, signature: bytes, param: MechanismParam = None
    ) -> None:
        """Returns when the signature is good; CKRError(CKR_SIGNATURE_INVALID) otherwise."""

    @abstractmethod
    def encrypt(self, handle: int, mechanism: int, data: bytes, param: MechanismParam = None) -> bytes: ...
    @abstractmethod
    def decrypt(
        self,
        handle: int,
        mechanism: int,
        data: bytes,
        param: MechanismParam = None,
        context_pin: str | None = None,
    ) -> bytes: ...
    @abstractmethod
    def encrypt_stream(
        self, handle: int, mechanism: int, chunks: Iterable[bytes], param: MechanismParam = None
    ) -> Iterator[bytes]: ...
    @abstractmethod
    def decrypt_stream(
        self, handle: int, mechanism: int, chunks: Iterable[bytes], param: MechanismParam = None
    ) -> Iterator[bytes]: ...
    @abstractmethod
    def digest(self, mechanism: int, data: bytes) -> bytes: ...
    @abstractmethod
    def digest_stream(self, mechanism: int, chunks: Iterable[bytes]) -> bytes: ...
    @abstractmethod
    def digest_key(self, mechanism: int, handle: int) -> bytes: ...
    @abstractmethod
    def digest_parts(self, mechanism: int, parts: list[bytes | int]) -> bytes:
        """One multi-part digest over data (bytes, C_DigestUpdate) and keys (an int handle,
        C_DigestKey) in the order given."""

    @abstractmethod
    def generate_random(self, length: int) -> bytes: ...
    @abstractmethod
    def seed_random(self, seed: bytes) -> None: ...

    # what the menu offers beyond the calls above
    @abstractmethod
    def pbe_generate(self, password: str, salt: bytes, iterations: int, template: dict[int, object]) -> int:
        """A secret key from a password (CKM_PKCS5_PBKD2): PBKDF2 of one password and salt is
        one key wherever it is made."""

    @abstractmethod
    def probe_ec_curve(self, ec_params: bytes) -> None:
        """Returns when the token generates keys on this curve; CKRError otherwise."""


class LoginCounter(ABC):
    """A slot that counts wrong user PINs itself (the HA slot): what a front door that checks a
    PIN on its own (ckdemo serve, for a second application) must report to it."""

    @abstractmethod
    def check(self, function: str = "C_Login") -> None:
        """CKRError(CKR_PIN_LOCKED) when the user PIN is locked."""

    @abstractmethod
    def failed(self, function: str = "C_Login") -> Exception:
        """Count a wrong PIN: the CKRError to answer it with."""

    @abstractmethod
    def succeeded(self) -> None: ...


class Slot(ABC):
    """A slot with its token: what the token menu and `ckdemo serve` ask of it."""

    slot_id: int | None
    member_label: str | None = None  # the HA member a library copy of its own serves, if any
    fallback_description = "slot"  # how the slot is named when it cannot be asked

    @abstractmethod
    def slot_info(self) -> SlotInfo: ...
    @abstractmethod
    def token_info(self) -> TokenInfo: ...
    @abstractmethod
    def description(self) -> str: ...
    @abstractmethod
    def library_info(self) -> LibraryInfo: ...
    @abstractmethod
    def mechanisms(self) -> list[tuple[int, str]]:
        """(CKM_* code, name) pairs."""

    @abstractmethod
    def mechanism_info(self, mechanism: int) -> MechanismInfo: ...
    @abstractmethod
    def init_token(self, so_pin: str, label: str) -> None: ...
    @abstractmethod
    def open_session(self, rw: bool = True) -> Session: ...
    @abstractmethod
    def wait_for_event(self) -> int:
        """C_WaitForSlotEvent without blocking: a slot id, or CKRError(CKR_NO_EVENT)."""

    @abstractmethod
    def login_counter(self) -> LoginCounter | None:
        """The slot's own count of wrong user PINs, None when the token counts them itself."""

    @abstractmethod
    def extractability_note(self, extractable: bool) -> str:
        """What the answer to "Extractable?" means for a key generated here, when the slot
        gives it a meaning of its own ("" otherwise); the menu prints it."""

    @abstractmethod
    def exports(self, symbol: str) -> list[str]:
        """The libraries behind the slot that export `symbol` (vendor extension detection)."""

    def member_calls(self) -> dict[str, int]:
        """Calls each member token served, by serial: {} for a slot that is one token."""
        return {}


class MemberSession(Session):
    """A session on a member token of an HA group."""

    @abstractmethod
    def torn_objects(self) -> list[int]:
        """Key objects without their key material (a writer killed in the middle)."""


class MemberSlot(Slot):
    """A slot an HA group can take as a member: found again by serial, and failed, hung and
    brought back on purpose (demos, tests, the fault lab)."""

    @abstractmethod
    def reconnect(self, serial: str) -> None:
        """Find the token again by serial; CKRError(CKR_TOKEN_NOT_PRESENT) when it is not there."""

    @abstractmethod
    def open_session(self, rw: bool = True) -> MemberSession: ...
    @abstractmethod
    def fail(self) -> str:
        """Make the member fail; how, in words."""

    @abstractmethod
    def restore(self) -> str: ...
    @abstractmethod
    def hang(self) -> str: ...
    @abstractmethod
    def resume(self) -> str: ...


# ---- a call among several doing the same change --------------------------------------------------
_fan_out = threading.local()


@contextmanager
def fan_out() -> Iterator[None]:
    """Calls made inside reach one member of several that make the same change (an HA group
    copying, changing or destroying an object on every member). A member slot may give up such a
    call when the member is late by far more than its usual (a remote member's socket): the
    member is then failed, as one that died, and brought up to date when it recovers; an answer
    that comes after all changes nothing the group does not hold."""
    before = getattr(_fan_out, "on", False)
    _fan_out.on = True
    try:
        yield
    finally:
        _fan_out.on = before


def in_fan_out() -> bool:
    return getattr(_fan_out, "on", False)
