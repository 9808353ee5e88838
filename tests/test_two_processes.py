"""Two ckdemo processes on one state folder with remote members (p11-kit server per member).

Each process that uses a member server holds a lease on it (a shared flock in HOME/run); a server
a run started is stopped by the last process using it, so the run that started the servers can
exit first while another keeps signing. A server killed under the run that started it is reaped
at once (no zombie). Real processes, real SIGKILLs; each test is bounded to a few seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import MEMBERS, TIMEOUT_S, clean_env, no_traceback, requires_softhsm, servers_of

pytestmark = [
    requires_softhsm,
    pytest.mark.skipif(shutil.which("p11-kit") is None, reason="p11-kit is not installed"),
]

LOGIN_AND_KEYS = """\
51
5
${CKDEMO_USER_PIN}
1
5
y
65
${LAST_SESSION}
y
"""
SIGN = """\
42
${LAST_SESSION}
${LAST_KNOWN_RSA2048_PRIVATE}
1
signed by the long run
""
"""
HA_STATUS = "52\n5\n"


@pytest.fixture
def start_run(ckdemo_bin, tmp_path):
    """start_run(home, script) -> Popen of `ckdemo --home HOME run SCRIPT`, output to files (a
    pipe nobody reads while the run goes on could fill up and stall it)."""
    started: list[subprocess.Popen] = []

    def start(home: Path, script: str) -> subprocess.Popen:
        name = tmp_path / f"run{len(started)}"
        name.with_suffix(".script").write_text(script)
        with open(name.with_suffix(".out"), "w") as out, open(name.with_suffix(".err"), "w") as err:
            process = subprocess.Popen(
                [str(ckdemo_bin), "--home", str(home), "run", str(name.with_suffix(".script"))],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=clean_env(),
                cwd=home.parent,
            )
        process.output = name  # type: ignore[attr-defined]
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(TIMEOUT_S)


def finish(process: subprocess.Popen) -> str:
    process.wait(TIMEOUT_S)
    stdout = process.output.with_suffix(".out").read_text()
    stderr = process.output.with_suffix(".err").read_text()
    no_traceback(stdout, stderr)
    assert process.returncode == 0, stdout + stderr
    return stdout


def until(condition, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def three_servers(home: Path) -> dict[str, int] | None:
    """The three member servers' pids, read once (two reads could straddle a pid file being
    written, and the second answer miss a member the first one counted)."""
    found = server_pids(home)
    return found if len(found) == 3 else None


def server_pids(home: Path) -> dict[str, int]:
    """member label -> pid of its p11-kit server, for the servers that run. A server forks a child
    for each connection, which shows the server's command line until it execs p11-kit-remote: a
    process whose parent is one of the servers is such a child, not a server (once, under load,
    the member3 entry was a child's pid)."""
    pids = servers_of(home)
    found = {}
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if parent_of(pid) in pids:
                continue
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        for label in MEMBERS:
            if f"pkcs11:token={label}".encode() in cmdline and str(home).encode() in cmdline:
                found[label] = pid
    return found


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def holds_leases(pid: int, home: Path) -> bool:
    """The process holds a flock on every member's lease file (read in /proc/locks)."""
    inodes = {
        (home / "run" / f"{m}.lease").stat().st_ino for m in MEMBERS if (home / "run" / f"{m}.lease").exists()
    }
    held = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[4] == str(pid):
            held.add(int(fields[5].rsplit(":", 1)[1]))
    return len(inodes) == len(MEMBERS) and inodes <= held


def zombie_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def statuses(stdout: str) -> list[str]:
    return re.findall(r"HSM \w+ +- (CKR_\w+)", stdout)


def test_the_run_that_started_the_servers_exits_first(remote_home, start_run):
    """Run A starts the member servers and exits while run B still signs with them: B's later
    signs succeed on every member; B, the last user, stops the servers when it ends."""
    first = start_run(remote_home, "14\n@sleep 3\n0\n")
    servers = until(lambda: three_servers(remote_home), "run A to start three member servers")
    assert {parent_of(pid) for pid in servers.values()} == {first.pid}  # A started them
    second = start_run(remote_home, LOGIN_AND_KEYS + SIGN + "@sleep 5\n" + SIGN * 3 + HA_STATUS + "0\n")
    until(lambda: holds_leases(second.pid, remote_home), "run B to hold its leases")
    assert first.poll() is None, "run A ended before run B attached: the test proved nothing"
    finish(first)
    assert second.poll() is None, "run B ended before run A: the test proved nothing"
    assert server_pids(remote_home) == servers  # A left them to B
    stdout = finish(second)
    assert stdout.count("Status: Doing great, no errors (CKR_OK)") >= 8
    assert "CKR_DEVICE_ERROR" not in stdout
    assert statuses(stdout) == ["CKR_OK"] * 3  # no member failed under B
    assert servers_of(remote_home) == []  # the last user stopped what a run started


def test_servers_started_by_member_serve_outlive_every_run(remote_home, start_run, run_ckdemo):
    assert run_ckdemo(remote_home, "member", "serve").returncode == 0
    servers = server_pids(remote_home)
    assert len(servers) == 3
    finish(start_run(remote_home, LOGIN_AND_KEYS + SIGN + "0\n"))
    assert server_pids(remote_home) == servers


def test_a_killed_server_is_reaped_by_the_run_that_started_it(remote_home, start_run, run_ckdemo):
    """`member kill` from another process, and a SIGKILL straight to a server's process group:
    neither leaves a zombie under the run, which fails the members over and keeps signing."""
    long_run = start_run(remote_home, LOGIN_AND_KEYS + SIGN + "@sleep 4\n" + SIGN * 2 + HA_STATUS + "0\n")
    servers = until(lambda: three_servers(remote_home), "the run to start three member servers")
    assert {parent_of(pid) for pid in servers.values()} == {long_run.pid}
    until(lambda: holds_leases(long_run.pid, remote_home), "the run to hold its leases")
    killed = run_ckdemo(remote_home, "member", "kill", "member2")
    assert killed.returncode == 0 and "killed" in killed.stdout
    os.killpg(servers["member3"], signal.SIGKILL)
    until(
        lambda: not any(Path(f"/proc/{servers[m]}").exists() for m in ("member2", "member3")),
        "the killed servers to be reaped",
        timeout=3,
    )
    assert zombie_children(long_run.pid) == []
    assert long_run.poll() is None, "the run ended before the kills: the test proved nothing"
    stdout = finish(long_run)
    assert stdout.count("Status: Doing great, no errors (CKR_OK)") >= 6  # failover to member1
    assert statuses(stdout)[0] == "CKR_OK" and statuses(stdout)[1:] != ["CKR_OK"] * 2
    assert servers_of(remote_home) == []


def test_hagroup_synchronize_beside_a_running_script(remote_home, start_run, run_ckdemo):
    long_run = start_run(remote_home, LOGIN_AND_KEYS + SIGN + "@sleep 4\n" + SIGN * 3 + HA_STATUS + "0\n")
    servers = until(lambda: three_servers(remote_home), "the run to start three member servers")
    until(lambda: holds_leases(long_run.pid, remote_home), "the run to hold its leases")
    synchronized = run_ckdemo(remote_home, "hagroup", "synchronize")
    no_traceback(synchronized.stdout, synchronized.stderr)
    assert synchronized.returncode == 0, synchronized.stdout + synchronized.stderr
    assert long_run.poll() is None, "the run ended before synchronize: the test proved nothing"
    assert server_pids(remote_home) == servers  # synchronize stopped nothing
    stdout = finish(long_run)
    assert "CKR_DEVICE_ERROR" not in stdout
    assert statuses(stdout) == ["CKR_OK"] * 3
    assert servers_of(remote_home) == []


def test_a_run_killed_with_sigkill_leaves_its_servers_to_the_next_run(remote_home, start_run):
    """No atexit after SIGKILL: the servers stay, the kernel drops the lease, and the next run,
    their last user, stops them when it ends."""
    crashed = start_run(remote_home, "14\n@sleep 30\n0\n")
    servers = until(lambda: three_servers(remote_home), "the run to start three member servers")
    until(lambda: holds_leases(crashed.pid, remote_home), "the run to hold its leases")
    crashed.send_signal(signal.SIGKILL)
    crashed.wait(TIMEOUT_S)
    assert server_pids(remote_home) == servers
    stdout = finish(start_run(remote_home, LOGIN_AND_KEYS + SIGN + HA_STATUS + "0\n"))
    assert statuses(stdout) == ["CKR_OK"] * 3
    assert servers_of(remote_home) == []
