"""OTHERS (90 Self Test, 94/95 Open/Close Access, 97 Set App ID, 98 Options) and the Luna-only
choices, on real SoftHSM2 tokens; the keys tour as a whole.

Failures the real module never gives (a wrong digest) and modules it is not (one exporting a
CA_ function) are played by small stand-ins, in process.
"""

from __future__ import annotations

import os
import re

import pytest

from ckdemo.codes import CKR_FUNCTION_FAILED, CKR_FUNCTION_NOT_SUPPORTED, CKRError
from ckdemo.handlers import others
from ckdemo.menu.context import Context
from ckdemo.menu.loop import MenuLoop
from ckdemo.menu.table import BY_NUMBER
from ckdemo.workspace import Workspace
from conftest import SO_PIN, USER_PIN, no_traceback, requires_softhsm
from support import DOMAIN_KEYS, OK, REPO, Screen, private_library

pytestmark = requires_softhsm

HA_SLOT = 5  # a default home: member1-3, the empty SoftHSM slot, then the HA slot
LUNA_ONLY = [e for e in BY_NUMBER.values() if e.extension]


def results(transcript: str) -> list[tuple[str, str]]:
    """(test, PASS|FAIL|SKIP) rows of the self-test table."""
    return re.findall(r"^(\S.*?)\s{2,}CK\S+\s+(PASS|FAIL|SKIP)\b", transcript, re.MULTILINE) + re.findall(
        r"^(Random.*?)\s{2,}C_GenerateRandom\s+(PASS|FAIL|SKIP)\b", transcript, re.MULTILINE
    )


# ---------------------------------------------------------------- 90 Self Test


def test_self_test_passes_on_a_member_slot_without_login(menu, shared_home):
    code, out = menu(shared_home, "90\n1\n0\n")
    assert code == 0, out
    rows = results(out)
    assert len(rows) == len(others.SELF_TESTS) and {r for _, r in rows} == {"PASS"}, out
    assert f"Self test on slot#1: {len(rows)} passed, 0 failed, 0 skipped." in out
    assert out.count(OK) == 1


def test_self_test_passes_on_the_ha_slot(menu, home, independent):
    code, out = menu(
        home,
        f"""\
        50
        {HA_SLOT}
        {SO_PIN}
        51
        {HA_SLOT}
        {USER_PIN}
        90
        {HA_SLOT}
        0
        """,
    )
    assert code == 0, out
    rows = results(out)
    assert len(rows) == len(others.SELF_TESTS) and {r for _, r in rows} == {"PASS"}, out
    assert f"Self test on slot#{HA_SLOT}: {len(rows)} passed, 0 failed, 0 skipped." in out
    # nothing of the test stays on any member: only the HA domain keys are there
    for member in ("member1", "member2", "member3"):
        listed = independent(
            home, "--token-label", member, "--login", "--pin", USER_PIN, "--list-objects"
        ).stdout
        assert "ckdemo-selftest" not in listed and listed.count("Secret Key Object") == DOMAIN_KEYS, listed


class WrongDigestSlot:
    """A module that lists only SHA-256 and gets it wrong."""

    def __init__(self) -> None:
        self.closed = False

    def description(self) -> str:
        return "stand-in slot"

    def mechanisms(self):
        return [(0x250, "CKM_SHA256")]

    def open_session(self, rw: bool = True):
        slot = self

        class Session:
            handle = 1

            def digest(self, mechanism, data):
                return bytes(32)

            def generate_random(self, length):
                return os.urandom(length)

            def close(self):
                slot.closed = True

        return Session()


def test_a_failed_known_answer_fails_the_choice():
    slot = WrongDigestSlot()
    screen = Screen([])
    with pytest.raises(CKRError) as failed:
        others.self_test(Context(Workspace([slot]), screen))
    assert failed.value.ckr == CKR_FUNCTION_FAILED and failed.value.detail == "1 self-tests failed"
    assert re.search(
        r"^SHA-256 'abc' \(FIPS 180\)\s+CKM_SHA256\s+FAIL\s+got 0000000000000000\.\.\., "
        r"expected ba7816bf8f01cfea\.\.\.$",
        screen.text,
        re.MULTILINE,
    ), screen.text
    assert re.search(r"^AES-256 ECB.*SKIP\s+not in the mechanism list$", screen.text, re.MULTILINE)
    assert "Self test on slot#1: 1 passed, 1 failed, 7 skipped." in screen.text
    assert slot.closed


def test_a_failed_self_test_shows_one_line_and_the_status():
    """Through the menu loop: the detail line and CKR_FUNCTION_FAILED, no traceback."""
    screen = Screen(["90"])
    loop = MenuLoop(Context(Workspace([WrongDigestSlot()]), screen))
    result = loop.dispatch(BY_NUMBER[90])
    assert result.status == "CKR_FUNCTION_FAILED"
    assert "Self Test: 1 self-tests failed\n" in screen.text
    assert "Status: Self Test returned error. (CKR_FUNCTION_FAILED 0x00000006)" in screen.text


# ---------------------------------------------------------------- 94, 95, 97


