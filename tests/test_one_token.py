"""The HA slot through `ckdemo serve` answers as one token does, for what each application sees
of its own: slot events (each application sees each once, none from before it connected) and
a context-specific login with no operation that needs one (SoftHSM2 2.6.1's answer), and public
objects readable by an application with no login, whichever member answers."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

from conftest import SOFTHSM_LIB, USER_PIN, no_traceback, requires_softhsm, softhsm_env
from test_serve import RawClient, start_server, stop_cleanly
from test_serve_clients import reference  # noqa: F401 (one SoftHSM2 token behind p11-kit server)

from ckdemo import codes
from ckdemo.rpc import HANDSHAKE, Attribute, AttributeSize, Mechanism

pytestmark = requires_softhsm

HA_SLOT, CKF_DONT_BLOCK, CKU_CONTEXT_SPECIFIC = 0x5000, 0x1, 2
CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL, CKA_VALUE = 0x0, 0x1, 0x2, 0x3, 0x11
CKA_SIGN, CKA_VALUE_LEN, CKA_EC_PARAMS = 0x108, 0x161, 0x180
CKA_KEY_TYPE, CKA_ENCRYPT, CKA_DECRYPT, CKA_VERIFY = 0x100, 0x104, 0x105, 0x10A
CKA_SENSITIVE, CKA_MODIFIABLE, CKA_COPYABLE, CKA_ID = 0x103, 0x170, 0x171, 0x102
P256 = bytes.fromhex("06082a8648ce3d030107")


@contextmanager
def session_on(served, flags: int = 0x6, login: bool = True) -> Iterator[tuple[RawClient, int]]:
    """A new application with one session on the HA slot, logged in as the user by default."""
    client = connect(served)
    (session,) = client.ok("C_OpenSession", HA_SLOT, flags)
    if login:
        client.ok("C_Login", session, 1, USER_PIN.encode())
    try:
        yield client, session
    finally:
        client.close()


@contextmanager
def on_first_slot(socket, login: bool = True) -> Iterator[tuple[RawClient, int]]:
    """An application with one R/W session on the first slot of a server (the HA slot of ckdemo
    serve, or the one token behind p11-kit server), logged in as the user by default."""
    client = RawClient(socket)
    try:
        client.ok("C_Initialize", HANDSHAKE, 0, b"\x00")
        (slots,) = client.ok("C_GetSlotList", 1, 8)
        (session,) = client.ok("C_OpenSession", slots[0], 0x6)
        if login:
            client.ok("C_Login", session, 1, USER_PIN.encode())
        yield client, session
    finally:
        client.close()


def generate_key(client: RawClient, session: int, mechanism: int, *attributes: Attribute) -> int:
    """C_GenerateKey that must succeed: the new key's handle."""
    (key,) = client.ok("C_GenerateKey", session, Mechanism(mechanism), attributes)
    return key


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
    tmp_path, provision, ckdemo_bin, run_ckdemo
):
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


def test_a_context_specific_login_without_an_operation_is_operation_not_initialized(served):
    with session_on(served, 0x6, login=False) as (client, session):
        for when in ("before login", "after login"):
            reply = client.call("C_Login", session, CKU_CONTEXT_SPECIFIC, USER_PIN.encode())
            assert reply.is_error and codes.ckr_name(reply.ckr) == "CKR_OPERATION_NOT_INITIALIZED", when
            if when == "before login":
                client.ok("C_Login", session, 1, USER_PIN.encode())


def test_a_public_data_object_reads_the_same_on_every_member_after_a_logout(tmp_path, provision, ckdemo_bin):
    """A data object has no CKA_ID: members found it again by an empty CKA_ID, found nothing,
    and a reader with no login got CKR_USER_NOT_LOGGED_IN from two members of three."""
    home = provision(tmp_path / "home")
    served = start_server(ckdemo_bin, home, None, tmp_path / "serve.log")
    try:
        maker = connect(served)
        (made_in,) = maker.ok("C_OpenSession", HA_SLOT, 0x6)
        maker.ok("C_Login", made_in, 1, USER_PIN.encode())
        template = (
            Attribute(CKA_CLASS, 0),
            Attribute(CKA_TOKEN, 1),
            Attribute(CKA_PRIVATE, 0),
            Attribute(CKA_LABEL, b"public-data"),
            Attribute(CKA_VALUE, b"hello"),
        )
        (made,) = maker.ok("C_CreateObject", made_in, template)
        maker.ok("C_Logout", made_in)
        reader = connect(served)
        (read_in,) = reader.ok("C_OpenSession", HA_SLOT, 0x6)
        reader.ok("C_FindObjectsInit", read_in, (Attribute(CKA_LABEL, b"public-data"),))
        (found,) = reader.ok("C_FindObjects", read_in, 10)
        reader.ok("C_FindObjectsFinal", read_in)
        assert len(found) == 1
        for _ in range(6):  # whichever member answers
            values, ckr = reader.ok("C_GetAttributeValue", read_in, found[0], (AttributeSize(CKA_VALUE, 64),))
            assert ckr == 0 and values[0].value == b"hello"
        maker.ok("C_Login", made_in, 1, USER_PIN.encode())
        maker.ok("C_DestroyObject", made_in, made)  # found again on every member
        for client in (maker, reader):
            client.close()
    finally:
        stop_cleanly(served)


def test_searches_give_the_same_objects_in_the_same_order_whichever_member_serves(
    tmp_path, provision, ckdemo_bin
):
    """pkcs11-tool --test enumerates keys by index over separate searches: an order that changed
    with the member made it test one key twice and skip another."""
    home = provision(tmp_path / "home")
    served = start_server(ckdemo_bin, home, None, tmp_path / "serve.log")
    try:
        client = connect(served)
        (session,) = client.ok("C_OpenSession", HA_SLOT, 0x6)
        client.ok("C_Login", session, 1, USER_PIN.encode())
        for number in range(3):
            client.ok(
                "C_GenerateKeyPair",
                session,
                Mechanism(0x1040),  # CKM_EC_KEY_PAIR_GEN
                (
                    Attribute(CKA_TOKEN, 1),
                    Attribute(CKA_EC_PARAMS, P256),
                    Attribute(CKA_LABEL, b"ec%d" % number),
                ),
                (Attribute(CKA_TOKEN, 1), Attribute(CKA_LABEL, b"ec%d" % number), Attribute(CKA_SIGN, 1)),
            )
            client.ok(
                "C_GenerateKey",
                session,
                Mechanism(0x1080),  # CKM_AES_KEY_GEN
                (
                    Attribute(CKA_VALUE_LEN, 32),
                    Attribute(CKA_TOKEN, 1),
                    Attribute(CKA_LABEL, b"aes%d" % number),
                ),
            )
        client.close()
        stop_cleanly(served)
        # a new server loads the objects from each member's files, each in its own order
        served = start_server(ckdemo_bin, home, None, tmp_path / "serve2.log")
        client = connect(served)
        (session,) = client.ok("C_OpenSession", HA_SLOT, 0x6)
        client.ok("C_Login", session, 1, USER_PIN.encode())
        orders = []
        for _ in range(9):  # three rounds over the three members
            client.ok("C_FindObjectsInit", session, ())
            (found,) = client.ok("C_FindObjects", session, 100)
            client.ok("C_FindObjectsFinal", session)
            orders.append(found)
        assert len(orders[0]) == 9 and all(order == orders[0] for order in orders), orders
        client.close()
    finally:
        stop_cleanly(served)


def test_an_init_with_a_key_that_cannot_do_it_is_refused_at_init_as_by_a_token(served):
    """The server keeps operations and works at the single-part call, so it used to answer CKR_OK
    at Init and refuse a call later. SoftHSM2 refuses at Init (usage flag, key type, HMAC key
    length), and C_Verify with an RSA mechanism and an EC key kills a SoftHSM2 process."""
    with session_on(served, 0x6) as (client, session):
        ec_public, ec_private = client.ok(
            "C_GenerateKeyPair",
            session,
            Mechanism(0x1040),
            (Attribute(CKA_TOKEN, 0), Attribute(CKA_EC_PARAMS, P256), Attribute(CKA_VERIFY, 1)),
            (Attribute(CKA_TOKEN, 0), Attribute(CKA_SIGN, 1)),
        )
        (short,) = client.ok(
            "C_CreateObject",
            session,
            (
                Attribute(CKA_CLASS, 4),
                Attribute(CKA_KEY_TYPE, 0x10),
                Attribute(CKA_TOKEN, 0),
                Attribute(CKA_SIGN, 1),
                Attribute(CKA_VALUE, b"k" * 16),
            ),
        )
        aes = generate_key(
            client,
            session,
            0x1080,
            Attribute(CKA_VALUE_LEN, 32),
            Attribute(CKA_TOKEN, 0),
            Attribute(CKA_ENCRYPT, 1),
            Attribute(CKA_DECRYPT, 0),
        )
        (data,) = client.ok(
            "C_CreateObject",
            session,
            (Attribute(CKA_CLASS, 0), Attribute(CKA_TOKEN, 0), Attribute(CKA_LABEL, b"not a key")),
        )
        cases = [
            ("C_VerifyInit", Mechanism(0x40), ec_public, "CKR_KEY_TYPE_INCONSISTENT"),
            ("C_SignInit", Mechanism(0x1041), data, "CKR_KEY_FUNCTION_NOT_PERMITTED"),
            ("C_SignInit", Mechanism(0x251), short, "CKR_KEY_SIZE_RANGE"),
            ("C_SignInit", Mechanism(0x251), ec_private, "CKR_KEY_TYPE_INCONSISTENT"),
            ("C_DecryptInit", Mechanism(0x1081), aes, "CKR_KEY_FUNCTION_NOT_PERMITTED"),
            ("C_EncryptInit", Mechanism(0x1), aes, "CKR_KEY_TYPE_INCONSISTENT"),
            ("C_SignInit", Mechanism(0x1041), ec_private, "CKR_OK"),
        ]
        for call, mechanism, key, expected in cases:
            reply = client.call(call, session, mechanism, key)
            answer = codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK"
            assert answer == expected, (call, hex(mechanism.type))
        (signature,) = client.ok("C_Sign", session, b"d" * 32, 256)
        assert len(signature) == 64
        assert served.process.poll() is None


def test_one_operation_at_a_time_in_a_session_as_softhsm2_keeps_it(served):
    with session_on(served, 0x6) as (client, session):
        _, private = client.ok(
            "C_GenerateKeyPair",
            session,
            Mechanism(0x1040),
            (Attribute(CKA_TOKEN, 0), Attribute(CKA_EC_PARAMS, P256)),
            (Attribute(CKA_TOKEN, 0), Attribute(CKA_SIGN, 1)),
        )

        def answer(call, *args) -> str:
            reply = client.call(call, session, *args)
            return codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK"

        assert answer("C_SignInit", Mechanism(0x1041), private) == "CKR_OK"
        assert answer("C_DigestInit", Mechanism(0x250)) == "CKR_OPERATION_ACTIVE"
        assert answer("C_FindObjectsInit", ()) == "CKR_OPERATION_ACTIVE"
        assert answer("C_Sign", b"d" * 32, 256) == "CKR_OK"  # the signature ends it
        assert answer("C_FindObjectsInit", ()) == "CKR_OK"
        assert answer("C_DigestInit", Mechanism(0x250)) == "CKR_OPERATION_ACTIVE"
        assert answer("C_FindObjectsFinal") == "CKR_OK"
        assert answer("C_DigestInit", Mechanism(0x250)) == "CKR_OK"


