"""`ckdemo lab run SCENARIO -- COMMAND`: a real application (tests/apps/sign_loop.py, python-pkcs11
through Debian's p11-kit-client.so) under a scenario of faults; the report says what it saw, and
the exit code says whether every expectation held. Scenario files are checked line by line.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import clean_env, no_traceback, requires_softhsm
from rpc_capture import tools_missing

from ckdemo.lab.scenario import parse

pytestmark = [requires_softhsm, pytest.mark.skipif(bool(tools_missing()), reason=str(tools_missing()))]

APP = Path(__file__).parent / "apps" / "sign_loop.py"


def app_command(count: int, *options: str) -> list[str]:
    """The application, reading where to go from the environment the lab gives it."""
    code = (
        "import os, subprocess, sys; e = os.environ; sys.exit(subprocess.call([sys.executable, "
        f"{str(APP)!r}, e['CKDEMO_P11_MODULE'], e['CKDEMO_TOKEN_LABEL'], e['CKDEMO_USER_PIN'], "
        f"{str(count)!r}] + {list(options)!r}))"
    )
    return [sys.executable, "-c", code]


@pytest.fixture(scope="module")
def lab_home(tmp_path_factory, provision):
    return provision(tmp_path_factory.mktemp("lab") / "home")


def lab(
    run_ckdemo, home: Path | None, scenario: Path, report: Path, *command: str, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    where = () if home is None else ("--home", str(home))
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ckdemo"),
            *where,
            "lab",
            "run",
            str(scenario),
            "--report",
            str(report),
            *extra,
            "--",
            *command,
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=180,
    )
    no_traceback(done.stdout, done.stderr)
    return done


def write(folder: Path, text: str, name: str = "scenario.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_a_scenario_of_errors_a_member_failure_and_a_restart_is_reported_step_by_step(
    lab_home, tmp_path, run_ckdemo
):
    scenario = write(
        tmp_path,
        """
seed = 3
timeout = 120
expect = { app_exit = 1 }
[[step]]
name = "three device errors"
after_calls = 60
fault = { calls = "C_Sign", error = "CKR_DEVICE_ERROR", count = 3 }
expect = { app_failures = 3, app_recovers_within = 5.0 }
[[step]]
name = "member1 fails"
after_calls = 600
member = { action = "fail", name = "member1" }
expect = { app_failures = 0, calls_min = 1 }
[[step]]
name = "member1 back"
after_calls = 1200
member = { action = "restore", name = "member1" }
expect = { app_failures = 0 }
[[step]]
name = "appliance reboot"
after_calls = 1800
event = "restart_hsm"
expect = { app_failures_max = 1, app_recovers_within = 5.0 }
""",
    )
    report = tmp_path / "report"
    done = lab(run_ckdemo, lab_home, scenario, report, *app_command(1500, "--reopen"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 of 8 expectation(s) met" in done.stdout, done.stdout
    data = json.loads((report / "report.json").read_text())
    # the state views' time field, and `written` (the same moment, to the second) kept beside it
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["timestamp"]), data["timestamp"]
    assert data["written"] == data["timestamp"][:19] + "+00:00"
    steps = {s["name"]: s for s in data["steps"]}
    assert steps["three device errors"]["failures"] == {"CKR_DEVICE_ERROR": 3}
    assert steps["three device errors"]["calls_faulted"] == 3
    assert steps["member1 fails"]["failures"] == {} and steps["member1 fails"]["calls"] > 0
    reboot = steps["appliance reboot"]
    assert reboot["failures"] == {"CKR_SESSION_HANDLE_INVALID": 1}, reboot
    assert {"opened a new session", "logged in again"} <= set(reboot["reactions"]), reboot
    assert data["scenario"]["seed"] == 3 and data["expectations_met"] is True
    assert data["calls"]["total"] == len(data["call_log"]) > 100
    faulted = [c for c in data["call_log"] if c["fault"]]
    assert [c["result"] for c in faulted] == ["CKR_DEVICE_ERROR"] * 3
    assert any("member1: fail" in m["what"] for m in data["marks"])
    suite = ET.parse(report / "report.xml").getroot()
    assert suite.get("tests") == "5" and suite.get("failures") == "0"
    assert (report / "app.log").read_text().count('"ok": true') > 100


def test_an_expectation_that_does_not_hold_fails_the_run_and_its_junit_case(lab_home, tmp_path, run_ckdemo):
    scenario = write(
        tmp_path,
        """
