"""The state-folder lock and member-server leases, between real processes (fcntl.flock)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from ckdemo.codes import CKR_FUNCTION_FAILED, CKRError
from ckdemo.interprocess import Lease, LockTimeout, state_lock, state_lock_held, state_lock_path

HOLD = """
import sys, time
from ckdemo.interprocess import state_lock, Lease
from pathlib import Path
home = sys.argv[1]
if sys.argv[2] == "state":
    with state_lock(home, timeout=5):
        print("held", flush=True)
        sys.stdin.read()
else:
    lease = Lease(Path(sys.argv[2]))
    lease.share()
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """Start another process holding the state lock ("state") or a lease (its path)."""
    started = []

    def start(what: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(tmp_path / "home"), what],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(5)


def test_state_lock_is_reentrant_in_a_thread(tmp_path):
    home = tmp_path / "home"
    assert not state_lock_held(home)
    with state_lock(home) as path:
        with state_lock(home, timeout=0):
            assert state_lock_held(home)
        assert state_lock_held(home)  # the inner exit did not drop the outer hold
        assert path == state_lock_path(home).resolve()
    assert not state_lock_held(home)


def test_another_process_waits_then_times_out_naming_the_holder(tmp_path, holder):
    home = tmp_path / "home"
    other = holder("state")
    started = time.monotonic()
    with pytest.raises(LockTimeout) as caught:
        with state_lock(home, timeout=0.3):
            pytest.fail("two processes held the state lock at once")
    waited = time.monotonic() - started
    assert 0.3 <= waited < 2.0
    error = caught.value
    assert isinstance(error, CKRError) and error.ckr == CKR_FUNCTION_FAILED
    assert f"(pid {other.pid})" in str(error) and "\n" not in str(error)
    assert not state_lock_held(home)
    other.stdin.close()  # the holder leaves: the lock is ours at once
    other.wait(5)
    with state_lock(home, timeout=1):
        assert state_lock_held(home)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path, holder):
    home = tmp_path / "home"
    other = holder("state")
    other.send_signal(signal.SIGKILL)
    other.wait(5)
    with state_lock(home, timeout=1):
        pass


def test_other_threads_wait_for_the_holding_thread(tmp_path):
    home = tmp_path / "home"
    events: list[str] = []

    def second() -> None:
        with state_lock(home, timeout=5):
            events.append("second")

    with state_lock(home):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.2)
        assert thread.is_alive()  # waiting, not reentering
        events.append("first done")
    thread.join(5)
    assert events == ["first done", "second"]


def test_a_thread_times_out_too(tmp_path):
    home = tmp_path / "home"
    errors: list[Exception] = []

    def second() -> None:
        try:
            with state_lock(home, timeout=0.1):
                pass
        except LockTimeout as exc:
            errors.append(exc)

    with state_lock(home):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(5)
    assert len(errors) == 1


def test_lease_last_user(tmp_path, holder):
    path = tmp_path / "home" / "run" / "member1.lease"
    mine = Lease(path)
    mine.share()
    probe = Lease(path)
    assert probe.last_user() is False  # our own shared lease counts like anyone's
    probe.release()
    other = holder(str(path))
    assert mine.last_user() is False  # the other process still uses it
    mine.share()
    other.send_signal(signal.SIGKILL)
    other.wait(5)
    assert mine.last_user() is True
    mine.release()


def test_exclusive_lease_waits_for_users_then_times_out(tmp_path, holder):
    path = tmp_path / "home" / "run" / "member1.lease"
    holder(str(path))
    lease = Lease(path)
    with pytest.raises(LockTimeout):
        lease.exclusive(timeout=0.2)
    lease.release()