def test_a_digest_over_data_and_keys_in_any_order(served):
    """C_DigestKey between C_DigestUpdate calls: one token digests them in order; the server
    answered CKR_FUNCTION_NOT_SUPPORTED (differential test defect 6)."""
    with session_on(served, 0x6) as (client, session):
        value = bytes(range(32))
        (key,) = client.ok(
            "C_CreateObject",
            session,
            (
                Attribute(CKA_CLASS, 4),
                Attribute(CKA_KEY_TYPE, 0x10),
                Attribute(CKA_TOKEN, 0),
                Attribute(CKA_SENSITIVE, 0),
                Attribute(CKA_VALUE, value),
            ),
        )
        for parts in ([b"prefix", key, b"suffix"], [key, b"after"], [b"a", key, key, b"b"]):
            client.ok("C_DigestInit", session, Mechanism(0x250))
            for part in parts:
                if isinstance(part, bytes):
                    client.ok("C_DigestUpdate", session, part)
                else:
                    client.ok("C_DigestKey", session, part)
            (digest,) = client.ok("C_DigestFinal", session, 64)
            expected = hashlib.sha256(b"".join(value if p == key else p for p in parts)).digest()
            assert digest == expected, parts


def test_attributes_a_key_takes_only_at_creation_are_given_at_generation_on_every_member(served):
    """COPYABLE or MODIFIABLE = FALSE cannot be set after a key is made: the server used to set
    them afterwards and answered CKR_ATTRIBUTE_READ_ONLY where one token makes the key
    (differential test defect 4). Every member's copy carries them."""
    with session_on(served, 0x6) as (client, session):
        aes = generate_key(
            client,
            session,
            0x1080,
            Attribute(CKA_VALUE_LEN, 32),
            Attribute(CKA_TOKEN, 1),
            Attribute(CKA_COPYABLE, 0),
        )
        _, private = client.ok(
            "C_GenerateKeyPair",
            session,
            Mechanism(0x1040),
            (Attribute(CKA_TOKEN, 1), Attribute(CKA_EC_PARAMS, P256)),
            (Attribute(CKA_TOKEN, 1), Attribute(CKA_SIGN, 1), Attribute(CKA_MODIFIABLE, 0)),
        )
        for _ in range(6):  # whichever member answers
            values, _ = client.ok("C_GetAttributeValue", session, aes, (AttributeSize(CKA_COPYABLE, 1),))
            assert values[0].value == b"\x00" or values[0].value == 0
            values, _ = client.ok(
                "C_GetAttributeValue", session, private, (AttributeSize(CKA_MODIFIABLE, 1),)
            )
            assert values[0].value == 0
        reply = client.call("C_CopyObject", session, aes, ())
        assert reply.is_error and codes.ckr_name(reply.ckr) == "CKR_ACTION_PROHIBITED"


def test_an_so_login_beside_a_read_only_session_is_refused_for_the_session_first(served):
    """R/O session, user login, SO login: SoftHSM2 answers CKR_SESSION_READ_ONLY_EXISTS (it checks
    the sessions first); the server answered CKR_USER_ANOTHER_ALREADY_LOGGED_IN."""
    with session_on(served, 0x4) as (client, session):  # serial, read-only
        reply = client.call("C_Login", session, 0, b"5678")
        assert reply.is_error and codes.ckr_name(reply.ckr) == "CKR_SESSION_READ_ONLY_EXISTS"


def test_a_key_pair_with_a_token_half_and_a_session_half(served):
    """pkcs11-tool and others make a token private key with a session public key: one token
    does; the server refused it with CKR_TEMPLATE_INCONSISTENT (differential test defect 4)."""
    with session_on(served) as (client, session):
        public, private = client.ok(
            "C_GenerateKeyPair",
            session,
            Mechanism(0x1040),
            (Attribute(CKA_EC_PARAMS, P256), Attribute(CKA_LABEL, b"halves")),
            (Attribute(CKA_TOKEN, 1), Attribute(CKA_SIGN, 1), Attribute(CKA_LABEL, b"halves")),
        )
        for _ in range(6):  # whichever member answers
            for key, token in ((public, 0), (private, 1)):
                values, _ = client.ok("C_GetAttributeValue", session, key, (AttributeSize(CKA_TOKEN, 1),))
                assert values[0].value == token
        client.ok("C_SignInit", session, Mechanism(0x1041), private)
        (signature,) = client.ok("C_Sign", session, b"d" * 32, 256)
        client.ok("C_VerifyInit", session, Mechanism(0x1041), public)
        client.ok("C_Verify", session, b"d" * 32, signature)
        closed = served.log().count("closed by the client")
    # the session half went with the session; the token half stays
    served.wait_for_log("closed by the client", closed + 1)
    with session_on(served) as (other, look):
        other.ok("C_FindObjectsInit", look, (Attribute(CKA_LABEL, b"halves"),))
        (found,) = other.ok("C_FindObjects", look, 10)
        other.ok("C_FindObjectsFinal", look)
        assert len(found) == 1
        other.ok("C_DestroyObject", look, found[0])


def test_two_data_objects_of_one_label_are_two_objects(served):
    """Data objects have no CKA_ID: the HA slot told them apart by class and label only, so two
    of one label were one object (a search found one, a destroy removed one or the other on each
    member: differential test defect 7). Their values tell them apart now."""
    with session_on(served) as (client, session):
        made = [
            client.ok(
                "C_CreateObject",
                session,
                (
                    Attribute(CKA_CLASS, 0),
                    Attribute(CKA_TOKEN, 1),
                    Attribute(CKA_LABEL, b"twins"),
                    Attribute(CKA_VALUE, value),
                ),
            )[0]
            for value in (b"first", b"second", b"third")
        ]
        for _ in range(6):  # whichever member searches
            client.ok("C_FindObjectsInit", session, (Attribute(CKA_LABEL, b"twins"),))
            (found,) = client.ok("C_FindObjects", session, 10)
            client.ok("C_FindObjectsFinal", session)
            assert sorted(found) == sorted(made)
        client.ok("C_DestroyObject", session, made[1])
        for _ in range(6):  # the second one gone from every member, the others kept
            client.ok("C_FindObjectsInit", session, (Attribute(CKA_LABEL, b"twins"),))
            (found,) = client.ok("C_FindObjects", session, 10)
            client.ok("C_FindObjectsFinal", session)
            values = []
            for handle in found:
                read, _ = client.ok("C_GetAttributeValue", session, handle, (AttributeSize(CKA_VALUE, 16),))
                values.append(bytes(read[0].value))
            assert sorted(values) == [b"first", b"third"]
        for handle in (made[0], made[2]):
            client.ok("C_DestroyObject", session, handle)


def test_losing_every_member_loses_sessions_and_logins_until_the_application_initializes_again(
    tmp_path, provision, ckdemo_bin, run_ckdemo
):
    """Luna HA (docs/HA.md): every member lost, then back: the applications' sessions are gone
    (CKR_SESSION_HANDLE_INVALID) and so is the login; after C_Finalize and C_Initialize each
    application logs in again (a real login: the server's shared one went with the token)."""
    home = provision(tmp_path / "home")
    served = start_server(ckdemo_bin, home, None, tmp_path / "serve.log")
    try:
        first, second = connect(served), connect(served)
        sessions = []
        for client in (first, second):
            (session,) = client.ok("C_OpenSession", HA_SLOT, 0x6)
            client.ok("C_Login", session, 1, USER_PIN.encode())
            sessions.append(session)
        for member in ("member1", "member2", "member3"):
            done = run_ckdemo(home, "member", "fail", member)
            assert done.returncode == 0, done.stdout + done.stderr
        lost = first.call("C_GenerateRandom", sessions[0], 8)
        assert codes.ckr_name(lost.ckr) == "CKR_DEVICE_ERROR"
        for member in ("member1", "member2", "member3"):
            assert run_ckdemo(home, "member", "restore", member).returncode == 0
        recovered = run_ckdemo(home, "hagroup", "recover")
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        for client, session in zip((first, second), sessions):
            stale = client.call("C_GenerateRandom", session, 8)
            assert codes.ckr_name(stale.ckr) == "CKR_SESSION_HANDLE_INVALID"
            client.ok("C_Finalize")
            client.ok("C_Initialize", HANDSHAKE, 0, b"\x00")
            (session,) = client.ok("C_OpenSession", HA_SLOT, 0x6)
            wrong = client.call("C_Login", session, 1, b"0000")  # a real login checks the PIN
            assert codes.ckr_name(wrong.ckr) == "CKR_PIN_INCORRECT"
            client.ok("C_Login", session, 1, USER_PIN.encode())
            key = generate_key(client, session, 0x1080, Attribute(CKA_VALUE_LEN, 16), Attribute(CKA_TOKEN, 0))
            client.ok("C_DestroyObject", session, key)
        for client in (first, second):
            client.close()
    finally:
        stop_cleanly(served)
    no_traceback(served.log())
    assert "must log in again" in served.log()


def test_a_digest_over_a_data_object_is_the_tokens_answer_not_an_internal_error(served):
    """C_DigestKey of a data object: SoftHSM2 answers it; the member layer handed it to
    python-pkcs11, which digests keys only: an internal error (TypeError) and CKR_GENERAL_ERROR."""
    with session_on(served) as (client, session):
        (data,) = client.ok(
            "C_CreateObject",
            session,
            (Attribute(CKA_CLASS, 0), Attribute(CKA_TOKEN, 0), Attribute(CKA_VALUE, b"not a key")),
        )
        for _ in range(3):  # each member
            client.ok("C_DigestInit", session, Mechanism(0x250))
            client.ok("C_DigestUpdate", session, b"prefix")
            reply = client.call("C_DigestKey", session, data)
            if not reply.is_error:
                reply = client.call("C_DigestFinal", session, 64)
            assert not reply.is_error or codes.ckr_name(reply.ckr) != "CKR_GENERAL_ERROR", reply
    assert "internal error" not in served.log()


def test_a_private_object_after_a_logout_is_an_invalid_handle_as_on_a_token(served):
    """Differential test defect 13: C_Login, C_CreateObject(DATA, PRIVATE), C_Logout, then the
    object's handle: SoftHSM2 forgot it (CKR_OBJECT_HANDLE_INVALID; a key's handle in an Init:
    CKR_KEY_HANDLE_INVALID); the server answered CKR_USER_NOT_LOGGED_IN."""
    with session_on(served) as (client, session):
        (data,) = client.ok(
            "C_CreateObject",
            session,
            (
                Attribute(CKA_CLASS, 0),
                Attribute(CKA_TOKEN, 0),
                Attribute(CKA_PRIVATE, 1),
                Attribute(CKA_LABEL, b"private-after-logout"),
            ),
        )
        key = generate_key(
            client,
            session,
            0x1080,
            Attribute(CKA_VALUE_LEN, 16),
            Attribute(CKA_PRIVATE, 1),
            Attribute(CKA_ENCRYPT, 1),
        )
        client.ok("C_Logout", session)
        reply = client.call("C_GetAttributeValue", session, data, (AttributeSize(CKA_LABEL, 64),))
        assert codes.ckr_name(reply.ckr) == "CKR_OBJECT_HANDLE_INVALID"
        reply = client.call("C_EncryptInit", session, Mechanism(0x1081), key)
        assert codes.ckr_name(reply.ckr) == "CKR_KEY_HANDLE_INVALID"


