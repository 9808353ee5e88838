"""One loaded PKCS#11 library: python-pkcs11's `lib`, the ctypes escape hatch, and one lock.

python-pkcs11 initialises modules without OS locking and SoftHSM2 then crashes under
two concurrent calls, so every call into one loaded library is serialised by its lock.
"""

from __future__ import annotations

import sys
import threading
import traceback
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import pkcs11

from ..codes import CKR_DEVICE_ERROR, CKR_GENERAL_ERROR, CKR_SLOT_ID_INVALID, CKRError
from ..model import LibraryInfo
from .errors import pkcs11_call, translate
from .raw import RawModule

T = TypeVar("T")


def _failed_search_cleanup(value: BaseException | None) -> bool:
    """python-pkcs11 0.10.1 marks a search active before C_FindObjectsInit; when the init fails
    (CKR_OPERATION_ACTIVE, CKR_SESSION_HANDLE_INVALID, ..., already reported to the user),
    garbage collection later calls C_FindObjectsFinal for a search that never started, and
    Cython prints its error as a traceback (excepthook, then unraisablehook). Only errors of
    that cleanup are dropped; anything else reaches the default hooks."""
    if not isinstance(value, pkcs11.exceptions.PKCS11Error):
        return False
    frames = traceback.extract_tb(value.__traceback__)
    return any(frame.name.endswith("SearchIter._finalize") for frame in frames)


def _excepthook(kind, value, tb) -> None:
    if not _failed_search_cleanup(value):
        _DEFAULT_EXCEPTHOOK(kind, value, tb)


def _unraisablehook(unraisable) -> None:
    if not (
        _failed_search_cleanup(unraisable.exc_value) and "OperationContext.__del__" in str(unraisable.object)
    ):
        _DEFAULT_UNRAISABLEHOOK(unraisable)


_DEFAULT_EXCEPTHOOK, _DEFAULT_UNRAISABLEHOOK = sys.excepthook, sys.unraisablehook
sys.excepthook, sys.unraisablehook = _excepthook, _unraisablehook


class Module:
    """A PKCS#11 library loaded once per path (a copy under another path is another instance)."""

    def __init__(self, path: str, dedicated: bool = False) -> None:
        self.path = path
        self.lock = threading.RLock()
        self._lib = None
        self._raw: RawModule | None = None
        self.failed_slots: set[int] = set()  # simulated member failures (fault injection)
        self._tokens: dict[int, object] = {}  # python-pkcs11 Token per slot id
        self.dedicated = dedicated  # one member's own instance: re-initialising it touches no other

    def load(self) -> "Module":
        if self._lib is not None:
            return self  # loaded: no lock, so a hung call elsewhere cannot block a lookup
        with self.lock:
            if self._lib is None:
                try:
                    self._lib = pkcs11.lib(self.path)
                except pkcs11.PKCS11Error as exc:
                    if "loading" in str(exc):  # dlopen failed: no such file, not a PKCS#11 library
                        raise CKRError(
                            CKR_GENERAL_ERROR, "C_GetFunctionList", f"cannot load {self.path}"
                        ) from exc
                    with pkcs11_call("C_Initialize"):
                        raise
                self._raw = RawModule(self.path)
        return self

    @property
    def lib(self):
        return self.load()._lib

    @property
    def raw(self) -> RawModule:
        self.load()
        assert self._raw is not None
        return self._raw

    @contextmanager
    def calling(self, function: str) -> Iterator[None]:
        """Hold the module lock and turn python-pkcs11 errors into CKRError(function)."""
        with self.lock, pkcs11_call(function):
            yield

    def call(self, function: str, fn: Callable[..., T], *args, **kwargs) -> T:
        # calling() spelt out: every member call of every slot comes through here, and two
        # context managers cost more than the library call they wrap (docs/PERFORMANCE.md)
        with self.lock:
            try:
                return fn(*args, **kwargs)
            except pkcs11.PKCS11Error as exc:
                raise translate(exc, function) from exc

    def info(self) -> LibraryInfo:
        info = self.call("C_GetInfo", self.raw.get_info)
        return LibraryInfo(
            info.cryptoki_version,
            info.manufacturer_id,
            info.library_description,
            info.library_version,
            self.path,
        )

    def slot_ids(self, token_present: bool = False) -> list[int]:
        return self.call("C_GetSlotList", self.raw.get_slot_list, token_present)

    def reinitialize(self) -> None:
        """C_Finalize + C_Initialize: every session and handle from before is gone (their
        numbers are given out again)."""
        with self.lock:
            self._tokens.clear()
            lib = self.lib
            try:
                self.raw.finalize()  # (ctypes: the GIL released, raw.py)
            except CKRError:
                pass  # finalising a broken instance may fail; initialise is what counts
            try:
                with pkcs11_call("C_Finalize"):
                    lib.finalize()  # python-pkcs11's own flag: CKR_CRYPTOKI_NOT_INITIALIZED now
            except CKRError:
                pass
            with pkcs11_call("C_Initialize"):
                lib.initialize()

    def pkcs11_token(self, slot_id: int):
        """The python-pkcs11 Token in slot_id (only the member layer sees this object). Kept
        until the module is re-initialised: finding it lists every slot of the module."""
        token = self._tokens.get(slot_id)
        if token is not None:
            return token
        with self.calling("C_GetSlotList"):
            for slot in self.lib.get_slots():
                if slot.slot_id == slot_id:
                    with pkcs11_call("C_GetTokenInfo"):
                        token = self._tokens[slot_id] = slot.get_token()
                    return token
        raise CKRError(CKR_SLOT_ID_INVALID, "C_GetSlotInfo")

    # Simulated failure at the member boundary: the token behaves as a dead device until
    # restored, and comes back as a rebooted one (every session from before is gone).
    def check_fault(self, slot_id: int, function: str) -> None:
        if slot_id in self.failed_slots:
            raise CKRError(CKR_DEVICE_ERROR, function)

    def fail_slot(self, slot_id: int) -> None:
        with self.lock:
            try:
                self.call("C_CloseAllSessions", self.raw.close_all_sessions, slot_id)
            except CKRError:
                pass  # already unreachable: failing it is what we want anyway
            self.failed_slots.add(slot_id)

    def restore_slot(self, slot_id: int) -> None:
        self.failed_slots.discard(slot_id)

    def __repr__(self) -> str:
        return f"Module({self.path!r})"


_modules: dict[str, Module] = {}
_modules_lock = threading.Lock()


def module_for(path: str, dedicated: bool = False) -> Module:
    """The one Module per library path in this process (dlopen gives one instance per path).
    dedicated: a member's own copy of the library (init --isolated), re-initialised alone."""
    with _modules_lock:
        if path not in _modules:
            _modules[path] = Module(path, dedicated)
        return _modules[path]
