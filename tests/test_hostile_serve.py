"""`ckdemo serve` attacked from outside, by a p11-kit RPC client of our own that shares no code
with ckdemo (hostile_client.py): the frames that once crashed the server natively, a seeded
typed-template fuzz (scripts/fuzz-serve, shared with the long run), session objects kept to the
connection that made them, a mechanism parameter holding pointers, and resource bounds
(connections, memory).

Each test starts its own `ckdemo serve` (test_serve.start_server) on one provisioned home.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import socket
import sys
import time

import pytest

from conftest import USER_PIN, no_traceback, requires_softhsm
from hostile_client import CKA_UNWRAP_TEMPLATE, Client, ckr_name, request, u64
from support import REPO
from test_serve import HA_SLOT, closed, start_server, stop_server

pytestmark = requires_softhsm

CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL, CKA_ENCRYPT = 0x0, 0x1, 0x2, 0x3, 0x104
CKA_SIGN, CKA_MODULUS_BITS, CKA_START_DATE, CKA_VALUE_LEN = 0x108, 0x121, 0x110, 0x161
CKO_DATA, CKO_PRIVATE_KEY = 0x0, 0x3
CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_SHA256_RSA_PKCS, CKM_SHA256 = 0x0, 0x40, 0x250
CKM_AES_KEY_GEN, CKM_AES_GCM = 0x1080, 0x1087
CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID = 0x70, 0x71
CKR_OK, CKR_DEVICE_MEMORY, CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID = 0x0, 0x31, 0x60, 0x82
# what a template the token cannot take may be answered with (never a crash, never GENERAL_ERROR)
REFUSALS = {CKR_OK, 0x10, 0x12, 0x13, 0x1B, 0xD1, 0x101}  # READ_ONLY, TYPE/VALUE_INVALID,
# ACTION_PROHIBITED, TEMPLATE_INCONSISTENT, USER_NOT_LOGGED_IN
FUZZ_SEED, FUZZ_FRAMES = 20261207, 10_000  # about 4 s alone (scripts/fuzz-serve: long runs)
PUBLIC_DATA = [(CKA_CLASS, CKO_DATA), (CKA_TOKEN, 0), (CKA_PRIVATE, 0)]


@pytest.fixture(scope="module")
def hostile_home(tmp_path_factory, provision):
    return provision(tmp_path_factory.mktemp("hostile") / "home")


@pytest.fixture
def serve(hostile_home, ckdemo_bin, tmp_path):
    """serve(*options): a `ckdemo serve` of this test's own (its socket and log in tmp_path)."""
    started = []

    def start(*options: str):
        started.append(
            start_server(ckdemo_bin, hostile_home, tmp_path / "s.sock", tmp_path / "serve.log", *options)
        )
        return started[-1]

    yield start
    for served in started:
        _quiet(served)
        stop_server(served)


