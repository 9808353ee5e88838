"""Slow and flapping members (ckdemo/lab/member_faults.py, `ckdemo member slow` and `flap`, lab
steps): the loops' shape with stand-ins for the two states, scenario lines checked, and real remote
members (p11-kit server processes) slowed and flapped by the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import clean_env, no_traceback, requires_softhsm

from ckdemo.lab.member_faults import Cycle, flapping
from ckdemo.lab.scenario import ScenarioError, parse


def test_a_cycle_alternates_and_always_ends_in_its_second_state():
    seen, changes = [], []
    cycle = Cycle(
        lambda: seen.append("down"),
        lambda: seen.append("up"),
        0.01,
        0.01,
        for_s=0.2,
        on_change=changes.append,
        tell_each=True,
    )
    cycle.run()  # in this thread: it ends when its 0.2 s are up
    assert seen[0] == "down" and seen[-1] == "up" and seen.count("down") >= 3
    assert all(a != b for a, b in zip(seen, seen[1:-1]))  # down, up, down, up ... (+ the last up)
    assert changes[-1] == "second" and changes.count("first") == cycle.cycles


def test_stopping_a_cycle_puts_the_member_back_at_once_even_in_a_long_down():
    seen = []
    cycle = flapping(lambda: seen.append("down"), lambda: seen.append("up"), every_s=600.0).start()
    time.sleep(0.05)
    started = time.monotonic()
    cycle.stop()
    assert time.monotonic() - started < 2 and seen == ["down", "up"] and not cycle.running


def test_a_failing_change_is_told_and_the_loop_goes_on():
    errors, ups = [], []

    def down():
        raise OSError("no such server")

    cycle = Cycle(down, lambda: ups.append(1), 0.01, 0.01, for_s=0.1, on_error=errors.append)
    cycle.run()
    assert len(errors) == cycle.cycles >= 2 and cycle.cycles <= len(ups) <= cycle.cycles + 1


def test_slow_only_tells_its_start_and_end():
    changes = []
    Cycle(lambda: None, lambda: None, 0.005, 0.005, for_s=0.1, on_change=changes.append).run()
    assert changes == ["first", "second"]


def _step(member: str):
    return f"""
[[step]]
name = "s"
at = 1.0
member = {member}
[[step]]
name = "next"
at = 5.0
event = "clear"
"""


def test_slow_and_flap_steps_are_read_and_checked():
    import tomllib

    slow = parse(tomllib.loads(_step('{ action = "slow", name = "member2", ms = 300 }'))).steps[0]
    assert (slow.member.action, slow.member.name, slow.member.ms, slow.member.for_s) == (
        "slow",
        "member2",
        300,
        None,
    )
    assert slow.describe() == "member member2: slow (answers up to 300 ms late)"
    flap = parse(tomllib.loads(_step('{ action = "flap", name = "member2", every = 2, "for" = 4 }'))).steps[0]
    assert (flap.member.every_s, flap.member.down_s, flap.member.for_s) == (2.0, 1.0, 4.0)
    assert flap.describe() == "member member2: flap (down 1 s in every 2 s) for 4 s"
    for bad, said in [
        ('{ action = "slow", name = "m" }', "slow needs ms"),
        ('{ action = "slow", name = "m", ms = 0 }', "ms is above 0"),
        ('{ action = "slow", name = "m", ms = 300, every = 2 }', "unknown key(s) every"),
        ('{ action = "flap", name = "m" }', "flap needs every"),
        ('{ action = "flap", name = "m", every = 2, down = 2 }', "below every"),
        ('{ action = "flap", name = "m", every = 0.1 }', "at least 0.2 s"),
        ('{ action = "kill", name = "m", ms = 3 }', "unknown key(s) ms"),
        ('{ action = "flap", name = "m", every = 1, "for" = 9 }', "windows overlap"),
    ]:
        with pytest.raises(ScenarioError, match=said.replace("(", r"\(").replace(")", r"\)")):
            parse(tomllib.loads(_step(bad)))


def _ckdemo(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ckdemo"), "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=timeout,
    )
    no_traceback(done.stdout, done.stderr)
    return done


def _state(home: Path, label: str) -> str:
    rows = [line.split() for line in _ckdemo(home, "member", "list").stdout.splitlines()]
    return next(row[3] for row in rows if row and row[0] == label)


@requires_softhsm
def test_member_slow_stops_the_real_server_again_and_again_and_leaves_it_running(remote_home):
    assert _ckdemo(remote_home, "member", "serve").returncode == 0
    states = []
    watching = threading.Event()

    def watch():
        while not watching.is_set():
            states.append(_state(remote_home, "member2"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        done = _ckdemo(remote_home, "member", "slow", "member2", "--ms", "300", "--for", "2")
    finally:
        watching.set()
        watcher.join()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "member2: answers up to 300 ms late for 2 s" in done.stderr
    stops = int(done.stdout.split("member2: ")[1].split(" stop(s)")[0])
    assert 4 <= stops <= 7, done.stdout  # 2 s in stops of 300 ms and runs of 20 ms
    assert "stopped" in states, states  # seen by `member list` while it ran
    assert _state(remote_home, "member2") == "running"


@requires_softhsm
def test_member_flap_kills_and_serves_the_real_server_and_leaves_it_served(remote_home):
    assert _ckdemo(remote_home, "member", "serve").returncode == 0
    before = _ckdemo(remote_home, "member", "list").stdout
    pid = int(next(line.split()[1] for line in before.splitlines() if line.startswith("member2")))
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ckdemo"),
            "--home",
            str(remote_home),
            "member",
            "flap",
            "member2",
            "--every",
            "1",
            "--down",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    states, ends = [], time.monotonic() + 3.0
    while time.monotonic() < ends:
        states.append(_state(remote_home, "member2"))
    process.send_signal(signal.SIGTERM)  # until Ctrl-C or SIGTERM: then the member is served again
    out, err = process.communicate(timeout=30)
    no_traceback(out, err)
    assert process.returncode == 0, out + err
    assert "dead" in states and "running" in states[states.index("dead") :], states  # down, then up again
    downs = int(out.split("member2: down ")[1].split(" time(s)")[0])
    assert 2 <= downs <= 4 and "served again" in out, out
    after = _ckdemo(remote_home, "member", "list").stdout
    new_pid = int(next(line.split()[1] for line in after.splitlines() if line.startswith("member2")))
    assert new_pid != pid and _state(remote_home, "member2") == "running"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_flap_and_slow_refuse_what_they_cannot_do(tmp_path, provision):
    home = provision(tmp_path / "home")  # local members: no server process to slow
    done = _ckdemo(home, "member", "slow", "member2", "--ms", "100", "--for", "1")
    assert done.returncode != 0 and "no remote members" in done.stderr
    done = _ckdemo(home, "member", "flap", "member2", "--every", "1", "--for", "1")  # no serve runs
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "or start `ckdemo serve`: through it this works on any member" in done.stderr
