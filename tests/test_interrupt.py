"""Ctrl-C in the long runs (bench, soak, bench-serve), for real: the command runs as a subprocess
on a fresh home, gets one SIGINT once its progress shows work under way, and must end with exit
130, the figures so far (JSON marked "interrupted"), and nothing of the run left on the member
tokens, as pkcs11-tool reads them straight from SoftHSM2, outside ckdemo."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import MEMBERS, USER_PIN, no_traceback, requires_softhsm
from test_bench import frames, on_a_terminal_until

pytestmark = requires_softhsm

INTERRUPTED = 130


def member_objects(independent, home: Path) -> dict[str, list[str]]:
    """Every object's class and label on each member token, read by pkcs11-tool."""
    found = {}
    for member in MEMBERS:
        done = independent(home, "--token-label", member, "--login", "--pin", USER_PIN, "--list-objects")
        assert done.returncode == 0, done.stderr
        found[member] = sorted(re.findall(r"^(\S.*?Object).*?\n\s+label:\s+(.*)$", done.stdout, re.MULTILINE))
    return found


def processes_of(home: Path) -> list[int]:
    """Processes whose command line or environment names the home (servers, clients left over)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if str(home).encode() in seen:
            found.append(int(entry.name))
    return found


@pytest.fixture
def fresh_home(tmp_path, provision, independent):
    home = provision(tmp_path / "home")
    before = member_objects(independent, home)
    assert all(before.values()) and not any("soak-" in label for objs in before.values() for _, label in objs)
    return home, before


def measuring(screen: str) -> bool:
    """bench's bar counts calls: some were made."""
    return re.search(r"[1-9][\d,]* calls", screen) is not None


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_bench(fresh_home, ckdemo_bin, independent, as_json):
    home, before = fresh_home
    code, chunks, out = on_a_terminal_until(
        [
            str(ckdemo_bin),
            "--home",
            str(home),
            "bench",
            "--op",
            "rsa-sign",
            "--slot",
            "both",
            "--seconds",
            "60",
            "--threads",
            "2",
        ]
        + (["--json"] if as_json else []),
        measuring,
    )
    screen = "".join(text for _, text in chunks)
    assert code == INTERRUPTED, (out, screen)
    no_traceback(out, screen)
    assert "Aborted!" not in screen
    if as_json:
        report = json.loads(out)
        assert report["interrupted"] is True
        direct = report["results"][0]
        assert direct["ops"] > 0 and 0 < direct["measured_s"] < 60
        assert 0 < direct["latency_us"]["p50"] <= direct["latency_us"]["max"]
    else:
        row = next(line.split() for line in out.splitlines() if line.startswith("direct"))
        assert int(row[3]) > 0  # ops so far
        assert re.search(
            r"^interrupted after [\d.]+ s of measuring: the figures so far", out, re.MULTILINE
        ), out
    assert member_objects(independent, home) == before


def test_soak(fresh_home, ckdemo_bin, independent):
    """Interrupted after the first kill: the member is brought back, the members compared and the
    run's soak-* objects (known keys and generated ones) removed from every member."""
    home, before = fresh_home

    def killed_once(screen: str) -> bool:
        return re.search(r"kills [1-9].*ops [1-9]", screen) is not None

    code, chunks, out = on_a_terminal_until(
        [
            str(ckdemo_bin),
            "--home",
            str(home),
            "soak",
            "--seconds",
            "120",
            "--kill-every",
            "0.5,0.8",
            "--json",
        ],
        killed_once,
    )
    screen = "".join(text for _, text in chunks)
    assert code == INTERRUPTED, (out, screen)
    no_traceback(out, screen)
    report = json.loads(out)
    assert report["interrupted"] is True
    assert report["operations"] > 0 and report["kills"] >= 1 and report["elapsed_s"] < 120
    # every member back before the clean-up (whether they held the same keys is the soak's own
    # verdict, which may differ under load: test_soak_progress.py reads it through the exit code)
    assert report["consistency"]["all_members_active"], report["consistency"]
    assert report["consistency"]["generated_keys"] >= 1  # generated keys were cleaned up too
    assert "interrupted" in frames(chunks)[-1][1]  # the progress line said so
    after = member_objects(independent, home)
    assert [label for objs in after.values() for _, label in objs if label.startswith("soak-")] == []
    assert after == before


def test_bench_serve(fresh_home, ckdemo_bin, independent):
    """Interrupted in its second round: the clients end the measurement under way and answer, the
    table shows round one's figures, the servers and clients are gone."""
    home, before = fresh_home
    code, chunks, out = on_a_terminal_until(
        [str(ckdemo_bin), "--home", str(home), "bench-serve", "--seconds", "0.9", "--rounds", "3"],
        lambda screen: "round 2/3" in screen,
    )
    screen = "".join(text for _, text in chunks)
    assert code == INTERRUPTED, (out, screen)
    no_traceback(out, screen)
    rows = [line.split() for line in out.splitlines() if line.startswith(("rsa-sign", "random"))][:4]
    assert len(rows) == 4 and all(int(row[-5]) > 0 for row in rows), out  # ops of every measurement
    assert re.search(r"^interrupted: the figures so far", out, re.MULTILINE), out
    assert "round 3/3" not in screen
    assert processes_of(home) == []
    assert member_objects(independent, home) == before
