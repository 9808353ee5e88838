"""`@expect-status MEMBER CKR_...`: a script's expectation on the HA Status rows (menu choice 52)
the step before it showed; MEMBER is a label, serial, number in the group, or `all`. An unmet one
fails the step (exit 1, one FAILED line naming both script lines); a misplaced or malformed one is
a script error (exit 2, one line)."""

from __future__ import annotations

from textwrap import dedent

import pytest

from conftest import no_traceback, requires_softhsm

pytestmark = requires_softhsm


@pytest.fixture(scope="module")
def replay(run_ckdemo, shared_home):
    def run(script: str, *args: str):
        done = run_ckdemo(shared_home, "run", *args, "-", input=dedent(script))
        no_traceback(done.stdout, done.stderr)
        return done

    return run


def last_line(text: str) -> str:
    return text.rstrip().splitlines()[-1]


def test_rows_named_by_label_serial_number_or_all(replay, shared_home):
    serial2 = shared_home.joinpath("Chrystoki.conf").read_text().split("MemberSerials = ")[1].split(",")[1]
    done = replay(f"""\
        52
        ${{HA_SLOT}}
        @expect-status all CKR_OK
        @expect-status member1 CKR_OK
        @expect-status {serial2} CKR_OK
        @expect-status 3 0x0
        0
        """)
    assert done.returncode == 0, done.stdout
    assert done.stdout.count(": ok\n") == 4 and "@expect-status 3 0x0: ok" in done.stdout
    assert last_line(done.stdout) == "Replay: 1 steps, 1 met their expectation, 0 did not"


def test_a_failed_member_shows_in_its_row_and_a_wrong_row_fails_the_step(replay):
    done = replay("""\
        @fail member1
        52
        ${HA_SLOT}
        @expect-status member1 CKR_DEVICE_ERROR
        @expect-status 2 CKR_OK
        52
        ${HA_SLOT}
        @expect-status all CKR_OK
        14
        0
        """)
    assert done.returncode == 1, done.stdout
    assert "@expect-status member1 CKR_DEVICE_ERROR: ok" in done.stdout
    failed = [l for l in done.stdout.splitlines() if l.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith(
        "FAILED line 6: choice 52 (HA Status): @expect-status all CKR_OK (line 8) not met: HSM "
    ), failed
    assert failed[0].endswith("(member1) showed CKR_TOKEN_NOT_PRESENT")
    assert last_line(done.stdout) == (
        "Replay: 2 steps, 1 met their expectation, 1 did not (stopped at the first failure)"
    )


def test_a_member_not_in_the_group_shown_fails_naming_the_members(replay):
    done = replay("52\n${HA_SLOT}\n@expect-status member9 CKR_DEVICE_ERROR\n0\n")
    assert done.returncode == 1
    assert "not met: no member 'member9' in HA group " in done.stdout
    assert "(its members: 1 member1 (" in done.stdout


def test_the_junit_report_carries_the_unmet_row(run_ckdemo, shared_home, tmp_path):
    report = tmp_path / "junit.xml"
    done = run_ckdemo(
        shared_home,
        "run",
        "--junit",
        str(report),
        "-",
        input="52\n${HA_SLOT}\n@expect-status member1 CKR_DEVICE_ERROR\n0\n",
    )
    assert done.returncode == 1
    assert "(member1) showed CKR_OK" in report.read_text()


@pytest.mark.parametrize(
    "bad",
    ["@expect-status member1", "@expect-status member1 CKR_NO_SUCH", "@expect-status member1 CKR_OK extra"],
)
def test_a_malformed_expect_status_exits_2_before_anything_runs(replay, bad):
    done = replay(f"52\n${{HA_SLOT}}\n{bad}\n0\n")
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("ckdemo: <stdin>:3: @expect-status needs a member"), line


@pytest.mark.parametrize(
    "script, why",
    [
        (
            "14\n@expect-status all CKR_OK\n0\n",
            "line 2: @expect-status follows a choice that shows no HA Status",
        ),
        ("@expect-status all CKR_OK\n14\n0\n", "line 1: @expect-status before any menu choice"),
    ],
)
def test_a_misplaced_expect_status_is_a_script_error(replay, script, why):
    done = replay(script)
    assert done.returncode == 2
    assert f"Script error: {why}" in done.stdout


# ------------------------------------------------------- @needs-previous on a set-up that runs it all


def test_needs_previous_changes_nothing_when_the_choice_before_ran(replay, tmp_path):
    """On local members nothing is skipped: a failing step after @needs-previous still fails."""
    missing = tmp_path / "no-such-file"
    done = replay(f"""\
        14
        @needs-previous
        44
        1
        2
        {missing}
        0
        """)
    assert done.returncode != 0
    assert "skipped" not in done.stdout.lower()
    assert "FAILED line 3: choice 44" in done.stdout


def test_needs_previous_takes_no_argument(replay):
    done = replay("14\n@needs-previous now\n14\n0\n")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["ckdemo: <stdin>:2: @needs-previous takes no argument, got 'now'"]
