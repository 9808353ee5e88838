"""`ckdemo run --junit`: a report a CI system reads, checked with a real JUnit parser (junitparser).

Names survive editing the script (choice, title, ordinal; no line number), the suite says when and
where it ran and how long it took (sleeps included), the steps a failure kept from running are
skipped test cases, and each case carries its step's transcript, PINs masked."""

from __future__ import annotations

import copy
import socket
from datetime import datetime
from textwrap import dedent

import pytest
from junitparser import Failure, JUnitXml, Skipped, TestSuite

from conftest import USER_PIN, assert_pins_hidden, no_traceback, requires_softhsm

from ckdemo.menu.table import BY_NUMBER
from ckdemo.replay.runner import remaining_steps
from ckdemo.replay.script import parse

pytestmark = requires_softhsm

LOGINS = """\
    # open a session on the first member
    1
    ${MEMBER_SLOT_1}
    y
    # a wrong PIN, then the right one
    3
    ${LAST_SESSION}
    1
    not-the-pin
    @expect CKR_PIN_INCORRECT
    3
    ${LAST_SESSION}
    1
    ${CKDEMO_USER_PIN}
    14
    @sleep 1.0
    12
    ${MEMBER_SLOT_1}
    4
    ${LAST_SESSION}
    0
    """


def replay(run_ckdemo, home, tmp_path, script: str, *options: str, env=None):
    """(completed run, the suite junitparser read from the report, the report's text)."""
    report = tmp_path / "report.xml"
    done = run_ckdemo(home, "run", "--junit", str(report), *options, "-", input=dedent(script), env=env)
    no_traceback(done.stdout, done.stderr)
    return done, read_suite(report), report.read_text()


def read_suite(path) -> TestSuite:
    xml = JUnitXml.fromfile(str(path))  # a root <testsuite> comes back wrapped in <testsuites>
    return xml if isinstance(xml, TestSuite) else next(iter(xml))


def counts_agree(suite: TestSuite) -> None:
    """The suite's counts are those of its cases (junitparser recounts them)."""
    written = (suite.tests, suite.failures, suite.errors, suite.skipped)
    recounted = copy.deepcopy(suite)
    recounted.update_statistics()
    assert written == (recounted.tests, recounted.failures, recounted.errors, recounted.skipped)


def test_names_survive_editing_the_script(run_ckdemo, shared_home, tmp_path):
    _, suite, _ = replay(run_ckdemo, shared_home, tmp_path, LOGINS)
    names = [case.name for case in suite]
    assert names == [
        "1 Open Session #1",
        "3 Login #1",
        "3 Login #2",
        "14 Get Slot List #1",
        "12 Token Info #1",
        "4 Logout #1",
    ]
    # the same steps after an edit: comments, blank lines and a directive move every line
    edited = "# edited: a header\n\n@sleep 0\n" + LOGINS.replace("    14\n", "    # the list\n\n    14\n")
    _, again, _ = replay(run_ckdemo, shared_home, tmp_path, edited)
    assert [case.name for case in again] == names
    assert len({case.name for case in suite}) == len(names)  # unique within the suite


def test_suite_says_when_where_and_how_long_sleeps_included(run_ckdemo, shared_home, tmp_path):
    before = datetime.now().replace(microsecond=0)
    done, suite, _ = replay(run_ckdemo, shared_home, tmp_path, LOGINS)
    assert done.returncode == 0, done.stdout
    assert suite.hostname == socket.gethostname()
    when = datetime.fromisoformat(suite.timestamp)
    assert before <= when <= datetime.now() and when.tzinfo is None  # JUnit's form: no zone
    cases_s = sum(case.time for case in suite)
    assert suite.time >= 1.0 > cases_s  # the @sleep 1.0 is in the suite, in no step
    assert suite.time < cases_s + 1.0 + 5.0
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (6, 0, 0, 0)
    counts_agree(suite)


