"""Failed user logins on the HA slot, counted and locking as a Luna partition does.

SoftHSM2 never locks a user PIN (it sets CKF_USER_PIN_COUNT_LOW and goes on checking), so PIN
guessing against the HA slot would be unlimited. The HA slot counts consecutive wrong user PINs
itself -- the menu's HA Login and every `ckdemo serve` application alike, whether the token or
the server's kept HMAC checked the PIN -- and after `limit` of them answers CKR_PIN_LOCKED, even
to the right PIN, until the SO's C_InitPIN (or `ckdemo hagroup unlockpin`) unlocks it. A right
PIN before that resets the count, as PKCS#11 and Luna do.

The count lives in a small file of the home (HOME/state/pin-lock.json), read and written under
an flock, so every ckdemo process on the home sees one count and a lock survives a restart, as
on a token. Token flags follow PKCS#11 v2.40 (CK_TOKEN_INFO): COUNT_LOW after a failure,
FINAL_TRY when one attempt is left, LOCKED when none is.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..codes import CKR_FUNCTION_FAILED, CKR_PIN_INCORRECT, CKR_PIN_LOCKED, CKRError

# Luna partition policy 20, "Max failed user logins allowed": 10 by default (Thales' partition
# policy table; the allowed range is 1-10). 0 here turns counting off.
DEFAULT_FAILED_LOGIN_LIMIT = 10
CKF_USER_PIN_COUNT_LOW = 0x00010000
CKF_USER_PIN_FINAL_TRY = 0x00020000
CKF_USER_PIN_LOCKED = 0x00040000
RECORD = b'{"failures": %10d}\n'  # fixed width
PIN_FLAGS = CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED
PIN_FLAG_NAMES = {
    CKF_USER_PIN_COUNT_LOW: "CKF_USER_PIN_COUNT_LOW",
    CKF_USER_PIN_FINAL_TRY: "CKF_USER_PIN_FINAL_TRY",
    CKF_USER_PIN_LOCKED: "CKF_USER_PIN_LOCKED",
}


class PinLock:
    """The user PIN's failed-login count of one HA group. path None: kept in memory only."""

    def __init__(
        self, path: str | os.PathLike | None = None, limit: int = DEFAULT_FAILED_LOGIN_LIMIT
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.limit = limit
        self._threads = threading.Lock()
        self._failures = 0  # when there is no file

    # ---- what a login asks ----------------------------------------------------------------------
    def check(self, function: str = "C_Login") -> None:
        """CKRError(CKR_PIN_LOCKED) when the user PIN is locked."""
        if self.locked:
            raise CKRError(
                CKR_PIN_LOCKED,
                function,
                f"the user PIN is locked after {self.limit} wrong PINs; the SO's "
                "C_InitPIN (or `ckdemo hagroup unlockpin`) unlocks it",
            )

    def failed(self, function: str = "C_Login") -> CKRError:
        """Count one wrong PIN; the error to answer it with (CKR_PIN_INCORRECT, as a token
        answers the attempt that locks it too)."""
        with self._state() as state:
            state["failures"] = state.get("failures", 0) + 1
            left = self.limit - state["failures"]
        detail = (
            ""
            if self.limit <= 0
            else "the user PIN is now locked"
            if left <= 0
            else f"{left} attempt(s) left before the PIN locks"
        )
        return CKRError(CKR_PIN_INCORRECT, function, detail)

    def succeeded(self) -> None:
        if self.failures:
            with self._state() as state:
                state["failures"] = 0

    def unlock(self) -> int:
        """The count back to 0 (the SO's C_InitPIN); returns what it was."""
        with self._state() as state:
            was, state["failures"] = state.get("failures", 0), 0
        return was

    # ---- what the token shows -----------------------------------------------------------------------
    @property
    def failures(self) -> int:
        with self._state(write=False) as state:
            return int(state.get("failures", 0))

    @property
    def locked(self) -> bool:
        return self.limit > 0 and self.failures >= self.limit

    def flags(self) -> int:
        """CKF_USER_PIN_* bits for CK_TOKEN_INFO.flags (they replace the members' own)."""
        failures = self.failures
        if self.limit <= 0 or failures == 0:
            return 0
        if failures >= self.limit:
            return CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_LOCKED
        if failures == self.limit - 1:
            return CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY
        return CKF_USER_PIN_COUNT_LOW

    # ---- the shared state -------------------------------------------------------------------------
    @contextmanager
    def _state(self, write: bool = True) -> Iterator[dict]:
        with self._threads:
            if self.path is None:
                state = {"failures": self._failures}
                yield state
                self._failures = int(state["failures"])
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                if not write and not self.path.exists():
                    yield {}  # nothing counted yet, and nothing to count in a read-only home
                    return
                raise CKRError(
                    CKR_FUNCTION_FAILED,
                    "ckdemo",
                    f"cannot keep the failed-login count in {self.path}: {exc.strerror or exc}",
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
                raw = os.pread(fd, 4096, 0)
                try:
                    state = json.loads(raw) if raw else {}
                except ValueError:  # a torn or foreign file: counted from 0 again, said so
                    state = {}
                if not isinstance(state, dict) or not isinstance(state.get("failures", 0), int):
                    state = {}
                before = dict(state)
                yield state
                if write and state != before:
                    # one record of one width, one pwrite, no truncation: a process killed
                    # while it writes leaves the old count or the new one, never none
                    os.pwrite(fd, RECORD % int(state["failures"]), 0)
            finally:
                os.close(fd)
