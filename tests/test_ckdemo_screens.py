"""CKDemo's own screens where CKDemo has a format (as Luna's HA documentation shows them):
the main prompt, the slot list, the HA Status rows; and 99 (help) marking the Luna-only choices
the loaded module lacks."""

from __future__ import annotations

import re

from conftest import requires_softhsm

from ckdemo.codes import CKR_DEVICE_ERROR, CKR_OK, CKR_TOKEN_NOT_PRESENT
from ckdemo.menu.render import slot_row
from ckdemo.screens import ha_status_row
from ckdemo.menu.table import MENU

pytestmark = requires_softhsm


def test_ha_status_rows_are_the_seeds_byte_for_byte():
    # the two rows of the second HA Status Luna's documentation shows, with its serials
    assert (
        ha_status_row("599447001", CKR_TOKEN_NOT_PRESENT) == "   HSM 599447001      - CKR_TOKEN_NOT_PRESENT"
    )
    assert ha_status_row("78665001", CKR_OK) == "   HSM 78665001       - CKR_OK"
    assert ha_status_row("599447001", CKR_DEVICE_ERROR) == "   HSM 599447001      - CKR_DEVICE_ERROR"
    # a SoftHSM serial (16 hex digits) is wider than the column: still one space before the dash
    assert ha_status_row("3398c60d1f688364", CKR_OK) == "   HSM 3398c60d1f688364 - CKR_OK"


def test_slot_rows_are_the_seeds():
    assert slot_row(1, "LunaNet Slot") == "  slot#1 - LunaNet Slot"
    assert slot_row(3, "HA Virtual Card Slot") == "  slot#3 - HA Virtual Card Slot"


def test_a_replay_shows_ckdemos_prompt_and_slot_list(menu, shared_home):
    code, out = menu(shared_home, "11\n${MEMBER_SLOT_2}\n52\n${HA_SLOT}\n0\n")
    assert code == 0, out
    prompts = re.findall(r"(?m)^Enter your choice.*?: ", out)
    assert prompts == ["Enter your choice : "] * 3
    block = out.split("Slots available:\n", 1)[1].split("Select a slot: ", 1)[0]
    assert re.fullmatch(r"(  slot#\d+ - [^\t\n]+\n){5}", block), block  # 3 members, free slot, HA
    assert "  slot#5 - HA Virtual Card Slot\n" in block
    rows = re.findall(r"(?m)^   HSM [0-9a-f]{16} - CKR_OK$", out)
    assert len(rows) == 3
    assert "\t" not in out


def test_help_marks_the_luna_only_choices_the_module_lacks(menu, shared_home):
    luna_only = sorted(e.number for e in MENU if e.extension)
    assert {16, 70, 110} <= set(luna_only)
    code, out = menu(shared_home, "0\n")
    assert "Luna-only" not in out  # the menu at start is CKDemo's, unmarked
    code, out = menu(
        shared_home, "99\n70\n@expect CKR_FUNCTION_NOT_SUPPORTED\n16\n@expect CKR_FUNCTION_NOT_SUPPORTED\n0\n"
    )
    assert code == 0, out
    [note] = [line for line in out.splitlines() if line.startswith("Luna-only")]
    assert note == (
        "Luna-only, not in the loaded module (CKR_FUNCTION_NOT_SUPPORTED): "
        + ", ".join(str(n) for n in luna_only)
    )
    assert out.count("(0) Quit demo") == 2  # the menu at start, then 99's, with the note under it
    assert out.index(note) > out.rindex("(0) Quit demo")