[[step]]
name = "one device error"
at = 0.1
fault = { calls = "C_Sign", error = "CKR_DEVICE_ERROR", count = 1 }
expect = { app_failures = 0 }
""",
    )
    done = lab(run_ckdemo, lab_home, scenario, tmp_path / "r", *app_command(300))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[NOT MET] the application sees 0 failure(s) (1 seen)" in done.stdout
    suite = ET.parse(tmp_path / "r" / "report.xml").getroot()
    assert suite.get("failures") == "1"
    failure = suite.find("testcase[@name='one device error']/failure")
    assert failure is not None and "1 seen" in failure.text


def failing_signatures(report: Path) -> list[int]:
    lines = [
        json.loads(line) for line in (report / "app.log").read_text().splitlines() if line.startswith("{")
    ]
    return [line["n"] for line in lines if line.get("ok") is False]


def test_seeded_chaos_is_repeatable_and_a_retry_wrapper_changes_what_the_report_shows(
    lab_home, tmp_path, run_ckdemo
):
    scenario = write(
        tmp_path,
        """
seed = 11
[[step]]
name = "random device errors"
at = 0.0
fault = { calls = "C_Sign", error = "CKR_DEVICE_ERROR", probability = 0.05, count = 8 }
""",
    )
    runs = {}
    for name, seed, options in (
        ("plain", "11", ()),
        ("again", "11", ()),
        ("other seed", "12", ()),
        ("wrapped", "11", ("--reopen",)),
    ):
        report = tmp_path / name.replace(" ", "-")
        done = lab(
            run_ckdemo, lab_home, scenario, report, *app_command(250, *options), extra=("--seed", seed)
        )
        assert done.returncode == 0, done.stdout + done.stderr  # no expectation: the report tells
        runs[name] = (failing_signatures(report), json.loads((report / "report.json").read_text()))
    assert runs["plain"][0] == runs["again"][0] and len(runs["plain"][0]) == 8
    assert runs["other seed"][0] != runs["plain"][0]
    plain, wrapped = runs["plain"][1]["steps"][0], runs["wrapped"][1]["steps"][0]
    assert runs["wrapped"][0] == runs["plain"][0]  # the same calls failed ...
    assert "opened a new session" not in plain["reactions"]  # ... one application just went on,
    assert "opened a new session" in wrapped["reactions"]  # the other reopened each time


def test_a_fresh_temporary_home_when_none_is_given_and_it_is_gone_after(tmp_path, run_ckdemo):
    scenario = write(
        tmp_path, '[[step]]\nname = "quiet"\nat = 0.0\nevent = "clear"\nexpect = { app_failures = 0 }\n'
    )
    done = lab(run_ckdemo, None, scenario, tmp_path / "r", *app_command(20))
    assert done.returncode == 0, done.stdout + done.stderr
    home = json.loads((tmp_path / "r" / "report.json").read_text())["home"]
    assert "a fresh home in" in done.stderr and not Path(home).exists()


def test_an_application_that_outlives_the_timeout_is_stopped_and_the_run_fails(
    lab_home, tmp_path, run_ckdemo
):
    scenario = write(tmp_path, 'timeout = 1.5\n[[step]]\nname = "nothing"\nat = 0.0\nevent = "clear"\n')
    done = lab(run_ckdemo, lab_home, scenario, tmp_path / "r", *app_command(10_000_000))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[NOT MET] the application ends before the timeout" in done.stdout


@pytest.mark.parametrize(
    "text, says",
    [
        ("seed = [", "not TOML"),
        (
            "[[step]]\nname = 'x'\nat = 1\nfault = { calls = 'C_Sgn', error = 'CKR_DEVICE_ERROR' }",
            "step 1 (x): unknown call 'C_Sgn'",
        ),
        (
            "[[step]]\nname = 'x'\nat = 1\nfault = { calls = 'C_Sign', error = 'CKR_WHAT' }",
            "unknown return value 'CKR_WHAT'",
        ),
        ("[[step]]\nname = 'x'\nat = -1\nevent = 'clear'", "at is a number of seconds from 0"),
        ("[[step]]\nname = 'x'\nat = 1e300\nevent = 'clear'", "at is a number of seconds from 0"),
        ("[[step]]\nname = 'x'\nevent = 'clear'", "when? give at ="),
        ("[[step]]\nname = 'x'\nat = 1\nevent = 'explode'", "event is one of"),
        (
            "[[step]]\nname = 'x'\nat = 1\nevent = 'clear'\nfault = { error = 5 }",
            "one of fault, event, member",
        ),
        (
            "[[step]]\nname = 'x'\nat = 1\nfault = { calls = 'C_Sign', latency = 5, for = 10 }\n"
            "[[step]]\nname = 'y'\nat = 2\nevent = 'clear'",
            "windows overlap",
        ),
        (
            "[[step]]\nname = 'x'\nat = 1\nevent = 'clear'\n[[step]]\nname = 'x'\nat = 2\nevent = 'clear'",
            "step names appear twice: x",
        ),
        (
            "[[step]]\nname = 'x'\nat = 1\nevent = 'clear'\nexpect = { app_exit = 0 }",
            "app_exit is about the whole run",
        ),
        (
            "[[step]]\nname = 'x'\nat = 1\nevent = 'clear'\nexpect = { app_failures = -1 }",
            "app_failures is a whole number",
        ),
        ("[[step]]\nname = 'x'\nat = 1\nevent = 'clear'\nexpect = { nonsense = 1 }", "unknown expectation"),
        ("title = 'x'", "unknown key(s) title"),
        ("seed = 1", "no step"),
        ("[chaos]\nevery = 0\nfaults = [{ error = 5 }]", "every is above 0"),
        ("[chaos]\nevery = 0.001\nuntil = 1e4\nfaults = [{ error = 5 }]", "more than 10000 faults"),
    ],
)
def test_a_bad_scenario_gets_one_clear_line_and_the_application_is_not_started(
    tmp_path, run_ckdemo, text, says
):
    scenario = write(tmp_path, text)
    marker = tmp_path / "started"
    done = lab(run_ckdemo, tmp_path / "unused-home", scenario, tmp_path / "r", "touch", str(marker))
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not marker.exists() and not (tmp_path / "unused-home").exists()


def test_a_missing_scenario_or_program_gets_one_line(tmp_path, run_ckdemo):
    done = lab(run_ckdemo, tmp_path / "h", tmp_path / "none.toml", tmp_path / "r", "true")
    assert done.returncode == 2 and "no such scenario file" in done.stderr
    scenario = write(tmp_path, '[[step]]\nname = "x"\nat = 0\nevent = "clear"\n')
    done = lab(run_ckdemo, tmp_path / "h", scenario, tmp_path / "r", "no-such-program-here")
    assert done.returncode == 2 and "cannot run 'no-such-program-here'" in done.stderr


def test_chaos_steps_come_from_the_seed():
    text = {
        "chaos": {
            "start": 1.0,
            "until": 21.0,
            "every": 2.0,
            "faults": [
                {"calls": "sign", "error": "CKR_DEVICE_ERROR", "count": 1},
                {"calls": "sign", "latency": 300, "for": 0.9},
            ],
        }
    }
    first, again, other = parse(text, seed=5), parse(text, seed=5), parse(text, seed=6)
    assert first.steps == again.steps and len(first.steps) == 10
    assert [s.at for s in first.steps] != [s.at for s in other.steps]
    assert {s.fault.kind for s in first.steps} == {"error", "latency"}


def _png_pixels(path: Path) -> list[list[tuple[int, int, int]]]:
    """The rows of RGB pixels of an 8-bit RGB or RGBA PNG (what chromium's --screenshot writes)."""
    import struct
    import zlib

    data, chunks, at = path.read_bytes(), {}, 8
    idat = b""
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        body = data[at + 8 : at + 8 + length]
        if kind == b"IDAT":
            idat += body
        else:
            chunks[kind] = body
        at += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and colour in (2, 6) and not interlace, (depth, colour, interlace)
    size = 3 if colour == 2 else 4
    raw, rows, previous = zlib.decompress(idat), [], bytearray(width * size)
    stride = width * size
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - size] if i >= size else 0
            up, corner = previous[i], previous[i - size] if i >= size else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                near = min(
                    (abs(guess - left), 0, left), (abs(guess - up), 1, up), (abs(guess - corner), 2, corner)
                )
                line[i] = (line[i] + near[2]) & 0xFF
        rows.append([tuple(line[x * size : x * size + 3]) for x in range(width)])
        previous = line
    return rows


