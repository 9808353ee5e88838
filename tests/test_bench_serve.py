"""`ckdemo bench-serve`: both servers measured by real clients of p11-kit-client.so in one run;
the figures (docs/PERFORMANCE.md) come from longer runs, this checks the shape and that nothing
failed or was left behind."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from conftest import no_traceback, requires_softhsm
from rpc_capture import tools_missing
from test_bench import frames, on_a_terminal, undocumented
from test_state_json import assert_envelope

import pytest

PROGRESS = re.compile(r"bench-serve \[[#-]+\] round (\d)/2  (\d+)/12 measurements  ETA (\d+):(\d\d)")

pytestmark = [requires_softhsm, pytest.mark.skipif(bool(tools_missing()), reason=str(tools_missing()))]


def processes_using(home: Path) -> list[str]:
    """Command lines of processes started for this home (its path in argv or environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if str(home).encode() in text:
            found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_both_servers_both_operations_and_two_clients(home, run_ckdemo):
    started = datetime.now(timezone.utc)
    done = run_ckdemo(home, "bench-serve", "--seconds", "0.6", "--rounds", "1", "--json")
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # not a terminal: no progress
    report = json.loads(done.stdout)
    assert_envelope(report, home, started)
    assert undocumented(report) == []  # every field is in docs/JSON.md
    assert report["reference_token"] == "member1" and report["rounds"] == 1
    for op in ("rsa-sign", "random"):
        figures = report["operations"][op]
        for side in ("ckdemo", "p11-kit"):
            assert figures[side]["ops"] > 0 and figures[side]["errors"] == 0, figures
            latency = figures[side]["latency_us"]
            assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
        ratio = figures["ckdemo"]["ops_per_s"] / figures["p11-kit"]["ops_per_s"]
        assert figures["ratio"] == pytest.approx(ratio, abs=0.002)
        per_round = figures["ratio_per_round"]
        assert per_round["rounds"] == 1 and per_round["q1"] == per_round["median"] == per_round["q3"]
        assert per_round["median"] == pytest.approx(ratio, rel=0.01)  # one round: the same ratio
    for side in ("ckdemo", "p11-kit"):
        pair = report["two_clients"][side]
        assert pair["two_clients_ops_per_s"] > 0 and pair["errors"] == 0, pair
    assert processes_using(home) == []  # ckdemo serve, p11-kit server and clients ended with it


def test_table_output(home, run_ckdemo):
    done = run_ckdemo(home, "bench-serve", "--seconds", "0.6", "--rounds", "1")
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    assert "rsa-sign: ckdemo serve / p11-kit server = " in done.stdout
    assert "rsa-sign, ckdemo: 1 client " in done.stdout and "2 clients at once" in done.stdout
    assert done.stderr == ""  # not a terminal: no progress


def test_a_terminal_shows_the_rounds_and_an_eta_and_a_pipe_gets_the_json(home, ckdemo_bin):
    """stderr on a terminal: one line redrawn with the round, the measurements made and the ETA;
    stdout piped: the JSON alone."""
    code, chunks, piped = on_a_terminal(
        [str(ckdemo_bin), "--home", str(home), "bench-serve", "--seconds", "0.6", "--rounds", "2", "--json"],
        stdout_too=False,
    )
    assert code == 0, chunks
    assert json.loads(piped)["rounds"] == 2
    shown = [PROGRESS.search(text) for _, text in frames(chunks)]
    moving = [m for m in shown if m]
    assert len(moving) >= 5, frames(chunks)  # redrawn every 0.2 s over about 3.6 s of measuring
    assert {m.group(1) for m in moving} == {"1", "2"}
    made = [int(m.group(2)) for m in moving]
    assert made == sorted(made) and made[0] < 12 and made[-1] == 12
    etas = [int(m.group(3)) * 60 + int(m.group(4)) for m in moving]
    assert max(etas) >= 1 and etas[-1] == 0
    assert "\n" not in "".join(text for _, text in chunks).strip()  # one line, redrawn


def test_the_ratio_of_each_round_gives_median_and_quartiles():
    from ckdemo.bench_serve import Figure, paired

    ours, theirs = Figure(per_round=[90.0, 100.0, 110.0, 95.0]), Figure(per_round=[100.0] * 4)
    assert paired(ours, theirs) == {"median": 0.975, "q1": 0.938, "q3": 1.025, "rounds": 4}
    assert paired(Figure(), Figure())["median"] is None
