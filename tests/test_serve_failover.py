"""Failover with real processes: members are `p11-kit server` processes (`init --remote`),
`ckdemo serve` serves the HA slot, and an application process signs in a loop through Debian's
p11-kit-client.so while another process runs `ckdemo member kill member1` and later `ckdemo member
restart member1`. The application sees no failed signature; HA Status, read through the control
channel by a third process (`ckdemo hagroup status`), shows CKR_DEVICE_ERROR (as Luna documents it), then
CKR_TOKEN_NOT_PRESENT, then CKR_OK once a call after the interval X has recovered member1.

The RSA-2048 key pair is generated on the HA slot by pkcs11-tool through the server (replicated
to every member over ckdemo's own RPC client, which carries AES key wrap), then read back straight
from each member's token.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SOFTHSM_LIB, USER_PIN, clean_env, no_traceback, requires_softhsm, servers_of, softhsm_env
from rpc_capture import P11KIT_CLIENT, tools_missing
from test_serve import start_server, stop_server

pytestmark = [
    requires_softhsm,
    pytest.mark.skipif(
        bool(tools_missing()) or shutil.which("p11-kit") is None,
        reason=str(tools_missing() or "p11-kit is not installed"),
    ),
]

KEY_ID, KEY_LABEL, TOKEN = "f1", "failover-key", "ckdemo-ha"
DEADLINE_S = 60  # the whole scenario, from the first signature to the last

SIGNER = '''
"""Signs in a loop with an HA key through p11-kit-client.so until the STOP file exists.
Prints `progress OK FAILED` every 0.1 s, `FAILED <error>` per failed signature, `done OK FAILED`."""
import sys, time
from pathlib import Path
import pkcs11
from pkcs11 import Mechanism, ObjectClass

module, label, pin, key_id, stop = sys.argv[1:6]
token = pkcs11.lib(module).get_token(token_label=label)
ok = failed = 0
with token.open(user_pin=pin) as session:
    key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=bytes.fromhex(key_id))
    last = time.monotonic()
    while not Path(stop).exists():
        try:
            if len(key.sign(b"survive a member kill", mechanism=Mechanism.SHA256_RSA_PKCS)) != 256:
                raise ValueError("signature of the wrong length")
            ok += 1
        except Exception as error:
            failed += 1
            print(f"FAILED {type(error).__name__}: {error}", flush=True)
        if time.monotonic() - last > 0.1:
            print(f"progress {ok} {failed}", flush=True)
            last = time.monotonic()
print(f"done {ok} {failed}", flush=True)
'''


class Signer:
    """The application: a child process of its own, python-pkcs11 on p11-kit-client.so."""

    def __init__(self, folder: Path, socket_path: Path):
        self.stop_file, self.output = folder / "stop-signing", folder / "signer.out"
        script = folder / "signer.py"
        script.write_text(SIGNER)
        with open(self.output, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(script), P11KIT_CLIENT, TOKEN, USER_PIN, KEY_ID, str(self.stop_file)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=clean_env(P11_KIT_SERVER_ADDRESS=f"unix:path={socket_path}"),
            )

    def counts(self) -> tuple[int, int]:
        found = re.findall(r"^(?:progress|done) (\d+) (\d+)$", self.output.read_text(), re.MULTILINE)
        return (int(found[-1][0]), int(found[-1][1])) if found else (0, 0)

    def wait_for(self, signatures: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.counts()[0] < signatures:
            assert self.process.poll() is None, f"the signer ended:\n{self.output.read_text()}"
            assert time.monotonic() < deadline, (
                f"{signatures} signatures not reached:\n{self.output.read_text()}"
            )
            time.sleep(0.05)

    def finish(self) -> str:
        self.stop_file.touch()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            pytest.fail(f"the signer did not stop:\n{self.output.read_text()}")
        return self.output.read_text()


def member_status(text: str) -> dict[str, str]:
    return dict(re.findall(r"^   HSM (\S+) +- (CKR_\w+)$", text, re.MULTILINE))


@pytest.fixture
def remote_served(tmp_path, provision, run_ckdemo, ckdemo_bin):
    home = provision(tmp_path / "home", "--remote")
    assert run_ckdemo(home, "hagroup", "interval", "--seconds", "1").returncode == 0
    served = start_server(ckdemo_bin, home, None, tmp_path / "serve.log")
    yield served
    try:
        code = stop_server(served)
        no_traceback(served.log())
        assert code == 0, served.log()
    finally:
        run_ckdemo(home, "member", "kill", "all")
        for pid in servers_of(home):  # whatever a failed test left behind
            os.kill(pid, signal.SIGKILL)


def generate_key_on_every_member(served) -> None:
    """`pkcs11-tool --keypairgen` on the HA slot through p11-kit-client.so, then the key read
    back straight from each member's token (SoftHSM2, not through ckdemo)."""
    done = served.tool(
        "--login",
        "--pin",
        USER_PIN,
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--id",
        KEY_ID,
        "--label",
        KEY_LABEL,
    )
    assert done.returncode == 0, done.stderr.decode()
    for member in ("member1", "member2", "member3"):
        listed = subprocess.run(
            [
                "pkcs11-tool",
                "--module",
                SOFTHSM_LIB,
                "--token-label",
                member,
                "--login",
                "--pin",
                USER_PIN,
                "-O",
                "--id",
                KEY_ID,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env=softhsm_env(served.home),
        )
        assert listed.stdout.count(f"label:      {KEY_LABEL}") == 2, (member, listed.stdout, listed.stderr)


def test_an_application_signing_survives_a_member_kill_and_restart(remote_served, run_ckdemo, tmp_path):
    served, home = remote_served, remote_served.home
    generate_key_on_every_member(served)

    def ckdemo(*args: str) -> subprocess.CompletedProcess:
        done = run_ckdemo(home, *args)
        no_traceback(done.stdout, done.stderr)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    serials = list(member_status(ckdemo("hagroup", "status").stdout))
    assert len(serials) == 3
    member1 = serials[0]
    started = time.monotonic()
    signer = Signer(tmp_path, served.socket)
    try:
        signer.wait_for(100)

        # through the running serve (its control channel), which says what it did
        assert ckdemo("member", "kill", "member1").stdout.strip() == "member1: server process killed"
        at_kill = signer.counts()[0]
        first = member_status(ckdemo("hagroup", "status").stdout)
        assert first == {member1: "CKR_DEVICE_ERROR", serials[1]: "CKR_OK", serials[2]: "CKR_OK"}
        assert member_status(ckdemo("hagroup", "status").stdout)[member1] == "CKR_TOKEN_NOT_PRESENT"
        signer.wait_for(at_kill + 300)  # signing goes on over member2 and member3
        # at least one recovery attempt on the dead member, inside a call (interval 1 s)
        served.wait_for_log(f"member {member1} recovery-attempt: #1 failed")
        assert member_status(ckdemo("hagroup", "status").stdout)[member1] == "CKR_TOKEN_NOT_PRESENT"

        assert ckdemo("member", "restart", "member1").stdout.startswith("member1: restarted")
        deadline = time.monotonic() + 15
        while (now := member_status(ckdemo("hagroup", "status").stdout))[member1] != "CKR_OK":
            assert now[member1] == "CKR_TOKEN_NOT_PRESENT", now
            assert time.monotonic() < deadline, f"member1 not recovered:\n{served.log()}"
            time.sleep(0.3)
        signer.wait_for(signer.counts()[0] + 300)
    finally:
        output = signer.finish()
    elapsed = time.monotonic() - started

    no_traceback(output)
    signed, failed = signer.counts()
    assert "FAILED" not in output and failed == 0, output
    assert output.rstrip().endswith(f"done {signed} 0")
    assert signed >= 700
    assert elapsed < DEADLINE_S, f"the scenario took {elapsed:.1f} s"
    log = served.log()
    assert f"member {member1} failed: C_" in log, log
    assert re.search(rf"member {member1} recovery-attempt: #1 failed", log), log
    assert f"member {member1} recovered" in log, log
