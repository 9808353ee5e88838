"""`ckdemo soak` as a person and as CI see it: on a terminal one line with elapsed/total, the ETA
and the kills, recoveries and failures so far; through a pipe nothing but the report, whose
parameters say how to repeat the run."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from conftest import requires_softhsm
from test_bench import frames, on_a_terminal, undocumented

pytestmark = requires_softhsm

LINE = re.compile(
    r"soak \[[#-]+\] (\d+)/3 s  ETA (\d+):(\d\d)  kills (\d+)  recoveries (\d+)  "
    r"failures (\d+)  ops ([\d,]+)"
)
CHAOS = (
    "--seconds",
    "3",
    "--seed",
    "5",
    "--kill-every",
    "0.6,0.8",
    "--down-for",
    "0.2,0.3",
    "--interval",
    "0.1",
)


def _exit_code(report: dict) -> int:
    """What the progress tests expect; the HA outcome of so short and dense a chaos run is not
    what they check (test_remote.py's soak is the one that wants no failure)."""
    return 0 if report["application_failures"] == 0 and report["consistency"]["identical"] else 1


def test_a_terminal_shows_kills_recoveries_and_failures_as_they_happen(shared_home, ckdemo_bin):
    code, chunks, piped = on_a_terminal(
        [str(ckdemo_bin), "--home", str(shared_home), "soak", *CHAOS, "--json"], stdout_too=False
    )
    report = json.loads(piped)  # stdout is the report alone
    assert code == _exit_code(report), piped
    shown = frames(chunks)
    running = [LINE.search(text) for _, text in shown]
    running = [m for m in running if m]
    assert len(running) >= 5, shown  # redrawn every 0.2 s over 3 s
    elapsed = [int(m.group(1)) for m in running]
    kills = [int(m.group(4)) for m in running]
    assert elapsed == sorted(elapsed) and elapsed[0] <= 1 and elapsed[-1] >= 2
    assert kills == sorted(kills) and kills[0] < kills[-1]  # kills counted while the run goes on
    etas = [int(m.group(2)) * 60 + int(m.group(3)) for m in running]
    assert etas == sorted(etas, reverse=True)
    # the line left on screen is the final count, the same as the report's
    assert shown[-1][1].endswith("(done)"), shown[-1]
    assert (
        f"kills {report['kills']}  recoveries {len(report['recoveries'])}  "
        f"failures {report['application_failures']}  ops {report['operations']:,}"
    ) in shown[-1][1]
    assert report["kills"] >= 2


def test_piped_soak_is_quiet_and_its_report_names_the_parameters(shared_home, run_ckdemo):
    from test_state_json import assert_envelope

    started = datetime.now(timezone.utc)
    done = run_ckdemo(shared_home, "soak", *CHAOS, "--json")
    # no progress; only the line saying what the end waits for, when a member is still down then
    assert [line for line in done.stderr.splitlines() if not line.startswith("soak: waiting")] == []
    report = json.loads(done.stdout)
    assert_envelope(report, shared_home, started)
    assert done.returncode == _exit_code(report), done.stdout
    assert report["recoveries"] and report["around_failures"]  # so their fields are checked too
    assert undocumented(report) == []
    members = report["parameters"].pop("members")
    assert report["parameters"] == {
        "seed": 5,
        "duration_s": 3.0,
        "interval_s": 0.1,
        "retry": -1,  # the home's reconnAtt: unlimited
        "kill_every_s": [0.6, 0.8],
        "hang_every_s": None,
        "down_for_s": [0.2, 0.3],
        "group": report["parameters"]["group"],
        "rsa_key_bits": 2048,
        "aes_key_bits": 256,
        "sign_data_bytes": 32,
        "encrypt_data_bytes": 16,
        "generate_every_rounds": 16,
        "window_s": 2.0,
    }
    assert sorted(members) == sorted(report["consistency"]["members"])
    assert 3.0 <= report["elapsed_s"] < 4.0
    assert all(0 <= r["t_s"] <= report["elapsed_s"] for r in report["recoveries"] + report["around_failures"])


def test_the_soak_draws_the_fault_lab_s_timeline(shared_home, run_ckdemo, tmp_path):
    """--html: one self-contained page with the timeline ckdemo.timeline draws for the fault lab,
    a shaded window per kill (until its member was back) and a dashed line per recovery."""
    page = tmp_path / "soak.html"
    done = run_ckdemo(shared_home, "soak", *CHAOS, "--json", "--html", str(page))
    report = json.loads(done.stdout)
    text = page.read_text()
    assert "<svg" in text and 'class="timeline"' in text and "<script" not in text
    assert text.count('class="window"') == report["kills"] + report["hangs"] >= 2
    assert text.count('class="member"') == len(report["recoveries"])
    assert text.count('class="calls"') >= 10  # 0.1 s bins over 3 s
    bad = run_ckdemo(shared_home, "soak", *CHAOS, "--html", str(tmp_path / "no" / "such" / "x.html"))
    assert bad.returncode == 2 and "cannot write the HTML page" in bad.stderr