def test_an_always_authenticate_key_asks_a_context_login_for_each_use_as_on_one_token(served, reference):
    """A key pair with CKA_ALWAYS_AUTHENTICATE (smart-card style signing keys): made on the HA
    slot (it was refused with CKR_ATTRIBUTE_READ_ONLY), and every C_Sign or C_Decrypt after
    its Init asks for C_Login(CKU_CONTEXT_SPECIFIC) with the right PIN first, as on one SoftHSM2
    token behind p11-kit server: the same answers, call for call, on both."""
    CKA_ALWAYS_AUTHENTICATE, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT = 0x202, 0x121, 0x122
    SHA256_RSA_PKCS, RSA_PKCS, RSA_KEY_PAIR_GEN = 0x40, 0x1, 0x0
    data = b"sign me, once per login"

    def story(socket) -> tuple[list[str], bytes, bytes]:
        with on_first_slot(socket) as (client, session):
            public, private = client.ok(
                "C_GenerateKeyPair",
                session,
                Mechanism(RSA_KEY_PAIR_GEN),
                (
                    Attribute(CKA_TOKEN, 0),
                    Attribute(CKA_MODULUS_BITS, 2048),
                    Attribute(CKA_PUBLIC_EXPONENT, b"\x01\x00\x01"),
                    Attribute(CKA_VERIFY, 1),
                    Attribute(CKA_ENCRYPT, 1),
                ),
                (
                    Attribute(CKA_TOKEN, 0),
                    Attribute(CKA_SIGN, 1),
                    Attribute(CKA_DECRYPT, 1),
                    Attribute(CKA_SENSITIVE, 1),
                    Attribute(CKA_ALWAYS_AUTHENTICATE, 1),
                ),
            )
            seen = []

            def note(name, *args):
                reply = client.call(name, *args)
                seen.append(f"{name} {codes.ckr_name(reply.ckr) if reply.is_error else 'CKR_OK'}")
                return None if reply.is_error else reply.args

            note("C_Login", session, CKU_CONTEXT_SPECIFIC, USER_PIN.encode())  # no operation
            note("C_SignInit", session, Mechanism(SHA256_RSA_PKCS), private)
            note("C_Sign", session, data, 256)  # no context login: refused, and the operation ends
            note("C_Sign", session, data, 256)
            note("C_SignInit", session, Mechanism(SHA256_RSA_PKCS), private)
            note("C_Login", session, CKU_CONTEXT_SPECIFIC, b"0000")  # the wrong PIN
            note("C_Login", session, CKU_CONTEXT_SPECIFIC, USER_PIN.encode())
            (signature,) = note("C_Sign", session, data, 256)
            note("C_SignInit", session, Mechanism(SHA256_RSA_PKCS), private)  # each use asks again
            note("C_Sign", session, data, 256)
            note("C_VerifyInit", session, Mechanism(SHA256_RSA_PKCS), public)
            note("C_Verify", session, data, signature)
            note("C_EncryptInit", session, Mechanism(RSA_PKCS), public)
            (ciphertext,) = note("C_Encrypt", session, data, 256)
            note("C_DecryptInit", session, Mechanism(RSA_PKCS), private)
            note("C_Login", session, CKU_CONTEXT_SPECIFIC, USER_PIN.encode())
            (plain,) = note("C_Decrypt", session, ciphertext, 256)
            attributes, _ = note(
                "C_GetAttributeValue", session, private, (AttributeSize(CKA_ALWAYS_AUTHENTICATE, 1),)
            )
            seen.append(f"ALWAYS_AUTHENTICATE {attributes[0].value!r}")
            return seen, signature, plain

    ours, their_story = story(served.socket), story(reference.socket)
    assert ours[0] == their_story[0]
    assert "C_Sign CKR_USER_NOT_LOGGED_IN" in ours[0] and "C_Login CKR_PIN_INCORRECT" in ours[0]
    assert len(ours[1]) == len(their_story[1]) == 256  # (two keys: each verified by its own side)
    assert ours[2] == their_story[2] == b"sign me, once per login"