def _quiet(served, timeout: float = 5) -> None:
    """Wait (a while, not failing) until every connection the log opened is closed again: a
    SIGTERM very soon after start or as a connection ends was sometimes lost on 2026-12-07 (serve's
    main thread stayed in accept()), which would fail an unrelated test's teardown."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and served.process.poll() is None:
        log = served.log()
        opened, ended = (len(re.findall(rf"connection \d+ {what}", log)) for what in ("opened", "closed"))
        if opened <= ended:
            return
        time.sleep(0.02)


def assert_serving(served) -> None:
    """Alive, a new connection is answered, and nothing went wrong inside."""
    assert served.process.poll() is None, f"serve died ({served.process.returncode}):\n{served.log()[-3000:]}"
    fresh = Client(served.socket)
    fresh.initialize()
    assert fresh.call("C_GetInfo").rv == CKR_OK
    fresh.close()
    assert "internal error" not in served.log(), served.log()
    no_traceback(served.log())


# ---- frames that crashed serve natively (python-pkcs11 packing types it cannot encode) ---------------
def _find(client, session, attribute) -> list:
    return [("C_FindObjectsInit", session, [attribute]), ("C_FindObjectsFinal", session)]


def _copy(client, session, attribute) -> list:
    (handle,) = client.ok("C_CreateObject", session, PUBLIC_DATA)
    return [("C_CopyObject", session, handle, [attribute])]


def _create(client, session, attribute) -> list:
    return [("C_CreateObject", session, PUBLIC_DATA + [attribute])]


def _set(client, session, attribute) -> list:
    (handle,) = client.ok("C_CreateObject", session, PUBLIC_DATA)
    return [("C_SetAttributeValue", session, handle, [attribute])]


CRASHERS = {
    **{f"find-{kind:#x}": (_find, (kind, b"x")) for kind in (0x80000000, 0x83, 0x220, 0x482, 0x62A)},
    "find-unwrap-template": (_find, (CKA_UNWRAP_TEMPLATE, [(CKA_TOKEN, 0x78)])),
    "copy-vendor-type": (_copy, (0x80000000, b"x")),
    "create-empty-start-date": (_create, (CKA_START_DATE, b"")),
    "set-empty-start-date": (_set, (CKA_START_DATE, b"")),
}


@pytest.mark.parametrize("case", CRASHERS)
def test_a_frame_that_crashed_serve_natively_is_refused_or_done(serve, case):
    """No login. The bad call is sent three times (python-pkcs11 crashed at once or only at the
    next call, in garbage collection): each reply is a CKR of a refused template."""
    served = serve()
    client = Client(served.socket)
    session = client.open_session(HA_SLOT)
    make, attribute = CRASHERS[case]
    for _ in range(3):
        for name, *args in make(client, session, attribute):
            try:
                reply = client.raw(request(name, *args))
            except (EOFError, OSError) as error:
                pytest.fail(
                    f"{name} {request(name, *args).hex()}: no reply ({error}); serve "
                    f"{served.process.poll()}:\n{served.log()[-2000:]}"
                )
            if name != "C_FindObjectsFinal":
                assert reply.rv in REFUSALS, f"{name}: {ckr_name(reply.rv)}"
    assert_serving(served)


# ---- seeded typed-template fuzz ---------------------------------------------------------------------
def load_fuzz_serve():
    loader = importlib.machinery.SourceFileLoader("fuzz_serve", str(REPO / "scripts" / "fuzz-serve"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("fuzz_serve", loader))
    sys.modules["fuzz_serve"] = module  # dataclasses look their module up while it loads
    loader.exec_module(module)
    return module


def test_seeded_typed_template_fuzz_leaves_serve_answering(serve, tmp_path):
    fuzz = load_fuzz_serve()
    served = serve()
    figures = fuzz.fuzz(served, FUZZ_FRAMES, FUZZ_SEED, keep=tmp_path / "frames")
    report = fuzz.summary(figures, FUZZ_FRAMES)
    assert figures.clean, report
    assert figures.frames >= FUZZ_FRAMES and not figures.crashes, report
    # deep enough to be worth it: every call, logged in and not, parsed and refused and done
    assert all(figures.calls[name] > FUZZ_FRAMES // 20 for name in fuzz.TEMPLATE_CALLS), report
    assert figures.calls["C_Login"] > 10 and figures.calls["C_DestroyObject"] > 10, report
    for rv in (CKR_OK, 0x12, 0x13, 0x30, 0x101):  # done, type/value refused, unparsable, login
        assert figures.ckrs[rv] > 50, report
    assert_serving(served)


# ---- session objects are the connection's own -------------------------------------------------------
def _labels(client, session, handles) -> set[bytes]:
    found = set()
    for handle in handles:
        reply = client.call("C_GetAttributeValue", session, handle, [(CKA_LABEL, 256)])
        if reply.call_id != 0:
            found.add(reply.values[0][0][1])
    return found


def test_session_objects_are_invisible_and_unusable_from_other_connections(serve):
    served = serve()
    a, b, c = (Client(served.socket) for _ in range(3))
    sa, sb, sc = a.open_session(HA_SLOT, USER_PIN), b.open_session(HA_SLOT, USER_PIN), c.open_session(HA_SLOT)
    tag = os.urandom(4).hex().encode()
    public, private = a.ok(
        "C_GenerateKeyPair",
        sa,
        CKM_RSA_PKCS_KEY_PAIR_GEN,
        [(CKA_TOKEN, 0), (CKA_MODULUS_BITS, 2048), (CKA_LABEL, b"a-pub-" + tag)],
        [(CKA_TOKEN, 0), (CKA_SIGN, 1), (CKA_PRIVATE, 1), (CKA_LABEL, b"a-priv-" + tag)],
    )
    (data,) = a.ok("C_CreateObject", sa, PUBLIC_DATA + [(CKA_LABEL, b"a-data-" + tag)])
    (token,) = a.ok(
        "C_CreateObject",
        sa,
        [(CKA_CLASS, CKO_DATA), (CKA_TOKEN, 1), (CKA_PRIVATE, 1), (CKA_LABEL, b"a-token-" + tag)],
    )
    mine = {b"a-pub-" + tag, b"a-priv-" + tag, b"a-data-" + tag}
    try:
        visible = {}
        for other, session in ((b, sb), (c, sc)):
            visible[other] = set(other.find(session)) | set(
                other.find(session, [(CKA_CLASS, CKO_PRIVATE_KEY)])
            )
            assert not _labels(other, session, visible[other]) & mine, (
                "another connection finds A's session objects"
            )
            assert not other.find(session, [(CKA_LABEL, b"a-data-" + tag)])
        assert b"a-token-" + tag in _labels(b, sb, b.find(sb, [(CKA_LABEL, b"a-token-" + tag)]))
        assert not c.find(sc, [(CKA_LABEL, b"a-token-" + tag)])  # private: not without a login
        known = visible[b] | visible[c]
        guesses = sorted({h + d for h in (public, private, data) for d in (-2, -1, 0, 1, 2)} - known - {0})
        assert guesses, "every handle near A's is another connection's own"
        for other, session in ((b, sb), (c, sc)):
            for handle in guesses:
                got = other.call("C_GetAttributeValue", session, handle, [(CKA_LABEL, 256)])
                assert (got.call_id, got.rv) == (0, CKR_OBJECT_HANDLE_INVALID), f"read {handle}: {got}"
                rv = other.call("C_SignInit", session, CKM_SHA256_RSA_PKCS, handle).rv
                assert rv in (CKR_OBJECT_HANDLE_INVALID, CKR_KEY_HANDLE_INVALID), (
                    f"sign with {handle}: {ckr_name(rv)}"
                )
                rv = other.call("C_DestroyObject", session, handle).rv
                assert rv == CKR_OBJECT_HANDLE_INVALID, f"destroy {handle}: {ckr_name(rv)}"
        assert {public, private, data} <= set(a.find(sa))
        a.ok("C_SignInit", sa, CKM_SHA256_RSA_PKCS, private)
        (signature,) = a.ok("C_Sign", sa, b"still mine", 512)
        assert len(signature) == 256
    finally:
        a.call("C_DestroyObject", sa, token)
    assert_serving(served)


# ---- a mechanism parameter that holds pointers -------------------------------------------------------
def test_a_mechanism_parameter_with_pointers_is_refused_not_followed(serve):
    """p11-kit 0.24.1 carries a parameter it has no encoder for as plain bytes: for CKM_AES_GCM
    those bytes are a CK_GCM_PARAMS whose pIv/pAAD, handed on as they are, point anywhere."""
    served = serve()
    client = Client(served.socket)
    session = client.open_session(HA_SLOT, USER_PIN)
    (key,) = client.ok(
        "C_GenerateKey", session, CKM_AES_KEY_GEN, [(CKA_TOKEN, 0), (CKA_VALUE_LEN, 32), (CKA_ENCRYPT, 1)]
    )
    anywhere = (0x4141414141414141).to_bytes(8, "big")
    params = b"".join((anywhere, u64(12), u64(96), anywhere, u64(16), u64(128)))  # 48 bytes
    try:
        rv = client.call("C_EncryptInit", session, (CKM_AES_GCM, params), key).rv
        assert rv == CKR_MECHANISM_PARAM_INVALID, ckr_name(rv)  # was CKR_OK, then a dead server
        client.call("C_Encrypt", session, b"x" * 16, 1000)
    except (EOFError, OSError) as error:
        pytest.fail(f"no reply ({error}), serve {served.process.wait(5)}")
    assert_serving(served)


# ---- resource bounds --------------------------------------------------------------------------------
def test_connections_beyond_max_connections_are_closed_at_once(serve):
    served = serve("--max-connections", "2")
    first = [Client(served.socket) for _ in range(2)]
    for client in first:
        client.initialize()
    before = served.log().count("max-connections")
    extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    extra.settimeout(5)
    extra.connect(str(served.socket))
    try:
        extra.sendall(b"\x00")
    except BrokenPipeError:
        pass
    assert closed(extra), "the connection beyond --max-connections 2 was kept open"
    served.wait_for_log("max-connections", before + 1)
    for client in first:
        assert client.call("C_GetInfo").rv == CKR_OK
    assert served.log().count("max-connections") == before + 1, served.log()
    assert served.process.poll() is None and "internal error" not in served.log()
    no_traceback(served.log())


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def test_digest_updates_get_device_memory_before_the_server_grows(serve):
    served = serve()
    client = Client(served.socket)
    sessions = [client.open_session(HA_SLOT)] + [client.ok("C_OpenSession", HA_SLOT, 6)[0] for _ in range(5)]
    for session in sessions:
        client.ok("C_DigestInit", session, CKM_SHA256)
    start, chunk = _rss(served.process.pid), os.urandom(1 << 20)
    for sent in range(1, 601):
        rv = client.call("C_DigestUpdate", sessions[sent % 6], chunk).rv
        grown = (_rss(served.process.pid) - start) >> 20
        assert grown <= 200, f"RSS grew {grown} MiB after {sent} MiB, no CKR_DEVICE_MEMORY yet"
        if rv == CKR_DEVICE_MEMORY:
            break
        assert rv == CKR_OK, f"C_DigestUpdate {sent}: {ckr_name(rv)}"
    else:
        pytest.fail(f"600 MiB of C_DigestUpdate on 6 sessions, never CKR_DEVICE_MEMORY (RSS +{grown} MiB)")
    other = Client(served.socket)
    assert other.open_session(HA_SLOT) and other.call("C_GetInfo").rv == CKR_OK
    assert_serving(served)
