"""A member that comes back is never shown CKR_OK while it lacks an object the other members have:
what recovery cannot copy to it holds it out of service, with the reason in the HA log, and it
comes back once the others no longer hold anything it cannot get."""

from __future__ import annotations

import subprocess
import sys

from conftest import SOFTHSM_LIB, USER_PIN, requires_softhsm, softhsm_env
from test_one_token import HA_SLOT, connect

from ckdemo.rpc import Attribute, AttributeSize
from test_serve import start_server, stop_cleanly

pytestmark = requires_softhsm

# a key made straight on two member tokens, outside ckdemo: unextractable, so no one can copy it
FOREIGN = """
import sys, pkcs11
from pkcs11 import Attribute, KeyType
lib = pkcs11.lib(sys.argv[1])
for label in sys.argv[3:]:
    with lib.get_token(token_label=label).open(rw=True, user_pin=sys.argv[2]) as session:
        session.generate_key(KeyType.AES, 128, label="foreign", id=b"\\xf0", store=True,
                             template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True})
"""


def made_outside_ckdemo(home, script: str, *members: str) -> str:
    """SCRIPT (python-pkcs11, user PIN only) run straight on those member tokens: what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", script, SOFTHSM_LIB, USER_PIN, *members],
        capture_output=True,
        text=True,
        timeout=120,
        env=softhsm_env(home),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def status(run_ckdemo, home) -> dict[str, str]:
    out = run_ckdemo(home, "hagroup", "status", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    import json

    return {m["label"]: m["status"] for m in json.loads(out.stdout)["groups"][0]["members"]}


def test_a_member_that_cannot_get_an_object_the_others_have_is_held_out(
    tmp_path, provision, run_ckdemo, ckdemo_bin
):
    home = provision(tmp_path / "home")
    made_outside_ckdemo(home, FOREIGN, "member2", "member3")
    served = start_server(ckdemo_bin, home, None, tmp_path / "serve.log")
    try:
        client = connect(served)
        (session,) = client.ok("C_OpenSession", HA_SLOT, 0x6)
        client.ok("C_Login", session, 1, USER_PIN.encode())
        assert run_ckdemo(home, "member", "fail", "member1").returncode == 0
        for _ in range(4):  # every member has its turn: member1 is found failed
            client.ok("C_GenerateRandom", session, 8)
        assert run_ckdemo(home, "member", "restore", "member1").returncode == 0
        recovered = run_ckdemo(home, "hagroup", "recover")
        for _ in range(6):  # the application goes on on the other members
            client.ok("C_GenerateRandom", session, 8)
        shown = status(run_ckdemo, home)
        assert shown["member1"] != "CKR_OK" and shown["member2"] == shown["member3"] == "CKR_OK", (
            shown,
            recovered.stdout,
        )
        served.wait_for_log("held out of service: 1 object(s) the other members have could not be copied")
        (foreign,) = client.find(session)  # the application destroys it: nothing left it cannot get
        client.ok("C_DestroyObject", session, foreign)
        client.close()
        assert run_ckdemo(home, "hagroup", "recover").returncode == 0
        assert set(status(run_ckdemo, home).values()) == {"CKR_OK"}
    finally:
        stop_cleanly(served)


FOREIGN_DATA = """
import sys, pkcs11
from pkcs11 import Attribute, ObjectClass
lib = pkcs11.lib(sys.argv[1])
for label in sys.argv[3:]:
    with lib.get_token(token_label=label).open(rw=True, user_pin=sys.argv[2]) as session:
        session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True,
                               Attribute.PRIVATE: False, Attribute.LABEL: "short", Attribute.VALUE: b"v"})
"""


def test_an_object_a_member_lacks_is_read_from_another_with_no_login(tmp_path, provision, ckdemo_bin):
    """A member that came back short of a public object (found by the search on another member)
    answered a read with no login CKR_USER_NOT_LOGGED_IN, as if the object were private: the
    differential test's first search of a sequence after a member hung (seed 1400040). The read
    goes to a member that has it."""
    home = provision(tmp_path / "home")
    made_outside_ckdemo(home, FOREIGN_DATA, "member2", "member3")
    served = start_server(ckdemo_bin, home, None, tmp_path / "serve.log")
    try:
        client = connect(served)
        (session,) = client.ok("C_OpenSession", HA_SLOT, 0x4)
        found = ()
        for _ in range(6):  # a search served by member2 or member3 finds it (member1 lacks it)
            found = found or client.find(session, Attribute(0x3, b"short"))
        assert len(found) == 1
        for _ in range(9):  # whichever member reads: one that has it answers
            values, _ = client.ok("C_GetAttributeValue", session, found[0], (AttributeSize(0x11, 8),))
            assert values[0].value == b"v"
        client.close()
    finally:
        stop_cleanly(served)