def test_keys_asked_public_are_public_and_made_without_a_login_as_on_one_token(served, reference):
    """CKA_PRIVATE = FALSE on a secret key or a private key (allowed by PKCS#11, the token's
    default is TRUE): one token makes it without any login in a R/W session and anyone may use it;
    the HA slot refused it without a login (CKR_USER_NOT_LOGGED_IN) and made it private with one
    (differential test defect 11). The same answers, call for call, on both; the keys really are
    public on every member (listed there with no login)."""
    AES_KEY_GEN, AES_ECB, EC_KEY_PAIR_GEN, ECDSA = 0x1080, 0x1081, 0x1040, 0x1041

    def on_members_without_login() -> None:
        for member in ("member1", "member2", "member3"):  # read straight on each token
            listed = subprocess.run(
                ["pkcs11-tool", "--module", SOFTHSM_LIB, "--token-label", member, "-O"],
                env=softhsm_env(served.home),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert "public-aes" in listed.stdout and listed.stdout.count("public-ec") == 2, listed.stdout

    def story(socket, check=lambda: None) -> list[str]:
        seen = []
        with on_first_slot(socket, login=False) as (client, session):

            def note(name, *args):
                reply = client.call(name, *args)
                seen.append(f"{name} {codes.ckr_name(reply.ckr) if reply.is_error else 'CKR_OK'}")
                return None if reply.is_error else reply.args

            made = note(
                "C_GenerateKey",
                session,
                Mechanism(AES_KEY_GEN),
                (
                    Attribute(CKA_VALUE_LEN, 32),
                    Attribute(CKA_TOKEN, 1),
                    Attribute(CKA_PRIVATE, 0),
                    Attribute(CKA_SENSITIVE, 1),
                    Attribute(CKA_ENCRYPT, 1),
                    Attribute(CKA_DECRYPT, 1),
                    Attribute(CKA_LABEL, b"public-aes"),
                ),
            )
            pair = note(
                "C_GenerateKeyPair",
                session,
                Mechanism(EC_KEY_PAIR_GEN),
                (
                    Attribute(CKA_TOKEN, 1),
                    Attribute(CKA_EC_PARAMS, P256),
                    Attribute(CKA_VERIFY, 1),
                    Attribute(CKA_LABEL, b"public-ec"),
                ),
                (
                    Attribute(CKA_TOKEN, 1),
                    Attribute(CKA_PRIVATE, 0),
                    Attribute(CKA_SENSITIVE, 1),
                    Attribute(CKA_SIGN, 1),
                    Attribute(CKA_LABEL, b"public-ec"),
                ),
            )
            if made and pair:
                (aes,), (public, private) = made, pair
                for _ in range(3):  # whichever member serves
                    values, _ = client.ok(
                        "C_GetAttributeValue", session, aes, (AttributeSize(CKA_PRIVATE, 1),)
                    )
                    seen.append(f"AES CKA_PRIVATE {values[0].value!r}")
                    values, _ = client.ok(
                        "C_GetAttributeValue", session, private, (AttributeSize(CKA_PRIVATE, 1),)
                    )
                    seen.append(f"EC CKA_PRIVATE {values[0].value!r}")
                    note("C_EncryptInit", session, Mechanism(AES_ECB), aes)
                    (sealed,) = note("C_Encrypt", session, b"0123456789abcdef", 16)
                    note("C_DecryptInit", session, Mechanism(AES_ECB), aes)
                    (opened,) = note("C_Decrypt", session, sealed, 16)
                    seen.append(f"round trip {opened == b'0123456789abcdef'}")
                    note("C_SignInit", session, Mechanism(ECDSA), private)
                    (signature,) = note("C_Sign", session, b"\x01" * 32, 64)
                    note("C_VerifyInit", session, Mechanism(ECDSA), public)
                    note("C_Verify", session, b"\x01" * 32, signature)
                client.ok("C_Login", session, 1, USER_PIN.encode())  # and the same with a login
                values, _ = client.ok("C_GetAttributeValue", session, aes, (AttributeSize(CKA_PRIVATE, 1),))
                seen.append(f"logged in: AES CKA_PRIVATE {values[0].value!r}")
                check()
                for handle in (aes, public, private):  # nothing left for the next test
                    note("C_DestroyObject", session, handle)
            return seen

    ours, theirs = story(served.socket, on_members_without_login), story(reference.socket)
    assert ours == theirs
    assert "C_GenerateKey CKR_OK" in ours and "round trip True" in ours and "C_Verify CKR_OK" in ours


def test_an_unwrap_of_a_blob_no_aes_key_wrap_makes_is_refused_first_as_by_one_token(served, reference):
    """SoftHSM2 checks an AES key wrap's blob length before the unwrapping key, the login or the
    template: the HA slot answered CKR_KEY_FUNCTION_NOT_PERMITTED, CKR_USER_NOT_LOGGED_IN,
    CKR_TEMPLATE_INCOMPLETE ... where one token says CKR_WRAPPED_KEY_LEN_RANGE (differential test)."""
    AES_KEY_GEN, KEY_WRAP, KEY_WRAP_PAD = 0x1080, 0x2109, 0x210A

    def story(socket) -> list[str]:
        with on_first_slot(socket) as (client, session):
            no_unwrap = generate_key(
                client, session, AES_KEY_GEN, Attribute(CKA_VALUE_LEN, 32), Attribute(CKA_TOKEN, 0)
            )
            seen = []
            for mechanism, blob, template in (
                (KEY_WRAP_PAD, b"\x01" * 10, (Attribute(CKA_CLASS, 4), Attribute(CKA_KEY_TYPE, 0x1F))),
                (KEY_WRAP_PAD, b"\x01" * 20, (Attribute(CKA_CLASS, 4), Attribute(CKA_KEY_TYPE, 0x1F))),
                (KEY_WRAP, b"\x01" * 16, ()),  # short, and no class: the length first
                (KEY_WRAP_PAD, b"\x01" * 24, ()),
            ):  # the right length: the key's own refusal
                reply = client.call("C_UnwrapKey", session, Mechanism(mechanism), no_unwrap, blob, template)
                seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours[:3] == ["CKR_WRAPPED_KEY_LEN_RANGE"] * 3


def test_an_init_while_an_operation_is_active_is_refused_before_the_key_is_looked_at(served, reference):
    """One token answers CKR_OPERATION_ACTIVE to a second Init in a session before it looks at the
    key (its handle, usage flag or type); the HA slot checked the key first (differential test:
    six families of C_SignInit / C_VerifyInit / C_EncryptInit / C_DecryptInit)."""
    AES_KEY_GEN, AES_ECB, SHA256_HMAC, SHA256 = 0x1080, 0x1081, 0x251, 0x250

    def story(socket) -> list[str]:
        with on_first_slot(socket) as (client, session):
            aes = generate_key(
                client,
                session,
                AES_KEY_GEN,
                Attribute(CKA_VALUE_LEN, 32),
                Attribute(CKA_TOKEN, 0),
                Attribute(CKA_ENCRYPT, 0),
                Attribute(CKA_DECRYPT, 0),
            )
            client.ok("C_DigestInit", session, Mechanism(SHA256))
            seen = []
            for name, mechanism, key in (
                ("C_SignInit", SHA256_HMAC, aes),  # wrong type too
                ("C_VerifyInit", SHA256_HMAC, aes),
                ("C_EncryptInit", AES_ECB, aes),  # no CKA_ENCRYPT
                ("C_DecryptInit", AES_ECB, aes),
                ("C_SignInit", SHA256_HMAC, 0x7777),
            ):  # no such key
                reply = client.call(name, session, Mechanism(mechanism), key)
                seen.append(f"{name} {codes.ckr_name(reply.ckr) if reply.is_error else 'CKR_OK'}")
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert all(line.endswith("CKR_OPERATION_ACTIVE") for line in ours), ours


def test_a_generation_with_no_login_is_refused_for_the_login_before_the_template(served, reference):
    """A private secret key asked without a login and without CKA_VALUE_LEN: one token answers
    CKR_USER_NOT_LOGGED_IN (it checks the login before the template's contents), the HA slot
    answered CKR_TEMPLATE_INCOMPLETE (differential test); a public one: the template's answer."""
    GENERIC_SECRET_KEY_GEN, AES_KEY_GEN = 0x350, 0x1080

    def story(socket) -> list[str]:
        with on_first_slot(socket, login=False) as (client, session):
            seen = []
            for mechanism, template in (
                (GENERIC_SECRET_KEY_GEN, (Attribute(CKA_TOKEN, 0), Attribute(CKA_SIGN, 1))),
                (AES_KEY_GEN, (Attribute(CKA_TOKEN, 1),)),
                (AES_KEY_GEN, (Attribute(CKA_TOKEN, 0), Attribute(CKA_PRIVATE, 0))),
            ):
                reply = client.call("C_GenerateKey", session, Mechanism(mechanism), template)
                seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours == ["CKR_USER_NOT_LOGGED_IN", "CKR_USER_NOT_LOGGED_IN", "CKR_TEMPLATE_INCOMPLETE"]


def test_a_key_made_with_the_id_and_label_of_another_is_a_second_key_as_on_one_token(served, reference):
    """Members find a key by class, CKA_ID and label: a key generated with those of a key made
    before was that older key on the HA slot, and what the generation sets afterwards went to it
    (COPYABLE FALSE on a copyable key: CKR_ATTRIBUTE_READ_ONLY) where one token makes a second key
    (differential test, seed 700002 step 35). Members now keep a marked label for the second."""
    AES_KEY_GEN, AES_ECB = 0x1080, 0x1081
    naming = (Attribute(CKA_LABEL, b"alike-key"), Attribute(CKA_ID, b"\x03\x04\x05"))

    def search(client, session) -> list[int]:
        client.ok("C_FindObjectsInit", session, (Attribute(CKA_LABEL, b"alike-key"),))
        (found,) = client.ok("C_FindObjects", session, 10)
        client.ok("C_FindObjectsFinal", session)
        return sorted(found)

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            (first,) = client.ok(
                "C_CreateObject",
                session,
                (
                    Attribute(CKA_CLASS, 4),
                    Attribute(CKA_KEY_TYPE, 0x1F),
                    Attribute(CKA_VALUE, b"k" * 16),
                    Attribute(CKA_ENCRYPT, 1),
                    *naming,
                ),
            )
            reply = client.call(
                "C_GenerateKey",
                session,
                Mechanism(AES_KEY_GEN),
                (
                    Attribute(CKA_VALUE_LEN, 16),
                    Attribute(CKA_SENSITIVE, 0),
                    Attribute(CKA_COPYABLE, 0),
                    Attribute(CKA_ENCRYPT, 1),
                    *naming,
                ),
            )
            if reply.is_error:
                return [codes.ckr_name(reply.ckr)]
            (second,) = reply.args
            seen: list = ["CKR_OK", first != second]
            seen += [search(client, session) == sorted((first, second)) for _ in range(3)]  # any member
            for key in (first, second):
                values, _ = client.ok(
                    "C_GetAttributeValue",
                    session,
                    key,
                    (AttributeSize(CKA_LABEL, 32), AttributeSize(CKA_ID, 8), AttributeSize(CKA_COPYABLE, 1)),
                )
                seen.append([v.value for v in values])
            client.ok("C_EncryptInit", session, Mechanism(AES_ECB), first)  # the first is the first
            seen.append(client.ok("C_Encrypt", session, b"\0" * 16, 16)[0].hex())
            client.ok("C_DestroyObject", session, second)
            seen += [search(client, session) == [first] for _ in range(3)]
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours[:5] == ["CKR_OK", True, True, True, True]


def test_a_copy_of_a_data_object_is_a_second_object_as_on_one_token(served, reference):
    """The HA slot gave a copy with no CKA_ID or label in its template a CKA_ID of its own, to
    tell it from the original on the members; a data object has no CKA_ID: one token copies it,
    the HA slot answered CKR_ATTRIBUTE_TYPE_INVALID (differential test). A copy of a data object
    that is not modifiable takes no other label either (SoftHSM2: CKR_ATTRIBUTE_READ_ONLY)."""
    label = b"alike-data"

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            originals = {
                value: client.ok(
                    "C_CreateObject",
                    session,
                    (
                        Attribute(CKA_CLASS, 0),
                        Attribute(CKA_LABEL, label),
                        Attribute(CKA_VALUE, value),
                        Attribute(CKA_MODIFIABLE, modifiable),
                    ),
                )[0]
                for value, modifiable in ((b"v", 1), (b"w", 0))
            }
            seen: list = []
            for value, template in (
                (b"v", ()),
                (b"v", (Attribute(CKA_TOKEN, 0),)),
                (b"w", ()),
                (b"w", (Attribute(CKA_LABEL, label),)),
            ):
                reply = client.call("C_CopyObject", session, originals[value], template)
                seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
            for _ in range(3):  # whichever member searches
                client.ok("C_FindObjectsInit", session, (Attribute(CKA_LABEL, label),))
                (found,) = client.ok("C_FindObjects", session, 10)
                client.ok("C_FindObjectsFinal", session)
                values = [
                    client.ok(
                        "C_GetAttributeValue",
                        session,
                        handle,
                        (
                            AttributeSize(CKA_LABEL, 32),
                            AttributeSize(CKA_VALUE, 8),
                            AttributeSize(CKA_MODIFIABLE, 1),
                        ),
                    )[0]
                    for handle in found
                ]
                seen.append(sorted(tuple(v.value for v in read) for read in values))
            client.ok("C_DestroyObject", session, originals[b"v"])
            client.ok("C_FindObjectsInit", session, (Attribute(CKA_CLASS, 0), Attribute(CKA_VALUE, b"v")))
            (found,) = client.ok("C_FindObjects", session, 10)
            client.ok("C_FindObjectsFinal", session)
            seen.append(len(found))
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours[:4] == ["CKR_OK", "CKR_OK", "CKR_OK", "CKR_ATTRIBUTE_READ_ONLY"] and len(ours[4]) == 5


def test_a_wrap_of_a_data_object_or_under_no_key_is_refused_as_by_one_token(served, reference):
    """One token refuses to wrap a data object with CKR_KEY_UNEXTRACTABLE (it has no
    CKA_EXTRACTABLE), size query or not; the HA slot answered CKR_ARGUMENTS_BAD (python-pkcs11's
    own refusal of an object it does not take for a key). A wrapping key's handle that names
    nothing is CKR_WRAPPING_KEY_HANDLE_INVALID (CKR_UNWRAPPING_KEY_HANDLE_INVALID at unwrap), not
    CKR_KEY_HANDLE_INVALID (differential test)."""
    AES_KEY_GEN, KEY_WRAP, KEY_WRAP_PAD, CKA_WRAP = 0x1080, 0x2109, 0x210A, 0x106

    def story(socket) -> list[str]:
        with on_first_slot(socket) as (client, session):
            wrapping = generate_key(
                client, session, AES_KEY_GEN, Attribute(CKA_VALUE_LEN, 16), Attribute(CKA_WRAP, 1)
            )
            (data,) = client.ok(
                "C_CreateObject", session, (Attribute(CKA_CLASS, 0), Attribute(CKA_VALUE, b"x"))
            )
            key = generate_key(
                client, session, AES_KEY_GEN, Attribute(CKA_VALUE_LEN, 16), Attribute(0x162, 1)
            )
            seen = []
            for mechanism, wrapper, wrapped, room in (
                (KEY_WRAP, wrapping, data, 0),
                (KEY_WRAP_PAD, wrapping, data, 4096),
                (KEY_WRAP, 0x7777, key, 0),
                (KEY_WRAP_PAD, 0x7777, data, 4096),
            ):
                reply = client.call("C_WrapKey", session, Mechanism(mechanism), wrapper, wrapped, room)
                seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
            reply = client.call(
                "C_UnwrapKey",
                session,
                Mechanism(KEY_WRAP_PAD),
                0x7777,
                b"\x01" * 24,
                (Attribute(CKA_CLASS, 4), Attribute(CKA_KEY_TYPE, 0x1F)),
            )
            seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours == ["CKR_KEY_UNEXTRACTABLE"] * 2 + ["CKR_WRAPPING_KEY_HANDLE_INVALID"] * 2 + [
        "CKR_UNWRAPPING_KEY_HANDLE_INVALID"
    ]


def test_a_key_with_no_value_is_refused_at_digest_key_and_the_digest_goes_on_as_on_one_token(
    served, reference
):
    """SoftHSM2 refuses C_DigestKey of a key that has no CKA_VALUE (RSA and EC public keys, RSA
    private keys) with CKR_KEY_INDIGESTIBLE at once, and its digest goes on without it; the HA
    slot took the key (digests run at C_DigestFinal) and refused the whole digest at Final
    (differential test: two families)."""
    SHA256, RSA_KEY_PAIR_GEN, EC_KEY_PAIR_GEN, CKA_MODULUS_BITS = 0x250, 0x0, 0x1040, 0x121

    def story(socket) -> list[str]:
        with on_first_slot(socket) as (client, session):
            rsa_public, rsa_private = client.ok(
                "C_GenerateKeyPair",
                session,
                Mechanism(RSA_KEY_PAIR_GEN),
                (Attribute(CKA_MODULUS_BITS, 1024),),
                (),
            )
            ec_public, _ = client.ok(
                "C_GenerateKeyPair",
                session,
                Mechanism(EC_KEY_PAIR_GEN),
                (Attribute(CKA_EC_PARAMS, P256),),
                (),
            )
            seen = []
            for key, before in ((rsa_public, b"a"), (ec_public, b""), (rsa_private, b"b")):
                client.ok("C_DigestInit", session, Mechanism(SHA256))
                if before:
                    client.ok("C_DigestUpdate", session, before)
                reply = client.call("C_DigestKey", session, key)
                seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
                client.ok("C_DigestUpdate", session, b"after")
                seen.append(client.ok("C_DigestFinal", session, 64)[0].hex())
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours[0::2] == ["CKR_KEY_INDIGESTIBLE"] * 3
    assert ours[1] == hashlib.sha256(b"aafter").hexdigest()


def test_a_refused_key_pair_generation_leaves_no_half_on_any_member(served, reference):
    """SoftHSM2 makes one half of a key pair, refuses the other half's template (an attribute
    of the other class: CKR_ATTRIBUTE_TYPE_INVALID) and keeps the half it made, sometimes with
    no CKA_ID. On the HA slot that half stayed on the one member that generated: a search found
    it or not by which member answered (differential test: 'token objects left after the
    sequence'). The HA slot answers the refusal and leaves nothing; one token keeps the half
    (an allowed difference, docs/DIFFTEST.md)."""
    RSA_KEY_PAIR_GEN, EC_KEY_PAIR_GEN, CKA_MODULUS_BITS = 0x0, 0x1040, 0x121

    def story(socket) -> tuple[list[str], list[int]]:
        with on_first_slot(socket) as (client, session):
            seen, left = [], []
            keys = lambda: {h for cls in (2, 3) for h in client.find(session, Attribute(CKA_CLASS, cls))}  # noqa: E731
            before = keys()  # other tests' keys on the module's servers
            for mechanism, public, private in (
                (RSA_KEY_PAIR_GEN, (Attribute(CKA_MODULUS_BITS, 1024), Attribute(CKA_SIGN, 1)), ()),
                (
                    RSA_KEY_PAIR_GEN,
                    (Attribute(CKA_MODULUS_BITS, 1024), Attribute(CKA_TOKEN, 1), Attribute(CKA_SIGN, 1)),
                    (Attribute(CKA_TOKEN, 1),),
                ),
                (EC_KEY_PAIR_GEN, (Attribute(CKA_EC_PARAMS, P256),), (Attribute(CKA_VERIFY, 1),)),
            ):
                reply = client.call("C_GenerateKeyPair", session, Mechanism(mechanism), public, private)
                seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
                for _ in range(3):  # whichever member searches
                    found = keys() - before
                    left.append(len(found))
                for handle in found:
                    client.ok("C_DestroyObject", session, handle)
            return seen, left

    (ours, ours_left), (theirs, theirs_left) = story(served.socket), story(reference.socket)
    assert ours == theirs == ["CKR_ATTRIBUTE_TYPE_INVALID"] * 3
    assert ours_left == [0] * 9
    assert theirs_left == [1] * 9  # one SoftHSM2 token's defect, the reason for the allowance


def test_an_unwrap_template_is_applied_in_the_applications_order_as_on_one_token(served, reference):
    """SoftHSM2 applies an unwrap template one attribute after the other: after CKA_MODIFIABLE
    FALSE any other attribute is CKR_ATTRIBUTE_READ_ONLY. The members got the template through
    python-pkcs11, which reorders it (MODIFIABLE last): the HA slot answered CKR_OK where one
    token refuses (differential test: 'C_UnwrapKey: CKR_ATTRIBUTE_READ_ONLY vs CKR_OK')."""
    AES_KEY_GEN, KEY_WRAP_PAD, CKA_WRAP, CKA_UNWRAP, CKA_EXTRACTABLE = 0x1080, 0x210A, 0x106, 0x107, 0x162

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            wrapping = generate_key(
                client,
                session,
                AES_KEY_GEN,
                Attribute(CKA_VALUE_LEN, 16),
                Attribute(CKA_WRAP, 1),
                Attribute(CKA_UNWRAP, 1),
            )
            key = generate_key(
                client, session, AES_KEY_GEN, Attribute(CKA_VALUE_LEN, 16), Attribute(CKA_EXTRACTABLE, 1)
            )
            (blob,) = client.ok("C_WrapKey", session, Mechanism(KEY_WRAP_PAD), wrapping, key, 64)
            seen = []
            for rest in (
                (Attribute(CKA_MODIFIABLE, 0), Attribute(CKA_SENSITIVE, 1)),
                (Attribute(CKA_MODIFIABLE, 0), Attribute(CKA_LABEL, b"unwrapped-in-order")),
                (Attribute(CKA_SENSITIVE, 1), Attribute(CKA_MODIFIABLE, 0)),
            ):
                reply = client.call(
                    "C_UnwrapKey",
                    session,
                    Mechanism(KEY_WRAP_PAD),
                    wrapping,
                    blob,
                    (Attribute(CKA_CLASS, 4), Attribute(CKA_KEY_TYPE, 0x1F), *rest),
                )
                seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
                if not reply.is_error:
                    values, _ = client.ok(
                        "C_GetAttributeValue",
                        session,
                        reply.args[0],
                        (AttributeSize(CKA_MODIFIABLE, 1), AttributeSize(CKA_SENSITIVE, 1)),
                    )
                    seen.append([v.value for v in values])
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours == ["CKR_ATTRIBUTE_READ_ONLY", "CKR_ATTRIBUTE_READ_ONLY", "CKR_OK", [0, 1]]


def test_a_copy_of_a_public_key_that_is_not_modifiable_is_a_second_key_as_on_one_token(served, reference):
    """A public key made CKA_MODIFIABLE FALSE takes no other label in a copy (SoftHSM2:
    CKR_ATTRIBUTE_READ_ONLY for any attribute in the copy's template), so its members could not
    tell the copy from the original: the HA slot refused the copy one token makes (differential
    test: 'C_CopyObject: CKR_OK vs CKR_ATTRIBUTE_READ_ONLY'). It is made anew from the original."""
    EC_KEY_PAIR_GEN, ECDSA, CKA_ID_ = 0x1040, 0x1041, 0x102
    label = b"copied-public"

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            public, private = client.ok(
                "C_GenerateKeyPair",
                session,
                Mechanism(EC_KEY_PAIR_GEN),
                (
                    Attribute(CKA_EC_PARAMS, P256),
                    Attribute(CKA_MODIFIABLE, 0),
                    Attribute(CKA_LABEL, label),
                    Attribute(CKA_ID_, b"\x7e"),
                ),
                (Attribute(CKA_SIGN, 1), Attribute(CKA_LABEL, label), Attribute(CKA_ID_, b"\x7e")),
            )
            seen, copies = [], []
            for template in ((), (Attribute(CKA_TOKEN, 0),)):
                reply = client.call("C_CopyObject", session, public, template)
                seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
                copies += [] if reply.is_error else list(reply.args)
            if not copies:
                return seen
            (copy,) = copies
            for _ in range(3):  # whichever member searches
                found = client.find(session, Attribute(CKA_CLASS, 2), Attribute(CKA_LABEL, label))
                seen.append(sorted(found) == sorted((public, copy)))
            values, _ = client.ok(
                "C_GetAttributeValue",
                session,
                copy,
                tuple(
                    AttributeSize(a, 128)
                    for a in (
                        CKA_LABEL,
                        CKA_ID_,
                        CKA_MODIFIABLE,
                        CKA_VERIFY,
                        0x163,
                        0x166,
                        CKA_EC_PARAMS,
                        0x181,
                    )
                ),
            )
            seen.append([v.value for v in values])
            client.ok("C_SignInit", session, Mechanism(ECDSA), private)
            (signature,) = client.ok("C_Sign", session, b"d" * 32, 128)
            client.ok("C_VerifyInit", session, Mechanism(ECDSA), copy)  # the copy is the key
            seen.append(client.ckr("C_Verify", session, b"d" * 32, signature))
            values, _ = client.ok("C_GetAttributeValue", session, public, (AttributeSize(0x181, 128),))
            seen[-2][-1] = seen[-2][-1] == values[0].value  # the same point, not the same bytes per side
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours[:5] == ["CKR_OK", "CKR_ATTRIBUTE_READ_ONLY", True, True, True] and ours[-2][-1] is True


def test_a_copy_of_an_unmodifiable_object_whose_twin_is_gone_is_made_as_on_one_token(served, reference):
    """Two objects the application made alike (one CKA_ID and label): members keep the second
    under a marked label. Once the first is destroyed the label is free again, and a copy of
    the second (not modifiable, so it takes no label in a copy) was refused by the HA slot
    where one token copies (differential test, seed 1700057 step 36: 'C_CopyObject: CKR_OK vs
    CKR_ATTRIBUTE_READ_ONLY'). The copy is made anew, a public key and a secret key alike."""
    EC_KEY_PAIR_GEN, AES_GEN, AES_ECB = 0x1040, 0x1080, 0x1081
    label = b"twin-gone"

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            publics = [
                client.ok(
                    "C_GenerateKeyPair",
                    session,
                    Mechanism(EC_KEY_PAIR_GEN),
                    (
                        Attribute(CKA_EC_PARAMS, P256),
                        Attribute(CKA_MODIFIABLE, 0),
                        Attribute(CKA_LABEL, label),
                        Attribute(CKA_ID, b"\x7d"),
                    ),
                    (Attribute(CKA_SIGN, 1), Attribute(CKA_ID, b"\x7d")),
                )[0]
                for _ in range(2)
            ]
            secrets = [
                client.ok(
                    "C_GenerateKey",
                    session,
                    Mechanism(AES_GEN),
                    (
                        Attribute(CKA_VALUE_LEN, 16),
                        Attribute(CKA_ENCRYPT, 1),
                        Attribute(CKA_DECRYPT, 1),
                        Attribute(CKA_MODIFIABLE, 0),
                        Attribute(CKA_LABEL, label),
                        Attribute(CKA_ID, b"\x7c"),
                    ),
                )[0]
                for _ in range(2)
            ]
            seen = []
            for first, second, cls in ((*publics, 2), (*secrets, 4)):
                client.ok("C_DestroyObject", session, first)
                reply = client.call("C_CopyObject", session, second, ())
                seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
                if reply.is_error:
                    continue
                (copy,) = reply.args
                for _ in range(3):  # whichever member searches
                    found = client.find(session, Attribute(CKA_CLASS, cls), Attribute(CKA_LABEL, label))
                    seen.append(sorted(found) == sorted((second, copy)))
                values, _ = client.ok(
                    "C_GetAttributeValue",
                    session,
                    copy,
                    (AttributeSize(CKA_LABEL, 32), AttributeSize(CKA_MODIFIABLE, 1)),
                )
                seen.append([v.value for v in values])
            client.ok("C_EncryptInit", session, Mechanism(AES_ECB), secrets[1])
            (ciphertext,) = client.ok("C_Encrypt", session, b"t" * 16, 64)
            for _ in range(3):  # the copy is the same key on every member
                client.ok("C_DecryptInit", session, Mechanism(AES_ECB), copy)
                seen.append(client.ok("C_Decrypt", session, ciphertext, 64)[0] == b"t" * 16)
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours == ["CKR_OK", True, True, True, [label, 0]] * 2 + [True] * 3


def test_a_wrapping_key_that_may_not_wrap_is_refused_before_the_key_to_wrap_is_looked_at(served, reference):
    """SoftHSM2 checks the wrapping key (type for the mechanism, then CKA_WRAP) before the
    handle of the key to wrap; the HA slot looked the key up first and answered
    CKR_KEY_HANDLE_INVALID for a key gone (differential test, seed 1500133 step 55:
    'C_WrapKey: CKR_KEY_FUNCTION_NOT_PERMITTED vs CKR_KEY_HANDLE_INVALID')."""
    AES_GEN, KEY_WRAP, CKA_WRAP_, CKA_EXTRACTABLE = 0x1080, 0x2109, 0x106, 0x162

    def story(socket) -> list[str]:
        with on_first_slot(socket) as (client, session):
            no_wrap = generate_key(
                client, session, AES_GEN, Attribute(CKA_VALUE_LEN, 16), Attribute(CKA_WRAP_, 0)
            )
            wraps = generate_key(
                client, session, AES_GEN, Attribute(CKA_VALUE_LEN, 16), Attribute(CKA_WRAP_, 1)
            )
            gone = generate_key(
                client, session, AES_GEN, Attribute(CKA_VALUE_LEN, 16), Attribute(CKA_EXTRACTABLE, 1)
            )
            client.ok("C_DestroyObject", session, gone)
            return [
                codes.ckr_name(client.ckr("C_WrapKey", session, Mechanism(KEY_WRAP), wrapping, gone, 0))
                for wrapping in (no_wrap, wraps)
            ]

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours == ["CKR_KEY_FUNCTION_NOT_PERMITTED", "CKR_KEY_HANDLE_INVALID"]


def test_a_wrapping_key_of_another_type_is_refused_for_its_type_first_as_by_one_token(served, reference):
    """SoftHSM2 checks that a wrapping (unwrapping) key's type fits the mechanism before its
    CKA_WRAP (CKA_UNWRAP); the members' python-pkcs11 refused a key it offers no wrap for (an
    RSA private key) first
    (differential test: 'C_WrapKey: CKR_WRAPPING_KEY_TYPE_INCONSISTENT vs
    CKR_KEY_FUNCTION_NOT_PERMITTED'). Wraps and unwraps now reach the token as sent."""
    AES_KEY_GEN, RSA_KEY_PAIR_GEN, KEY_WRAP_PAD, CKA_EXTRACTABLE, CKA_MODULUS_BITS = (
        0x1080,
        0x0,
        0x210A,
        0x162,
        0x121,
    )

    def story(socket) -> list[str]:
        with on_first_slot(socket) as (client, session):
            public, private = client.ok(
                "C_GenerateKeyPair",
                session,
                Mechanism(RSA_KEY_PAIR_GEN),
                (Attribute(CKA_MODULUS_BITS, 1024),),
                (),
            )
            key = generate_key(
                client, session, AES_KEY_GEN, Attribute(CKA_VALUE_LEN, 16), Attribute(CKA_EXTRACTABLE, 1)
            )
            seen = [
                codes.ckr_name(client.ckr("C_WrapKey", session, Mechanism(KEY_WRAP_PAD), wrapping, key, room))
                for wrapping in (private, public)
                for room in (0, 64)
            ]
            for unwrapping in (public, private):
                seen.append(
                    codes.ckr_name(
                        client.ckr(
                            "C_UnwrapKey",
                            session,
                            Mechanism(KEY_WRAP_PAD),
                            unwrapping,
                            b"\x01" * 24,
                            (Attribute(CKA_CLASS, 4), Attribute(CKA_KEY_TYPE, 0x1F)),
                        )
                    )
                )
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours == ["CKR_WRAPPING_KEY_TYPE_INCONSISTENT"] * 4 + ["CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT"] * 2


def test_a_copy_made_not_modifiable_takes_its_marked_label_first_as_on_one_token(served, reference):
    """SoftHSM2 applies a copy's template in order and takes nothing after CKA_MODIFIABLE FALSE.
    The HA slot gave a copy that keeps the original's identity a marked label after the
    application's attributes: C_CopyObject(key, [MODIFIABLE=FALSE]) was CKR_ATTRIBUTE_READ_ONLY
    where one token copies (differential test)."""

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            (key,) = client.ok(
                "C_CreateObject",
                session,
                (
                    Attribute(CKA_CLASS, 4),
                    Attribute(CKA_KEY_TYPE, 0x1F),
                    Attribute(CKA_VALUE, b"m" * 16),
                    Attribute(CKA_LABEL, b"copied-fixed"),
                ),
            )
            seen = []
            for template in (
                (Attribute(CKA_MODIFIABLE, 0),),
                (Attribute(CKA_MODIFIABLE, 0), Attribute(CKA_LABEL, b"copied-fixed")),
            ):
                reply = client.call("C_CopyObject", session, key, template)
                seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
                if not reply.is_error:
                    values, _ = client.ok(
                        "C_GetAttributeValue",
                        session,
                        reply.args[0],
                        (AttributeSize(CKA_LABEL, 32), AttributeSize(CKA_MODIFIABLE, 1)),
                    )
                    seen.append([v.value for v in values])
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours == ["CKR_OK", [b"copied-fixed", 0], "CKR_ATTRIBUTE_READ_ONLY"]


def test_a_short_sensitive_key_is_refused_at_digest_key_also_after_data(served):
    """The HA slot refuses to digest a sensitive key under 16 bytes (docs/SECURITY.md) at
    C_DigestKey when the key comes first; after data it took the key and refused the whole
    digest at C_DigestFinal (differential test: 'C_DigestFinal: CKR_OK vs CKR_KEY_INDIGESTIBLE',
    outside the allowed difference). It refuses the key at C_DigestKey now, and the digest goes
    on without it, as a token's does after a key it refuses."""
    SHA256 = 0x250
    with session_on(served) as (client, session):
        (short,) = client.ok(
            "C_CreateObject",
            session,
            (
                Attribute(CKA_CLASS, 4),
                Attribute(CKA_KEY_TYPE, 0x10),
                Attribute(CKA_VALUE, b"v"),
                Attribute(CKA_SENSITIVE, 1),
                Attribute(CKA_TOKEN, 0),
            ),
        )
        client.ok("C_DigestInit", session, Mechanism(SHA256))
        client.ok("C_DigestUpdate", session, b"before")
        assert codes.ckr_name(client.ckr("C_DigestKey", session, short)) == "CKR_KEY_INDIGESTIBLE"
        client.ok("C_DigestUpdate", session, b"after")
        assert client.ok("C_DigestFinal", session, 64)[0] == hashlib.sha256(b"beforeafter").digest()


def test_a_copy_of_a_key_that_is_not_modifiable_is_a_second_key_as_on_one_token(served, reference):
    """A secret or private key made CKA_MODIFIABLE FALSE takes no template in a copy (SoftHSM2:
    CKR_ATTRIBUTE_READ_ONLY for any attribute), so members cannot label the copy apart from the
    original: the HA slot refused the copy one token makes (differential test, seed 500011 step
    26: 'C_CopyObject: CKR_OK vs CKR_ATTRIBUTE_READ_ONLY'). Each member now makes it as recovery
    makes a key it lacks; extractable or not, the copy is the same key and reads as the token's."""
    AES_GEN, AES_ECB, RSA_GEN, RSA_PKCS, CKA_EXTRACTABLE = 0x1080, 0x1081, 0x0, 0x1, 0x162
    label = b"copied-key"

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            seen = []
            for extractable in (1, 0):
                key = generate_key(
                    client,
                    session,
                    AES_GEN,
                    Attribute(CKA_VALUE_LEN, 16),
                    Attribute(CKA_ENCRYPT, 1),
                    Attribute(CKA_DECRYPT, 1),
                    Attribute(CKA_MODIFIABLE, 0),
                    Attribute(CKA_EXTRACTABLE, extractable),
                    Attribute(CKA_TOKEN, 1),
                    Attribute(CKA_LABEL, label),
                    Attribute(CKA_ID, bytes([extractable])),
                )
                reply = client.call("C_CopyObject", session, key, (Attribute(CKA_LABEL, b"other"),))
                seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
                (copy,) = client.ok("C_CopyObject", session, key, ())
                for _ in range(3):  # whichever member searches
                    found = client.find(
                        session, Attribute(CKA_LABEL, label), Attribute(CKA_ID, bytes([extractable]))
                    )
                    seen.append(sorted(found) == sorted((key, copy)))
                values, _ = client.ok(
                    "C_GetAttributeValue",
                    session,
                    copy,
                    tuple(
                        AttributeSize(a, 64)
                        for a in (
                            CKA_LABEL,
                            CKA_ID,
                            CKA_MODIFIABLE,
                            CKA_EXTRACTABLE,
                            CKA_SENSITIVE,
                            CKA_ENCRYPT,
                            0x163,
                        )
                    ),
                )
                seen.append([v.value for v in values])
                client.ok("C_EncryptInit", session, Mechanism(AES_ECB), key)
                (ciphertext,) = client.ok("C_Encrypt", session, b"b" * 16, 64)
                for _ in range(3):  # the copy decrypts what the original encrypted, on any member
                    client.ok("C_DecryptInit", session, Mechanism(AES_ECB), copy)
                    seen.append(client.ok("C_Decrypt", session, ciphertext, 64)[0] == b"b" * 16)
            public, private = client.ok(
                "C_GenerateKeyPair",
                session,
                Mechanism(RSA_GEN),
                (Attribute(0x121, 1024), Attribute(CKA_VERIFY, 1)),
                (
                    Attribute(CKA_SIGN, 1),
                    Attribute(CKA_TOKEN, 0),
                    Attribute(CKA_MODIFIABLE, 0),
                    Attribute(CKA_LABEL, label),
                ),
            )
            (copy,) = client.ok("C_CopyObject", session, private, ())
            client.ok("C_SignInit", session, Mechanism(RSA_PKCS), copy)
            (signature,) = client.ok("C_Sign", session, b"s" * 20, 256)
            client.ok("C_VerifyInit", session, Mechanism(RSA_PKCS), public)
            seen.append(client.ckr("C_Verify", session, b"s" * 20, signature))
            values, _ = client.ok(
                "C_GetAttributeValue",
                session,
                copy,
                tuple(AttributeSize(a, 64) for a in (CKA_LABEL, CKA_TOKEN, CKA_MODIFIABLE, CKA_SIGN, 0x163)),
            )
            seen.append([v.value for v in values])
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours[:4] == ["CKR_ATTRIBUTE_READ_ONLY", True, True, True] and ours[-2] == codes.CKR_OK


def test_a_copy_is_refused_for_the_object_before_the_session_as_by_one_token(served, reference):
    """SoftHSM2 checks a copy's source (copyable, private staying private) before the session's
    rights; the HA slot answered CKR_SESSION_READ_ONLY first (differential test, seeds 500011 and
    500015: 'CKR_TEMPLATE_INCONSISTENT vs CKR_SESSION_READ_ONLY', 'CKR_ACTION_PROHIBITED vs
    CKR_SESSION_READ_ONLY')."""

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            made = {
                copyable: client.ok(
                    "C_CreateObject",
                    session,
                    (
                        Attribute(CKA_CLASS, 0),
                        Attribute(CKA_TOKEN, 1),
                        Attribute(CKA_PRIVATE, 1),
                        Attribute(CKA_COPYABLE, copyable),
                        Attribute(CKA_LABEL, b"rights"),
                        Attribute(CKA_VALUE, bytes([copyable])),
                    ),
                )[0]
                for copyable in (0, 1)
            }
            (read_only,) = client.ok("C_OpenSession", client.ok("C_GetSlotList", 1, 8)[0][0], 0x4)
            seen = []
            for source, template in (
                (made[0], (Attribute(CKA_TOKEN, 1),)),
                (made[1], (Attribute(CKA_TOKEN, 1), Attribute(CKA_PRIVATE, 0))),
                (made[1], (Attribute(CKA_TOKEN, 1),)),
                (made[1], (Attribute(CKA_TOKEN, 0),)),
            ):
                reply = client.call("C_CopyObject", read_only, source, template)
                seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours[:3] == ["CKR_ACTION_PROHIBITED", "CKR_TEMPLATE_INCONSISTENT", "CKR_SESSION_READ_ONLY"]


def test_a_refused_set_with_a_one_way_change_changes_nothing(served, reference):
    """[SENSITIVE TRUE, VALUE] is refused for the value (CKR_ATTRIBUTE_READ_ONLY); SoftHSM2 had
    set SENSITIVE on a session object by then and keeps it (no transactions for session objects),
    and SENSITIVE cannot go back to FALSE: the HA slot's put-back could not undo it on its members
    (differential test, seed 500081 step 68). The HA slot now tries such a template on a scratch
    copy first: refused, nothing changes, on session and token objects alike; one token changes
    nothing on a token object too."""
    CKA_EXTRACTABLE = 0x162

    def story(socket, token: int) -> list:
        with on_first_slot(socket) as (client, session):
            (key,) = client.ok(
                "C_CreateObject",
                session,
                (
                    Attribute(CKA_CLASS, 4),
                    Attribute(CKA_KEY_TYPE, 0x1F),
                    Attribute(CKA_VALUE, b"k" * 16),
                    Attribute(CKA_TOKEN, token),
                    Attribute(CKA_SENSITIVE, 0),
                    Attribute(CKA_EXTRACTABLE, 1),
                    Attribute(CKA_LABEL, b"one-way"),
                ),
            )
            seen = [
                codes.ckr_name(
                    client.ckr(
                        "C_SetAttributeValue",
                        session,
                        key,
                        (Attribute(CKA_SENSITIVE, 1), Attribute(CKA_VALUE, b"v" * 16)),
                    )
                ),
                codes.ckr_name(
                    client.ckr(
                        "C_SetAttributeValue",
                        session,
                        key,
                        (Attribute(CKA_EXTRACTABLE, 0), Attribute(CKA_CLASS, 3)),
                    )
                ),
            ]
            for _ in range(3):  # whichever member answers
                values, _ = client.ok(
                    "C_GetAttributeValue",
                    session,
                    key,
                    tuple(AttributeSize(a, 32) for a in (CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_VALUE)),
                )
                seen.append([v.value for v in values])
            client.ok("C_DestroyObject", session, key)
            return seen

    unchanged = ["CKR_ATTRIBUTE_READ_ONLY", "CKR_ATTRIBUTE_READ_ONLY"] + [[0, 1, b"k" * 16]] * 3
    assert story(served.socket, 0) == unchanged
    assert story(served.socket, 1) == story(reference.socket, 1) == unchanged


def test_a_refused_set_of_a_label_and_an_attribute_the_key_has_not_changes_no_label(served, reference):
    """[CKA_LABEL, CKA_ENCRYPT] on a private key is refused for CKA_ENCRYPT
    (CKR_ATTRIBUTE_TYPE_INVALID); on a session key SoftHSM2 had set the label by then and keeps
    it. The HA slot read the values to put back as one template, which the key cannot answer
    (no CKA_ENCRYPT), so it put nothing back: members kept the new label and the key was no
    longer found by its own (differential test, seed 1500126: 'other objects (4 vs 3)'). Now
    nothing changes, on a session key and a token key alike, as one token does for a token key."""
    EC_GEN, CKA_ENCRYPT_ = 0x1040, 0x104

    def story(socket, token: int) -> list:
        with on_first_slot(socket) as (client, session):
            twin, private = (
                client.ok(
                    "C_GenerateKeyPair",
                    session,
                    Mechanism(EC_GEN),
                    (Attribute(CKA_EC_PARAMS, P256),),
                    (
                        Attribute(CKA_SIGN, 1),
                        Attribute(CKA_TOKEN, token),
                        Attribute(CKA_LABEL, b"kept-label"),
                        Attribute(CKA_ID, b"\x02"),
                    ),
                )[1]
                for _ in range(2)
            )  # the second alike: members keep it under a marked label
            client.ok("C_DestroyObject", session, twin)
            seen = [
                codes.ckr_name(
                    client.ckr(
                        "C_SetAttributeValue",
                        session,
                        private,
                        (Attribute(CKA_LABEL, b""), Attribute(CKA_ENCRYPT_, 0)),
                    )
                )
            ]
            for _ in range(3):  # whichever member answers
                seen.append(
                    client.find(session, Attribute(CKA_CLASS, 3), Attribute(CKA_LABEL, b"kept-label"))
                    == (private,)
                )
                values, _ = client.ok(
                    "C_GetAttributeValue", session, private, (AttributeSize(CKA_LABEL, 32),)
                )
                seen.append(values[0].value)
            client.ok("C_DestroyObject", session, private)
            return seen

    unchanged = ["CKR_ATTRIBUTE_TYPE_INVALID"] + [True, b"kept-label"] * 3
    assert story(served.socket, 0) == unchanged  # (one SoftHSM2 token keeps the new label here)
    assert story(served.socket, 1) == story(reference.socket, 1) == unchanged


def test_an_unwrapped_hmac_key_too_short_is_refused_at_the_init_as_by_one_token(served, reference):
    """SoftHSM2 leaves CKA_VALUE_LEN 0 in an unwrapped key, and checks an HMAC key's real length
    at C_SignInit (CKR_KEY_SIZE_RANGE); the server, which checks keys at the Init from their
    attributes, answered CKR_OK and the refusal came at C_Sign (differential test, seed 500061)."""
    CKA_WRAP, CKA_UNWRAP, CKA_EXTRACTABLE, SHA256_HMAC = 0x106, 0x107, 0x162, 0x251

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            kek = generate_key(
                client,
                session,
                0x1080,
                Attribute(CKA_VALUE_LEN, 16),
                Attribute(CKA_WRAP, 1),
                Attribute(CKA_UNWRAP, 1),
            )
            seen = []
            for length in (8, 40):
                (key,) = client.ok(
                    "C_CreateObject",
                    session,
                    (
                        Attribute(CKA_CLASS, 4),
                        Attribute(CKA_KEY_TYPE, 0x10),
                        Attribute(CKA_VALUE, b"h" * length),
                        Attribute(CKA_EXTRACTABLE, 1),
                        Attribute(CKA_SENSITIVE, 1),
                    ),
                )
                (blob,) = client.ok("C_WrapKey", session, Mechanism(0x210A), kek, key, 256)
                (unwrapped,) = client.ok(
                    "C_UnwrapKey",
                    session,
                    Mechanism(0x210A),
                    kek,
                    blob,
                    (
                        Attribute(CKA_CLASS, 4),
                        Attribute(CKA_KEY_TYPE, 0x10),
                        Attribute(CKA_SIGN, 1),
                        Attribute(CKA_VERIFY, 1),
                        Attribute(CKA_TOKEN, 0),
                    ),
                )
                for init in ("C_SignInit", "C_VerifyInit"):
                    reply = client.call(init, session, Mechanism(SHA256_HMAC), unwrapped)
                    seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
                    if not reply.is_error and init == "C_SignInit":
                        seen.append(len(client.ok("C_Sign", session, b"data", 64)[0]))
                    elif not reply.is_error:
                        seen.append(codes.ckr_name(client.ckr("C_Verify", session, b"data", b"\0" * 32)))
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours == [
        "CKR_KEY_SIZE_RANGE",
        "CKR_KEY_SIZE_RANGE",
        "CKR_OK",
        32,
        "CKR_OK",
        "CKR_SIGNATURE_INVALID",
    ]


def test_the_security_officer_sees_and_makes_public_objects_only_as_on_one_token(served, reference):
    """SoftHSM2 treats an SO session as one with no login for objects (haveRead/haveWrite): a
    private object is CKR_USER_NOT_LOGGED_IN, before a template's contents are looked at. The
    HA slot checked the template first (differential test, seed 500146: 'C_GenerateKey:
    CKR_USER_NOT_LOGGED_IN vs CKR_TEMPLATE_INCOMPLETE')."""
    from conftest import SO_PIN

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            (private,) = client.ok(
                "C_CreateObject",
                session,
                (
                    Attribute(CKA_CLASS, 0),
                    Attribute(CKA_TOKEN, 1),
                    Attribute(CKA_PRIVATE, 1),
                    Attribute(CKA_LABEL, b"so-view"),
                    Attribute(CKA_VALUE, b"p"),
                ),
            )
            client.ok("C_Logout", session)
            for _ in range(100):  # an earlier test's application may still be logging out on the server
                answer = client.ckr("C_Login", session, 0, SO_PIN.encode())
                if answer != codes.CKR_USER_ANOTHER_ALREADY_LOGGED_IN:
                    break
                time.sleep(0.05)
            assert answer == codes.CKR_OK, codes.ckr_name(answer)
            seen = [
                codes.ckr_name(
                    client.ckr(
                        "C_GenerateKey",
                        session,
                        Mechanism(0x1080),
                        (Attribute(CKA_DECRYPT, 1), Attribute(CKA_LABEL, b"so-view")),
                    )
                ),
                codes.ckr_name(
                    client.ckr(
                        "C_CreateObject",
                        session,
                        (
                            Attribute(CKA_CLASS, 0),
                            Attribute(CKA_LABEL, b"so-view"),
                            Attribute(CKA_VALUE, b"q"),
                        ),
                    )
                ),
            ]
            reply = client.call(
                "C_CreateObject",
                session,
                (
                    Attribute(CKA_CLASS, 0),
                    Attribute(CKA_PRIVATE, 0),
                    Attribute(CKA_TOKEN, 1),
                    Attribute(CKA_LABEL, b"so-view"),
                    Attribute(CKA_VALUE, b"r"),
                ),
            )
            seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
            found = client.find(session, Attribute(CKA_LABEL, b"so-view"))
            seen.append(len(found))
            seen.append(
                codes.ckr_name(
                    client.ckr("C_GetAttributeValue", session, private, (AttributeSize(CKA_VALUE, 8),))
                )
            )
            for handle in found:
                client.ok("C_DestroyObject", session, handle)
            client.ok("C_Logout", session)
            client.ok("C_Login", session, 1, USER_PIN.encode())
            client.ok("C_DestroyObject", session, client.find(session, Attribute(CKA_LABEL, b"so-view"))[0])
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours[:4] == ["CKR_USER_NOT_LOGGED_IN", "CKR_USER_NOT_LOGGED_IN", "CKR_OK", 1]


def test_an_unwrap_is_refused_for_the_unwrapping_key_before_the_login_as_by_one_token(served, reference):
    """SoftHSM2 checks the unwrapping key (AES for the AES key wraps, then CKA_UNWRAP) before the
    new key's template and the login; the HA slot answered CKR_USER_NOT_LOGGED_IN first
    (differential test, seed 500096: 'C_UnwrapKey: CKR_KEY_FUNCTION_NOT_PERMITTED vs
    CKR_USER_NOT_LOGGED_IN')."""
    CKA_UNWRAP = 0x107

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            keys = [
                client.ok(
                    "C_CreateObject",
                    session,
                    (
                        Attribute(CKA_CLASS, 4),
                        Attribute(CKA_KEY_TYPE, key_type),
                        Attribute(CKA_VALUE, b"u" * 16),
                        Attribute(CKA_PRIVATE, 0),
                        Attribute(CKA_UNWRAP, unwrap),
                        Attribute(CKA_TOKEN, 1),
                        Attribute(CKA_LABEL, b"unwrapper"),
                    ),
                )[0]
                for key_type, unwrap in ((0x1F, 0), (0x10, 1), (0x1F, 1))
            ]
            client.ok("C_Logout", session)
            seen = []
            for key in keys:
                for template in ((Attribute(CKA_CLASS, 4), Attribute(CKA_KEY_TYPE, 0x1F)), ()):
                    seen.append(
                        codes.ckr_name(
                            client.ckr("C_UnwrapKey", session, Mechanism(0x2109), key, b"w" * 24, template)
                        )
                    )
            client.ok("C_Login", session, 1, USER_PIN.encode())
            for key in keys:
                client.ok("C_DestroyObject", session, key)
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours[:4] == ["CKR_KEY_FUNCTION_NOT_PERMITTED"] * 2 + ["CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT"] * 2


def test_handles_after_a_logout_and_a_last_close_are_new_as_on_one_token(served, reference):
    """A token forgets private objects' handles at C_Logout and every handle when the
    application's last session closes: found again, they have new handles, and an old one stays
    invalid after a new login. The HA slot kept its handles (differential test, seed 500009: 'an
    object found under its old handle on one side, under a new one on the other')."""

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            (slot,) = client.ok("C_GetSessionInfo", session)
            slot = slot.slot_id
            made = {
                private: client.ok(
                    "C_CreateObject",
                    session,
                    (
                        Attribute(CKA_CLASS, 0),
                        Attribute(CKA_TOKEN, 1),
                        Attribute(CKA_PRIVATE, private),
                        Attribute(CKA_LABEL, b"renamed"),
                        Attribute(CKA_VALUE, bytes([private])),
                    ),
                )[0]
                for private in (0, 1)
            }

            def state() -> list:
                seen = [
                    codes.ckr_name(
                        client.ckr("C_GetAttributeValue", s, made[p], (AttributeSize(CKA_VALUE, 4),))
                    )
                    for s in (session,)
                    for p in (0, 1)
                ]
                found = client.find(session, Attribute(CKA_LABEL, b"renamed"))
                seen.append(sorted("old" if h in made.values() else "new" for h in found))
                return seen

            client.ok("C_Logout", session)
            client.ok("C_Login", session, 1, USER_PIN.encode())
            seen = state()
            client.ok("C_CloseAllSessions", slot)
            (session,) = client.ok("C_OpenSession", slot, 0x6)
            client.ok("C_Login", session, 1, USER_PIN.encode())
            seen += state()
            for handle in client.find(session, Attribute(CKA_LABEL, b"renamed")):
                client.ok("C_DestroyObject", session, handle)
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert ours == [
        "CKR_OK",
        "CKR_OBJECT_HANDLE_INVALID",
        ["new", "old"],
        "CKR_OBJECT_HANDLE_INVALID",
        "CKR_OBJECT_HANDLE_INVALID",
        ["new", "new"],
    ]


def test_a_refused_unwrap_leaves_no_key_on_any_member(served, reference):
    """SoftHSM2 refuses an unwrap whose template has CKA_MODIFIABLE FALSE before another attribute
    (CKR_ATTRIBUTE_READ_ONLY) and keeps the key it made, without the rest: one token's defect,
    which the HA slot's members had too, so its searches later found an object the application
    never made (differential test, seed 500000 step 32). A refused call makes nothing."""
    CKA_WRAP, CKA_UNWRAP, CKA_EXTRACTABLE = 0x106, 0x107, 0x162

    def story(socket) -> tuple:
        with on_first_slot(socket) as (client, session):
            kek = generate_key(
                client,
                session,
                0x1080,
                Attribute(CKA_VALUE_LEN, 16),
                Attribute(CKA_WRAP, 1),
                Attribute(CKA_UNWRAP, 1),
                Attribute(CKA_EXTRACTABLE, 1),
                Attribute(CKA_LABEL, b"kek"),
            )
            (blob,) = client.ok("C_WrapKey", session, Mechanism(0x2109), kek, kek, 256)
            before = len(client.find(session, Attribute(CKA_CLASS, 4)))
            refused = client.ckr(
                "C_UnwrapKey",
                session,
                Mechanism(0x2109),
                kek,
                blob,
                (
                    Attribute(CKA_CLASS, 4),
                    Attribute(CKA_KEY_TYPE, 0x1F),
                    Attribute(CKA_MODIFIABLE, 0),
                    Attribute(CKA_LABEL, b"orphan"),
                ),
            )
            counts = [len(client.find(session, Attribute(CKA_CLASS, 4))) - before for _ in range(3)]
            return codes.ckr_name(refused), counts

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == ("CKR_ATTRIBUTE_READ_ONLY", [0, 0, 0])  # nothing new, on every member
    assert theirs[0] == ours[0]  # (one SoftHSM2 token keeps the orphan: theirs[1] == [1, 1, 1])


def test_a_copy_made_sensitive_reads_sensitive_as_on_one_token(served, reference):
    """A key neither sensitive nor extractable answers CKA_SENSITIVE from its record; a copy
    made with CKA_SENSITIVE TRUE took the original's record and read FALSE (differential test,
    seed 700030: 'C_GetAttributeValue CKA_SENSITIVE: 1 vs 0')."""

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            key = generate_key(
                client,
                session,
                0x350,
                Attribute(CKA_VALUE_LEN, 32),
                Attribute(CKA_SENSITIVE, 0),
                Attribute(CKA_TOKEN, 0),
                Attribute(CKA_LABEL, b"to-harden"),
            )
            (copy,) = client.ok("C_CopyObject", session, key, (Attribute(CKA_SENSITIVE, 1),))
            return [
                [
                    v.value
                    for v in client.ok(
                        "C_GetAttributeValue",
                        session,
                        handle,
                        tuple(AttributeSize(a, 8) for a in (CKA_SENSITIVE, 0x162, 0x165)),
                    )[0]
                ]
                for handle in (key, copy)
                for _ in range(2)
            ]

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs
    assert [row[0] for row in ours] == [0, 0, 1, 1]


def test_a_key_that_is_not_sensitive_is_made_sensitive_by_a_set_or_a_copy_as_on_one_token(
    served, reference, run_ckdemo
):
    """A key generated with no CKA_SENSITIVE (SoftHSM2: not sensitive) nor CKA_EXTRACTABLE has
    sensitive copies on the members that got it from the blob, whose record answers FALSE; and
    SoftHSM2 refuses any CKA_SENSITIVE on a sensitive key, TRUE too: a copy or a set asking it
    TRUE was CKR_ATTRIBUTE_READ_ONLY on the HA slot (differential test with remote members,
    seed 900029: 'C_CopyObject: CKR_OK vs CKR_ATTRIBUTE_READ_ONLY')."""

    def story(socket, member_down: bool = False) -> list:
        with on_first_slot(socket) as (client, session):
            if member_down:  # member1 gets the key later, from the blob: a sensitive copy
                assert run_ckdemo(served.home, "member", "fail", "member1").returncode == 0
                for _ in range(4):
                    client.ok("C_GenerateRandom", session, 8)
            _, private = client.ok(
                "C_GenerateKeyPair",
                session,
                Mechanism(0x1040),
                (Attribute(CKA_EC_PARAMS, P256), Attribute(CKA_VERIFY, 1)),
                (Attribute(CKA_SIGN, 1), Attribute(CKA_TOKEN, 1), Attribute(CKA_LABEL, b"soft-ec")),
            )
            if member_down:
                assert run_ckdemo(served.home, "member", "restore", "member1").returncode == 0
                assert run_ckdemo(served.home, "hagroup", "recover").returncode == 0
            seen = []
            for _ in range(3):  # whichever member copies first
                reply = client.call(
                    "C_CopyObject", session, private, (Attribute(CKA_SENSITIVE, 1), Attribute(CKA_TOKEN, 0))
                )
                seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
                if not reply.is_error:
                    seen.append(
                        client.ok(
                            "C_GetAttributeValue", session, reply.args[0], (AttributeSize(CKA_SENSITIVE, 1),)
                        )[0][0].value
                    )
            seen.append(
                codes.ckr_name(
                    client.ckr("C_SetAttributeValue", session, private, (Attribute(CKA_SENSITIVE, 1),))
                )
            )
            seen += [
                client.ok("C_GetAttributeValue", session, private, (AttributeSize(CKA_SENSITIVE, 1),))[0][
                    0
                ].value
                for _ in range(3)
            ]
            return seen

    ours, theirs = story(served.socket, member_down=True), story(reference.socket)
    assert ours == theirs
    assert ours == ["CKR_OK", 1] * 3 + ["CKR_OK", 1, 1, 1]
    listed = subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            SOFTHSM_LIB,
            "--list-objects",
            "--type",
            "privkey",
            "--login",
            "--pin",
            USER_PIN,
            "--token-label",
            "member1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=softhsm_env(served.home),
    ).stdout
    for member in ("member1", "member2", "member3"):  # no member keeps the value readable
        done = subprocess.run(
            [sys.executable, "-c", SENSITIVE_ON_MEMBER, SOFTHSM_LIB, member, USER_PIN, "soft-ec"],
            capture_output=True,
            text=True,
            timeout=60,
            env=softhsm_env(served.home),
        )
        assert done.returncode == 0 and done.stdout.split() == ["1"], (
            member,
            done.stdout,
            done.stderr,
            listed,
        )


