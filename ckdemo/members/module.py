"""One loaded PKCS#11 library: python-pkcs11's `lib`, the ctypes escape hatch, and one lock.

FACTS 1: python-pkcs11 initialises modules without OS locking and SoftHSM2 then crashes under
two concurrent calls, so every call into one loaded library is serialised by its lock.
"""
from __future__ import annotations

import os
import sys
import threading
import traceback
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import pkcs11

from ..codes import (CKR_DEVICE_ERROR, CKR_GENERAL_ERROR, CKR_MECHANISM_INVALID, CKR_SLOT_ID_INVALID,
                     CKRError)
from ..model import LibraryInfo
from .errors import pkcs11_call
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
    if not (_failed_search_cleanup(unraisable.exc_value)
            and "OperationContext.__del__" in str(unraisable.object)):
        _DEFAULT_UNRAISABLEHOOK(unraisable)


_DEFAULT_EXCEPTHOOK, _DEFAULT_UNRAISABLEHOOK = sys.excepthook, sys.unraisablehook
sys.excepthook, sys.unraisablehook = _excepthook, _unraisablehook


class Module:
    """A PKCS#11 library loaded once per path (a copy under another path is another instance)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.RLock()
        self._lib = None
        self._raw: RawModule | None = None
        self.failed_slots: set[int] = set()  # simulated member failures (fault injection)
        self._tokens: dict[int, object] = {}  # python-pkcs11 Token per slot id
        self.dedicated = False  # one member's own instance: re-initialising it touches no other
        self.transport_limit = ""  # what the transport cannot carry (named on MECHANISM_INVALID)
        self.environment: dict[str, str] = {}  # variables the library reads at C_Initialize
        self.environment_lock: threading.Lock | None = None
        # a module that can hang (a remote member): how long to wait for its lock, and a check
        # that says an earlier call was given up on and has still not returned
        self.lock_timeout: float | None = None
        self.stalled: Callable[[], bool] = lambda: False

    @contextmanager
    def _initialising(self) -> Iterator[None]:
        """Environment the module reads at C_Initialize, set under a process-wide lock. A module
        that hangs inside C_Initialize (a stopped remote member) read the variable long ago, so
        after lock_timeout the next module goes ahead rather than wait for ever."""
        if not self.environment:
            yield
            return
        assert self.environment_lock is not None
        acquired = self.environment_lock.acquire(
            timeout=-1 if self.lock_timeout is None else self.lock_timeout)
        saved = {k: os.environ.get(k) for k in self.environment}
        os.environ.update(self.environment)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            if acquired:
                self.environment_lock.release()

    def load(self) -> "Module":
        if self._lib is not None:
            return self  # loaded: no lock, so a hung call elsewhere cannot block a lookup
        with self._locked("C_Initialize"):
            if self._lib is None:
                try:
                    with self._initialising():
                        self._lib = pkcs11.lib(self.path)
                except pkcs11.PKCS11Error as exc:
                    if "loading" in str(exc):  # dlopen failed: no such file, not a PKCS#11 library
                        raise CKRError(CKR_GENERAL_ERROR, "C_GetFunctionList",
                                       f"cannot load {self.path}") from exc
                    with pkcs11_call("C_Initialize"):
                        raise
                self._raw = RawModule(self.path, _function_list_address(self._lib))
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
    def _locked(self, function: str) -> Iterator[None]:
        if self.lock_timeout is None:
            with self.lock:
                yield
            return
        if self.stalled() or not self.lock.acquire(timeout=self.lock_timeout):
            raise CKRError(CKR_DEVICE_ERROR, function, "no answer: an earlier call on this "
                                                       "member has not returned (hung?)")
        try:
            yield
        finally:
            self.lock.release()

    @contextmanager
    def calling(self, function: str) -> Iterator[None]:
        """Hold the module lock and turn python-pkcs11 errors into CKRError(function)."""
        try:
            with self._locked(function), pkcs11_call(function):
                yield
        except CKRError as exc:
            if exc.ckr == CKR_MECHANISM_INVALID and self.transport_limit and not exc.detail:
                raise CKRError(exc.ckr, exc.function, self.transport_limit) from exc
            raise

    def call(self, function: str, fn: Callable[..., T], *args, **kwargs) -> T:
        with self.calling(function):
            return fn(*args, **kwargs)

    def info(self) -> LibraryInfo:
        info = self.call("C_GetInfo", self.raw.get_info)
        return LibraryInfo(info.cryptoki_version, info.manufacturer_id, info.library_description,
                           info.library_version, self.path)

    def slot_ids(self, token_present: bool = False) -> list[int]:
        return self.call("C_GetSlotList", self.raw.get_slot_list, token_present)

    def reinitialize(self) -> None:
        """C_Finalize + C_Initialize: every session and handle from before is gone (FACTS 3)."""
        with self._locked("C_Initialize"):
            self._tokens.clear()
            lib = self.lib
            try:
                with pkcs11_call("C_Finalize"):
                    lib.finalize()
            except CKRError:
                pass  # a dead remote module still finalises locally; initialise is what counts
            with pkcs11_call("C_Initialize"), self._initialising():
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


PYTHON_PKCS11_LAYOUT = "0.10.1"  # the release whose object layout _function_list_address knows


def _function_list_address(lib) -> int | None:
    """The CK_FUNCTION_LIST pointer python-pkcs11 0.10.1 initialised (its `lib` object starts
    with PyObject_HEAD, then `CK_FUNCTION_LIST *funclist`). Checked before use: the list must
    answer C_GetInfo as the library python-pkcs11 loaded; otherwise None (own list)."""
    import ctypes
    from importlib.metadata import version
    if version("python-pkcs11") != PYTHON_PKCS11_LAYOUT:
        return None  # another layout: never follow a pointer we have not checked
    try:
        address = ctypes.c_void_p.from_address(id(lib) + 2 * ctypes.sizeof(ctypes.c_void_p)).value
    except (ValueError, OSError):
        return None
    if not address:
        return None
    try:
        probe = RawModule(lib.so, address).get_info()
    except (CKRError, OSError):
        return None
    return address if probe.library_description == lib.library_description else None


_modules: dict[str, Module] = {}
_modules_lock = threading.Lock()


def module_for(path: str) -> Module:
    """The one Module per library path in this process (dlopen gives one instance per path)."""
    with _modules_lock:
        if path not in _modules:
            _modules[path] = Module(path)
        return _modules[path]
