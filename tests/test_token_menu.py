"""TOKEN FUNCTIONS 1-15, 98 Options, 99 help and 0 quit, as a QA person would run them.

Each test types a small script into `ckdemo --home H run -`, then reads the transcript and, where
the choice changes the token, reads the token back with pkcs11-tool (an independent client).
Tests that only read share one home per module; tests that change a token get their own home.
"""

from __future__ import annotations

import re
from textwrap import dedent

from conftest import SO_PIN, USER_PIN, assert_pins_hidden, no_traceback, requires_softhsm
from support import OK, statuses, summary

pytestmark = requires_softhsm


def field(transcript: str, name: str) -> list[str]:
    """Every value printed as `   Name   : value`, in order."""
    return re.findall(rf"^\s+{re.escape(name)}\s+: (.*)$", transcript, re.MULTILINE)


# ---------------------------------------------------------------- 1 Open Session, 2 Close Session


def test_open_and_close_several_sessions(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        1
        1
        y
        1
        2
        n
        2
        1
        2
        2
        0
        """,
    )
    assert code == 0, out
    assert "Session handle: 1 (slot#1, R/W)" in out
    assert "Session handle: 2 (slot#2, R/O)" in out
    assert "Session 1 closed." in out and "Session 2 closed." in out
    assert statuses(out) == [OK] * 4
    assert summary(out) == "Replay: 4 steps, 4 met their expectation, 0 did not"


def test_open_session_on_unknown_slot_or_with_a_bad_answer(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        1
        9
        @expect BAD_INPUT
        1
        1
        maybe
        @expect BAD_INPUT
        13
        1
        @expect BAD_INPUT
        0
        """,
    )
    assert code == 0, out
    assert re.search(r"^Invalid input: there is no slot#9 \(slots are 1-\d+\)\.$", out, re.M)
    assert "Invalid input (maybe): answer y or n." in out
    # neither failed attempt left a session behind
    assert "Invalid input: no open session with handle 1 (none is open: use choice 1)." in out


def test_close_unknown_session(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        1
        1
        y
        2
        7
        0
        """,
    )
    assert code == 1
    assert "Invalid input: no open session with handle 7 (open: 1)." in out
    assert "FAILED line 4: choice 2 (Close Session) ended with BAD_INPUT, expected CKR_OK" in out


# ---------------------------------------------------------------- 3 Login, 4 Logout, 13 Session Info


def test_wrong_pin_is_refused_and_the_session_stays_usable(menu, shared_home):
    code, out = menu(
        shared_home,
        f"""\
        1
        1
        y
        3
        1
        1
        not-the-pin
        @expect CKR_PIN_INCORRECT
        13
        1
        3
        1
        1
        {USER_PIN}
        13
        1
        4
        1
        # SoftHSM answers CKR_OK to a second C_Logout, so the failure to show is a bad handle
        4
        2
        @expect BAD_INPUT
        0
        """,
    )
    assert code == 0, out
    assert "Status: C_Login returned error. (CKR_PIN_INCORRECT 0x000000A0)" in out
    assert "Logged in as Crypto User on session 1." in out
    assert field(out, "State") == ["CKS_RW_PUBLIC_SESSION", "CKS_RW_USER_FUNCTIONS"]
    assert "Logged out (session 1)." in out
    assert "Invalid input: no open session with handle 2 (open: 1)." in out
    assert_pins_hidden(out, USER_PIN, "not-the-pin")
    assert out.count("Enter PIN : ****\n") == 2


def test_login_with_a_user_type_that_does_not_exist(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        1
        1
        y
        3
        1
        7
        @expect BAD_INPUT
        0
        """,
    )
    assert code == 0, out
    assert "Invalid input (7): choose one of 0, 1." in out
    assert "Enter PIN" not in out  # no PIN asked for a login that cannot happen


