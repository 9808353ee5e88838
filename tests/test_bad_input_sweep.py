"""Every implemented choice fed with wrong answers (letters, huge numbers, unknown handles,
missing files, unknown mechanisms), on a physical slot and on the HA slot: each gets one clear
line and the menu goes on. Nothing may end as an internal error or show a traceback."""

from __future__ import annotations

import pytest

from conftest import no_traceback, requires_softhsm

pytestmark = requires_softhsm

GARBAGE = [
    ["x"],
    ["99999"],
    ["1", "x"],
    ["1", "99999"],
    ["1", "1", "x"],
    ["5", "x"],
    ["1", "1", "1", "x"],
    ["1", "2", "@/nonexistent"],
    ["1", "1", "CKM_BOGUS"],
    ["5", "1", "x"],
    ["1", "2", "1", "x"],
    ["1", "1", "1", "1", "1", "1"],
]
DESTRUCTIVE = {5, 6, 7, 120}  # change PIN, init token, init PIN, fail member: not for a sweep
# 15 Wait for Slot Event really waits the seconds answered after the slot (SoftHSM2 has no events):
# 1 or 2 there, before the wrong answers, cost 9 s of a 13 s sweep; 0 ("do not block") asks the same
WAIT_FOR_SLOT_EVENT = 15
PREFIXES = {
    "physical": ["1", "1", "y", "3", "1", "1", "${CKDEMO_USER_PIN}"],
    "ha": ["51", "5", "${CKDEMO_USER_PIN}", "1", "5", "y"],
}


def sweep_script(prefix: list[str]) -> tuple[str, int]:
    from ckdemo.menu.table import MENU  # the menu's own table: a new choice is swept too

    choices = [e.number for e in MENU if e.handler and e.number not in DESTRUCTIVE]
    lines = list(prefix)
    for choice in choices:
        for answers in GARBAGE:
            if choice == WAIT_FOR_SLOT_EVENT and answers[1:2] in (["1"], ["2"]):
                answers = [answers[0], "0", *answers[2:]]
            lines += [str(choice), *answers]
    return "\n".join(lines + ["0", ""]), len(choices)


@pytest.mark.parametrize("where", sorted(PREFIXES))
def test_wrong_answers_everywhere_are_one_line_each(shared_home, run_ckdemo, where):
    script, choices = sweep_script(PREFIXES[where])
    done = run_ckdemo(shared_home, "run", "--keep-going", "-", input=script)
    no_traceback(done.stdout, done.stderr)
    assert "Internal error" not in done.stdout
    assert done.stderr == ""
    assert choices > 40  # the sweep really covers the menu
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("Replay: ") and "stopped" not in summary  # it ran to the end
    assert not (shared_home / "errors.log").exists()
