"""Golden transcripts of the shipped scripts, each replayed in a fresh home.

Only what changes from one provision to the next is normalised: token serials, SoftHSM slot ids,
the token clock, the home and library paths, and the column widths those values drive in tables.
Everything else (menu, prompts, answers, results, status lines) must match byte for byte.

After an intended change of the screen (e.g. a new slot in the list), regenerate and review:
    CKDEMO_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/test_golden.py && git diff tests/golden
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import SOFTHSM_LIB, no_traceback, requires_softhsm
from support import GOLDEN_DIR, REPO, assert_matches_golden, unalign_id_tables

pytestmark = requires_softhsm

SCRIPTS = ["token-tour", "negative-cases"]


def normalise(transcript: str, home: Path) -> str:
    text = transcript.replace(str(home), "<HOME>").replace(SOFTHSM_LIB, "<LIBRARY>")
    text = re.sub(r"SoftHSM slot ID 0x[0-9a-f]+\b", "SoftHSM slot ID <ID>", text)
    text = re.sub(r"\(slot id \d+\)", "(slot id <ID>)", text)
    text = re.sub(r"^(\s+Serial number\s+: )[0-9a-f]{16}$", r"\1<SERIAL>", text, flags=re.MULTILINE)
    text = re.sub(r"^(\s+UTC time\s+: )\d{14}(\d\d)?$", r"\1<UTC>", text, flags=re.MULTILINE)
    return "\n".join(unalign_id_tables(text.split("\n")))


@pytest.fixture(scope="module")
def transcripts(run_ckdemo, tmp_path_factory) -> dict[str, tuple[str, Path]]:
    """Each shipped script replayed once, in a home of its own: {name: (stdout, home)}."""
    done = {}
    for name in SCRIPTS:
        home = tmp_path_factory.mktemp(name) / "home"
        run = run_ckdemo(home, "run", str(REPO / "scripts" / name))
        no_traceback(run.stdout, run.stderr)
        assert run.returncode == 0, run.stdout + run.stderr
        done[name] = (run.stdout, home)
    return done


@pytest.mark.parametrize("name", SCRIPTS)
def test_transcript_matches_golden(transcripts, name):
    stdout, home = transcripts[name]
    assert_matches_golden(normalise(stdout, home), GOLDEN_DIR / f"{name}.txt", f"scripts/{name}")


def test_two_provisions_normalise_to_the_same_text(run_ckdemo, transcripts, tmp_path):
    """The normaliser hides what differs between provisions, and something did differ."""
    stdout, home = transcripts["token-tour"]
    other_home = tmp_path / "home"
    again = run_ckdemo(other_home, "run", str(REPO / "scripts" / "token-tour"))
    assert again.returncode == 0, again.stdout
    assert again.stdout != stdout  # serials, slot ids or the clock changed
    assert normalise(again.stdout, other_home) == normalise(stdout, home)


@pytest.mark.parametrize(
    "pattern, replacement",
    [
        # a status line
        (
            r"(?m)^Status: Doing great, no errors \(CKR_OK\)$",
            "Status: C_Logout returned error. (CKR_USER_NOT_LOGGED_IN 0x00000101)",
        ),
        # a prompt
        (r"(?m)^Select a slot: ", "Select slot: "),
        # an answer echoed after its prompt
        (r"(?m)^(Read/write session\? \[Y/n\] : )y$", r"\1n"),
        # results
        (r"CKS_RW_USER_FUNCTIONS", "CKS_RW_PUBLIC_SESSION"),
        (r"(?m)^(\s+Label\s+: )member1$", r"\1member2"),
        (r"(?m)^\d+ mechanisms\.$", "1 mechanisms."),
        (r"(?m)^(   Min key size) : ", r"\1: "),  # a field list's own alignment
        (r"(?m)^(\d+ +0x[0-9A-F]{8})  (CKM_AES_CBC)$", r"\1 \2"),  # a table with no slot id in it
        # the slot list: a row, the count
        (r"(?m)^slot#2  ", "slot#9  "),
        (r"(?m)^\d+ slots\.$", "99 slots."),
        (r"(?m)(  yes  +)member3$", r"\1member4"),
        # a serial that is not a serial any more
        (r"(?m)^(\s+Serial number\s+: )[0-9a-f]+$", r"\1unknown"),
        # the replay summary
        (r"(?m)^Replay: (\d+) steps", "Replay: 0 steps"),
    ],
)
def test_a_real_change_is_not_normalised_away(transcripts, pattern, replacement):
    stdout, home = transcripts["token-tour"]
    changed, count = re.subn(pattern, replacement, stdout, count=1)
    assert count == 1, f"{pattern!r} no longer in the token tour: pick another sample"
    assert normalise(changed, home) != normalise(stdout, home)


def test_no_unstable_value_survives_normalising(transcripts):
    for stdout, home in transcripts.values():
        text = normalise(stdout, home)
        assert "SoftHSM slot ID 0x" not in text
        assert not re.search(r"slot id \d", text)
        assert not re.search(r"\b[0-9a-f]{16}\b", text)  # serial numbers
        assert not re.search(r"\b20\d{12}", text)  # the token clock
        assert str(home) not in text