def test_session_states(menu, shared_home):
    """Every CKS_* state a SoftHSM session can reach, read with C_GetSessionInfo."""
    code, out = menu(
        shared_home,
        f"""\
        # handle 1: R/O on member1, handle 2: R/W on member1, handle 3: R/W on member2
        1
        1
        n
        1
        1
        y
        1
        2
        y
        13
        1
        13
        2
        3
        1
        1
        {USER_PIN}
        13
        1
        13
        2
        # SO login is refused while member1 has an R/O session; member2 has none
        4
        1
        3
        2
        0
        {SO_PIN}
        @expect CKR_SESSION_READ_ONLY_EXISTS
        3
        3
        0
        {SO_PIN}
        13
        3
        0
        """,
    )
    assert code == 0, out
    assert field(out, "State") == [
        "CKS_RO_PUBLIC_SESSION",
        "CKS_RW_PUBLIC_SESSION",
        "CKS_RO_USER_FUNCTIONS",
        "CKS_RW_USER_FUNCTIONS",
        "CKS_RW_SO_FUNCTIONS",
    ]
    assert field(out, "Flags")[:2] == [
        "0x00000004 (CKF_SERIAL_SESSION)",
        "0x00000006 (CKF_RW_SESSION | CKF_SERIAL_SESSION)",
    ]
    assert field(out, "Slot") == ["slot#1"] * 4 + ["slot#2"]
    assert "Logged in as Security Officer on session 3." in out
    assert_pins_hidden(out, USER_PIN, SO_PIN)


