"""ckdemo's own p11-kit RPC client (members/rpcclient.py, rpcslot.py) against the real
`p11-kit server` 0.24.1 of Debian 12, SoftHSM2 behind it; no fake server. What it carries is
checked by independent parties: pkcs11-tool through Debian's p11-kit-client.so on each member's
socket, OpenSSL for AES-CBC, pyca/cryptography for RSA-PSS signatures.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

from conftest import USER_PIN, no_traceback, requires_softhsm
from rpc_capture import P11KIT_CLIENT

from ckdemo.codes import CKR_DEVICE_ERROR, CKR_MECHANISM_INVALID, CKR_SESSION_HANDLE_INVALID, CKRError
from ckdemo.members.remote import MemberServer
from ckdemo.members.rpcslot import RemoteSlot
from ckdemo.model import (
    CKA_CLASS,
    CKA_LABEL,
    CKA_MODULUS,
    CKA_PUBLIC_EXPONENT,
    CKG_MGF1_SHA256,
    CKM_SHA256,
    CKO_PRIVATE_KEY,
    CKU_USER,
    GCMParam,
    KeySpec,
    PSSParam,
)

pytestmark = [
    requires_softhsm,
    pytest.mark.skipif(shutil.which("p11-kit") is None, reason="p11-kit is not installed"),
]

CLIENT = P11KIT_CLIENT
MEMBERS = ("member1", "member2", "member3")
CKM_SHA256_RSA_PKCS_PSS = 0x43
CKM_AES_GCM = 0x1087


@pytest.fixture
def remote_home(remote_home, run_ckdemo):
    """conftest's remote home, with its servers kept running between runs (`member serve`)."""
    assert run_ckdemo(remote_home, "member", "serve").returncode == 0
    return remote_home


def server(home: Path, label: str) -> MemberServer:
    return MemberServer(
        label,
        home / "run" / f"{label}.sock",
        home / "run",
        "/usr/lib/softhsm/libsofthsm2.so",
        str(home / "softhsm2.conf"),
    )


def serial(home: Path, label: str) -> str:
    serials = re.search(r"MemberSerials = ([0-9a-f,]+);", (home / "Chrystoki.conf").read_text()).group(1)
    return dict(zip(MEMBERS, serials.split(",")))[label]


