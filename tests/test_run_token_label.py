"""`ckdemo run --token-label LABEL` (or `--slot URI`) chooses the token a tour runs on, as bench's
options do: ${TOUR_SLOT}, the tours' slot, is that token's slot number, over the environment and
the script's @default. The token is checked by what the tour itself reads back from it (12 Token
Info prints the label) and by the session's slot."""

from __future__ import annotations

import re

import pytest

from conftest import no_traceback, requires_softhsm

pytestmark = requires_softhsm


def label_read_back(stdout: str) -> str:
    """The label 12 Token Info printed (the token the tour really used)."""
    found = re.findall(r"(?m)^   Label +: (\S*)$", stdout)
    assert found, stdout[-2000:]
    return found[0]


@pytest.mark.parametrize(
    "options, slot, label",
    [
        (["--token-label", "member2"], 2, "member2"),
        (["--slot", "pkcs11:token=member3"], 3, "member3"),
        (["--token-label", "ckdemo-ha"], 5, "ckdemo-ha"),
    ],
    ids=["label", "uri", "ha-slot"],
)
def test_token_tour_runs_on_the_token_it_is_told(shared_home, run_ckdemo, tmp_path, options, slot, label):
    done = run_ckdemo(shared_home, "run", "token-tour", *options, cwd=tmp_path)
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert re.search(rf"Session handle: \d+ \(slot#{slot}, R/W\)", done.stdout), done.stdout[-3000:]
    assert label_read_back(done.stdout) == label
    assert (
        "@default TOUR_SLOT ${MEMBER_SLOT_1}: not used, the command line (--token-label, --slot) "
        "sets TOUR_SLOT"
    ) in done.stdout


def test_the_option_wins_over_the_environment_and_without_it_member_1_is_the_tour_s(
    shared_home, run_ckdemo, tmp_path
):
    told = run_ckdemo(
        shared_home, "run", "token-tour", "--token-label", "member3", cwd=tmp_path, env={"TOUR_SLOT": "2"}
    )
    assert told.returncode == 0, told.stdout[-3000:]
    assert label_read_back(told.stdout) == "member3"
    plain = run_ckdemo(shared_home, "run", "token-tour", cwd=tmp_path)
    assert plain.returncode == 0, plain.stdout[-3000:]
    assert label_read_back(plain.stdout) == "member1"
    assert "@default TOUR_SLOT ${MEMBER_SLOT_1}: used" in plain.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["token-tour", "--token-label", "nomember"],
            "ckdemo: no slot matches pkcs11:token=nomember (ckdemo lists them with menu choice 14; pkcs11-tool -L)",
        ),
        (
            ["token-tour", "--token-label", "member1", "--slot", "pkcs11:token=member2"],
            "ckdemo: --token-label and --slot both choose the slot: give one",
        ),
        (["token-tour", "--slot", "2"], "ckdemo: --slot takes a pkcs11 URI (pkcs11:token=LABEL), got '2'"),
        (
            ["token-tour", "--slot", "pkcs11:object=k1"],
            "ckdemo: 'pkcs11:object=k1' names no token or slot (give token=, serial=, model=, manufacturer= "
            "or slot-id=)",
        ),
        (
            ["negative-cases", "--token-label", "member2"],
            "ckdemo: negative-cases does not use ${TOUR_SLOT}, so --token-label and --slot would choose "
            "nothing (the shipped tours do; a script names its slot with it)",
        ),
    ],
    ids=["unknown", "both", "not-a-uri", "no-token-in-uri", "script-without-tour-slot"],
)
def test_a_token_that_cannot_be_chosen_is_one_line_before_anything_runs(
    shared_home, run_ckdemo, tmp_path, args, message
):
    done = run_ckdemo(shared_home, "run", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout[-2000:]
    assert done.stdout == ""
    assert done.stderr.splitlines() == [message]