def test_session_info_on_a_letter(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        13
        one
        0
        """,
    )
    assert code == 1
    assert "Invalid input (one): a number is needed." in out
    assert "FAILED line 1: choice 13 (Session Info) ended with BAD_INPUT, expected CKR_OK" in out


# ---------------------------------------------------------------- 5 Change PIN

NEW_PIN = "Chg-pin-7713"


def test_change_pin_then_only_the_new_pin_opens_the_token(menu, home, independent):
    code, out = menu(
        home,
        f"""\
        1
        1
        y
        3
        1
        1
        {USER_PIN}
        5
        1
        {USER_PIN}
        {NEW_PIN}
        {NEW_PIN}
        0
        """,
    )
    assert code == 0, out
    assert "PIN changed." in out
    assert out.count("PIN : ****\n") == 4  # login, old, new, confirm
    assert_pins_hidden(out, USER_PIN, NEW_PIN)

    new = independent(home, "--token-label", "member1", "--login", "--pin", NEW_PIN, "--list-objects")
    assert new.returncode == 0, new.stderr
    old = independent(home, "--token-label", "member1", "--login", "--pin", USER_PIN, "--list-objects")
    assert old.returncode != 0
    assert "CKR_PIN_INCORRECT" in old.stderr + old.stdout
    # the other members keep their PIN
    other = independent(home, "--token-label", "member2", "--login", "--pin", USER_PIN, "--list-objects")
    assert other.returncode == 0, other.stderr


def test_change_pin_failures_leave_the_pin_alone(menu, home, independent):
    code, out = menu(
        home,
        f"""\
        # a wrong old PIN
        1
        1
        y
        5
        1
        wrong-old-pin
        {NEW_PIN}
        {NEW_PIN}
        @expect CKR_PIN_INCORRECT
        # confirmation differs
        5
        1
        {USER_PIN}
        {NEW_PIN}
        {NEW_PIN}-typo
        @expect BAD_INPUT
        # C_SetPIN needs a R/W session
        1
        1
        n
        5
        2
        {USER_PIN}
        {NEW_PIN}
        {NEW_PIN}
        @expect CKR_SESSION_READ_ONLY
        0
        """,
    )
    assert code == 0, out
    assert "Status: C_SetPIN returned error. (CKR_PIN_INCORRECT 0x000000A0)" in out
    assert "The new PINs do not match; PIN not changed." in out
    assert "Status: C_SetPIN returned error. (CKR_SESSION_READ_ONLY 0x000000B5)" in out
    assert_pins_hidden(out, USER_PIN, NEW_PIN, f"{NEW_PIN}-typo", "wrong-old-pin")

    still = independent(home, "--token-label", "member1", "--login", "--pin", USER_PIN, "--list-objects")
    assert still.returncode == 0, still.stderr


# ---------------------------------------------------------------- 6 Init Token, 7 Init Pin

NEW_SO_PIN, FRESH_USER_PIN = "So-9931-new", "Usr-4471-new"


def test_init_token_on_the_free_slot_then_init_pin_as_so(menu, home, independent):
    code, out = menu(
        home,
        f"""\
        6
        4
        {NEW_SO_PIN}
        qa-fresh-token
        # the new token has no user PIN yet: log in as SO and set one
        1
        4
        y
        3
        1
        0
        {NEW_SO_PIN}
        7
        1
        {FRESH_USER_PIN}
        {FRESH_USER_PIN}
        14
        0
        """,
    )
    assert code == 0, out
    assert "Token in slot#4 initialised with label 'qa-fresh-token'." in out
    assert "User PIN initialised." in out
    assert re.search(r"^slot#4 +SoftHSM slot ID 0x\w+ +yes +qa-fresh-token$", out, re.MULTILINE)
    assert_pins_hidden(out, NEW_SO_PIN, FRESH_USER_PIN)

    slots = independent(home, "--list-token-slots")
    assert slots.returncode == 0, slots.stderr
    assert re.search(r"token label\s+: qa-fresh-token\n", slots.stdout), slots.stdout
    assert sorted(re.findall(r"token label\s+: (\S+)", slots.stdout)) == [
        "member1",
        "member2",
        "member3",
        "qa-fresh-token",
    ]
    user = independent(
        home, "--token-label", "qa-fresh-token", "--login", "--pin", FRESH_USER_PIN, "--list-objects"
    )
    assert user.returncode == 0, user.stderr
    so = independent(
        home,
        "--token-label",
        "qa-fresh-token",
        "--session-rw",
        "--login",
        "--login-type",
        "so",
        "--so-pin",
        NEW_SO_PIN,
        "--list-objects",
    )
    assert so.returncode == 0, so.stderr


def test_init_token_failures(menu, home, independent):
    code, out = menu(
        home,
        f"""\
        # a wrong SO PIN (member1 is an HA member: re-initialising it needs the directive)
        @confirm-destructive
        6
        1
        wrong-so-pin
        renamed
        @expect CKR_PIN_INCORRECT
        # a label longer than 32 bytes
        6
        1
        {SO_PIN}
        {"L" * 33}
        @expect BAD_INPUT
        # an open session on the token
        1
        1
        y
        @confirm-destructive
        6
        1
        {SO_PIN}
        renamed
        @expect CKR_SESSION_EXISTS
        0
        """,
    )
    assert code == 0, out
    assert "Status: C_InitToken returned error. (CKR_PIN_INCORRECT 0x000000A0)" in out
    assert "Invalid input: a token label has 1-32 bytes." in out
    assert "Status: C_InitToken returned error. (CKR_SESSION_EXISTS 0x000000B6)" in out
    assert_pins_hidden(out, SO_PIN, "wrong-so-pin")

    slots = independent(home, "--list-token-slots")
    assert sorted(re.findall(r"token label\s+: (\S+)", slots.stdout)) == ["member1", "member2", "member3"]
    still = independent(home, "--token-label", "member1", "--login", "--pin", USER_PIN, "--list-objects")
    assert still.returncode == 0, still.stderr


def test_reinit_a_member_token_with_its_so_pin(menu, home, independent):
    code, out = menu(
        home,
        f"""\
        @confirm-destructive
        6
        2
        {SO_PIN}
        member2-again
        0
        """,
    )
    assert code == 0, out
    slots = independent(home, "--list-token-slots")
    labels = sorted(re.findall(r"token label\s+: (\S+)", slots.stdout))
    assert labels == ["member1", "member2-again", "member3"]


def test_init_pin_as_so_sets_the_user_pin(menu, home, independent):
    code, out = menu(
        home,
        f"""\
        1
        3
        y
        3
        1
        0
        {SO_PIN}
        7
        1
        {FRESH_USER_PIN}
        {FRESH_USER_PIN}
        0
        """,
    )
    assert code == 0, out
    assert "Logged in as Security Officer on session 1." in out
    assert "User PIN initialised." in out
    assert_pins_hidden(out, SO_PIN, FRESH_USER_PIN)
    assert (
        independent(
            home, "--token-label", "member3", "--login", "--pin", FRESH_USER_PIN, "--list-objects"
        ).returncode
        == 0
    )
    assert (
        independent(
            home, "--token-label", "member3", "--login", "--pin", USER_PIN, "--list-objects"
        ).returncode
        != 0
    )


def test_init_pin_failures(menu, shared_home):
    code, out = menu(
        shared_home,
        f"""\
        # from a public session
        1
        1
        y
        7
        1
        {FRESH_USER_PIN}
        {FRESH_USER_PIN}
        @expect CKR_USER_NOT_LOGGED_IN
        # confirmation differs
        3
        1
        0
        {SO_PIN}
        7
        1
        {FRESH_USER_PIN}
        {FRESH_USER_PIN}x
        @expect BAD_INPUT
        0
        """,
    )
    assert code == 0, out
    assert "Status: C_InitPIN returned error. (CKR_USER_NOT_LOGGED_IN 0x00000101)" in out
    assert "The PINs do not match; PIN not initialised." in out
    assert_pins_hidden(out, SO_PIN, FRESH_USER_PIN, FRESH_USER_PIN + "x")


# ---------------------------------------------------------------- 8 Mechanism List, 9 Mechanism Info


def test_mechanism_list_matches_pkcs11_tool(menu, shared_home, independent):
    code, out = menu(
        shared_home,
        """\
        8
        1
        0
        """,
    )
    assert code == 0, out
    listed = re.findall(r"^\d+ +0x[0-9A-F]{8}  CKM_\w+$", out, re.MULTILINE)
    count = int(re.search(r"^(\d+) mechanisms\.$", out, re.MULTILINE).group(1))
    assert count == len(listed) > 0

    tool = independent(shared_home, "--token-label", "member1", "-M")
    assert tool.returncode == 0, tool.stderr
    theirs = [line for line in tool.stdout.splitlines() if line.startswith("  ")]
    assert count == len(theirs), tool.stdout


def test_mechanism_list_on_slot_zero(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        8
        0
        0
        """,
    )
    assert code == 1
    assert re.search(r"^Invalid input: there is no slot#0 \(slots are 1-\d+\)\.$", out, re.M)