def test_the_html_report_renders_offline_in_chromium(lab_home, tmp_path, run_ckdemo):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/bootstrap installs it)")
    scenario = write(
        tmp_path,
        """
[[step]]
name = "slow signatures"
at = 0.2
fault = { calls = "C_Sign", latency = 20, count = 20 }
[[step]]
name = "errors"
at = 0.8
fault = { calls = "C_Sign", error = "CKR_DEVICE_ERROR", count = 2 }
[[step]]
name = "member2 down"
at = 1.2
member = { action = "fail", name = "member2" }
[[step]]
name = "member2 back"
at = 1.8
member = { action = "restore", name = "member2" }
""",
    )
    done = lab(run_ckdemo, lab_home, scenario, tmp_path / "r", *app_command(1_000_000, "--seconds", "3"))
    assert done.returncode == 0, done.stdout + done.stderr
    page = tmp_path / "r" / "report.html"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "r" / "report.png"
    # one start of Chromium (about a second of CPU) for both: the rendered DOM and a screenshot
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", f"--screenshot={shot}", "--window-size=1100,900", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    assert "<svg" in rendered and 'class="timeline"' in rendered
    assert rendered.count('class="window"') == 4 and 'class="latency"' in rendered
    assert 'class="failure"' in rendered and "<script" not in rendered
    assert "http://" not in page.read_text().replace("http://www.w3.org/2000/svg", "")
    # one band per member under the plot; member2's: up, down (failed), up (restored)
    assert rendered.count("band-label") == 3
    member2 = re.findall(
        r'data-member="member2" data-state="(\w+)" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', rendered
    )
    assert [state for state, _, _ in member2] == ["up", "down", "up"], member2
    edges = [(float(x), float(x) + float(w)) for _, x, w in member2]
    assert all(abs(a[1] - b[0]) < 1.5 for a, b in zip(edges, edges[1:]))  # end to end, no gap
    assert shot.exists() and shot.stat().st_size > 10_000
    # drawn, not only written: the band colours are on screen, member2's down between its ups
    pixels = _png_pixels(shot)
    up, down = (0x7C, 0xC4, 0x7F), (0xE3, 0x4A, 0x33)
    band_rows = [row for row in pixels if row.count(down) > 3]
    assert band_rows, "no down band on the screenshot"
    row = band_rows[len(band_rows) // 2]
    reds = [x for x, pixel in enumerate(row) if pixel == down]
    assert up in row[: reds[0]] and up in row[reds[-1] :]
    assert sum(r.count(up) > 100 for r in pixels) >= 3 * 8  # three members' rows of green, ~12 px each
    kept = Path(__file__).parent / "artifacts"  # the screenshot, for a person to look at (git ignores it)
    kept.mkdir(exist_ok=True)
    shutil.copy(shot, kept / "lab-report.png")
    print(f"screenshot: {kept / 'lab-report.png'}")


def test_the_timeline_bins_grow_wider_and_stay_few_whatever_the_run_length():
    from ckdemo.lab.journal import Journal
    from ckdemo.timeline import MAX_BINS
    from ckdemo.serve.faults import CallRecord

    journal = Journal(start=0.0)
    for n in range(50_000):
        journal.record(CallRecord(1, "C_Sign", n * 0.1, 0.001, None, 0 if n % 10 else 0x30))
    calls, bins, _ = journal.snapshot()
    assert len(bins.bins) <= MAX_BINS and bins.bin_s >= 5000 / MAX_BINS
    assert sum(b.calls for b in bins.bins) == 50_000 and sum(b.failures for b in bins.bins) == 5_000


def test_a_member_killed_and_another_hung_under_a_running_application_cost_it_no_failure(
    remote_home, tmp_path, run_ckdemo
):
    """Remote members (each its own p11-kit server process): member1's process is killed and
    started again, member2's is stopped (SIGSTOP) and resumed, while the application signs; the
    HA slot fails over, and the report shows no failure the application saw. MemberTimeout is
    1 s here, so the hung member costs one call a second at most (the default is 20 s)."""
    conf = remote_home / "Chrystoki.conf"
    conf.write_text(conf.read_text().replace("CKDemo = {", "CKDemo = {\n   MemberTimeout = 1;", 1))
    assert "MemberTimeout = 1;" in conf.read_text()
    assert run_ckdemo(remote_home, "hagroup", "interval", "--seconds", "1").returncode == 0
    scenario = write(
        tmp_path,
        """
timeout = 90
expect = { app_exit = 0, app_failures = 0 }
[[step]]
name = "member1 killed"
after_calls = 60
member = { action = "kill", name = "member1" }
expect = { app_failures = 0, calls_min = 10 }
[[step]]
name = "member1 started again"
after_calls = 600
member = { action = "restart", name = "member1" }
[[step]]
name = "member2 hangs"
after_calls = 1200
member = { action = "hang", name = "member2" }
expect = { app_failures = 0 }
[[step]]
name = "member2 resumes"
after_calls = 1800
member = { action = "resume", name = "member2" }
""",
    )
    done = lab(run_ckdemo, remote_home, scenario, tmp_path / "r", *app_command(800))
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["calls"]["by_result"].keys() == {"CKR_OK"}, data["calls"]["by_result"]
    marks = " ".join(m["what"] for m in data["marks"])
    assert "member1: kill (server process killed)" in marks and "member2: hang" in marks


def test_kill_on_a_member_served_in_process_fails_it_and_hang_is_refused_with_the_reason(
    lab_home, tmp_path, run_ckdemo
):
    scenario = write(
        tmp_path,
        '[[step]]\nname = "kill"\nat = 0.1\n'
        'member = { action = "kill", name = "member1" }\n'
        '[[step]]\nname = "hang"\nat = 0.2\n'
        'member = { action = "hang", name = "member2" }\n',
    )
    done = lab(run_ckdemo, lab_home, scenario, tmp_path / "r", *app_command(200))
    assert (
        "hang needs a member whose p11-kit server process ckdemo runs: member2 is served inside "
        "the ckdemo process serving the HA slot" in done.stderr
    ), done.stderr
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [step["reached"] for step in data["steps"]] == [True, False]
    assert any(
        m["what"].startswith("member member1: kill (failed in its HA group") and m["state"] == "down"
        for m in data["marks"]
    ), data["marks"]


def test_a_member_lost_in_the_middle_of_multi_part_signatures_costs_the_application_nothing(
    lab_home, tmp_path, run_ckdemo
):
    """Each signature is 20 C_SignUpdate calls and a C_SignFinal (RSA-2048); member1 fails while
    they go on, several of them in the middle of one."""
    scenario = write(
        tmp_path,
        """
expect = { app_exit = 0, app_failures = 0 }
[[step]]
name = "member1 fails in the middle"
after_calls = 230
member = { action = "fail", name = "member1" }
expect = { app_failures = 0 }
[[step]]
name = "member2 fails too"
after_calls = 700
member = { action = "fail", name = "member2" }
expect = { app_failures = 0 }
""",
    )
    done = lab(run_ckdemo, lab_home, scenario, tmp_path / "r", *app_command(60, "--parts", "20"))
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    updates = [c for c in data["call_log"] if c["call"] == "C_SignUpdate"]
    assert len(updates) >= 60 * 20 and data["calls"]["by_result"].keys() == {"CKR_OK"}


def test_every_member_lost_is_what_luna_shows_and_a_reinitializing_application_comes_back(
    lab_home, tmp_path, run_ckdemo
):
    """Every member failed: the application's calls fail and its sessions are gone (Luna's
    semantics, docs/HA.md); restored, an application that finalizes and initializes again signs
    again; the report shows it reconnected and when."""
    assert run_ckdemo(lab_home, "hagroup", "interval", "--seconds", "0.2").returncode == 0
    scenario = write(
        tmp_path,
        """
timeout = 120
[[step]]
name = "every member fails"
after_calls = 60
member = { action = "fail", name = "member1" }
[[step]]
name = "member2 fails"
after_calls = 61
member = { action = "fail", name = "member2" }
[[step]]
name = "member3 fails"
after_calls = 62
member = { action = "fail", name = "member3" }
expect = { app_failures_max = 10000 }
[[step]]
name = "member1 back"
after_calls = 120
member = { action = "restore", name = "member1" }
[[step]]
name = "all back"
after_calls = 121
member = { action = "restore", name = "member2" }
""",
    )
    lab(
        run_ckdemo, lab_home, scenario, tmp_path / "r", *app_command(400, "--reinitialize", "--seconds", "20")
    )
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    steps = {s["name"]: s for s in data["steps"]}
    lost = steps["member3 fails"]
    assert lost["failures"] and set(lost["failures"]) <= {
        "CKR_DEVICE_ERROR",
        "CKR_SESSION_HANDLE_INVALID",
        "CKR_TOKEN_NOT_PRESENT",
    }, lost
    assert (
        "reconnected"
        in lost["reactions"] + steps["member1 back"]["reactions"] + steps["all back"]["reactions"]
    ), data["steps"]
    app = [json.loads(line) for line in (tmp_path / "r" / "app.log").read_text().splitlines()]
    assert app[-1].get("ok") is True, app[-5:]  # it signs again once members are back


def test_a_hung_member_costs_the_application_far_less_than_member_timeout(remote_home, tmp_path, run_ckdemo):
    """MemberTimeout stays Luna's 20 s; member2's server is stopped (SIGSTOP: its socket stays
    open, nothing answers) while the application signs: the quick calls' own deadlines (learnt
    from member2's answers, at least MemberHedgeFloor = 0.5 s) give it up and move the call on.
    No signature of the application waits anywhere near MemberTimeout, none fails, and the HA log
    says why."""
    conf = remote_home / "Chrystoki.conf"
    assert "MemberTimeout" not in conf.read_text()
    scenario = write(
        tmp_path,
        """
timeout = 120
expect = { app_exit = 0, app_failures = 0 }
[[step]]
name = "member2 hangs"
after_calls = 200
member = { action = "hang", name = "member2" }
[[step]]
name = "member2 resumes"
after_calls = 1800
member = { action = "resume", name = "member2" }
""",
    )
    assert run_ckdemo(remote_home, "hagroup", "log", "on", "--path", str(tmp_path / "ha.log")).returncode == 0
    done = lab(run_ckdemo, remote_home, scenario, tmp_path / "r", *app_command(800))
    assert done.returncode == 0, done.stdout + done.stderr
    app = [json.loads(line) for line in (tmp_path / "r" / "app.log").read_text().splitlines()]
    slowest = max(line["ms"] for line in app)
    # MemberTimeout alone costs 20 s here; hedged, a run on a quiet machine measured 522 ms
    # (docs/PERFORMANCE.md). The bound is far from both: a loaded CI machine stalls a call now
    # and then, and a figure is a benchmark's to keep, not a unit test's.
    assert len(app) == 800 and slowest < 5000, slowest
    assert (
        "given up (MemberHedgeFloor), the call moves to another member" in (tmp_path / "ha.log").read_text()
    )


def _member_states(report: Path, label: str) -> list[str]:
    data = json.loads((report / "report.json").read_text())
    return [band["state"] for band in data["member_states"] if band["member"] == label]


def test_a_slow_member_makes_calls_late_and_costs_the_application_no_failure(
    remote_home, tmp_path, run_ckdemo
):
    """member2's server is stopped 300 ms at a time for 2 s (its answers up to 300 ms late, below
    MemberHedgeFloor's 0.5 s: nothing is given up) while the application signs: some signatures
    wait, none fails, and the report's member bands show member2 slow, then up."""
    scenario = write(
        tmp_path,
        """
timeout = 120
expect = { app_exit = 0, app_failures = 0 }
[[step]]
name = "member2 slow"
after_calls = 100
member = { action = "slow", name = "member2", ms = 300, for = 2.0 }
expect = { app_failures = 0, calls_min = 10 }
""",
    )
    done = lab(run_ckdemo, remote_home, scenario, tmp_path / "r", *app_command(1_000_000, "--seconds", "4"))
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["calls"]["by_result"].keys() == {"CKR_OK"}, data["calls"]["by_result"]
    app = [json.loads(line) for line in (tmp_path / "r" / "app.log").read_text().splitlines()]
    slowest = max(line["ms"] for line in app)
    assert all(line["ok"] for line in app) and slowest >= 100, slowest
    # the lab saw it too: a signature computed after its size was answered (serve's work ahead)
    # is counted in the call that fetches it, which the application waited for
    assert max(b["slowest_ms"] for b in data["timeline"]) >= slowest / 2, (data["timeline"], slowest)
    assert _member_states(tmp_path / "r", "member2") == ["up", "slow", "up"]
    assert _member_states(tmp_path / "r", "member1") == ["up"]
    assert 'class="band band-slow"' in (tmp_path / "r" / "report.html").read_text()


def test_a_flapping_member_costs_the_application_no_failure(remote_home, tmp_path, run_ckdemo):
    """member2's server is killed and started again every second for 3 s while the application
    signs; the HA slot fails over each time (recovery interval 1 s here): no failure, and the
    bands show member2 down and up again and again."""
    assert run_ckdemo(remote_home, "hagroup", "interval", "--seconds", "1").returncode == 0
    scenario = write(
        tmp_path,
        """
timeout = 120
expect = { app_exit = 0, app_failures = 0 }
[[step]]
name = "member2 flaps"
after_calls = 100
member = { action = "flap", name = "member2", every = 1.0, down = 0.5, for = 3.0 }
expect = { app_failures = 0, calls_min = 10 }
""",
    )
    done = lab(run_ckdemo, remote_home, scenario, tmp_path / "r", *app_command(1_000_000, "--seconds", "5"))
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["calls"]["by_result"].keys() == {"CKR_OK"}, data["calls"]["by_result"]
    states = _member_states(tmp_path / "r", "member2")
    assert states[0] == "up" and states[-1] == "up" and 2 <= states.count("down") <= 4, states
    marks = " ".join(m["what"] for m in data["marks"])
    assert "member2: flap (server process killed)" in marks and "flap (server process started again)" in marks


def test_a_member_served_in_process_flaps_through_its_ha_group(lab_home, tmp_path, run_ckdemo):
    scenario = write(
        tmp_path,
        """
timeout = 120
expect = { app_exit = 0, app_failures = 0 }
[[step]]
name = "member3 flaps"
after_calls = 50
member = { action = "flap", name = "member3", every = 0.6, for = 1.5 }
""",
    )
    done = lab(run_ckdemo, lab_home, scenario, tmp_path / "r", *app_command(1_000_000, "--seconds", "3"))
    assert done.returncode == 0, done.stdout + done.stderr
    states = _member_states(tmp_path / "r", "member3")
    assert states.count("down") >= 2 and states[-1] == "up", states
    marks = [m["what"] for m in json.loads((tmp_path / "r" / "report.json").read_text())["marks"]]
    assert "member member3: flap (failed in its HA group)" in marks, marks
    assert "member member3: flap (restored in its HA group)" in marks, marks