SENSITIVE_ON_MEMBER = """
import sys, pkcs11
from pkcs11 import Attribute, ObjectClass
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
with token.open(user_pin=sys.argv[3]) as session:
    for key in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}):
        if str(key[Attribute.LABEL]).startswith(sys.argv[4]):
            print(int(key[Attribute.SENSITIVE]))
"""


def test_two_session_objects_of_one_identity_one_destroyed_the_other_stays(served, reference):
    """Session objects are each application's own, told apart across applications by identity
    (class, CKA_ID, label): destroying one of two such objects of one application forgot that
    the application still owned the other, and it vanished from its searches when another
    application held one of that identity too (CKR_KEY_HANDLE_INVALID afterwards; differential
    test, seeds 1000015 and 1000016 after a run of sequences)."""

    def story(socket, beside: bool) -> list:
        with on_first_slot(socket) as (client, session):
            other = RawClient(socket)  # another application with a session object of that identity
            if beside:
                other.ok("C_Initialize", HANDSHAKE, 0, b"\x00")
                (slot,) = client.ok("C_GetSessionInfo", session)
                (theirs,) = other.ok("C_OpenSession", slot.slot_id, 0x6)
                other.ok(
                    "C_CreateObject",
                    theirs,
                    (
                        Attribute(CKA_CLASS, 4),
                        Attribute(CKA_KEY_TYPE, 0x1F),
                        Attribute(CKA_VALUE, b"t" * 16),
                        Attribute(CKA_TOKEN, 0),
                        Attribute(CKA_PRIVATE, 0),
                        Attribute(CKA_ID, b"\x02"),
                    ),
                )
            first, second = (
                client.ok(
                    "C_CreateObject",
                    session,
                    (
                        Attribute(CKA_CLASS, 4),
                        Attribute(CKA_KEY_TYPE, 0x1F),
                        Attribute(CKA_VALUE, value),
                        Attribute(CKA_TOKEN, 0),
                        Attribute(CKA_PRIVATE, 0),
                        Attribute(CKA_ID, b"\x02"),
                    ),
                )[0]
                for value in (b"a" * 16, b"b" * 16)
            )
            client.ok("C_DestroyObject", session, second)
            seen = [client.find(session, Attribute(CKA_ID, b"\x02")) == (first,) for _ in range(3)]
            seen.append(codes.ckr_name(client.ckr("C_EncryptInit", session, Mechanism(0x1081), first)))
            other.close()
            return seen

    # (p11-kit server serves its clients one module instance: they see each other's session
    # objects, so the reference is asked without the other application)
    assert (
        story(served.socket, beside=True)
        == story(reference.socket, beside=False)
        == [True, True, True, "CKR_OK"]
    )