def test_mechanism_info_by_name_value_and_list_number(menu, shared_home, independent):
    code, out = menu(
        shared_home,
        """\
        9
        1
        CKM_SHA256_RSA_PKCS
        9
        1
        0x40
        9
        1
        sha256_rsa_pkcs
        0
        """,
    )
    assert code == 0, out
    assert field(out, "Mechanism") == ["CKM_SHA256_RSA_PKCS (0x00000040)"] * 3
    assert field(out, "Flags") == ["0x00002800 (CKF_SIGN | CKF_VERIFY)"] * 3
    tool = independent(shared_home, "--token-label", "member1", "-M").stdout
    low, high = re.search(r"^  SHA256-RSA-PKCS, keySize=\{(\d+),(\d+)\}", tool, re.MULTILINE).groups()
    assert field(out, "Min key size") == [low] * 3
    assert field(out, "Max key size") == [high] * 3


def test_mechanism_info_by_number_in_the_list(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        8
        1
        9
        1
        2
        0
        """,
    )
    assert code == 0, out
    # 2 is not a mechanism SoftHSM has (CKM_RSA_9796), so it means the second row of the list
    second = re.findall(r"^\d+ +(0x[0-9A-F]{8})  (CKM_\w+)$", out, re.MULTILINE)[1]
    assert second[0] != "0x00000002"
    assert field(out, "Mechanism") == [f"{second[1]} ({second[0]})"]


def test_mechanism_info_failures(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        9
        1
        CKM_NOT_A_MECHANISM
        @expect BAD_INPUT
        9
        1
        0x80001234
        @expect CKR_MECHANISM_INVALID
        0
        """,
    )
    assert code == 0, out
    assert "Invalid input (CKM_NOT_A_MECHANISM): not a mechanism of this slot." in out
    assert "Status: C_GetMechanismInfo returned error. (CKR_MECHANISM_INVALID 0x00000070)" in out


# ---------------------------------------------------------------- 10 Get Info, 11 Slot Info, 12 Token Info


def test_get_info_matches_pkcs11_tool(menu, shared_home, independent):
    code, out = menu(
        shared_home,
        """\
        10
        2
        0
        """,
    )
    assert code == 0, out
    tool = independent(shared_home, "-I").stdout
    theirs = dict(re.findall(r"^(Cryptoki version|Manufacturer|Library)\s+(.*)$", tool, re.MULTILINE))
    assert field(out, "Cryptoki version") == [theirs["Cryptoki version"]]
    assert field(out, "Manufacturer") == [theirs["Manufacturer"]]
    library, version = re.fullmatch(r"(.*) \(ver (.*)\)", theirs["Library"]).groups()
    assert field(out, "Library") == [library]
    assert field(out, "Library version") == [version]
    assert field(out, "Path") == ["/usr/lib/softhsm/libsofthsm2.so"]


