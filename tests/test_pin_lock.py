"""Wrong user PINs on the HA slot are counted and lock the PIN, as on a Luna partition.

SoftHSM2 never locks a user PIN (it sets CKF_USER_PIN_COUNT_LOW, never CKF_USER_PIN_LOCKED), so
the HA slot counts itself: in the menu's process (the token checks the PIN) and in `ckdemo serve`
while another application holds the login (the server checks the PIN against its kept HMAC)
alike, in one count per home that survives a restart.
"""

from __future__ import annotations


from conftest import SO_PIN, USER_PIN, no_traceback, requires_softhsm
from support import private_workspace
from test_serve import RawClient, start_server, stop_cleanly

from ckdemo import codes
from ckdemo.rpc import HANDSHAKE

pytestmark = requires_softhsm

CKU_SO, CKU_USER = 0, 1
HA_SLOT = 0x5000
LOW, FINAL, LOCKED = 0x10000, 0x20000, 0x40000


def pin_flags(flags: int) -> set[str]:
    return {
        name for bit, name in ((LOW, "COUNT_LOW"), (FINAL, "FINAL_TRY"), (LOCKED, "LOCKED")) if flags & bit
    }


def answer(call, *args) -> str:
    try:
        call(*args)
    except codes.CKRError as error:
        return error.name
    return "CKR_OK"


def limit_to(home, limit: int) -> None:
    from ckdemo.config.chrystoki import ChrystokiConf
    from ckdemo.provision import CKDEMO_SECTION, CONFIG_NAME

    conf = ChrystokiConf.load(home / CONFIG_NAME)
    conf.set(CKDEMO_SECTION, "FailedLoginLimit", str(limit))
    conf.save(home / CONFIG_NAME)


# ---- in this process: the HA group itself (HA Login of the menu goes here) ----------------------
def test_three_wrong_pins_lock_the_ha_slot_and_the_sos_init_pin_unlocks_it(tmp_path):
    home, workspace, _ = private_workspace(tmp_path, 2)
    limit_to(home, 3)
    from ckdemo.settings import load_settings

    group = workspace.groups[0]
    group.pin_lock.limit = load_settings(home).failed_login_limit()
    assert group.pin_lock.limit == 3
    group.ha_init(SO_PIN)

    seen = []
    for _ in range(3):
        seen.append((answer(group.login, CKU_USER, "0000"), pin_flags(group.token_info().flags)))
    assert seen == [
        ("CKR_PIN_INCORRECT", {"COUNT_LOW"}),
        ("CKR_PIN_INCORRECT", {"COUNT_LOW", "FINAL_TRY"}),
        ("CKR_PIN_INCORRECT", {"COUNT_LOW", "LOCKED"}),
    ]
    assert answer(group.login, CKU_USER, USER_PIN) == "CKR_PIN_LOCKED"  # the right PIN too
    assert "CKF_USER_PIN_LOCKED" in group.token_info().flag_names

    # the SO sets the user PIN again (C_InitPIN on the HA slot): unlocked
    session = group.open_session()
    session.login(CKU_SO, SO_PIN)
    session.init_pin(USER_PIN)
    session.logout()
    assert pin_flags(group.token_info().flags) == set()
    assert answer(group.login, CKU_USER, USER_PIN) == "CKR_OK"
    # a right PIN resets the count: two wrong ones later are not a lock
    group.logout()
    assert [answer(group.login, CKU_USER, "0000") for _ in range(2)] == ["CKR_PIN_INCORRECT"] * 2
    assert answer(group.login, CKU_USER, USER_PIN) == "CKR_OK"
    assert group.pin_lock.failures == 0
    session.close()


def test_a_wrong_limit_in_the_file_is_one_line(tmp_path, provision, run_ckdemo):
    home = provision(tmp_path / "home")
    limit_to(home, -4)
    done = run_ckdemo(home, "hagroup", "show")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "FailedLoginLimit = '-4'" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    no_traceback(done.stdout, done.stderr)


# ---- through ckdemo serve: the guesser is a second application ---------------------------------
def connect(served):
    client = RawClient(served.socket)
    client.ok("C_Initialize", HANDSHAKE, 0, b"\x00")
    (session,) = client.ok("C_OpenSession", HA_SLOT, 0x6)
    return client, session


def login(client, session, pin: str) -> str:
    reply = client.call("C_Login", session, CKU_USER, pin.encode())
    return codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK"


def token_flags(client) -> set[str]:
    (info,) = client.ok("C_GetTokenInfo", HA_SLOT)
    return pin_flags(info.flags)


def test_guessing_beside_a_logged_in_application_locks_after_the_limit_for_everyone(
    tmp_path, provision, ckdemo_bin, run_ckdemo
):
    home = provision(tmp_path / "home")
    limit_to(home, 4)
    served = start_server(ckdemo_bin, home, None, tmp_path / "serve.log")
    try:
        holder, held = connect(served)
        assert login(holder, held, USER_PIN) == "CKR_OK"  # the real login, checked by the token
        guesser, guessing = connect(served)
        answers = [login(guesser, guessing, pin) for pin in ("0000", "1111", "2222", "3333", "4444")]
        assert answers == ["CKR_PIN_INCORRECT"] * 4 + ["CKR_PIN_LOCKED"]
        assert login(guesser, guessing, USER_PIN) == "CKR_PIN_LOCKED"  # the kept HMAC is not asked
        assert token_flags(guesser) == {"COUNT_LOW", "LOCKED"}
        # the application already logged in keeps working (a token keeps open sessions too)
        assert holder.ok("C_GenerateRandom", held, 16)
        holder.close()
        guesser.close()
    finally:
        stop_cleanly(served)

    # the lock is the home's: a new server, and the menu's process, see it
    served = start_server(ckdemo_bin, home, None, tmp_path / "serve2.log")
    try:
        client, session = connect(served)
        assert login(client, session, USER_PIN) == "CKR_PIN_LOCKED"
        wrong_so = run_ckdemo(home, "hagroup", "unlockpin", "--so-pin", "0000")
        assert wrong_so.returncode == 2 and "CKR_PIN_INCORRECT" in wrong_so.stderr
        unlocked = run_ckdemo(home, "hagroup", "unlockpin", "--so-pin", SO_PIN)
        assert unlocked.returncode == 0, unlocked.stderr
        assert "unlocked (it had 4 wrong PIN(s) in a row)" in unlocked.stdout
        assert token_flags(client) == set()
        assert login(client, session, USER_PIN) == "CKR_OK"
        client.close()
    finally:
        stop_cleanly(served)
    for text in (served.log(), unlocked.stdout, unlocked.stderr):
        assert SO_PIN not in text and "0000" not in text
