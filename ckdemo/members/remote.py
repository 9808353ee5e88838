"""Members served by another process: a `p11-kit server` per member token, reached through a
private copy of `p11-kit-client.so` per member.

Why one client copy per member: p11-kit-client reads P11_KIT_SERVER_ADDRESS once, at
C_Initialize of a loaded module, and dlopen gives one instance per file path. A copy under
another path is another instance with its own address, its own sessions and its own
C_Finalize/C_Initialize, so a dead member is re-initialised alone while the others keep their
sessions. The p11-kit proxy with `remote:` lines would share one failure domain (one dead member
breaks slot listing for all, and re-init renumbers every slot).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..childenv import child_environment
from ..interprocess import Lease, LockTimeout

START_TIMEOUT_S = 5.0
LEASE_TIMEOUT_S = 30.0  # how long a run waits for another run to finish stopping a server
STARTED_BY_RUN = "run"  # pid file mark: a run started it, so the last run using it stops it


class RemoteError(Exception):
    """A member server could not be started or reached; one line for the user."""


@dataclass
class MemberServer:
    """One member token served by `p11-kit server` on a unix socket, in its own process group."""

    label: str
    socket: Path
    run_dir: Path
    provider: str
    softhsm_conf: str | None = None
    managed: bool = True  # False: attach to a server someone else runs (e.g. an SSH-forwarded socket)
    started_here: int | None = None  # pid of the server this process started last
    # built for a run: what it starts is stopped by the last ckdemo process using it (a lease);
    # False for `ckdemo member serve/restart`: those servers keep running
    shared_by_runs: bool = False
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False, compare=False)
    _lease: Lease | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.label}.pid"

    @property
    def address(self) -> str:
        return f"unix:path={self.socket}"

    def pid(self) -> int | None:
        """The server's pid when it runs (the pid is also its process group)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if not _alive(pid):
            return None
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:  # p11-kit-server's argv[0] is "server"
                if f"pkcs11:token={self.label}".encode() not in cmdline.read():
                    return None  # the pid was reused by another program
        except OSError:
            return None
        return pid

    def state(self) -> str:
        if not self.managed:
            return "attached" if self.socket.exists() else "no socket"
        pid = self.pid()
        if pid is None:
            return "dead"
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "T":
                    return "stopped"
        except OSError:
            pass
        return "running"

    def serve(self) -> int:
        if not self.managed:
            raise RemoteError(f"{self.label} is served elsewhere ({self.socket}); ckdemo only attaches")
        # one process at a time looks and starts: a second starter would unlink the first's socket
        start_lock = Lease(self.run_dir / f"{self.label}.start")
        try:
            start_lock.exclusive(LEASE_TIMEOUT_S)
            return self.pid() or self._start()
        except LockTimeout as exc:
            raise RemoteError(f"cannot start {self.label}: {exc.detail}") from None
        finally:
            start_lock.release()

    def started_by_run(self) -> bool:
        try:
            return self.pid_file.read_text().split()[1:2] == [STARTED_BY_RUN]
        except OSError:
            return False

    def attach(self, start: bool = True) -> None:
        """This process uses the server from now on: hold its lease (shared with every other
        ckdemo process using it) and start it unless it runs."""
        if not self.managed:
            return
        if self._lease is None:
            lease = Lease(self.run_dir / f"{self.label}.lease")
            try:  # waits while a run that was the last user is stopping it
                lease.share(LEASE_TIMEOUT_S)
            except LockTimeout as exc:
                lease.release()
                raise RemoteError(f"cannot use {self.label}: {exc.detail}") from None
            self._lease = lease
        if start and self.pid() is None:
            self.serve()

    def detach(self) -> None:
        """This process is done with the server. A server a run started is stopped by the last
        process using it; one started by `ckdemo member serve` keeps running."""
        lease, self._lease = self._lease, None
        if lease is None:
            return
        try:
            if lease.last_user() and self.started_by_run():
                self.kill()
        finally:
            lease.release()

    def _start(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            self.socket.unlink()  # left by a killed server: the new one cannot bind over it
        env = child_environment()  # never the CKDEMO_*PIN* variables (childenv.py)
        if self.softhsm_conf:
            env["SOFTHSM2_CONF"] = self.softhsm_conf
        env.pop("P11_KIT_SERVER_ADDRESS", None)
        log = open(self.run_dir / f"{self.label}.log", "ab")
        try:
            process = subprocess.Popen(
                [
                    "p11-kit",
                    "server",
                    "-f",
                    "-n",
                    str(self.socket),
                    "--provider",
                    self.provider,
                    f"pkcs11:token={self.label}",
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )  # its own process group: a kill takes its children too
        except FileNotFoundError:
            raise RemoteError("p11-kit not found: apt-get install p11-kit") from None
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        # the file appears at bind(), connections are accepted from listen() on: wait for that
        while not _listening(self.socket):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RemoteError(
                    f"p11-kit server for {self.label} did not start "
                    f"(see {self.run_dir / (self.label + '.log')})"
                )
            time.sleep(0.01)
        self.pid_file.write_text(f"{process.pid} {STARTED_BY_RUN if self.shared_by_runs else 'serve'}\n")
        self.started_here = process.pid
        self._process = process
        # our child: reaped the moment it dies, whoever kills it (no zombie while we run)
        threading.Thread(target=process.wait, name=f"reap-{self.label}", daemon=True).start()
        return process.pid

    def kill(self) -> bool:
        """SIGKILL to the server's process group: a power cut, not a shutdown."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.killpg(pid, signal.SIGCONT)  # a stopped group would keep its signals pending
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self._process is not None and self._process.pid == pid:
            try:  # our child: reap it here (the reaper thread may be first)
                self._process.wait(START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        for _ in range(200):  # not our child (another run started it): its parent or init reaps
            if not _alive(pid):
                break
            time.sleep(0.005)
        self.pid_file.unlink(missing_ok=True)
        return True

    def children(self) -> set[int]:
        """The server's children now: one per connection (each its own module instance)."""
        pid = self.pid()
        if pid is None:
            return set()
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as listed:
                return {int(child) for child in listed.read().split()}
        except (OSError, ValueError):
            return set()

    def ended(self, child: int) -> bool:
        """That child of the server has ended (a zombie counts as ended)."""
        return not _alive(child)

    def hang(self) -> bool:
        """SIGSTOP to the server's process group: it keeps its socket but never answers, as a
        member behind a dead network link. resume() sends SIGCONT."""
        return self._signal(signal.SIGSTOP)

    def resume(self) -> bool:
        return self._signal(signal.SIGCONT)

    def _signal(self, number: int) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.killpg(pid, number)
        except ProcessLookupError:
            return False
        return True

    def restart(self) -> int:
        """Kill and serve again. A server a run started stays the runs' (the last run using it
        stops it, as the others), whoever restarts it: `ckdemo member restart` included."""
        for_runs = self.started_by_run()
        self.kill()
        return self.serve_again(for_runs)

    def serve_again(self, for_runs: bool) -> int:
        """serve() (nothing when it runs) a server that was killed; `for_runs`: the runs had
        started it (started_by_run() before the kill), so the new one is theirs too."""
        was, self.shared_by_runs = self.shared_by_runs, self.shared_by_runs or for_runs
        try:
            return self.serve()
        finally:
            self.shared_by_runs = was


def _listening(path: Path) -> bool:
    """The unix socket at `path` accepts connections. p11-kit server binds (the file appears)
    and listens a moment later; a connect in between is refused. Linux lists listening unix
    sockets in /proc/net/unix (flag __SO_ACCEPTCON, 0x10000); elsewhere a connect tells."""
    if not path.exists():
        return False
    try:
        with open("/proc/net/unix") as table:
            rows = table.read().splitlines()[1:]
    except OSError:
        return _accepts(path)
    wanted = str(path)
    return any(
        len(row.split()) >= 8 and row.split(None, 7)[7] == wanted and int(row.split()[3], 16) & 0x10000
        for row in rows
    )


def _accepts(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _alive(pid: int) -> bool:
    """Running or stopped; a zombie (killed, not reaped yet) counts as dead."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
