"""Per-application login over one shared token login.

PKCS#11 login is per application; a member's (or the HA group's) real login is shared by every
connection of this process. So the server holds the real login itself, for as long as at least
one connection is logged in: the first C_Login logs in for real (the token checks the PIN), a
later connection's PIN is compared, in constant time, with the one that succeeded (kept only as
an HMAC under a per-process random key) -- a wrong one counted by the slot's own login counter
(the HA slot locks the PIN after N in a row, whoever checked it) -- and the real logout comes with the last connection's
logout, last session close or disconnection.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading

from ..codes import (
    CKR_PIN_INCORRECT,
    CKR_SESSION_HANDLE_INVALID,
    CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
    CKR_USER_ALREADY_LOGGED_IN,
    CKR_USER_NOT_LOGGED_IN,
    CKRError,
)
from ..model import CKU_USER
from ..slots import Session, Slot

_PIN_KEY = os.urandom(32)


def _digest(pin: str) -> bytes:
    return hmac.new(_PIN_KEY, pin.encode("utf-8"), hashlib.sha256).digest()


class SharedLogin:
    """The real login of one slot and the connections that hold it."""

    def __init__(self, slot: Slot, log=lambda line: None) -> None:
        self.slot = slot
        self.log = log
        self.lock = threading.Lock()
        self.user_type: int | None = None
        self.holders: set[int] = set()
        self._pin: bytes | None = None
        self._anchor: Session | None = None  # keeps the token logged in whatever sessions close

    def login(self, connection: int, user_type: int, pin: str) -> None:
        with self.lock:
            if self.holders and self._lost():
                self.log(
                    "real logout: the token lost the login (every HA member lost); "
                    f"{len(self.holders)} application(s) must log in again"
                )
                self.holders.clear()
                anchor, self._anchor, self.user_type, self._pin = self._anchor, None, None, None
                if anchor is not None:
                    _quietly(anchor.close)
            if connection in self.holders:
                raise CKRError(CKR_USER_ALREADY_LOGGED_IN, "C_Login")
            if self.holders:
                if user_type != self.user_type:
                    raise CKRError(
                        CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
                        "C_Login",
                        "another application is logged in as the other user type",
                    )
                self._check(user_type, pin)
            else:
                anchor = self.slot.open_session(rw=True)
                try:
                    anchor.login(user_type, pin)
                except CKRError as exc:
                    _quietly(anchor.close)
                    if exc.ckr != CKR_USER_ALREADY_LOGGED_IN:
                        raise
                    # logged in by the same process beside us (the HA group over a member
                    # slot, with --slots all): the PIN is checked by nobody; refuse
                    raise CKRError(
                        CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
                        "C_Login",
                        "the token is logged in outside this server's control",
                    ) from exc
                self._anchor, self.user_type, self._pin = anchor, user_type, _digest(pin)
                self.log("real login")
            self.holders.add(connection)

    def reauthenticate(self, connection: int, pin: str) -> None:
        """A context-specific login: the PIN of the login this connection holds, checked as a
        second application's is (and counted by the slot when wrong)."""
        with self.lock:
            if connection not in self.holders:
                raise CKRError(CKR_USER_NOT_LOGGED_IN, "C_Login")
            self._check(self.user_type, pin)

    def _check(self, user_type: int, pin: str) -> None:
        """The PIN against the one the real login took, in constant time; a wrong one counted by
        the slot's own login counter (the HA slot's PIN lock), a locked PIN refused even when right."""
        counter = self.slot.login_counter() if user_type == CKU_USER else None
        if counter is not None:
            counter.check()  # locked: even the right PIN is refused, as by the token
        if not hmac.compare_digest(_digest(pin), self._pin or b""):
            if counter is not None:
                raise counter.failed()
            raise CKRError(CKR_PIN_INCORRECT, "C_Login")
        if counter is not None:
            counter.succeeded()

    def _lost(self) -> bool:
        """The anchor session is gone: the token lost the login with it (an HA slot that lost
        every member does so, as Luna's does)."""
        if self._anchor is None:
            return False
        try:
            self._anchor.info()
        except CKRError as error:
            return error.ckr == CKR_SESSION_HANDLE_INVALID
        return False

    def pin_changed(self, user_type: int, pin: str) -> None:
        with self.lock:
            if self.holders and user_type == self.user_type:
                self._pin = _digest(pin)

    def logout(self, connection: int) -> None:
        with self.lock:
            if connection not in self.holders:
                raise CKRError(CKR_USER_NOT_LOGGED_IN, "C_Logout")
            self.holders.discard(connection)
            if self.holders:
                return
            anchor, self._anchor, self.user_type, self._pin = self._anchor, None, None, None
            if anchor is not None:
                _quietly(anchor.logout)
                _quietly(anchor.close)
            self.log("real logout")


def _quietly(call) -> None:
    try:
        call()
    except CKRError:
        pass  # the token forgot the session or the login already: the state we wanted
