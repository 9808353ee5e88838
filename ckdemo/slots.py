"""The one declared shape of a slot and of a session on it, whatever stands behind them.

A physical slot (ckdemo.members.slot.PhysicalSlot) and the HA virtual slot
(ckdemo.ha.group.HAGroup) both offer these operations; the menu handlers and the RPC server
(ckdemo.serve) drive slots through them only, so neither can tell which one it holds. Modelled
on python-pkcs11's `pkcs11/types.py` (`Slot`, `Token`, `Session`), with integer object handles.

Values, both ways: templates are `{CKA_*: value}` dicts with plain Python values -- bool for
CK_BBOOL attributes, int for CK_ULONG ones, str for the UTF-8 text attributes in
TEXT_ATTRIBUTES, datetime.date for DATE_ATTRIBUTES, bytes for everything else (a nested
template is a dict, allowed mechanisms a list of int): the kinds of ckdemo.attribute_table,
which checks every template before a member library sees it. Refusals are `codes.CKRError` with the
module's CKR_* code.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Protocol, runtime_checkable

from .model import (KeySpec, LibraryInfo, MechanismInfo, MechanismParam, SessionInfo, SlotInfo,
                    TokenInfo)

from .attribute_table import DATE_ATTRIBUTES, TEXT_ATTRIBUTES  # noqa: F401 (the kinds named above)


@runtime_checkable
class Session(Protocol):
    """An open session; object handles are the session's own integers."""

    handle: int

    # session and login state
    def login(self, user_type: int, pin: str) -> None: ...
    def logout(self) -> None: ...
    def close(self) -> None: ...
    def info(self) -> SessionInfo: ...
    def init_pin(self, pin: str) -> None: ...
    def set_pin(self, old_pin: str, new_pin: str) -> None: ...

    # objects
    def find_objects(self, template: dict[int, object]) -> list[int]: ...
    def get_attributes(self, handle: int, attributes: list[int]) -> dict[int, object]:
        """The readable ones; an attribute left out of the result could not be read."""
    def read_attribute(self, handle: int, attribute: int) -> object:
        """One attribute; CKRError(CKR_ATTRIBUTE_SENSITIVE / _TYPE_INVALID) when unreadable."""
    def create_object(self, template: dict[int, object]) -> int: ...
    def destroy_object(self, handle: int) -> None: ...
    def copy_object(self, handle: int, template: dict[int, object]) -> int: ...
    def set_attributes(self, handle: int, template: dict[int, object]) -> None: ...
    def object_size(self, handle: int) -> int: ...

    # keys
    def generate(self, spec: KeySpec) -> list[int]:
        """[secret key] or [public key, private key]."""
    def wrap_key(self, wrapping: int, key: int, mechanism: int,
                 param: MechanismParam = None) -> bytes: ...
    def unwrap_key(self, unwrapping: int, object_class: int, key_type: int, data: bytes,
                   mechanism: int, template: dict[int, object],
                   param: MechanismParam = None) -> int: ...
    def derive_key(self, base: int, mechanism: int, param: MechanismParam, key_type: int,
                   length: int, template: dict[int, object]) -> int: ...

    # cryptography, single-part and streamed
    def sign(self, handle: int, mechanism: int, data: bytes,
             param: MechanismParam = None) -> bytes: ...
    def verify(self, handle: int, mechanism: int, data: bytes, signature: bytes,
               param: MechanismParam = None) -> None:
        """Returns when the signature is good; CKRError(CKR_SIGNATURE_INVALID) otherwise."""
    def encrypt(self, handle: int, mechanism: int, data: bytes,
                param: MechanismParam = None) -> bytes: ...
    def decrypt(self, handle: int, mechanism: int, data: bytes,
                param: MechanismParam = None) -> bytes: ...
    def encrypt_stream(self, handle: int, mechanism: int, chunks: Iterable[bytes],
                       param: MechanismParam = None) -> Iterator[bytes]: ...
    def decrypt_stream(self, handle: int, mechanism: int, chunks: Iterable[bytes],
                       param: MechanismParam = None) -> Iterator[bytes]: ...
    def digest(self, mechanism: int, data: bytes) -> bytes: ...
    def digest_stream(self, mechanism: int, chunks: Iterable[bytes]) -> bytes: ...
    def digest_key(self, mechanism: int, handle: int) -> bytes: ...
    def digest_parts(self, mechanism: int, parts: list[bytes | int]) -> bytes:
        """One multi-part digest over data (bytes, C_DigestUpdate) and keys (an int handle,
        C_DigestKey) in the order given."""
    def generate_random(self, length: int) -> bytes: ...
    def seed_random(self, seed: bytes) -> None: ...


@runtime_checkable
class LoginCounter(Protocol):
    """A slot that counts wrong user PINs itself (the HA slot): what a front door that checks a
    PIN on its own (ckdemo serve, for a second application) must report to it."""

    def check(self, function: str = "C_Login") -> None:
        """CKRError(CKR_PIN_LOCKED) when the user PIN is locked."""
    def failed(self, function: str = "C_Login") -> Exception:
        """Count a wrong PIN: the CKRError to answer it with."""
    def succeeded(self) -> None: ...


@runtime_checkable
class Slot(Protocol):
    """A slot with its token: what the token menu and `ckdemo serve` ask of it."""

    slot_id: int | None

    def slot_info(self) -> SlotInfo: ...
    def token_info(self) -> TokenInfo: ...
    def description(self) -> str: ...
    def library_info(self) -> LibraryInfo: ...
    def mechanisms(self) -> list[tuple[int, str]]:
        """(CKM_* code, name) pairs."""
    def mechanism_info(self, mechanism: int) -> MechanismInfo: ...
    def init_token(self, so_pin: str, label: str) -> None: ...
    def open_session(self, rw: bool = True) -> Session: ...
    def wait_for_event(self) -> int:
        """C_WaitForSlotEvent without blocking: a slot id, or CKRError(CKR_NO_EVENT)."""

    def login_counter(self) -> LoginCounter | None:
        """The slot's own count of wrong user PINs, None when the token counts them itself."""

    def extractability_note(self, extractable: bool) -> str:
        """What the answer to "Extractable?" means for a key generated here, when the slot
        gives it a meaning of its own ("" otherwise); the menu prints it."""
