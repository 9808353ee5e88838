"""Locks shared by every ckdemo process on one state folder: `fcntl.flock` on files in HOME/run.

The kernel drops a flock when its holder exits, SIGKILL included, so a crashed ckdemo never
leaves a stale lock behind, and nothing here has to guess whether a pid is still alive.

- `state_lock(home)`: one process at a time changes what the members hold (replication,
  synchronization). Reentrant in the thread holding it; other threads of the same process
  wait like other processes do.
- `Lease`: a shared lock each process holds while it uses something (a member's p11-kit
  server); whoever can turn it exclusive knows that no other live process uses it.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .codes import CKR_FUNCTION_FAILED, CKRError

RUN_DIR = "run"
STATE_LOCK_FILE = "ha.lock"
DEFAULT_TIMEOUT_S = 60.0  # longer than any replication or synchronization of a test group
POLL_S = 0.01


class LockTimeout(CKRError):
    """Another process held a ckdemo lock for longer than we were willing to wait."""

    def __init__(self, path: Path, timeout: float) -> None:
        holder = _holder(path)
        super().__init__(
            CKR_FUNCTION_FAILED,
            "ckdemo lock",
            f"{path} is held by another ckdemo process{holder} (waited {timeout:g} s)",
        )
        self.path = path


def run_dir(home: str | os.PathLike) -> Path:
    return Path(home) / RUN_DIR


def state_lock_path(home: str | os.PathLike) -> Path:
    return run_dir(home) / STATE_LOCK_FILE


class _StateLock:
    """One lock file as this process sees it: a thread lock between its threads, the flock
    (taken by the outermost holder only) between processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.threads = threading.RLock()
        self.depth = 0
        self.fd: int | None = None

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if not self.threads.acquire(timeout=max(timeout, 0)):
            raise LockTimeout(self.path, timeout)
        try:
            if self.depth == 0:
                self.fd = _open(self.path)
                try:
                    _flock_until(self.fd, fcntl.LOCK_EX, deadline, self.path, timeout)
                except BaseException:
                    os.close(self.fd)
                    self.fd = None
                    raise
                _write_holder(self.fd)
            self.depth += 1
        except BaseException:
            self.threads.release()
            raise

    def release(self) -> None:
        self.depth -= 1
        if self.depth == 0 and self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None
        self.threads.release()

    @property
    def held_here(self) -> bool:
        return self.depth > 0


_state_locks: dict[Path, _StateLock] = {}
_state_locks_guard = threading.Lock()


def _state_lock_for(home: str | os.PathLike) -> _StateLock:
    path = state_lock_path(home).resolve()
    with _state_locks_guard:
        return _state_locks.setdefault(path, _StateLock(path))


@contextmanager
def state_lock(home: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[Path]:
    """Exclusive across every ckdemo process (and thread) on the state folder `home`; reentrant
    in the thread holding it. Raises LockTimeout (a CKRError, CKR_FUNCTION_FAILED, one line
    naming the holder's pid) after `timeout` seconds. Yields the lock file's path."""
    lock = _state_lock_for(home)
    lock.acquire(timeout)
    try:
        yield lock.path
    finally:
        lock.release()


def state_lock_held(home: str | os.PathLike) -> bool:
    """True when this process holds the state lock of `home` (any thread)."""
    return _state_lock_for(home).held_here


class Lease:
    """A shared flock this process holds while it uses a resource, on HOME/run/<name>.lease.

    `exclusive()` (blocking, with a timeout) serialises the decision "is it running, start it";
    `share()` then keeps only the use; `last_user()` tries, without waiting, to become exclusive:
    True means no other live process holds the lease."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def exclusive(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if self.fd is None:
            self.fd = _open(self.path)
        _flock_until(self.fd, fcntl.LOCK_EX, time.monotonic() + timeout, self.path, timeout)

    def share(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """A downgrade, or a wait (up to `timeout`) while another process holds it exclusive."""
        if self.fd is None:
            self.fd = _open(self.path)
        _flock_until(self.fd, fcntl.LOCK_SH, time.monotonic() + timeout, self.path, timeout)

    def last_user(self) -> bool:
        """Exclusive now or never. A refused conversion may drop our shared lock (flock(2):
        conversions are not atomic): call it when leaving, or share() again."""
        if self.fd is None:
            self.fd = _open(self.path)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _open(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # a read-only home: one line, the call fails, the harness goes on
        raise CKRError(
            CKR_FUNCTION_FAILED,
            "ckdemo lock",
            f"cannot open {path}: {exc.strerror or exc} (the home must be writable)",
        ) from None


def _flock_until(fd: int, operation: int, deadline: float, path: Path, timeout: float) -> None:
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeout(path, timeout) from None
            time.sleep(POLL_S)


def _write_holder(fd: int) -> None:
    """The holder's pid in the file, only to name it in a LockTimeout elsewhere."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _holder(path: Path) -> str:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return ""
    return f" (pid {pid})"


MENU_LEASE_FILE = "menu.lease"


@contextmanager
def menu_presence(home: str | os.PathLike) -> Iterator[None]:
    """Held (shared) while an interactive menu runs on `home`: another process can tell that
    the members this menu shows down are the menu's own (a failure it simulated lives in it).
    A home that cannot hold the file: the menu runs all the same, unseen."""
    lease = Lease(run_dir(home) / MENU_LEASE_FILE)
    try:
        lease.share(timeout=1.0)  # (a moment: another process may be looking)
    except CKRError:
        lease.release()
    try:
        yield
    finally:
        lease.release()


def menu_running(home: str | os.PathLike) -> bool:
    """Does an interactive menu (another process) run on `home` now?"""
    path = run_dir(home) / MENU_LEASE_FILE
    if not path.exists():
        return False
    lease = Lease(path)
    try:
        return not lease.last_user()
    except CKRError:
        return False
    finally:
        lease.release()