def test_steps_after_a_failure_are_skipped_cases(run_ckdemo, shared_home, tmp_path):
    """The wrong PIN without its @expect: the replay stops there; the rest is skipped, by name."""
    script = LOGINS.replace("    @expect CKR_PIN_INCORRECT\n", "")
    done, suite, _ = replay(run_ckdemo, shared_home, tmp_path, script)
    assert done.returncode == 1
    cases = list(suite)
    # 4 Logout follows 12's answers with no comment between: a step of its own all the same
    # (12 Token Info usually reads one answer, menu.table.USUAL_ANSWERS)
    assert [case.name for case in cases] == [
        "1 Open Session #1",
        "3 Login #1",
        "3 Login #2",
        "14 Get Slot List #1",
        "12 Token Info #1",
        "4 Logout #1",
    ]
    assert [type(r) for r in cases[1].result] == [Failure]
    assert cases[0].is_passed and not cases[1].is_passed
    assert all(case.is_skipped for case in cases[2:])
    assert all(isinstance(case.result[0], Skipped) for case in cases[2:])
    assert "line 10" in cases[2].result[0].message  # where the step is, for a person
    # the second login read its answers as the first did: its lines, masked
    assert cases[2].system_out == "script lines not run:\n3\n${LAST_SESSION}\n1\n****\n"
    assert cases[4].system_out.endswith("\n12\n${MEMBER_SLOT_1}\n")
    assert cases[5].system_out.endswith("\n4\n${LAST_SESSION}\n")
    assert (suite.tests, suite.failures, suite.skipped) == (6, 1, 4)
    counts_agree(suite)


def test_keep_going_runs_what_would_have_been_skipped(run_ckdemo, shared_home, tmp_path):
    script = LOGINS.replace("    @expect CKR_PIN_INCORRECT\n", "")
    _, suite, _ = replay(run_ckdemo, shared_home, tmp_path, script, "--keep-going")
    assert suite.skipped == 0 and suite.failures == 1 and suite.tests == 6


def test_system_out_is_the_steps_transcript_with_pins_masked(run_ckdemo, shared_home, tmp_path):
    done, suite, xml = replay(run_ckdemo, shared_home, tmp_path, LOGINS)
    cases = {case.name: case for case in suite}
    login = cases["3 Login #2"].system_out
    assert login.startswith("Enter your choice : 3\n")
    assert "Enter PIN : ****\n" in login and "Logged in as Crypto User" in login
    assert "@expect CKR_PIN_INCORRECT: ok" in cases["3 Login #1"].system_out  # its expectation
    assert "HA Virtual Card Slot" in cases["14 Get Slot List #1"].system_out
    assert "(sleeping 1.0 s)" in cases["14 Get Slot List #1"].system_out
    # every step's output is in the transcript, in order, and nothing else is
    outputs = "".join(case.system_out for case in suite)
    assert outputs in done.stdout and len(outputs) > len(done.stdout) / 2
    assert_pins_hidden(xml, USER_PIN, "not-the-pin")


def test_a_pin_from_the_environment_never_reaches_the_report(run_ckdemo, shared_home, tmp_path):
    """A PIN of 9 characters given as CKDEMO_USER_PIN: wrong for the token, masked everywhere,
    also where the failing step's output and the skipped step's lines show it."""
    script = "1\n${MEMBER_SLOT_1}\ny\n3\n${LAST_SESSION}\n1\n${CKDEMO_USER_PIN}\n\n3\n${LAST_SESSION}\n1\n${CKDEMO_USER_PIN}\n0\n"
    done, suite, xml = replay(run_ckdemo, shared_home, tmp_path, script, env={"CKDEMO_USER_PIN": "Qa-9911-x"})
    assert done.returncode == 1
    assert [case.name for case in suite] == ["1 Open Session #1", "3 Login #1", "3 Login #2"]
    assert list(suite)[2].is_skipped
    assert_pins_hidden(xml, "Qa-9911-x")
    assert "Enter PIN : ****" in list(suite)[1].system_out


def test_a_terminal_escape_in_output_still_parses(run_ckdemo, shared_home, tmp_path):
    """A label or answer may hold any byte a terminal shows; XML 1.0 refuses some of them."""
    done, suite, _ = replay(run_ckdemo, shared_home, tmp_path, "x\x1b[1m\n0\n")
    case = next(iter(suite))
    assert case.name == "input x\\x1b[1m #1"
    assert "Invalid input (x\\x1b[1m)" in case.system_out


# ---------------------------------------------------------------- the plan of what did not run


