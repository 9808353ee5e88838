"""`ckdemo serve` against clients nobody here wrote: the unmodified pkcs11-tool through Debian's
p11-kit-client.so, over local SoftHSM2 members; the keys it makes are read back straight on each
member's token. Raw-socket clients (our codec) hold logins open at the same time, and misbehave.

One server per module (a subprocess, stopped with SIGTERM in the finalizer, which must leave no
socket and no traceback behind).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SOFTHSM_LIB, SO_PIN, USER_PIN, clean_env, no_traceback, requires_softhsm, softhsm_env
from rpc_capture import P11KIT_CLIENT, tools_missing

from ckdemo import codes
from ckdemo.rpc import (
    HANDSHAKE,
    Attribute,
    AttributeSize,
    BufferSize,
    Frame,
    Mechanism,
    decode_response,
    encode_request,
    read_frame,
    write_frame,
)
from ckdemo.rpc.framing import read_exact

pytestmark = [requires_softhsm, pytest.mark.skipif(bool(tools_missing()), reason=str(tools_missing()))]

CKA_CLASS, CKA_PRIVATE, CKA_ID, CKA_LABEL = 0x0, 0x2, 0x102, 0x3
CKO_PRIVATE_KEY, CKO_PUBLIC_KEY = 0x3, 0x2
CKM_SHA256_RSA_PKCS, CKM_SHA256 = 0x40, 0x250
CKF_SERIAL_RW = 0x6
HA_SLOT = 0x5000
RSA_ID, EC_ID = "a1", "a2"


# ---- the server ----------------------------------------------------------------------------------
class Served:
    def __init__(self, home: Path, socket_path: Path, output: Path, process: subprocess.Popen):
        self.home, self.socket, self.output, self.process = home, socket_path, output, process

    def log(self) -> str:
        return self.output.read_text()

    def env(self) -> dict[str, str]:
        return clean_env(P11_KIT_SERVER_ADDRESS=f"unix:path={self.socket}")

    def tool(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
        """pkcs11-tool through p11-kit-client.so to this server."""
        done = subprocess.run(
            ["pkcs11-tool", "--module", P11KIT_CLIENT, *args],
            env=self.env(),
            capture_output=True,
            timeout=60,
            input=input,
        )
        no_traceback(done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))
        return done

    def text(self, *args: str) -> str:
        done = self.tool(*args)
        return done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")

    def wait_for_log(self, needle: str, count: int = 1, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(needle) < count:
            assert time.monotonic() < deadline, f"{needle!r} x{count} not in the log:\n{self.log()}"
            time.sleep(0.05)


def start_server(
    ckdemo_bin: Path, home: Path, socket_path: Path | None, output: Path, *options: str
) -> Served:
    """`ckdemo serve` in the background, once it is set up; socket_path None: the default
    HOME/run/ckdemo.sock. The socket exists before serve has said how it serves and made its
    control channel: its last start-up line says whether it has one ("control channel on ..." or
    "no control channel: ..."); a test that read the log or used the control channel as soon as
    the socket existed failed now and then on a loaded machine."""
    where = ["--socket", str(socket_path)] if socket_path else []
    socket_path = socket_path or home / "run" / "ckdemo.sock"
    with open(output, "w") as out:
        process = subprocess.Popen(
            [str(ckdemo_bin), "--home", str(home), "serve", *where, *options],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            cwd=home,
        )
    deadline = time.monotonic() + 30
    while not (socket_path.exists() and "control channel" in output.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"ckdemo serve did not start:\n{output.read_text()}")
        time.sleep(0.02)
    return Served(home, socket_path, output, process)


def stop_server(served: Served) -> int:
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
    try:
        return served.process.wait(15)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait(5)
        raise


@pytest.fixture(scope="module")
def served(tmp_path_factory, provision, run_ckdemo, ckdemo_bin):
    home = provision(tmp_path_factory.mktemp("serve") / "home")
    # HA Init (50) with the SO PIN: the domain keys key generation replicates with (a no-op
    # when `init` already did it)
    done = run_ckdemo(home, "run", "-", input=f"50\n5\n{SO_PIN}\n0\n")
    assert done.returncode == 0, done.stdout + done.stderr
    server = start_server(ckdemo_bin, home, None, home.parent / "serve.log")
    yield server
    stop_cleanly(server)


def stop_cleanly(server: Served) -> None:
    """SIGTERM, then: exit 0, no traceback, socket gone, every real login logged out again."""
    code = stop_server(server)
    log = server.log()
    no_traceback(log)
    assert code == 0, log
    assert not server.socket.exists(), "the socket outlived the server"
    assert "stopped: sessions closed" in log
    assert log.count("real login") == log.count("real logout"), log
    # the commands that use the control channel (when serve made one), in words on one line
    control = [line for line in log.splitlines() if "control channel" in line]
    assert len(control) == 1, log
    assert control[0].endswith(" (for ckdemo hagroup status, ckdemo member and ckdemo fault)") or (
        "no control channel: " in control[0]
    ), control


# ---- a raw client of our own (two logins at once, misbehaviour) -------------------------------------
class RawClient:
    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(str(path))
        self.sock.sendall(b"\x00")
        assert read_exact(self.sock, 1) == b"\x00"
        self.code = 0x10

    def call(self, name: str, *args):
        self.code += 1
        write_frame(self.sock, Frame(self.code, encode_request(name, *args), b"client"))
        reply = read_frame(self.sock)
        assert reply.call_code == self.code
        return decode_response(reply.body, name)

    def ok(self, name: str, *args) -> tuple:
        reply = self.call(name, *args)
        assert not reply.is_error, f"{name}: {codes.ckr_name(reply.ckr)}"
        return reply.args

    def ckr(self, name: str, *args) -> int:
        reply = self.call(name, *args)
        return reply.ckr if reply.is_error else codes.CKR_OK

    def session(self, pin: str | None = None) -> int:
        self.ok("C_Initialize", HANDSHAKE, 0, b"\x00")
        (handle,) = self.ok("C_OpenSession", HA_SLOT, CKF_SERIAL_RW)
        if pin is not None:
            self.ok("C_Login", handle, 1, pin.encode())
        return handle

    def find(self, session: int, *attributes: Attribute) -> tuple[int, ...]:
        self.ok("C_FindObjectsInit", session, attributes)
        (found,) = self.ok("C_FindObjects", session, 100)
        self.ok("C_FindObjectsFinal", session)
        return found

    def close(self) -> None:
        self.sock.close()


def closed(sock: socket.socket) -> bool:
    """The server closed this connection (a reset when it left our bytes unread)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def key_attributes(key_id: str, object_class: int) -> tuple[Attribute, ...]:
    return (Attribute(CKA_CLASS, object_class), Attribute(CKA_ID, bytes.fromhex(key_id)))