def objects_seen_by_the_c_client(home: Path, label: str) -> str:
    """pkcs11-tool through Debian's p11-kit-client.so on the member's socket."""
    done = subprocess.run(
        ["pkcs11-tool", "--module", CLIENT, "-O", "--login", "--pin", USER_PIN],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "P11_KIT_SERVER_ADDRESS": f"unix:path={home / 'run' / (label + '.sock')}"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_ha_key_generation_over_remote_members_reaches_every_member(remote_home, run_ckdemo):
    """45 on the HA slot with init --remote: the key pair is generated on one member and
    replicated (C_WrapKey/C_UnwrapKey with CKM_AES_KEY_WRAP_PAD over the socket) to the others;
    the C client on each member's socket lists the pair; the HA slot signs with it."""
    script = "\n".join(
        [
            "51",
            "5",
            "${CKDEMO_USER_PIN}",
            "1",
            "5",
            "y",
            "45",
            "${LAST_SESSION}",
            "1",
            "rpc-ha-key",
            "y",
            "y",
            "n",
            "45",
            "${LAST_SESSION}",
            "7",
            "rpc-ha-aes",
            "y",
            "y",
            "n",
            "42",
            "${LAST_SESSION}",
            "${LAST_PRIVATE_KEY}",
            "1",
            "signed over RPC",
            '""',
            "52",
            "5",
            "0",
            "",
        ]
    )
    done = run_ckdemo(remote_home, "run", "-", input=script)
    assert done.returncode == 0, done.stdout
    no_traceback(done.stdout, done.stderr)
    assert re.search(r"replicated: 2 object\(s\) to 2 member\(s\)", done.stdout)
    assert re.search(r"replicated: 1 object\(s\) to 2 member\(s\)", done.stdout)
    assert re.findall(r"HSM \w+ +- (CKR_\w+)", done.stdout) == ["CKR_OK"] * 3
    for label in MEMBERS:
        listing = objects_seen_by_the_c_client(remote_home, label)
        kinds = re.findall(
            r"^(\w+ Key Object); (RSA|AES|Secret)[^\n]*\n\s+label:\s+(rpc-ha-\w+)", listing, re.M
        )
        assert sorted(kinds) == [
            ("Private Key Object", "RSA", "rpc-ha-key"),
            ("Public Key Object", "RSA", "rpc-ha-key"),
            ("Secret Key Object", "AES", "rpc-ha-aes"),
        ], (label, listing)


def test_aes_cbc_pad_through_the_ha_slot_over_remote_members(remote_home, run_ckdemo, tmp_path):
    """40/41 (file encrypt/decrypt, AES-CBC-PAD) on the HA slot, all members remote: the
    ciphertext is OpenSSL's, and decrypting it gives the file back."""
    plain = tmp_path / "plain.bin"
    plain.write_bytes(os.urandom(70_000))  # more than one 64 KiB chunk: several updates
    iv = "000102030405060708090a0b0c0d0e0f"
    script = "\n".join(
        [
            "51",
            "5",
            "${CKDEMO_USER_PIN}",
            "1",
            "5",
            "y",
            "20",
            "${LAST_SESSION}",
            "2",
            "CKA_KEY_TYPE=aes",
            "CKA_VALUE=hex:" + "5a" * 32,
            "CKA_ENCRYPT=true",
            "CKA_DECRYPT=true",
            "CKA_TOKEN=false",
            "CKA_LABEL=rpc-cbc",
            ".",
            "40",
            "${LAST_SESSION}",
            "${LAST_OBJECT}",
            "1",
            str(plain),
            str(tmp_path / "c.bin"),
            iv,
            "41",
            "${LAST_SESSION}",
            "${LAST_OBJECT}",
            "1",
            str(tmp_path / "c.bin"),
            str(tmp_path / "back.bin"),
            iv,
            "52",
            "5",
            "0",
            "",
        ]
    )
    done = run_ckdemo(remote_home, "run", "-", input=script)
    assert done.returncode == 0, done.stdout
    no_traceback(done.stdout, done.stderr)
    expected = subprocess.run(
        ["openssl", "enc", "-aes-256-cbc", "-K", "5a" * 32, "-iv", iv, "-in", str(plain)],
        capture_output=True,
        check=True,
    ).stdout
    assert (tmp_path / "c.bin").read_bytes() == expected
    assert (tmp_path / "back.bin").read_bytes() == plain.read_bytes()
    assert re.findall(r"HSM \w+ +- (CKR_\w+)", done.stdout) == ["CKR_OK"] * 3


def test_sha256_rsa_pss_travels_as_the_native_struct_and_gcm_is_refused(remote_home):
    """CKM_SHA256_RSA_PKCS_PSS has no encoder in 0.24.1: its CK_RSA_PKCS_PSS_PARAMS goes as the
    byte-array parameter and the server hands it to the token; the signature verifies with
    pyca/cryptography. AES-GCM's parameter holds pointers: refused before the socket, the
    transport named, and the connection stays usable."""
    slot = RemoteSlot(server(remote_home, "member2"), 5)
    session = slot.open_session()
    session.login(CKU_USER, USER_PIN)
    public, private = session.generate(KeySpec("rsa", 2048, "rpc-pss", b"rpc-pss", token=False))
    values = session.get_attributes(public, [CKA_MODULUS, CKA_PUBLIC_EXPONENT])
    assert session.get_attributes(private, [CKA_CLASS, CKA_LABEL]) == {
        CKA_CLASS: CKO_PRIVATE_KEY,
        CKA_LABEL: "rpc-pss",
    }
    param = PSSParam(CKM_SHA256, CKG_MGF1_SHA256, 32)
    signature = session.sign(private, CKM_SHA256_RSA_PKCS_PSS, b"flat bytes", param)
    key = RSAPublicNumbers(
        int.from_bytes(values[CKA_PUBLIC_EXPONENT], "big"), int.from_bytes(values[CKA_MODULUS], "big")
    ).public_key()
    key.verify(signature, b"flat bytes", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    session.verify(public, CKM_SHA256_RSA_PKCS_PSS, b"flat bytes", signature, param)
    with pytest.raises(CKRError) as refused:
        session.encrypt(public, CKM_AES_GCM, b"x", GCMParam(b"\0" * 12))
    assert refused.value.ckr == CKR_MECHANISM_INVALID
    assert "p11-kit RPC 0.24" in refused.value.detail and "pointers" in refused.value.detail
    assert len(session.generate_random(32)) == 32  # still connected
    slot.connection.close()


def test_a_sigkilled_member_server_is_a_device_failure_until_reconnect(remote_home):
    """SIGKILL to the server's process group: every call on the member answers CKR_DEVICE_ERROR
    (also once the server runs again: its old connection is gone); reconnect() finds the token by
    serial on a new connection, and the sessions from before are void there."""
    member = server(remote_home, "member1")
    slot = RemoteSlot(member, 5)
    session = slot.open_session()
    session.login(CKU_USER, USER_PIN)
    assert len(session.generate_random(16)) == 16
    old_pid = member.pid()
    assert member.kill()
    for call in (lambda: session.generate_random(16), slot.token_info, slot.open_session):
        with pytest.raises(CKRError) as failed:
            call()
        assert failed.value.ckr == CKR_DEVICE_ERROR
    member.serve()
    assert member.pid() != old_pid
    with pytest.raises(CKRError) as still:
        slot.slot_info()
    assert still.value.ckr == CKR_DEVICE_ERROR  # until the slot reconnects, as p11-kit's client
    slot.reconnect(serial(remote_home, "member1"))
    assert slot.token_info().serial_number == serial(remote_home, "member1")
    with pytest.raises(CKRError) as void:
        session.generate_random(16)  # a session of the old connection
    assert void.value.ckr == CKR_DEVICE_ERROR
    fresh = slot.open_session()
    fresh.login(CKU_USER, USER_PIN)
    assert len(fresh.generate_random(16)) == 16
    with pytest.raises(CKRError) as unknown:
        slot.connection.call("C_GenerateRandom", fresh.handle + 1000, 4)
    assert unknown.value.ckr == CKR_SESSION_HANDLE_INVALID  # the token's own answer, not ours
    slot.connection.close()


def test_a_stopped_server_fails_the_call_within_member_timeout(remote_home):
    """SIGSTOP: the server keeps its socket and never answers. The socket's deadline ends the call
    with CKR_DEVICE_ERROR after MemberTimeout (no worker thread), later calls fail at once, and
    after SIGCONT a reconnect brings the member back."""
    member = server(remote_home, "member3")
    slot = RemoteSlot(member, 0.8)
    session = slot.open_session()
    assert member.hang()
    try:
        started = time.monotonic()
        with pytest.raises(CKRError) as hung:
            session.generate_random(8)
        took = time.monotonic() - started
        assert hung.value.ckr == CKR_DEVICE_ERROR
        assert "no answer from member member3 within 0.8 s" in hung.value.detail
        assert 0.7 <= took < 1.5, took
        started = time.monotonic()
        with pytest.raises(CKRError):
            slot.token_info()
        assert time.monotonic() - started < 0.1  # the connection is gone: no second wait
        started = time.monotonic()
        with pytest.raises(CKRError) as again:  # a new connection gets no version byte either
            slot.reconnect(serial(remote_home, "member3"))
        assert again.value.ckr == CKR_DEVICE_ERROR and time.monotonic() - started < 1.5
    finally:
        member.resume()
    slot.reconnect(serial(remote_home, "member3"))
    assert len(slot.open_session().generate_random(8)) == 8
    slot.connection.close()


def test_a_quick_call_a_stopped_member_never_answered_is_given_up_as_its_known_quick_calls(remote_home):
    """A member that answers quick calls (here C_GenerateRandom, often enough to know its usual
    time) is stopped; a quick call it has not answered yet (a new application's first
    C_GetMechanismList) waits as long as its known quick calls, at least MemberHedgeFloor, not
    MemberTimeout (it waited 20 s)."""
    member = server(remote_home, "member2")
    slot = RemoteSlot(member, 20.0, 0.3)
    session = slot.open_session()
    for _ in range(4):
        session.generate_random(8)
    assert member.hang()
    try:
        started = time.monotonic()
        with pytest.raises(CKRError) as late:
            slot.mechanisms()
        took = time.monotonic() - started
        assert late.value.ckr == CKR_DEVICE_ERROR
        assert "C_GetMechanismList within 0.3 s (no answer to it yet)" in late.value.detail
        assert took < 2.0, took
    finally:
        member.resume()
        slot.connection.close()


def test_a_slow_member_is_passed_over_and_asked_again_once_it_answers_on_time(remote_home, monkeypatch):
    """member2's server stopped 200 ms out of every 220 (an HSM that stalls and still answers):
    the HA slot passes it over for the call it was slow at, but for a probe now and then, so few
    of the application's calls wait for it (a third of them did); once it answers on time again,
    it takes its share back."""
    from ckdemo.ha import failover
    from ckdemo.harness import build_workspace
    from ckdemo.lab.member_faults import slowdown
    from ckdemo.settings import load_settings

    group = build_workspace(load_settings(remote_home)).groups[0]
    group.login(CKU_USER, USER_PIN)
    session = group.open_session()
    member2 = next(m for m in group.members if m.label == "member2")

    def calls(count: int) -> tuple[int, float]:
        """(calls that waited 100 ms or more, member2's share of the calls): an application
        making a call every 5 ms (back to back, every call would fit in one 20 ms run)"""
        served, waited = member2.calls, 0
        for _ in range(count):
            started = time.monotonic()
            session.generate_random(8)
            waited += time.monotonic() - started >= 0.1
            time.sleep(0.005)
        return waited, (member2.calls - served) / count

    def slowed(count: int) -> int:
        slow = slowdown(server(remote_home, "member2"), 200).start()
        try:
            return calls(count)[0]
        finally:
            slow.stop()

    calls(30)  # each member's usual time
    passed_over = slowed(240)
    assert passed_over <= 8, passed_over
    assert calls(300)[1] > 0.2  # asked again, found quick: back in the rotation
    monkeypatch.setattr(failover, "SLOW_FLOOR_S", float("inf"))  # plain round robin
    assert slowed(90) >= 2 * passed_over + 6  # (about one call in three on member2 waits)


def test_a_recovery_lets_the_call_a_member_was_given_up_on_land_first(remote_home, monkeypatch):
    """A member given up in the middle of a long call (an RSA-4096 key pair, past its deadline)
    still makes it: the server's child carries it out, then finds its client gone. Reconnecting
    (a recovery) waits until that child has ended, so the key it made is on the token before
    the member is compared and brought up to date (else it landed after, and the member held
    the key it made and the group's copy: a duplicate)."""
    from ckdemo.members import rpcslot

    monkeypatch.setattr(rpcslot, "LATE_CALL_WAIT_S", 120.0)  # (a loaded machine: as long as it takes)
    member = server(remote_home, "member2")
    slot = RemoteSlot(member, 0.2)
    session = slot.open_session()
    session.login(CKU_USER, USER_PIN)
    child = slot._child
    assert child is not None and not member.ended(child)
    with pytest.raises(CKRError) as late:
        session.generate(KeySpec("rsa", 4096, "late-pair", b"late-pair"))
    assert late.value.ckr == CKR_DEVICE_ERROR and "within 0.2 s" in late.value.detail
    slot.reconnect(serial(remote_home, "member2"))
    assert member.ended(child)  # the late key pair made before reconnect returned
    slot.connection.close()


def test_the_keys_tour_over_remote_members_skips_ecdh_with_the_reason(remote_home, run_ckdemo, tmp_path):
    """scripts/keys-tour (member 1's slot, here a remote member) runs green: the two ECDH
    derivations, whose public data the transport cannot carry, are skipped and say why; the JUnit
    report marks them skipped, not failed."""
    report = tmp_path / "keys-tour.xml"
    done = run_ckdemo(remote_home, "run", "keys-tour", "--junit", str(report), cwd=remote_home.parent)
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout[-3000:]
    skipped = re.findall(r"^SKIPPED line \d+: choice (\d+) \((.+?)\): (.*)$", done.stdout, re.MULTILINE)
    assert [(choice, title) for choice, title, _ in skipped] == [("63", "Derive Key")] * 2
    assert all("ECDH public data" in why and "p11-kit RPC 0.24" in why for _, _, why in skipped)
    assert done.stdout.count("(skipped, not failed: p11-kit RPC 0.24") == 2
    assert re.search(r"(?m)^Replay: \d+ steps, \d+ met their expectation, 0 did not, 2 skipped", done.stdout)
    suite = ET.parse(report).getroot()
    assert (suite.get("failures"), suite.get("skipped")) == ("0", "2")
    assert [c.get("name") for c in suite.iter("testcase") if c.find("skipped") is not None] == [
        "63 Derive Key #1",
        "63 Derive Key #2",
    ]


def test_the_crypto_tour_on_the_ha_slot_over_remote_members(remote_home, run_ckdemo):
    """scripts/crypto-tour on the HA slot, every member remote, runs green: every step that works
    on local members works; the AES-GCM encryption the transport cannot carry is skipped with the
    transport named, and the three steps built on its file (@needs-previous) with it."""
    done = run_ckdemo(remote_home, "run", "crypto-tour", cwd=remote_home.parent)
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "FAILED" not in done.stdout
    skipped = re.findall(r"^SKIPPED line (\d+): choice (\d+) \(.+?\): (.*)$", done.stdout, re.MULTILINE)
    script = (
        (Path(__file__).resolve().parent.parent / "ckdemo" / "scripts_data" / "crypto-tour")
        .read_text()
        .splitlines()
    )

    def step_comment(line: int) -> str:  # the comment block right above the step's choice line
        block = []
        for text in reversed(script[: line - 1]):
            if not text.startswith(("#", "@")):
                break
            block.append(text)
        return " ".join(reversed(block))

    assert [choice for _, choice, _ in skipped] == ["40", "41", "41", "44"], done.stdout[-3000:]
    first = int(skipped[0][0])
    assert "CKM_AES_GCM" in step_comment(first)
    assert (
        skipped[0][2].startswith(
            "p11-kit RPC 0.24 (the member's p11-kit server) carries a mechanism parameter only as flat bytes"
        )
        and "AES-GCM" in skipped[0][2]
    )
    for line, _, why in skipped[1:]:
        assert "@needs-previous" in step_comment(int(line))
        assert why == f"it builds on line {first}'s choice, skipped: {skipped[0][2]}"
    assert re.search(
        r"(?m)^Replay: (\d+) steps, (\d+) met their expectation, 0 did not, 4 skipped "
        r"\(this set-up cannot run them\)$",
        done.stdout,
    )