def test_a_copy_template_is_refused_after_modifiable_false_as_on_one_token(served, reference):
    """SoftHSM2 applies a copy's template in its order and refuses what follows CKA_MODIFIABLE
    FALSE; the HA slot left out a CKA_SENSITIVE FALSE its record made needless and so accepted
    [MODIFIABLE=0, SENSITIVE=0], which one token refuses (differential test, seed 1500071)."""

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            key = generate_key(
                client,
                session,
                0x350,
                Attribute(CKA_VALUE_LEN, 16),
                Attribute(CKA_TOKEN, 0),
                Attribute(0x162, 0),
            )
            seen = []
            for template in (
                (Attribute(CKA_MODIFIABLE, 0), Attribute(CKA_SENSITIVE, 0)),
                (Attribute(CKA_SENSITIVE, 0), Attribute(CKA_MODIFIABLE, 0)),
            ):
                reply = client.call("C_CopyObject", session, key, template)
                seen.append(codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK")
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs == ["CKR_ATTRIBUTE_READ_ONLY", "CKR_OK"]


def test_closing_a_session_destroys_its_key_not_a_token_key_of_the_same_id(served, reference, run_ckdemo):
    """A session key and a token key of one CKA_ID and no label: members keep the second under a
    marked label, but found the first by class and ID alone, so closing the session (which
    destroys its key) could destroy the token key instead (differential test, seed 1500071:
    'token objects left after the sequence: 2 vs 1')."""

    def story(socket) -> list:
        with on_first_slot(socket) as (client, session):
            (slot,) = client.ok("C_GetSessionInfo", session)
            (other,) = client.ok("C_OpenSession", slot.slot_id, 0x6)
            client.ok(
                "C_GenerateKey",
                session,
                Mechanism(0x1080),
                (Attribute(CKA_VALUE_LEN, 16), Attribute(CKA_TOKEN, 0), Attribute(CKA_ID, b"\x03\x04\x05")),
            )
            client.ok(
                "C_GenerateKey",
                other,
                Mechanism(0x1080),
                (Attribute(CKA_VALUE_LEN, 32), Attribute(CKA_TOKEN, 1), Attribute(CKA_ID, b"\x03\x04\x05")),
            )
            if socket == served.socket:  # member1 out and back: its handles are found again by search
                assert run_ckdemo(served.home, "member", "fail", "member1").returncode == 0
                for _ in range(4):
                    client.ok("C_GenerateRandom", other, 8)
                assert run_ckdemo(served.home, "member", "restore", "member1").returncode == 0
                assert run_ckdemo(served.home, "hagroup", "recover").returncode == 0
            client.ok("C_CloseSession", session)
            seen = [
                len(client.find(other, Attribute(CKA_ID, b"\x03\x04\x05"), Attribute(CKA_TOKEN, 1)))
                for _ in range(3)
            ]
            for handle in client.find(other, Attribute(CKA_ID, b"\x03\x04\x05")):
                client.ok("C_DestroyObject", other, handle)
            return seen

    ours, theirs = story(served.socket), story(reference.socket)
    assert ours == theirs == [1, 1, 1]
