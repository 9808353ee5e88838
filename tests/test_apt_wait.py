"""scripts/apt-get-waiting (what scripts/bootstrap installs through): another apt or dpkg holding
a lock is waited for, any other failure is not. apt-get here is a stand-in on PATH that answers as
apt 2.6 does while another process holds the package lists' lock; the real one was checked by
hand (a lock held with fcntl for 7 s: waited, then updated)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "apt-get-waiting"
LOCKED = (
    "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)\n"
    "E: Unable to lock directory /var/lib/apt/lists/"
)


def fake_apt_get(folder: Path, locked_calls: int, other_error: str = "") -> Path:
    """apt-get that fails as locked for its first `locked_calls` calls, then succeeds (or fails
    with `other_error`); each call's arguments are appended to calls.log."""
    folder.mkdir(exist_ok=True)
    script = folder / "apt-get"
    script.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {folder}/calls.log
n=$(wc -l < {folder}/calls.log)
if [ "$n" -le {locked_calls} ]; then printf '%s\\n' "{LOCKED}" >&2; exit 100; fi
if [ -n "{other_error}" ]; then echo "{other_error}" >&2; exit 100; fi
echo "Reading package lists..."
""")
    script.chmod(0o755)
    return folder


def run(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", "APT_LOCK_RETRY_S": "0.05", **env}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=environment, timeout=60)


def calls(folder: Path) -> list[str]:
    return (folder / "calls.log").read_text().splitlines()


def test_a_held_lock_is_waited_for(tmp_path):
    folder = fake_apt_get(tmp_path / "bin", locked_calls=3)
    done = run(folder, "update", "-qq")
    assert done.returncode == 0, done.stderr
    assert calls(folder) == ["-o DPkg::Lock::Timeout=600 update -qq"] * 4
    assert done.stderr.count("waiting (up to 600 s)") == 1  # said once, not at every try
    assert done.stdout.strip() == "Reading package lists..."


def test_another_failure_is_not_waited_for(tmp_path):
    folder = fake_apt_get(tmp_path / "bin", locked_calls=0, other_error="E: Unable to locate package nope")
    done = run(folder, "install", "-y", "nope")
    assert done.returncode == 100
    assert calls(folder) == ["-o DPkg::Lock::Timeout=600 install -y nope"]
    assert done.stderr.strip() == "E: Unable to locate package nope"


def test_the_wait_has_an_end(tmp_path):
    folder = fake_apt_get(tmp_path / "bin", locked_calls=10**6)
    done = run(folder, "update", APT_LOCK_WAIT_S="0")
    assert done.returncode == 100
    assert len(calls(folder)) == 1 and "Could not get lock" in done.stderr
    assert calls(folder) == ["-o DPkg::Lock::Timeout=0 update"]


def test_bootstrap_installs_through_it():
    text = (REPO / "scripts" / "bootstrap").read_text()
    assert "scripts/apt-get-waiting update" in text and "scripts/apt-get-waiting install" in text
    assert "\n    apt-get " not in text  # no apt-get call of its own that would fail at once
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "bootstrap")]).returncode == 0