def test_get_info_on_a_letter(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        10
        a
        0
        """,
    )
    assert code == 1
    assert "Invalid input (a): a number is needed." in out
    assert "Cryptoki version" not in out


def _tool_slots(independent, home) -> dict[str, dict[str, str]]:
    """pkcs11-tool --list-token-slots, by token label: slot id (hex), description, serial."""
    text = independent(home, "--list-token-slots").stdout
    slots = {}
    for block in re.split(r"^(?=Slot \d+ )", text, flags=re.MULTILINE)[1:]:
        head = re.match(r"Slot \d+ \((0x[0-9a-f]+)\): (.*)", block)
        label = re.search(r"token label\s+: (.*)", block)
        serial = re.search(r"serial num\s+: (.*)", block)
        if label:
            slots[label.group(1).strip()] = {
                "id": head.group(1),
                "description": head.group(2).strip(),
                "serial": serial.group(1).strip(),
            }
    return slots


def test_slot_info_matches_pkcs11_tool(menu, shared_home, independent):
    code, out = menu(
        shared_home,
        """\
        11
        1
        11
        3
        0
        """,
    )
    assert code == 0, out
    theirs = _tool_slots(independent, shared_home)
    ids = [hex(int(n)) for n in re.findall(r"^\s+Slot\s+: slot#\d \(slot id (\d+)\)$", out, re.MULTILINE)]
    assert ids == [theirs["member1"]["id"], theirs["member3"]["id"]]
    assert field(out, "Description") == [theirs["member1"]["description"], theirs["member3"]["description"]]
    assert field(out, "Flags") == ["0x00000001 (CKF_TOKEN_PRESENT)"] * 2


def test_slot_info_on_a_negative_slot(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        11
        -1
        0
        """,
    )
    assert code == 1
    assert re.search(r"^Invalid input: there is no slot#-1 \(slots are 1-\d+\)\.$", out, re.M)


def test_token_info_matches_pkcs11_tool(menu, shared_home, independent):
    code, out = menu(
        shared_home,
        """\
        12
        1
        12
        2
        12
        3
        0
        """,
    )
    assert code == 0, out
    theirs = _tool_slots(independent, shared_home)
    assert field(out, "Label") == ["member1", "member2", "member3"]
    assert field(out, "Serial number") == [theirs[m]["serial"] for m in ("member1", "member2", "member3")]
    assert field(out, "Model") == ["SoftHSM v2"] * 3
    assert all(
        "CKF_TOKEN_INITIALIZED" in flags and "CKF_USER_PIN_INITIALIZED" in flags
        for flags in field(out, "Flags")
    )


def test_token_info_of_the_free_slot_and_a_missing_one(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        12
        4
        12
        99
        @expect BAD_INPUT
        0
        """,
    )
    assert code == 0, out
    assert field(out, "Label") == [""]
    assert field(out, "Serial number") == [""]
    assert "CKF_TOKEN_INITIALIZED" not in field(out, "Flags")[0]
    assert re.search(r"^Invalid input: there is no slot#99 \(slots are 1-\d+\)\.$", out, re.M)


# ---------------------------------------------------------------- 14 Get Slot List, 15 Wait for Slot Event


def test_slot_list_shows_members_first_and_the_free_slot(menu, shared_home, independent):
    code, out = menu(
        shared_home,
        """\
        14
        0
        """,
    )
    assert code == 0, out
    rows = re.findall(r"^(slot#\d+)  +(SoftHSM slot ID 0x[0-9a-f]+) +(yes|no) *(\S*)$", out, re.MULTILINE)
    assert [(r[0], r[3]) for r in rows] == [
        ("slot#1", "member1"),
        ("slot#2", "member2"),
        ("slot#3", "member3"),
        ("slot#4", ""),
    ]
    # every physical slot pkcs11-tool sees, and virtual slots (if any) after them
    table = re.findall(r"^slot#\d+  .*$", out, re.MULTILINE)
    assert table[:4] == [line for line in table if "SoftHSM slot ID" in line]
    assert f"{len(table)} slots." in out
    listed = independent(shared_home, "--list-slots").stdout
    assert len(re.findall(r"^Slot \d+ ", listed, re.MULTILINE)) == 4
    theirs = _tool_slots(independent, shared_home)
    assert [r[1] for r in rows[:3]] == [theirs[m]["description"] for m in ("member1", "member2", "member3")]


def test_slot_list_when_the_library_cannot_start(run_ckdemo, tmp_path):
    """The one failure Get Slot List can meet: a library that will not initialise."""
    conf = tmp_path / "broken-softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'no-such-dir'}\n")
    done = run_ckdemo(
        tmp_path / "home",
        "--module",
        "/usr/lib/softhsm/libsofthsm2.so",
        "run",
        "-",
        input="14\n0\n",
        env={"SOFTHSM2_CONF": str(conf)},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ckdemo: cannot use PKCS#11 library /usr/lib/softhsm/libsofthsm2.so: "
        "C_Initialize returned CKR_GENERAL_ERROR (0x00000005)"
    ]
    no_traceback(done.stdout, done.stderr)


def test_wait_for_slot_event(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        15
        1
        0
        @expect CKR_NO_EVENT
        15
        1
        3601
        @expect BAD_INPUT
        15
        2
        soon
        @expect BAD_INPUT
        0
        """,
    )
    assert code == 0, out
    assert "Status: C_WaitForSlotEvent returned error. (CKR_NO_EVENT 0x00000008)" in out
    assert "Invalid input (3601): choose 0-3600." in out
    assert "Invalid input (soon): a number is needed." in out
    assert summary(out) == "Replay: 3 steps, 3 met their expectation, 0 did not"