def on_member(home: Path, member: str, *args: str) -> str:
    done = subprocess.run(
        ["pkcs11-tool", "--module", SOFTHSM_LIB, "--token-label", member, *args],
        env=softhsm_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + done.stderr


# ---- pkcs11-tool -----------------------------------------------------------------------------------
def test_the_slot_token_mechanisms_and_objects_are_listed(served):
    shown = served.text("-I", "-L", "-T", "-M", "-O")
    assert "ckdemo serve" in shown and "Cryptoki version 2.40" in shown
    assert f"({HA_SLOT:#x}): HA Virtual Card Slot" in shown
    assert "token label        : ckdemo-ha" in shown and "login required" in shown
    for mechanism in ("RSA-PKCS-KEY-PAIR-GEN", "ECDSA", "SHA256-RSA-PKCS", "AES-ECB"):
        assert mechanism in shown, mechanism
    assert "CKR_" not in shown.replace("CKR_ATTRIBUTE_SENSITIVE", ""), shown


def test_login_checks_the_pin(served):
    wrong = served.text("--login", "--pin", "9999", "-O")
    assert "CKR_PIN_INCORRECT" in wrong
    right = served.tool("--login", "--pin", USER_PIN, "-O")
    assert right.returncode == 0, right.stderr


def test_key_pairs_are_made_on_every_member_and_sign(served, tmp_path):
    for key_type, key_id, label in (("rsa:2048", RSA_ID, "serve-rsa"), ("EC:prime256v1", EC_ID, "serve-ec")):
        made = served.tool(
            "--login",
            "--pin",
            USER_PIN,
            "--keypairgen",
            "--key-type",
            key_type,
            "--id",
            key_id,
            "--label",
            label,
        )
        assert made.returncode == 0, made.stderr
        assert b"Key pair generated" in made.stdout
    for member in ("member1", "member2", "member3"):  # straight on each member's own token
        listed = on_member(served.home, member, "--login", "--pin", USER_PIN, "-O")
        for kind in (
            "Private Key Object; RSA",
            "Public Key Object; RSA 2048 bits",
            "Private Key Object; EC",
            "Public Key Object; EC",
        ):
            assert kind in listed, f"{kind} missing on {member}:\n{listed}"
        assert "serve-rsa" in listed and "serve-ec" in listed
    data = tmp_path / "data.bin"
    data.write_bytes(b"signed through ckdemo serve\n")
    for mechanism, key_id in (("RSA-PKCS", RSA_ID), ("ECDSA", EC_ID)):
        signature = tmp_path / f"{mechanism}.sig"
        signed = served.tool(
            "--login",
            "--pin",
            USER_PIN,
            "--sign",
            "-m",
            mechanism,
            "--id",
            key_id,
            "-i",
            str(data),
            "-o",
            str(signature),
        )
        assert signed.returncode == 0, signed.stderr
        assert signature.stat().st_size == (256 if mechanism == "RSA-PKCS" else 64)
        verified = served.text(
            "--login",
            "--pin",
            USER_PIN,
            "--verify",
            "-m",
            mechanism,
            "--id",
            key_id,
            "-i",
            str(data),
            "--signature-file",
            str(signature),
        )
        assert "Signature is valid" in verified, verified
        # and by SoftHSM itself on another member, with the replica of the public key
        elsewhere = on_member(
            served.home,
            "member3",
            "--verify",
            "-m",
            mechanism,
            "--id",
            key_id,
            "-i",
            str(data),
            "--signature-file",
            str(signature),
        )
        assert "Signature is valid" in elsewhere, elsewhere
    tampered = tmp_path / "tampered.bin"
    tampered.write_bytes(b"signed through ckdemo serve!\n")
    refused = served.text(
        "--login",
        "--pin",
        USER_PIN,
        "--verify",
        "-m",
        "RSA-PKCS",
        "--id",
        RSA_ID,
        "-i",
        str(tampered),
        "--signature-file",
        str(tmp_path / "RSA-PKCS.sig"),
    )
    assert "Signature is valid" not in refused and "Invalid signature" in refused, refused


def test_random_and_hash(served, tmp_path):
    first, second = served.tool("--generate-random", "32"), served.tool("--generate-random", "32")
    assert first.returncode == 0 and len(first.stdout) == 32 and len(second.stdout) == 32
    assert first.stdout != second.stdout
    data = tmp_path / "hash-me"
    data.write_bytes(os.urandom(100_000))
    hashed = served.tool("--hash", "-m", "SHA256", "-i", str(data))
    assert hashed.returncode == 0, hashed.stderr
    assert hashed.stdout == hashlib.sha256(data.read_bytes()).digest()


# ---- one application's login is not another's -----------------------------------------------------
def test_two_clients_logged_in_and_not(served):
    served.tool(
        "--login",
        "--pin",
        USER_PIN,
        "--keypairgen",
        "--key-type",
        "rsa:1024",
        "--id",
        "b1",
        "--label",
        "isolation",
    )
    logged, anonymous = RawClient(served.socket), RawClient(served.socket)
    try:
        mine = logged.session(USER_PIN)
        private = logged.find(mine, *key_attributes("b1", CKO_PRIVATE_KEY))
        assert len(private) == 1
        theirs = anonymous.session()
        # the real token login is held for `logged`; `anonymous` must still not see or use the key
        assert anonymous.find(theirs, *key_attributes("b1", CKO_PRIVATE_KEY)) == ()
        assert len(anonymous.find(theirs, *key_attributes("b1", CKO_PUBLIC_KEY))) == 1
        assert anonymous.find(theirs, Attribute(CKA_PRIVATE, 1)) == ()
        listed = served.text("-O")  # a third application, pkcs11-tool, not logged in
        assert "isolation" in listed and "Private Key Object" not in listed, listed
        assert anonymous.ckr("C_SignInit", theirs, Mechanism(CKM_SHA256_RSA_PKCS), private[0]) in (
            codes.CKR_USER_NOT_LOGGED_IN,
            codes.CKR_OBJECT_HANDLE_INVALID,
            codes.CKR_KEY_HANDLE_INVALID,
        )
        # a later application's PIN is checked too, though the token is logged in already
        assert anonymous.ckr("C_Login", theirs, 1, b"0000") == codes.CKR_PIN_INCORRECT
        assert anonymous.ckr("C_GetSessionInfo", theirs) == codes.CKR_OK
        assert anonymous.ok("C_GetSessionInfo", theirs)[0].state == 2  # CKS_RW_PUBLIC_SESSION
        anonymous.ok("C_Login", theirs, 1, USER_PIN.encode())
        assert anonymous.ok("C_GetSessionInfo", theirs)[0].state == 3  # CKS_RW_USER_FUNCTIONS
        (their_key,) = anonymous.find(theirs, *key_attributes("b1", CKO_PRIVATE_KEY))
        anonymous.ok("C_SignInit", theirs, Mechanism(CKM_SHA256_RSA_PKCS), their_key)
        assert anonymous.ok("C_Sign", theirs, b"x", 0) == (BufferSize(128),)  # size query
        assert len(anonymous.ok("C_Sign", theirs, b"x", 128)[0]) == 128
        anonymous.ok("C_Logout", theirs)
        # logged out, it holds a handle to the private key while the token is still logged in
        # for `logged`: the server refuses it, as a token forgets private objects' handles at
        # C_Logout (differential test defect 13)
        assert (
            anonymous.ckr("C_SignInit", theirs, Mechanism(CKM_SHA256_RSA_PKCS), their_key)
            == codes.CKR_KEY_HANDLE_INVALID
        )
        assert (
            anonymous.ckr("C_GetAttributeValue", theirs, their_key, (AttributeSize(CKA_LABEL, 0),))
            == codes.CKR_OBJECT_HANDLE_INVALID
        )
        # its logout is its own: the first application still signs
        logged.ok("C_SignInit", mine, Mechanism(CKM_SHA256_RSA_PKCS), private[0])
        assert len(logged.ok("C_Sign", mine, b"still mine", 128)[0]) == 128
    finally:
        logged.close()
        anonymous.close()
    served.wait_for_log("real logout", served.log().count("real login"))


# ---- a signature computed while its size travels ----------------------------------------------------
CKM_RSA_PKCS, CKM_ECDSA = 0x1, 0x1041


def _sign(client: RawClient, session: int, mechanism: int, key: int, data: bytes) -> tuple:
    """Size query, then the signature: (size answered, CKR of the second call, signature)."""
    client.ok("C_SignInit", session, Mechanism(mechanism), key)
    (size,) = client.ok("C_Sign", session, data, 0)
    reply = client.call("C_Sign", session, data, size.length)
    return size, (reply.ckr if reply.is_error else codes.CKR_OK), (None if reply.is_error else reply.args[0])


def _signer(client: RawClient, key_id: str) -> tuple[int, int]:
    """A logged-in session of this client and the private key with that id: (session, key)."""
    session = client.session(USER_PIN)
    (key,) = client.find(session, *key_attributes(key_id, CKO_PRIVATE_KEY))
    return session, key


def test_a_signature_is_computed_after_its_size_is_answered(served, run_ckdemo):
    """Once a connection has signed with a key and mechanism, a size query is answered at once
    and the member signs while the client sends the call that fetches the signature: the
    signature is the one the member gives, a refusal comes with the fetch (ending the
    operation), and a member failing meanwhile fails over as any call does."""
    served.tool(
        "--login",
        "--pin",
        USER_PIN,
        "--keypairgen",
        "--key-type",
        "rsa:1024",
        "--id",
        "b3",
        "--label",
        "overlap",
    )
    served.tool(
        "--login",
        "--pin",
        USER_PIN,
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "b4",
        "--label",
        "overlap-ec",
    )
    fresh, client = RawClient(served.socket), RawClient(served.socket)
    try:
        session, rsa = _signer(client, "b3")
        (ec,) = client.find(session, *key_attributes("b4", CKO_PRIVATE_KEY))
        # PKCS#1 v1.5 is deterministic: a connection's first signature (no size known yet,
        # signed before the size is answered) equals a later one of the same data
        reference, fresh_rsa = _signer(fresh, "b3")
        expected = {
            data: _sign(fresh, reference, CKM_RSA_PKCS, fresh_rsa, data)[2]
            for data in (b"first", b"second", b"third")
        }
        for data in (b"first", b"second", b"third", b"first"):
            size, ckr, signature = _sign(client, session, CKM_RSA_PKCS, rsa, data)
            assert (size, ckr, signature) == (BufferSize(128), codes.CKR_OK, expected[data])
        # too long for raw RSA-1024: the size query succeeds, the fetch says why not (as the
        # member said it to a size query asked first), and the operation is over
        too_long = b"x" * 200
        other = RawClient(served.socket)
        try:
            first, other_rsa = _signer(other, "b3")
            other.ok("C_SignInit", first, Mechanism(CKM_RSA_PKCS), other_rsa)
            refusal = other.ckr("C_Sign", first, too_long, 0)
        finally:
            other.close()
        assert refusal != codes.CKR_OK
        size, ckr, _ = _sign(client, session, CKM_RSA_PKCS, rsa, too_long)
        assert (size, ckr) == (BufferSize(128), refusal)
        assert client.ckr("C_Sign", session, b"x", 128) == codes.CKR_OPERATION_NOT_INITIALIZED
        # ECDSA: asked twice, the same signature (the operation keeps what it computed)
        for _ in range(2):
            client.ok("C_SignInit", session, Mechanism(CKM_ECDSA), ec)
            digest = hashlib.sha256(os.urandom(8)).digest()
            assert client.ok("C_Sign", session, digest, 0) == (BufferSize(64),)
            assert client.ok("C_Sign", session, digest, 0) == (BufferSize(64),)
            (signature,) = client.ok("C_Sign", session, digest, 64)
            assert len(signature) == 64
            client.ok(
                "C_VerifyInit",
                session,
                Mechanism(CKM_ECDSA),
                client.find(session, *key_attributes("b4", CKO_PUBLIC_KEY))[0],
            )
            assert client.ckr("C_Verify", session, digest, signature) == codes.CKR_OK
        # member1 dies behind the server's back: the signatures computed after their size has
        # been answered fail over to the other members, and none fails
        done = run_ckdemo(served.home, "member", "fail", "member1")
        assert done.returncode == 0, done.stdout + done.stderr
        try:
            for number in range(6):
                data = b"during the failure %d" % number
                size, ckr, signature = _sign(client, session, CKM_RSA_PKCS, rsa, data)
                assert (size, ckr) == (BufferSize(128), codes.CKR_OK)
                assert signature == _sign(fresh, reference, CKM_RSA_PKCS, fresh_rsa, data)[2]
            served.wait_for_log("failed: C_Sign returned CKR_DEVICE_ERROR")
        finally:
            done = run_ckdemo(served.home, "member", "restore", "member1")
            assert done.returncode == 0, done.stdout + done.stderr
            # back in the group now (X is 60 s): the tests after this one need every member
            done = run_ckdemo(served.home, "hagroup", "status", "--recover")
            assert "(member1): recovered" in done.stdout, done.stdout + done.stderr
    finally:
        client.close()
        fresh.close()
    assert "internal error" not in served.log()


def test_the_calls_around_a_signature_are_answered_as_predicted(served):
    """An application signing again and again: the call fetching a signature and the next
    C_SignInit with the same session, mechanism and key are answered before they are handled,
    with what their handlers then answer. Anything else in between ends the predictions: a
    logout (C_SignInit refused), another buffer size or other data for the fetch."""
    served.tool(
        "--login",
        "--pin",
        USER_PIN,
        "--keypairgen",
        "--key-type",
        "rsa:1024",
        "--id",
        "b5",
        "--label",
        "predicted",
    )
    client, fresh = RawClient(served.socket), RawClient(served.socket)
    try:
        session, rsa = _signer(client, "b5")
        reference, fresh_rsa = _signer(fresh, "b5")
        expected = {
            data: _sign(fresh, reference, CKM_RSA_PKCS, fresh_rsa, data)[2] for data in (b"one", b"two")
        }
        for number in range(10):  # the first cycle teaches the size; then 2 calls each predicted
            data = (b"one", b"two")[number % 2]
            assert _sign(client, session, CKM_RSA_PKCS, rsa, data) == (
                BufferSize(128),
                codes.CKR_OK,
                expected[data],
            )
        client.close()
        served.wait_for_log("after 36 call(s) (18 answered as predicted)")

        client = RawClient(served.socket)
        session, rsa = _signer(client, "b5")
        for _ in range(2):
            _sign(client, session, CKM_RSA_PKCS, rsa, b"one")
        # the fetch with other data than the size query signs that data; a larger buffer too
        client.ok("C_SignInit", session, Mechanism(CKM_RSA_PKCS), rsa)
        assert client.ok("C_Sign", session, b"one", 0) == (BufferSize(128),)
        assert client.ok("C_Sign", session, b"two", 128) == (expected[b"two"],)
        client.ok("C_SignInit", session, Mechanism(CKM_RSA_PKCS), rsa)
        assert client.ok("C_Sign", session, b"two", 0) == (BufferSize(128),)
        assert client.ok("C_Sign", session, b"two", 4096) == (expected[b"two"],)
        # logged out between the size query and the fetch: the signature made before is not
        # handed out (as a signature not made yet is not); logged out after a signature: the
        # same C_SignInit is refused, as it must be
        client.ok("C_SignInit", session, Mechanism(CKM_RSA_PKCS), rsa)
        assert client.ok("C_Sign", session, b"two", 0) == (BufferSize(128),)
        client.ok("C_Logout", session)
        assert client.ckr("C_Sign", session, b"two", 128) == codes.CKR_USER_NOT_LOGGED_IN
        client.ok("C_Login", session, 1, USER_PIN.encode())
        assert client.ckr("C_Sign", session, b"two", 128) == codes.CKR_OPERATION_NOT_INITIALIZED
        (rsa,) = client.find(session, *key_attributes("b5", CKO_PRIVATE_KEY))  # a new handle since the logout
        _sign(client, session, CKM_RSA_PKCS, rsa, b"two")
        client.ok("C_Logout", session)
        assert client.ckr("C_SignInit", session, Mechanism(CKM_RSA_PKCS), rsa) == codes.CKR_KEY_HANDLE_INVALID
        client.ok("C_Login", session, 1, USER_PIN.encode())
        # a token forgot the private key's handle at the logout: found again, it has a new one
        assert client.ckr("C_SignInit", session, Mechanism(CKM_RSA_PKCS), rsa) == codes.CKR_KEY_HANDLE_INVALID
        (again,) = client.find(session, *key_attributes("b5", CKO_PRIVATE_KEY))
        assert again != rsa
        assert _sign(client, session, CKM_RSA_PKCS, again, b"two") == (
            BufferSize(128),
            codes.CKR_OK,
            expected[b"two"],
        )
    finally:
        client.close()
        fresh.close()
    assert "internal error" not in served.log()


def test_a_multi_part_signature_is_not_handed_out_after_a_logout(served):
    """C_SignUpdate, a C_SignFinal size query (the signature is made and kept for the fetch),
    C_Logout: the fetch is CKR_USER_NOT_LOGGED_IN, as with a single-part C_Sign."""
    served.tool(
        "--login",
        "--pin",
        USER_PIN,
        "--keypairgen",
        "--key-type",
        "rsa:1024",
        "--id",
        "b7",
        "--label",
        "multi-part",
    )
    client = RawClient(served.socket)
    try:
        session, rsa = _signer(client, "b7")
        for logout in (False, True):
            client.ok("C_SignInit", session, Mechanism(CKM_SHA256_RSA_PKCS), rsa)
            client.ok("C_SignUpdate", session, b"part one, ")
            client.ok("C_SignUpdate", session, b"part two")
            assert client.ok("C_SignFinal", session, 0) == (BufferSize(128),)
            if logout:
                client.ok("C_Logout", session)
                assert client.ckr("C_SignFinal", session, 128) == codes.CKR_USER_NOT_LOGGED_IN
            else:
                assert len(client.ok("C_SignFinal", session, 128)[0]) == 128
    finally:
        client.close()


def test_random_bytes_are_made_ahead_for_the_same_request(served):
    """After a C_GenerateRandom of up to 4 KiB the slot makes as many bytes again, and the same
    request is answered with them at once: every answer is fresh (no two alike), of the length
    asked; other lengths, a larger request or anything in between are answered as usual."""
    client = RawClient(served.socket)
    try:
        session = client.session()
        answers = [client.ok("C_GenerateRandom", session, 32)[0] for _ in range(20)]
        assert len(set(answers)) == 20 and {len(a) for a in answers} == {32}
        assert [len(client.ok("C_GenerateRandom", session, n)[0]) for n in (16, 32, 16)] == [16, 32, 16]
        client.ok("C_SeedRandom", session, b"seed")
        large = [client.ok("C_GenerateRandom", session, 8192)[0] for _ in range(2)]
        assert large[0] != large[1] and len(large[1]) == 8192
        client.ok("C_GenerateRandom", session, 32)
    finally:
        client.close()
    # 2 set-up calls, 20 + 3 + 1 seed + 2 large + 1; predicted: the 19 repeats of 32 bytes only
    served.wait_for_log("after 29 call(s) (19 answered as predicted)")
    assert "internal error" not in served.log()


def test_mutated_copies_of_predicted_requests_are_answered_as_usual(served):
    """Seeded: after each sign-and-random cycle (predictions armed), a copy of a predicted
    request with bytes changed, cut or added is sent instead: each is answered, a cycle after it
    gives the same signature, and no predicted reply ever disagrees with its handler (that
    would be logged as an internal error)."""
    import random

    rng = random.Random(20261127)
    served.tool(
        "--login",
        "--pin",
        USER_PIN,
        "--keypairgen",
        "--key-type",
        "rsa:1024",
        "--id",
        "b6",
        "--label",
        "mutated",
    )
    client = RawClient(served.socket)

    def mutated(body: bytes) -> bytes:
        body = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            choice = rng.random()
            if choice < 0.4 and body:
                body[rng.randrange(len(body))] = rng.randrange(256)
            elif choice < 0.7:
                body = body[: rng.randrange(len(body) + 1)]
            else:
                body += rng.randbytes(rng.randint(1, 8))
        return bytes(body)

    try:
        session, rsa = _signer(client, "b6")
        expected = {}
        sent = 0
        for number in range(150):
            data = b"cycle %d" % rng.randrange(3)
            size, ckr, signature = _sign(client, session, CKM_RSA_PKCS, rsa, data)
            assert ckr == codes.CKR_OK and expected.setdefault(data, signature) == signature
            client.ok("C_GenerateRandom", session, 32)
            predicted = (
                encode_request("C_SignInit", session, Mechanism(CKM_RSA_PKCS), rsa),
                encode_request("C_Sign", session, data, size.length),
                encode_request("C_GenerateRandom", session, 32),
            )
            client.code += 1
            write_frame(client.sock, Frame(client.code, mutated(rng.choice(predicted)), b"fuzz"))
            assert read_frame(client.sock).call_code == client.code
            sent += 1
            if client.ckr("C_SignInit", session, Mechanism(CKM_RSA_PKCS), rsa) != codes.CKR_OK:
                client.call("C_Sign", session, b"end it", 4096)  # a mutation began another one
                client.ok("C_SignInit", session, Mechanism(CKM_RSA_PKCS), rsa)
            (size,) = client.ok("C_Sign", session, data, 0)
            assert client.ok("C_Sign", session, data, size.length) == (expected[data],)
    finally:
        client.close()
    assert sent == 150
    log = served.log()
    assert "internal error" not in log and "Traceback" not in log


# ---- bad clients ------------------------------------------------------------------------------------
def test_bad_clients_lose_only_their_connection(served):
    good = RawClient(served.socket)
    session = good.session()
    try:
        unknown = good.call("C_GetInfo")  # warm-up, then an id past version 0 (a 3.0 call)
        assert not unknown.is_error
        good.code += 1
        write_frame(good.sock, Frame(good.code, struct.pack(">II", 70, 1) + b"u" + bytes(8), b"client"))
        reply = decode_response(read_frame(good.sock).body)
        assert reply.is_error and reply.ckr == codes.CKR_FUNCTION_NOT_SUPPORTED
        good.code += 1
        write_frame(good.sock, Frame(good.code, struct.pack(">I", 43) + os.urandom(9), b"client"))
        reply = decode_response(read_frame(good.sock).body)
        assert reply.is_error and reply.ckr == codes.CKR_DEVICE_ERROR
        assert good.ckr("C_SignRecoverInit", session, Mechanism(0x1), 1) == codes.CKR_FUNCTION_NOT_SUPPORTED
        assert good.ckr("C_Sign", session, b"x", 0) == codes.CKR_OPERATION_NOT_INITIALIZED
        assert good.ckr("C_CloseSession", 0x7777) == codes.CKR_SESSION_HANDLE_INVALID

        garbage = socket.socket(socket.AF_UNIX)
        garbage.settimeout(10)
        garbage.connect(str(served.socket))
        garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(5000))
        assert garbage.recv(1) == b"\x00"  # the version byte; then the framing is refused
        assert closed(garbage)
        huge = RawClient(served.socket)
        huge.sock.sendall(struct.pack(">III", 0x11, 0, 0xFFFFFFF0))
        assert closed(huge.sock)
        truncated = RawClient(served.socket)
        truncated.sock.sendall(struct.pack(">III", 0x11, 6, 100) + b"client" + b"short")
        truncated.sock.shutdown(socket.SHUT_WR)
        assert closed(truncated.sock)

        # an application that dies logged in, in the middle of a multi-part operation
        dying = RawClient(served.socket)
        doomed = dying.session(USER_PIN)
        (key,) = dying.find(doomed, *key_attributes(RSA_ID, CKO_PRIVATE_KEY))
        dying.ok("C_SignInit", doomed, Mechanism(CKM_SHA256_RSA_PKCS), key)
        dying.ok("C_SignUpdate", doomed, b"half of it")
        dying.sock.close()
        served.wait_for_log("session(s) released")

        # everyone else carries on, and nothing of the dead is left logged in
        assert good.find(session, *key_attributes(RSA_ID, CKO_PRIVATE_KEY)) == ()
        good.ok("C_DigestInit", session, Mechanism(CKM_SHA256))
        (digest,) = good.ok("C_Digest", session, b"abc", 32)
        assert digest == hashlib.sha256(b"abc").digest()
        assert "HA Virtual Card Slot" in served.text("-L")
    finally:
        good.close()
    log = served.log()
    assert "broken framing" in log
    served.wait_for_log("real logout", log.count("real login"))


