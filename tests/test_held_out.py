"""A member that comes back is never shown CKR_OK while it lacks an object the other members have:
what recovery cannot copy to it holds it out of service, with the reason in the HA log, and it
comes back once the others no longer hold anything it cannot get."""
from __future__ import annotations

import subprocess
import sys

from conftest import SOFTHSM_LIB, USER_PIN, requires_softhsm, softhsm_env
from test_one_token import HA_SLOT, connect
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


def status(run_ckdemo, home) -> dict[str, str]:
    out = run_ckdemo(home, "hagroup", "status", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    import json
    return {m["label"]: m["status"] for m in json.loads(out.stdout)["groups"][0]["members"]}


def test_a_member_that_cannot_get_an_object_the_others_have_is_held_out(tmp_path, provision, run_ckdemo, ckdemo_bin):
    home = provision(tmp_path / "home")
    done = subprocess.run([sys.executable, "-c", FOREIGN, SOFTHSM_LIB, USER_PIN, "member2", "member3"],
                          capture_output=True, text=True, timeout=60, env=softhsm_env(home))
    assert done.returncode == 0, done.stderr
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
        assert shown["member1"] != "CKR_OK" and shown["member2"] == shown["member3"] == "CKR_OK", (shown, recovered.stdout)
        assert "held out of service: 1 object(s) the other members have could not be copied" in served.log()
        (foreign,) = client.find(session)  # the application destroys it: nothing left it cannot get
        client.ok("C_DestroyObject", session, foreign)
        client.close()
        assert run_ckdemo(home, "hagroup", "recover").returncode == 0
        assert set(status(run_ckdemo, home).values()) == {"CKR_OK"}
    finally:
        stop_cleanly(served)