# ---------------------------------------------------------------- 98 Options, 99 help, 0 quit


def test_options_toggle_the_menu_display(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        98
        1
        98
        0
        14
        0
        """,
    )
    assert code == 0, out
    assert "(1) Display the menu before every prompt: no" in out  # replay starts without it
    assert "Display the menu before every prompt: yes" in out
    after = out.split("Display the menu before every prompt: yes", 1)[1]
    # from now on the menu comes back before every prompt, with CKDemo's own prompt
    assert after.count("TOKEN FUNCTIONS") == 3
    assert after.count("Enter your choice : ") == 3
    assert "(99 for help)" not in out  # a replay shows CKDemo's own prompt, menu or not


def test_options_out_of_range(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        98
        5
        @expect BAD_INPUT
        98
        x
        @expect BAD_INPUT
        0
        """,
    )
    assert code == 0, out
    assert "Invalid input (5): choose 0-4." in out
    assert "Invalid input (x): a number is needed." in out


def test_help_shows_the_menu_again(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        99
        0
        """,
    )
    assert code == 0, out
    assert out.count("TOKEN FUNCTIONS") == 2
    assert out.count("SCRIPT EXECUTION:") == 2
    assert summary(out) == "Replay: 0 steps, 0 met their expectation, 0 did not"


def test_quit_ends_the_menu_and_nothing_after_it_runs(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        0
        14
        """,
    )
    assert code == 0, out
    assert "Get Slot List" not in out.split("Enter your choice : 0", 1)[1]
    assert "slot#1" not in out


def test_unknown_choice_and_letters_at_the_main_prompt(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        x
        @expect BAD_INPUT
        500
        @expect BAD_INPUT
        70
        @expect CKR_FUNCTION_NOT_SUPPORTED
        0
        """,
    )
    assert code == 0, out
    assert "Invalid input (x)." in out
    assert "Invalid input (500)." in out
    # a Luna-only choice says so, names its CA_ function and never pretends
    assert re.search(r"^Set Domain: .*CA_SetDomain.*$", out, re.MULTILINE)
    assert "Status: Set Domain returned error. (CKR_FUNCTION_NOT_SUPPORTED 0x00000054)" in out


# ---------------------------------------------------------------- PINs never shown


def test_pins_of_a_custom_provision_never_reach_stdout_or_the_transcript(run_ckdemo, provision, tmp_path):
    user, so = "Tour-user-5521", "Tour-so-6632"
    home = provision(tmp_path / "home", "--user-pin", user, "--so-pin", so, "--store-pins")
    transcript = tmp_path / "tour.txt"
    done = run_ckdemo(
        home,
        "run",
        "--transcript",
        str(transcript),
        "-",
        input=dedent("""\
        1
        1
        y
        3
        1
        0
        ${CKDEMO_SO_PIN}
        4
        1
        3
        1
        1
        ${CKDEMO_USER_PIN}
        3
        1
        1
        typed-wrong-pin
        @expect CKR_USER_ALREADY_LOGGED_IN
        0
        """),
    )
    assert done.returncode == 0, done.stdout
    for text in (done.stdout, done.stderr + "****", transcript.read_text()):
        assert_pins_hidden(text, user, so, "typed-wrong-pin")
    assert done.stdout.count("Enter PIN : ****\n") == 3
    assert "Logged in as Security Officer on session 1." in done.stdout
    assert "Logged in as Crypto User on session 1." in done.stdout


def test_mechanism_info_by_row_one(menu, shared_home):
    code, out = menu(
        shared_home,
        """\
        8
        1
        9
        1
        1
        0
        """,
    )
    assert code == 0, out
    first = re.search(r"^\d+ +(0x[0-9A-F]{8})  (CKM_\w+)$", out, re.MULTILINE).groups()
    assert field(out, "Mechanism") == [f"{first[1]} ({first[0]})"]