WAIT_FOR_SLOT_EVENT = 65  # blocks until an event when asked to: a legitimate wait, not fuzzed


def test_random_requests_get_answers_and_leave_the_server_serving(served):
    """Seeded, well-framed but random requests (random call ids and bodies, and valid requests
    with bytes changed or cut short), 4,000 of them: every one gets an answer (an error reply
    when it makes no sense) on a connection that stays open, no internal error is logged, and
    a good client is answered throughout."""
    import random

    rng = random.Random(20261126)
    good = RawClient(served.socket)
    handle = good.session()
    fuzzer = RawClient(served.socket)
    valid = [
        encode_request("C_Initialize", HANDSHAKE, 0, b"\x00"),
        encode_request("C_GetSlotList", 1, 16),
        encode_request("C_GetInfo"),
        encode_request("C_OpenSession", HA_SLOT, CKF_SERIAL_RW),
        encode_request("C_GenerateRandom", 1, 16),
        encode_request("C_FindObjectsInit", 1, ()),
        encode_request("C_FindObjects", 1, 10),
        encode_request("C_CloseSession", 1),
        encode_request("C_Login", 1, 1, b"not-the-pin"),
        encode_request("C_Logout", 1),
        encode_request("C_GetTokenInfo", HA_SLOT),
        encode_request("C_SignInit", 1, Mechanism(CKM_SHA256_RSA_PKCS), 1),
        encode_request("C_Sign", 1, b"data", 256),
    ]
    answered = 0
    try:
        for number in range(4000):
            if rng.random() < 0.3:
                body = struct.pack(">I", rng.randrange(0, 80)) + rng.randbytes(rng.randrange(0, 64))
            else:
                body = bytearray(rng.choice(valid))
                for _ in range(rng.randrange(1, 4)):
                    body[rng.randrange(len(body))] = rng.randrange(256)
                if rng.random() < 0.3:
                    body = body[: rng.randrange(len(body) + 1)]
                body = bytes(body)
            if body[:4] == struct.pack(">I", WAIT_FOR_SLOT_EVENT):
                continue
            fuzzer.code += 1
            write_frame(fuzzer.sock, Frame(fuzzer.code, body, b"client"))
            reply = read_frame(fuzzer.sock)
            assert reply.call_code == fuzzer.code
            decode_response(reply.body)  # a well-formed reply, whatever was asked
            answered += 1
            if number % 500 == 0:
                assert len(good.ok("C_GenerateRandom", handle, 8)[0]) == 8
    finally:
        fuzzer.close()
        good.close()
    assert answered > 3500
    # what the fuzz found: a C_GenerateRandom of 855,638,032 bytes was served (a client's u32
    # length made the server allocate it); now it is refused
    again = RawClient(served.socket)
    try:
        mine = again.session()
        assert again.ckr("C_GenerateRandom", mine, 0x33000010) == codes.CKR_DEVICE_MEMORY
        assert len(again.ok("C_GenerateRandom", mine, 1 << 20)[0]) == 1 << 20
    finally:
        again.close()
    log = served.log()
    assert "internal error" not in log and "Traceback" not in log


