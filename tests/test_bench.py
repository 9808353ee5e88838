"""`ckdemo bench`: figures come out of a real run, in the shape a CI job can read."""
from __future__ import annotations

import json

from conftest import no_traceback, requires_softhsm

pytestmark = requires_softhsm


def test_side_by_side_counts_and_ratio(shared_home, run_ckdemo):
    done = run_ckdemo(shared_home, "bench", "--op", "random", "--count", "3000", "--slot", "both",
                      "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    direct, ha = report["results"]
    assert (direct["slot"], ha["slot"]) == ("direct", "HA")
    assert direct["ops"] == ha["ops"] == 3000  # --count: exactly that many per slot
    assert direct["errors"] == ha["errors"] == 0
    for result in (direct, ha):
        latency = result["latency_us"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    # the HA slot spread its calls over the three members (round robin when one thread calls)
    assert sorted(ha["member_share"].values()) == [0.333, 0.333, 0.333]
    assert report["ratio"]["ha_over_direct"] == round(ha["ops_per_s"] / direct["ops_per_s"], 3)


def test_a_physical_slot_with_threads_and_the_table(shared_home, run_ckdemo):
    done = run_ckdemo(shared_home, "bench", "--op", "rsa-sign", "--slot", "2", "--seconds", "1",
                      "--threads", "2")
    assert done.returncode == 0, done.stderr
    row = [line.split() for line in done.stdout.splitlines() if line.startswith("slot#2")]
    assert len(row) == 1 and row[0][1:3] == ["rsa-sign", "2"]
    assert int(row[0][3]) > 100 and row[0][9] == "0"  # operations done, no errors


def test_bad_slot_is_one_line(shared_home, run_ckdemo):
    done = run_ckdemo(shared_home, "bench", "--slot", "9")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("ckdemo: --slot 9: not a slot number")
    no_traceback(done.stdout, done.stderr)


def test_nolb_sends_every_call_to_the_first_member(shared_home, run_ckdemo):
    """CKDemo's nolb: load balancing off, the first active member serves everything."""
    script = "51\n5\n${CKDEMO_USER_PIN}\n1\n5\ny\n" + "62\n${LAST_SESSION}\n4\n" * 6 + "122\n5\n0\n"
    done = run_ckdemo(shared_home, "--nolb", "run", "-", input=script)
    assert done.returncode == 0, done.stdout
    calls = [int(row.split()[4]) for row in done.stdout.splitlines()
             if row[:1].isdigit() and " member" in row and "active" in row]
    assert calls[0] >= 6 and calls[1:] == [0, 0]
    assert "load balancing off" in done.stdout
