"""`ckdemo bench`: figures come out of a real run, in the shape a CI job can read; on a terminal a
person sees one progress line over the whole run, and nothing of it reaches a pipe."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import pty
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from conftest import clean_env, no_traceback, requires_softhsm

pytestmark = requires_softhsm

JSON_DOC = Path(__file__).resolve().parent.parent / "docs" / "JSON.md"
# objects whose keys are data, not field names (docs/JSON.md writes them <serial>, <op>, <server>),
# and one not walked further
KEYED = {
    "results[].member_share": "<serial>",
    "consistency.members": "<serial>",
    "operations": "<op>",  # bench-serve's operations ...
    "two_clients": "<server>",  # ... and servers
}
SERVERS = {"ckdemo", "p11-kit"}  # bench-serve's two, beside the ratios in operations.<op>
NOT_WALKED = {"consistency.members.<serial>"}

FRAME = re.compile(r"(\d+)%  ([\d.]+)/([\d.]+) s, ([\d,]+) calls  ETA (\d+):(\d\d)  \((\w+)\)")


def on_a_terminal(command: list[str], stdout_too: bool = True, timeout_s: float = 90):
    """Runs `command` with stderr (and stdout unless stdout_too is False, then piped) on a
    pseudo-terminal 120 columns wide, as a person at a terminal would.

    Returns (exit code, [(seconds since start, text read from the terminal)], piped stdout)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    started = time.monotonic()
    child = subprocess.Popen(
        command,
        stdin=slave,
        stdout=slave if stdout_too else subprocess.PIPE,
        stderr=slave,
        env=clean_env(),
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    while time.monotonic() - started < timeout_s:
        ready, _, _ = select.select([master], [], [], 1.0)
        if not ready:
            if child.poll() is not None:
                break
            continue
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append((time.monotonic() - started, data.decode(errors="replace")))
    os.close(master)
    piped = "" if stdout_too else child.stdout.read().decode()
    return child.wait(timeout=timeout_s), chunks, piped


def on_a_terminal_until(
    command: list[str], interrupt_when: Callable[[str], bool], timeout_s: float = 90, stdout_too: bool = False
):
    """Runs `command` with stderr (and stdout when stdout_too, else piped) on a pseudo-terminal,
    so the progress line shows; sends one SIGINT once `interrupt_when(everything the terminal
    showed so far)` is true.

    Returns (exit code, [(seconds since start, terminal text)], piped stdout)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    started = time.monotonic()
    child = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=slave if stdout_too else subprocess.PIPE,
        stderr=slave,
        env=clean_env(),
        close_fds=True,
        start_new_session=True,
        # as at a terminal: a shell's background job (`make test &`) passes
        # SIGINT on ignored, and Python then keeps ignoring it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(slave)
    piped: list[bytes] = []
    reader = threading.Thread(
        target=lambda: piped.append(child.stdout.read() if child.stdout else b""), daemon=True
    )
    reader.start()
    chunks, screen, sent = [], "", False
    while time.monotonic() - started < timeout_s:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            if child.poll() is not None:
                break
            continue
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        text = data.decode(errors="replace")
        chunks.append((time.monotonic() - started, text))
        screen += text
        if not sent and interrupt_when(screen):
            child.send_signal(signal.SIGINT)
            sent = True
    os.close(master)
    code = child.wait(timeout=timeout_s)
    reader.join(timeout_s)
    return code, chunks, b"".join(piped).decode()


def field_paths(value, path: str = "") -> set[str]:
    """Every field of a JSON output as docs/JSON.md writes it: `a.b`, `a[].b`, `x.<serial>`."""
    found = {path} if path else set()
    if path in NOT_WALKED:
        return found
    if isinstance(value, dict):
        for key, item in value.items():
            name = KEYED.get(path) or ("<server>" if path == "operations.<op>" and key in SERVERS else key)
            found |= field_paths(item, f"{path}.{name}" if path else name)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                found |= field_paths(item, f"{path}[]") - {f"{path}[]"}
    return found


def undocumented(report: dict) -> list[str]:
    documented = set(re.findall(r"^\| `([^`]+)` \|", JSON_DOC.read_text(), re.MULTILINE))
    return sorted(field_paths(report) - documented)


def frames(chunks) -> list[tuple[float, str]]:
    """Each redraw of the progress line (they start with \\r), with when it was read."""
    found = []
    for when, text in chunks:
        for part in text.split("\r")[1:]:
            part = part.replace("\x1b[K", "").strip()
            if part:
                found.append((when, part))
    return found


def test_side_by_side_counts_and_ratio(shared_home, run_ckdemo):
    done = run_ckdemo(shared_home, "bench", "--op", "random", "--count", "3000", "--slot", "both", "--json")
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
    done = run_ckdemo(
        shared_home, "bench", "--op", "rsa-sign", "--slot", "2", "--seconds", "1", "--threads", "2"
    )
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
    calls = [
        int(row.split()[4])
        for row in done.stdout.splitlines()
        if row[:1].isdigit() and " member" in row and "active" in row
    ]
    assert calls[0] >= 6 and calls[1:] == [0, 0]
    assert "load balancing off" in done.stdout


def test_json_carries_the_parameters_and_units(shared_home, run_ckdemo):
    from test_state_json import assert_envelope

    started = datetime.now(timezone.utc)
    done = run_ckdemo(
        shared_home,
        "bench",
        "--op",
        "ecdsa-sign",
        "--count",
        "10",
        "--slot",
        "both",
        "--data-size",
        "48",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert_envelope(report, shared_home, started)  # which ckdemo, when, which library
    assert report["parameters"] == {
        "operation": "ecdsa-sign",
        "slots": ["direct", "HA"],
        "members": report["parameters"]["members"],
        "per_slot_s": None,
        "duration_s": None,
        "count_per_slot": 10,
        "threads": 1,
        "rounds": 6,
        "key_size_bits": 256,
        "data_size_bytes": 48,
    }
    assert len(report["parameters"]["members"]) == 3
    # a count that rounds do not divide: still exactly that many per slot
    assert [r["ops"] for r in report["results"]] == [10, 10]
    assert all(r["measured_s"] > 0 and "seconds" not in r for r in report["results"])
    assert set(report["results"][1]["member_share"]) == set(report["parameters"]["members"])
    assert undocumented(report) == []
    # the check itself sees a field the page lacks
    report["results"][0]["new_field"] = 1
    assert undocumented(report) == ["results[].new_field"]


def test_piped_output_carries_no_progress(shared_home, run_ckdemo):
    done = run_ckdemo(shared_home, "bench", "--op", "random", "--seconds", "0.5", "--slot", "both")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # not a terminal: quiet
    assert "\r" not in done.stdout and "\x1b" not in done.stdout and "ETA" not in done.stdout
    assert [line.split()[0] for line in done.stdout.splitlines()[2:4]] == ["direct", "HA"]


def test_a_terminal_shows_one_bar_over_the_whole_run_with_an_eta(shared_home, ckdemo_bin):
    """--slot both --seconds 1 measures 2 s: the bar counts to 2 s, the ETA falls, both slots show."""
    code, chunks, _ = on_a_terminal(
        [
            str(ckdemo_bin),
            "--home",
            str(shared_home),
            "bench",
            "--op",
            "random",
            "--slot",
            "both",
            "--seconds",
            "1",
        ]
    )
    assert code == 0, chunks
    shown = [(when, FRAME.search(text)) for when, text in frames(chunks)]
    moving = [(when, m) for when, m in shown if m]
    assert len(moving) >= 5, frames(chunks)  # redrawn every 0.2 s over 2 s
    assert {m.group(3) for _, m in moving} == {"2"}  # the whole run, not one slot's 1 s
    percents = [int(m.group(1)) for _, m in moving]
    assert percents == sorted(percents) and percents[0] < 50 and percents[-1] == 100
    etas = [int(m.group(5)) * 60 + int(m.group(6)) for _, m in moving]
    assert etas == sorted(etas, reverse=True) and etas[0] >= 1 and etas[-1] == 0
    assert {m.group(7) for _, m in moving} == {"direct", "HA"}
    # it moved while the run went on, not all at once at the end
    assert moving[-1][0] - next(when for when, m in moving if int(m.group(1)) < 50) >= 0.5
    screen = "".join(text for _, text in chunks)
    assert "HA/direct = " in screen  # the table follows, on a line of its own
    assert re.search(r"100%[^\n]*\r?\n", screen)


def test_json_to_a_pipe_while_the_bar_goes_to_the_terminal(shared_home, ckdemo_bin):
    code, chunks, piped = on_a_terminal(
        [
            str(ckdemo_bin),
            "--home",
            str(shared_home),
            "bench",
            "--op",
            "digest",
            "--count",
            "600",
            "--slot",
            "2",
            "--json",
        ],
        stdout_too=False,
    )
    assert code == 0, chunks
    assert json.loads(piped)["results"][0]["ops"] == 600  # stdout is pure JSON
    last = frames(chunks)[-1][1]
    assert re.search(r"100%  600/600 calls  ETA 0:00  \(slot#2\)", last), last


MEMORY_LIMIT_MB = 60


def test_memory_stays_bounded_however_many_calls(shared_home, ckdemo_bin):
    """`--op random` makes ~250,000 calls a second: keeping every latency grew ~11 MB a second
    (143 MB peak for 2 x 5 s); the histogram keeps the process under MEMORY_LIMIT_MB."""
    measure = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE)\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(done.stdout.decode())"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            measure,
            str(ckdemo_bin),
            "--home",
            str(shared_home),
            "bench",
            "--op",
            "random",
            "--slot",
            "both",
            "--seconds",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    code, peak_kb = map(int, done.stdout.split("\n", 1)[0].split())
    report = json.loads(done.stdout.split("\n", 1)[1])
    assert code == 0, done.stderr
    calls = sum(r["ops"] for r in report["results"])
    assert calls > 100_000  # enough calls that a list of them would show
    assert peak_kb < MEMORY_LIMIT_MB * 1024, f"{peak_kb // 1024} MB for {calls:,} calls"


def test_html_draws_the_run_sampled_from_its_counters_and_loses_no_call(shared_home, run_ckdemo, tmp_path):
    """--html: calls per second over time, each slot's rounds shaded, taken from the counters the
    progress line reads (nothing is added to a call): every call measured is in a bar."""
    page = tmp_path / "bench.html"
    done = run_ckdemo(
        shared_home,
        "bench",
        "--op",
        "rsa-sign",
        "--seconds",
        "1",
        "--slot",
        "both",
        "--json",
        "--html",
        str(page),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    text = page.read_text()
    assert text.count("<svg") == 1 and 'class="timeline"' in text and "<script" not in text
    drawn = sum(int(n) for n in re.findall(r"<title>[\d.]+ s: (\d+) call\(s\)", text))
    assert drawn == sum(r["ops"] for r in report["results"]) > 0
    labels = re.findall(r'<text class="step"[^>]*>(\w+)</text>', text)
    assert set(labels) == {"direct", "HA"} and len(labels) >= 6  # 6 rounds each, alternating
    assert ">mean</text>" in text and "slowest" not in text.split("<svg")[1].split("</svg>")[0]


def test_a_sampled_timeline_counts_what_happened_between_samples():
    from ckdemo.timeline import Sampler

    now, counters = [0.0], [(0, 0, 0.0, "")]
    sampler = Sampler(lambda: counters[0], callers=2, clock=lambda: now[0])
    sampler._start, sampler._last = 0.0, counters[0]  # started by hand: no thread
    for step, reading in enumerate(
        [(100, 0, 0.1, "A"), (300, 5, 0.2, "A"), (300, 5, 0.2, ""), (400, 5, 0.3, "B")], start=1
    ):
        now[0], counters[0] = step * 0.1, reading
        sampler.sample()
    bins = sampler.stop()
    assert [b.calls for b in bins.bins] == [100, 200, 0, 100] and bins.bins[1].failures == 5
    assert abs(bins.bins[1].total_s - 0.2) < 1e-9  # two callers busy for 0.1 s: 1 ms a call
    assert [(w.label, round(w.start_s, 1), round(w.end_s, 1)) for w in sampler.windows] == [
        ("A", 0.1, 0.3),
        ("B", 0.4, 0.4),
    ]