def test_sigterm_with_a_logged_in_client_and_all_slots(served, ckdemo_bin, tmp_path):
    """--slots all serves the members too; SIGTERM while a client is logged in ends cleanly."""
    other = start_server(
        ckdemo_bin, served.home, tmp_path / "all.sock", tmp_path / "all.log", "--slots", "all"
    )
    try:
        listed = other.text("-L")
        for label in (
            "token label        : member1",
            "token label        : member2",
            "token label        : member3",
            "HA Virtual Card Slot",
        ):
            assert label in listed, listed
        client = RawClient(other.socket)
        client.session(USER_PIN)
        other.wait_for_log("real login")
    finally:
        code = stop_server(other)
    log = other.log()
    no_traceback(log)
    assert code == 0, log
    assert not other.socket.exists()
    assert "export P11_KIT_SERVER_ADDRESS=unix:path=" in log and "p11-kit-client.so -L" in log
    assert "closed by the server" in log and log.count("real logout") == 1, log
    client.close()


def test_secret_key_generated_everywhere_encrypts_multi_part(served, tmp_path):
    made = served.tool(
        "--login", "--pin", USER_PIN, "--keygen", "--key-type", "AES:32", "--id", "c1", "--label", "serve-aes"
    )
    assert made.returncode == 0, made.stderr
    for member in ("member1", "member2", "member3"):
        assert "serve-aes" in on_member(
            served.home, member, "--login", "--pin", USER_PIN, "-O", "--type", "secrkey"
        )
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(4096))  # pkcs11-tool encrypts with Update/Final past 1 KiB
    for direction, source, target in (
        ("--encrypt", plain, tmp_path / "sealed"),
        ("--decrypt", tmp_path / "sealed", tmp_path / "opened"),
    ):
        done = served.tool(
            "--login",
            "--pin",
            USER_PIN,
            direction,
            "-m",
            "AES-ECB",
            "--id",
            "c1",
            "-i",
            str(source),
            "-o",
            str(target),
        )
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "sealed").read_bytes() != plain.read_bytes()
    assert (tmp_path / "opened").read_bytes() == plain.read_bytes()


