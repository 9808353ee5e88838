"""Script replay: `ckdemo run` exit codes, directives, EOF, --keep-going, --transcript and --junit.

Exit codes: 0 every step met its expectation, 1 a step did not (the output names the script line),
2 the script cannot be run as written (one clear line, no traceback).
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from textwrap import dedent

import pytest

from conftest import USER_PIN, assert_pins_hidden, no_traceback, requires_softhsm

pytestmark = requires_softhsm

LOGIN_WRONG_PIN = """\
# open a session on member1 and try a wrong PIN
1
1
y

3
1
1
not-the-pin
"""


@pytest.fixture(scope="module")
def replay(run_ckdemo, shared_home):
    """replay(script, *run_args, env=None) -> CompletedProcess of `ckdemo run ... -`."""

    def run(script: str, *args: str, env: dict[str, str] | None = None):
        done = run_ckdemo(shared_home, "run", *args, "-", input=dedent(script), env=env)
        no_traceback(done.stdout, done.stderr)
        return done

    return run


def last_line(text: str) -> str:
    return text.rstrip().splitlines()[-1]


# ---------------------------------------------------------------- exit codes


def test_every_expectation_met_exits_0(replay):
    done = replay(LOGIN_WRONG_PIN + "@expect CKR_PIN_INCORRECT\n14\n0\n")
    assert done.returncode == 0, done.stdout
    assert "@expect CKR_PIN_INCORRECT: ok" in done.stdout
    assert last_line(done.stdout) == "Replay: 3 steps, 3 met their expectation, 0 did not"
    assert done.stderr == ""


def test_an_unmet_expectation_exits_1_and_names_the_line(replay):
    done = replay(LOGIN_WRONG_PIN + "14\n0\n")
    assert done.returncode == 1
    # line 6 of the script is the "3" that chose Login (after a comment and a blank line)
    assert "FAILED line 6: choice 3 (Login) ended with CKR_PIN_INCORRECT, expected CKR_OK" in done.stdout
    assert last_line(done.stdout) == (
        "Replay: 2 steps, 1 met their expectation, 1 did not (stopped at the first failure)"
    )
    assert "Get Slot List" not in done.stdout.split("CKR_PIN_INCORRECT 0x000000A0")[1]


def test_expecting_the_wrong_code_fails(replay):
    done = replay("""\
        14
        @expect CKR_PIN_INCORRECT
        0
        """)
    assert done.returncode == 1
    assert "@expect CKR_PIN_INCORRECT: NOT MET" in done.stdout
    assert (
        "FAILED line 1: choice 14 (Get Slot List) ended with CKR_OK, expected CKR_PIN_INCORRECT"
        in done.stdout
    )


def test_expect_accepts_a_value_for_a_name(replay):
    done = replay(LOGIN_WRONG_PIN + "@expect 0xA0\n0\n")
    assert done.returncode == 0, done.stdout
    assert "@expect CKR_PIN_INCORRECT: ok" in done.stdout


def test_keep_going_runs_the_later_steps(replay):
    done = replay(LOGIN_WRONG_PIN + "14\n12\n1\n0\n", "--keep-going")
    assert done.returncode == 1
    assert "FAILED line 6: choice 3 (Login) ended with CKR_PIN_INCORRECT, expected CKR_OK" in done.stdout
    after = done.stdout.split("CKR_PIN_INCORRECT 0x000000A0")[1]
    assert re.search(r"^\d+ slots\.$", after, re.MULTILINE)
    assert re.search(r"^\s+Label\s+: member1$", after, re.MULTILINE)
    assert last_line(done.stdout) == "Replay: 4 steps, 3 met their expectation, 1 did not"


def test_missing_script_file_exits_2(run_ckdemo, shared_home, tmp_path):
    missing = tmp_path / "no-such-script"
    done = run_ckdemo(shared_home, "run", str(missing))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"ckdemo: script not found: {missing}"]
    assert done.stdout == ""
    no_traceback(done.stdout, done.stderr)


@pytest.mark.parametrize(
    "bad, words",
    [
        ("@bogus 1", ("unknown directive @bogus", "@expect", "@sleep")),
        ("@sleep soon", ("@sleep", "'soon'")),
        ("@sleep -1", ("@sleep", "'-1'")),
        ("@expect", ("@expect", "CKR_OK")),
    ],
)
def test_a_bad_directive_exits_2_before_anything_runs(replay, bad, words):
    done = replay(f"14\n{bad}\n0\n")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()  # one line, naming the script line
    assert line.startswith("ckdemo: <stdin>:2: @") or line.startswith("ckdemo: <stdin>:2: unknown")
    assert all(word in line for word in words), line
    assert done.stdout == ""  # rejected before the menu started


def test_expect_of_an_unknown_name_exits_2(replay):
    done = replay("14\n@expect CKR_NOT_A_CODE\n0\n")
    assert done.returncode == 2
    assert "Script error: line 2: @expect CKR_NOT_A_CODE: not a CKR_* name or value" in done.stdout


def test_expect_before_any_choice_exits_2(replay):
    done = replay("@expect CKR_OK\n14\n0\n")
    assert done.returncode == 2
    assert "Script error: line 1: @expect before any menu choice" in done.stdout


def test_an_unset_variable_exits_2_naming_it_before_anything_runs(replay):
    done = replay(LOGIN_WRONG_PIN.replace("not-the-pin", "${CKDEMO_TEST_UNSET_PIN}") + "0\n")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "ckdemo: <stdin>:9: ${CKDEMO_TEST_UNSET_PIN} is not set (export CKDEMO_TEST_UNSET_PIN=...)"
    ]
    assert done.stdout == ""  # not even the menu: no session was opened


def test_pin_variable_from_the_environment_overrides_the_config(replay):
    script = LOGIN_WRONG_PIN.replace("not-the-pin", "${CKDEMO_USER_PIN}") + "@expect CKR_PIN_INCORRECT\n0\n"
    done = replay(script, env={"CKDEMO_USER_PIN": "env-pin-0042"})
    assert done.returncode == 0, done.stdout
    assert_pins_hidden(done.stdout, "env-pin-0042", USER_PIN)


def test_any_exported_variable_can_hold_a_secret(replay):
    done = replay(LOGIN_WRONG_PIN.replace("not-the-pin", "${QA_PIN}") + "0\n", env={"QA_PIN": USER_PIN})
    assert done.returncode == 0, done.stdout
    assert "Logged in as Crypto User on session 1." in done.stdout


# ---------------------------------------------------------------- directives, comments, EOF


def test_sleep_waits_and_says_so(replay):
    started = time.monotonic()
    done = replay("14\n@sleep 0.1\n14\n0\n")
    assert done.returncode == 0, done.stdout
    assert "(sleeping 0.1 s)" in done.stdout
    assert time.monotonic() - started >= 0.1


def test_comments_and_blank_lines_are_not_answers(replay):
    done = replay("""\
        # a comment before anything

           # an indented comment
        14

        # between a choice and its answers
        12

        2
        0
        """)
    assert done.returncode == 0, done.stdout
    assert "comment" not in done.stdout
    assert re.search(r"^Select a slot: 2$", done.stdout, re.MULTILINE)
    assert re.search(r"^\s+Label\s+: member2$", done.stdout, re.MULTILINE)
    assert last_line(done.stdout) == "Replay: 2 steps, 2 met their expectation, 0 did not"


def test_a_directive_where_an_answer_is_due_fails_the_step(replay):
    done = replay("12\n@sleep 0\n1\n0\n")
    assert done.returncode == 1
    assert "line 2: @sleep 0 where an answer to 'Select a slot:' was due." in done.stdout
    assert "FAILED line 1: choice 12 (Token Info) ended with BAD_INPUT, expected CKR_OK" in done.stdout


@pytest.mark.parametrize(
    "script, prompt",
    [
        ("1\n", "Select a slot:"),
        ("1\n1\ny\n3\n1\n1\n", "Enter PIN :"),
    ],
)
def test_eof_in_the_middle_of_a_prompt(replay, script, prompt):
    done = replay(script)
    assert done.returncode != 0
    assert f"Input ended while waiting for an answer to '{prompt}'." in done.stdout
    assert re.search(
        r"^FAILED line \d+: choice \d+ \(.*\) ended with NO_ANSWER, expected CKR_OK$",
        done.stdout,
        re.MULTILINE,
    )


def test_a_script_without_a_final_0_ends_cleanly(replay):
    done = replay("14\n")
    assert done.returncode == 0, done.stdout
    assert last_line(done.stdout) == "Replay: 1 steps, 1 met their expectation, 0 did not"


# ---------------------------------------------------------------- stdin forms


def test_run_dash_and_plain_stdin_replay_the_same(run_ckdemo, shared_home):
    script = "14\n11\n3\n0\n"  # no Token Info: its clock could tick between the two runs
    dash = run_ckdemo(shared_home, "run", "-", input=script)
    plain = run_ckdemo(shared_home, input=script)  # stdin is not a terminal: replay
    assert dash.returncode == plain.returncode == 0, plain.stdout + plain.stderr
    assert re.search(r"^\s+Slot\s+: slot#3 \(slot id \d+\)$", plain.stdout, re.MULTILINE)
    assert plain.stdout == dash.stdout


def test_plain_stdin_reports_failures_like_run(run_ckdemo, shared_home):
    plain = run_ckdemo(shared_home, input=dedent(LOGIN_WRONG_PIN) + "0\n")
    assert plain.returncode == 1
    assert "FAILED line 6: choice 3 (Login) ended with CKR_PIN_INCORRECT, expected CKR_OK" in plain.stdout


# ---------------------------------------------------------------- --transcript and --junit


def test_transcript_file_is_the_screen_without_pins(run_ckdemo, shared_home, tmp_path):
    transcript = tmp_path / "out" / "transcript.txt"
    transcript.parent.mkdir()
    script = LOGIN_WRONG_PIN + "@expect CKR_PIN_INCORRECT\n3\n1\n1\n${CKDEMO_USER_PIN}\n13\n1\n0\n"
    done = run_ckdemo(shared_home, "run", "--transcript", str(transcript), "-", input=dedent(script))
    assert done.returncode == 0, done.stdout
    written = transcript.read_text()
    assert written == done.stdout
    assert "Logged in as Crypto User on session 1." in written
    assert_pins_hidden(written, USER_PIN, "not-the-pin")
    assert written.count("Enter PIN : ****\n") == 2


def test_transcript_to_an_unwritable_place_exits_2(run_ckdemo, shared_home, tmp_path):
    done = run_ckdemo(
        shared_home, "run", "--transcript", str(tmp_path / "missing" / "t.txt"), "-", input="14\n0\n"
    )
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("ckdemo: cannot write transcript ")
    no_traceback(done.stdout, done.stderr)


def test_junit_report_one_case_per_choice(run_ckdemo, shared_home, tmp_path):
    report = tmp_path / "junit.xml"
    script = LOGIN_WRONG_PIN + "14\nx\n12\n1\n@expect CKR_PIN_INCORRECT\n0\n"
    done = run_ckdemo(shared_home, "run", "--keep-going", "--junit", str(report), "-", input=dedent(script))
    assert done.returncode == 1

    suite = ET.parse(report).getroot()
    assert suite.tag == "testsuite"
    cases = suite.findall("testcase")
    # 1 open, 3 login, 14 slot list, x (bad input), 12 token info; 0 quits and is no test case
    assert [c.get("name") for c in cases] == [
        "1 Open Session #1",
        "3 Login #1",
        "14 Get Slot List #1",
        "input x #1",
        "12 Token Info #1",
    ]
    assert suite.get("tests") == "5"
    assert suite.get("errors") == "0"
    failed = [c for c in cases if c.find("failure") is not None]
    assert suite.get("failures") == str(len(failed)) == "3"
    messages = [c.find("failure").get("message") for c in failed]
    assert messages == [
        "line 6: choice 3 (Login) ended with CKR_PIN_INCORRECT, expected CKR_OK",
        "line 11: input 'x' ended with BAD_INPUT, expected CKR_OK",
        "line 12: choice 12 (Token Info) ended with CKR_OK, expected CKR_PIN_INCORRECT",
    ]
    assert [c.find("failure").get("type") for c in failed] == ["CKR_PIN_INCORRECT", "BAD_INPUT", "CKR_OK"]
    assert all(float(c.get("time")) >= 0 for c in cases)


def test_junit_report_when_all_pass(run_ckdemo, shared_home, tmp_path):
    report = tmp_path / "junit.xml"
    done = run_ckdemo(shared_home, "run", "--junit", str(report), "-", input="14\n11\n1\n0\n")
    assert done.returncode == 0, done.stdout
    suite = ET.parse(report).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "0", "0")
    assert all(c.find("failure") is None for c in suite.findall("testcase"))


def test_junit_report_for_a_script_that_cannot_run(run_ckdemo, shared_home, tmp_path):
    report = tmp_path / "junit.xml"
    missing = tmp_path / "missing-script"
    done = run_ckdemo(shared_home, "run", "--junit", str(report), str(missing))
    assert done.returncode == 2
    suite = ET.parse(report).getroot()
    assert suite.get("errors") == "1"
    error = suite.find("testcase/error")
    assert error is not None and error.get("message") == f"script not found: {missing}"


def test_junit_to_an_unwritable_place_is_one_line(run_ckdemo, shared_home, tmp_path):
    done = run_ckdemo(
        shared_home, "run", "--junit", str(tmp_path / "missing" / "junit.xml"), "-", input="14\n0\n"
    )
    assert done.returncode == 2
    no_traceback(done.stdout, done.stderr)
    assert len(done.stderr.splitlines()) == 1
