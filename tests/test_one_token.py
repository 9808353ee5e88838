"""The HA slot through `ckdemo serve` answers as one token does, for what each application sees
of its own: slot events (each application sees each once, none from before it connected) and
a context-specific login with no operation that needs one (SoftHSM2 2.6.1's answer)."""
from __future__ import annotations

from conftest import USER_PIN, no_traceback, requires_softhsm
from test_serve import RawClient, start_server, stop_cleanly

from ckdemo import codes
from ckdemo.rpc import HANDSHAKE

pytestmark = requires_softhsm

HA_SLOT, CKF_DONT_BLOCK, CKU_CONTEXT_SPECIFIC = 0x5000, 0x1, 2


def connect(served) -> RawClient:
    client = RawClient(served.socket)
    client.ok("C_Initialize", HANDSHAKE, 0, b"\x00")
    return client


def events(client) -> list[str]:
    """Every event waiting for this application, then CKR_NO_EVENT."""
    seen = []
    for _ in range(20):
        reply = client.call("C_WaitForSlotEvent", CKF_DONT_BLOCK)
        if reply.is_error:
            seen.append(codes.ckr_name(reply.ckr))
            return seen
        seen.append(hex(reply.args[0]))
    return seen


def test_each_application_sees_each_slot_event_once_and_none_from_before(
        tmp_path, provision, ckdemo_bin, run_ckdemo):
    home = provision(tmp_path / "home")
    served = start_server(ckdemo_bin, home, None, tmp_path / "serve.log")
    try:
        first, second = connect(served), connect(served)
        assert events(first) == events(second) == ["CKR_NO_EVENT"]
        failed = run_ckdemo(home, "member", "fail", "member2")
        assert failed.returncode == 0, failed.stdout + failed.stderr
        (session,) = first.ok("C_OpenSession", HA_SLOT, 0x6)
        for _ in range(6):  # calls go round the members: one finds member2 failed
            first.ok("C_GenerateRandom", session, 16)
        first.ok("C_CloseSession", session)
        # one member failure is one event on the HA slot, for each application
        assert events(first) == [hex(HA_SLOT), "CKR_NO_EVENT"]
        assert events(second) == [hex(HA_SLOT), "CKR_NO_EVENT"]
        late = connect(served)  # connected after the event: not its own
        assert events(late) == ["CKR_NO_EVENT"]
        for client in (first, second, late):
            client.close()
        restored = run_ckdemo(home, "member", "restore", "member2")
        assert restored.returncode == 0, restored.stdout + restored.stderr
    finally:
        stop_cleanly(served)
    no_traceback(served.log())


def test_a_context_specific_login_without_an_operation_is_operation_not_initialized(
        tmp_path, provision, ckdemo_bin):
    home = provision(tmp_path / "home")
    served = start_server(ckdemo_bin, home, None, tmp_path / "serve.log")
    try:
        client = connect(served)
        (session,) = client.ok("C_OpenSession", HA_SLOT, 0x6)
        for when in ("before login", "after login"):
            reply = client.call("C_Login", session, CKU_CONTEXT_SPECIFIC, USER_PIN.encode())
            assert reply.is_error and codes.ckr_name(reply.ckr) == "CKR_OPERATION_NOT_INITIALIZED", when
            if when == "before login":
                client.ok("C_Login", session, 1, USER_PIN.encode())
        client.close()
    finally:
        stop_cleanly(served)