def test_sigterm_as_soon_as_the_socket_exists_stops_cleanly(home, ckdemo_bin):
    """A supervisor may send SIGTERM the moment the socket appears, while the server is still
    setting up: it waits until the server can stop cleanly (exit 0, socket removed)."""
    for attempt in range(4):
        socket_path = home.parent / f"early{attempt}.sock"
        process = subprocess.Popen(
            [str(ckdemo_bin), "--home", str(home), "serve", "--socket", str(socket_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            cwd=home,
        )
        deadline = time.monotonic() + 30
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
        assert process.returncode == 0, output
        assert not socket_path.exists() and "Traceback" not in output


def _mapped_copies(process: subprocess.Popen, home: Path) -> list[str]:
    """The member copies of libsofthsm2.so the server process has loaded (/proc/PID/maps)."""
    maps = Path(f"/proc/{process.pid}/maps").read_text()
    return sorted(
        {line.split()[-1].rsplit("/", 1)[-1] for line in maps.splitlines() if str(home / "lib") in line}
    )


def test_local_members_get_a_library_copy_each_unless_shared(served, ckdemo_bin, tmp_path):
    """On a home that does not say (a new home), serve loads each local member through its own copy
    of libsofthsm2.so, so applications sign on several members at once (one instance is
    one lock); --shared, or LocalIsolation = none in the home, keeps one instance; a wrong value
    is one line and exit 2."""
    assert _mapped_copies(served.process, served.home) == [f"libsofthsm2-member{n}.so" for n in (1, 2, 3)]
    assert "local members member1, member2, member3: each through its own copy" in served.log()
    shared = start_server(
        ckdemo_bin, served.home, tmp_path / "shared.sock", tmp_path / "shared.log", "--shared"
    )
    try:
        assert _mapped_copies(shared.process, served.home) == []
        assert "all through one instance of the library" in shared.log()
        assert "HA Virtual Card Slot" in shared.text("-L")
    finally:
        stop_cleanly(shared)
    conf = served.home / "Chrystoki.conf"
    saved = conf.read_text()
    try:
        conf.write_text(saved.replace("CKDemo = {", "CKDemo = {\n   LocalIsolation = threads;", 1))
        done = subprocess.run(
            [str(ckdemo_bin), "--home", str(served.home), "serve", "--socket", str(tmp_path / "bad.sock")],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
        )
    finally:
        conf.write_text(saved)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "ckdemo: CKDemo.LocalIsolation = 'threads' is not one of copies, none"
    ], done.stderr
    assert not (tmp_path / "bad.sock").exists()