def test_app_id_is_stored_and_shown(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        97
        ""
        97
        7
        3
        97
        ""
        94
        95
        97
        seven
        @expect BAD_INPUT
        0
        """,
    )
    assert code == 0, out
    assert out.count("Current app ID: not set") == 2  # shown, then shown again before the change
    assert (
        "App ID set to 7.3 (stored by ckdemo for Open/Close Access; Luna's CA_SetApplicationID: "
        "no loaded module exports it)." in out
    )
    assert out.count("Current app ID: 7.3") == 2
    assert (
        "Open Access: Luna extension CA_OpenApplicationID (app ID 7.3); no loaded module "
        "exports it. Nothing to do in standard PKCS#11" in out
    )
    assert "Close Access: Luna extension CA_CloseApplicationID (app ID 7.3)" in out
    assert "Invalid input (seven): a number is needed." in out


# ---------------------------------------------------------------- Luna-only choices


@pytest.mark.parametrize("entry", LUNA_ONLY, ids=lambda e: str(e.number))
def test_every_luna_only_choice_names_its_function(entry):
    assert entry.handler == "others:luna_only"
    screen = Screen([])
    result = MenuLoop(Context(Workspace([]), screen)).dispatch(entry)
    assert result.status == "CKR_FUNCTION_NOT_SUPPORTED"
    line = screen.text.splitlines()[0]
    assert line.startswith(f"{entry.title}: Luna extension {entry.extension}; ")
    assert line.endswith("(not standard PKCS#11).")
    assert ("no loaded module exports it" in line) == entry.extension.isidentifier()


def test_luna_only_choices_on_softhsm(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        70
        @expect CKR_FUNCTION_NOT_SUPPORTED
        104
        @expect CKR_FUNCTION_NOT_SUPPORTED
        0
        """,
    )
    assert code == 0, out
    assert (
        "Set Domain: Luna extension CA_SetDomain; no loaded module exports it (not standard PKCS#11)." in out
    )
    assert "Status: Set Domain returned error. (CKR_FUNCTION_NOT_SUPPORTED 0x00000054)" in out
    assert "Clone Object: Luna extension CA_CloneObject; no loaded module exports it" in out


class LunaLikeSlot:
    def exports(self, symbol: str) -> list[str]:
        return ["/usr/safenet/lunaclient/lib/libCryptoki2_64.so"] if symbol.startswith("CA_") else []


def test_an_exported_luna_function_is_named_with_its_library():
    with pytest.raises(CKRError) as refused:
        others.luna_only(
            Context(Workspace([LunaLikeSlot(), LunaLikeSlot()]), Screen([])), entry=BY_NUMBER[70]
        )
    assert refused.value.ckr == CKR_FUNCTION_NOT_SUPPORTED
    assert refused.value.detail == (
        "Luna extension CA_SetDomain; libCryptoki2_64.so exports "
        "CA_SetDomain, but ckdemo does not call it yet "
        "(not standard PKCS#11)."
    )


def test_symbol_detection_on_a_real_library(tmp_path, monkeypatch):
    """PhysicalSlot.exports looks the symbol up in the loaded library itself."""
    from ckdemo.members.module import module_for
    from ckdemo.members.slot import PhysicalSlot
    from ckdemo.provision import provision

    home = provision(tmp_path / "home", members=1).home
    library = private_library(tmp_path)
    monkeypatch.setenv("SOFTHSM2_CONF", str(home / "softhsm2.conf"))
    module = module_for(str(library)).load()
    slot = PhysicalSlot(module, module.slot_ids(token_present=True)[0])
    assert slot.exports("C_GetFunctionList") == [str(library)]
    assert slot.exports("CA_SetDomain") == []
    assert Workspace([slot, slot]).exports("C_Initialize") == [str(library)]


# ---------------------------------------------------------------- 98 Options


def test_options_verbose_errors_and_token_objects(menu, home):
    code, out = menu(
        home,
        f"""\
        98
        3
        98
        4
        70
        @expect CKR_FUNCTION_NOT_SUPPORTED
        1
        1
        y
        3
        1
        1
        {USER_PIN}
        65
        1
        ""
        0
        """,
    )
    assert code == 0, out
    assert "Print the detail line under a failed choice: no" in out
    assert "Unwrapped, derived and known keys default to token objects: no" in out
    assert "Set Domain: Luna extension" not in out  # the detail line is off now
    assert "Status: Set Domain returned error. (CKR_FUNCTION_NOT_SUPPORTED 0x00000054)" in out
    assert "Token objects? [y/N] : " in out and "Known keys as session objects" in out


# ---------------------------------------------------------------- the shipped keys tour


def test_keys_tour_replays_clean_and_its_files_unwrap_outside(run_ckdemo, home, tmp_path):
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_unwrap_with_padding

    from ckdemo import known_keys as kk

    done = run_ckdemo(home, "run", str(REPO / "scripts" / "keys-tour"), cwd=tmp_path)
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout
    assert done.stdout.rstrip().endswith("met their expectation, 0 did not")
    assert aes_key_unwrap(kk.AES256_VALUE, (tmp_path / "keys-tour-aes.wrap").read_bytes()) == kk.AES256_VALUE
    assert (
        aes_key_unwrap_with_padding(kk.AES256_VALUE, (tmp_path / "keys-tour-hmac.wrap").read_bytes())
        == kk.HMAC_VALUE
    )
    assert kk.HMAC_SHA256_OF_MESSAGE.hex() in done.stdout
    assert "tour-password" not in done.stdout