def test_remaining_steps_use_what_the_run_learned_and_paragraphs_otherwise():
    lines = parse(
        dedent("""\
        4
        ${LAST_SESSION}
        2
        ${LAST_SESSION}
        # a paragraph: a new step
        12
        1
        @expect CKR_OK
        99
        14
        0
        """)
    )
    learned = {4: 1, 2: 1}  # Logout and Close Session each read one answer when they ran
    planned = [(n, [line.text for line in own]) for n, own in remaining_steps(lines, learned)]
    assert planned == [
        (4, ["4", "${LAST_SESSION}"]),
        (2, ["2", "${LAST_SESSION}"]),
        (12, ["12", "1"]),
        (14, ["14"]),
    ]  # 99 (help) is no step, 0 quits
    # without what the run learned, the menu's usual answer counts split them the same way
    usual = [(n, [line.text for line in own]) for n, own in remaining_steps(lines, {})]
    assert usual == planned
    # a choice with no usual count (97 Set App ID) is split at paragraphs: a choice right
    # after its answers is read as one more answer; it is not lost, it shows among its lines
    varied = parse("97\n1\n2\n${LAST_SESSION}\n# next\n14\n0\n")
    assert [(n, [line.text for line in own]) for n, own in remaining_steps(varied, {})] == [
        (97, ["97", "1", "2", "${LAST_SESSION}"]),
        (14, ["14"]),
    ]


def is_menu_choice(case_name: str) -> bool:
    """A case named after a menu choice ("3 Login #2"), not after an input ("77777 #1")."""
    first = case_name.split()[0]
    return first.isdigit() and int(first) in BY_NUMBER


SHIPPED = ["token-tour", "keys-tour", "crypto-tour", "negative-cases", "ha-failover-demo"]


@pytest.mark.parametrize("name", SHIPPED)
def test_the_plan_of_a_shipped_script_is_the_run_of_it(run_ckdemo, home, tmp_path, name):
    """The plan a stopped replay makes of the lines it did not run (each choice with the answers
    its menu entry usually reads) splits every shipped script into the very steps a full run
    makes: the same choices in the same order, nothing merged, nothing invented."""
    from ckdemo.replay.shipped import find

    done = run_ckdemo(home, "run", "--keep-going", "--junit", str(tmp_path / "full.xml"), name)
    assert done.returncode == 0, done.stdout[-2000:]
    ran = [
        int(case.name.split()[0]) for case in read_suite(tmp_path / "full.xml") if is_menu_choice(case.name)
    ]
    planned = [n for n, _ in remaining_steps(parse(find(name).read_text()), {})]
    assert planned == ran


@pytest.mark.parametrize("name", ["token-tour", "negative-cases"])
def test_a_shipped_script_stopped_at_its_first_step(run_ckdemo, shared_home, tmp_path, name):
    """A wrong PIN fails the shipped script early: its remaining choices are skipped, none
    invented, and every choice it has is either a case or among a skipped case's lines."""
    done = run_ckdemo(shared_home, "run", "--keep-going", "--junit", str(tmp_path / "all.xml"), name)
    full = read_suite(tmp_path / "all.xml")
    assert done.returncode == 0, done.stdout
    stopped = run_ckdemo(
        shared_home,
        "run",
        "--junit",
        str(tmp_path / "stopped.xml"),
        name,
        env={"CKDEMO_USER_PIN": "not-the-pin"},
    )
    suite = read_suite(tmp_path / "stopped.xml")
    assert stopped.returncode == 1
    counts_agree(suite)
    assert suite.failures == 1 and suite.skipped > 0
    ran = [case.name for case in suite if not case.is_skipped]
    all_names = [case.name for case in full]
    assert ran == all_names[: len(ran)]
    skipped = [case.name for case in suite if case.is_skipped]
    assert set(skipped) <= set(all_names[len(ran) :])  # none invented
    # every choice the full run made after the stop is a skipped case of its own (an input that
    # is no menu number, as negative-cases types on purpose, is not a choice to plan)
    assert skipped == [n for n in all_names[len(ran) :] if is_menu_choice(n)]
    assert_pins_hidden(open(tmp_path / "stopped.xml").read(), "not-the-pin")
