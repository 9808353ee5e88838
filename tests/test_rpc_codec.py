"""The p11-kit RPC codec (ckdemo/rpc) against the real thing, both directions.

Bytes come from Debian 12's `p11-kit-client.so` talking to `p11-kit server` (both p11-kit
0.24.1, C) through a recording relay, driven by pkcs11-tool: every frame must decode and
re-encode to the same bytes. Hand-written cases pin each structure to bytes written out here
from the layouts in p11-kit's rpc-message.c, and bad input must raise CodecError only.
"""

from __future__ import annotations

import random
import struct

import pytest

from ckdemo.rpc import (
    HANDSHAKE,
    UNAVAILABLE,
    Attribute,
    AttributeSize,
    BufferSize,
    CodecError,
    FrameReader,
    Info,
    Mechanism,
    MechanismInfo,
    RsaPkcsOaepParams,
    RsaPkcsPssParams,
    SessionInfo,
    SlotInfo,
    TokenInfo,
    UnknownCallError,
    Version,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
)
from ckdemo.rpc.calls import BY_ID, BY_NAME, CALLS
from ckdemo.rpc.framing import MAX_BODY_LENGTH, Frame, decode_header, encode_frame

from rpc_capture import SO_PIN, TOKEN_LABEL, USER_PIN, capture, tools_missing

CKA_CLASS, CKA_TOKEN, CKA_LABEL, CKA_VALUE, CKA_KEY_TYPE = 0x0, 0x1, 0x3, 0x11, 0x100
CKA_MODULUS_BITS, CKA_START_DATE, CKA_EXTRACTABLE = 0x121, 0x110, 0x162
CKA_UNWRAP_TEMPLATE, CKA_ALLOWED_MECHANISMS = 0x40000212, 0x40000600
CKM_SHA256, CKM_AES_CBC_PAD, CKM_RSA_PKCS, CKM_RSA_PKCS_OAEP = 0x250, 0x1085, 0x1, 0x9
CKM_RSA_PKCS_PSS, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED = 0xD, 0x2, 0x1
CKR_PIN_INCORRECT, CKR_FUNCTION_NOT_SUPPORTED = 0xA0, 0x54


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def head(call_id: int, signature: bytes) -> bytes:
    return u32(call_id) + u32(len(signature)) + signature


# ---- capture from the real client and server -------------------------------------------------
PIN = ["--login", "--pin", USER_PIN]
RUNS = [
    ["-I", "-L", "-T", "-M"],
    ["--login", "--pin", "0000", "-O"],  # wrong PIN: an error reply
    [*PIN, "--keypairgen", "--key-type", "rsa:2048", "--id", "01", "--label", "rsa"],
    [*PIN, "--keypairgen", "--key-type", "EC:prime256v1", "--id", "02", "--label", "ec"],
    [*PIN, "--keygen", "--key-type", "AES:32", "--id", "03", "--label", "aes"],
    [*PIN, "--write-object", "msg", "--type", "data", "--label", "note"],
    [*PIN, "-O"],
    [*PIN, "--sign", "--id", "01", "-m", "RSA-PKCS", "--input-file", "msg", "--output-file", "sig"],
    [*PIN, "--verify", "--id", "01", "-m", "RSA-PKCS", "--input-file", "msg", "--signature-file", "sig"],
    [
        *PIN,
        "--sign",
        "--id",
        "01",
        "-m",
        "RSA-PKCS-PSS",
        "--hash-algorithm",
        "SHA256",
        "--mgf",
        "MGF1-SHA256",
        "--input-file",
        "digest",
        "--output-file",
        "sig-pss",
    ],
    [*PIN, "--sign", "--id", "02", "-m", "ECDSA", "--input-file", "digest", "--output-file", "sig-ec"],
    [
        *PIN,
        "--decrypt",
        "--id",
        "01",
        "-m",
        "RSA-PKCS-OAEP",
        "--hash-algorithm",
        "SHA256",
        "--mgf",
        "MGF1-SHA256",
        "--input-file",
        "not-a-ciphertext",
    ],
    [*PIN, "--encrypt", "--id", "03", "-m", "AES-ECB", "--input-file", "digest", "--output-file", "aes"],
    ["--generate-random", "32"],
    ["--hash", "-m", "SHA256", "--input-file", "msg"],
    ["--change-pin", "--pin", USER_PIN, "--new-pin", USER_PIN],
    ["--login", "--login-type", "so", "--so-pin", SO_PIN, "--init-pin", "--new-pin", USER_PIN],
    [*PIN, "--delete-object", "--type", "data", "--label", "note"],
    ["--test", *PIN],
]
FILES = {
    "msg": b"hello from the relay\n",
    "digest": bytes(range(32)),
    "not-a-ciphertext": b"\x00" + bytes(range(255)),
}


@pytest.fixture(scope="module")
def conversations(tmp_path_factory):
    missing = tools_missing()
    if missing:
        pytest.skip(missing)
    found = capture(tmp_path_factory.mktemp("rpc-capture"), RUNS, FILES)
    assert len(found) >= len(RUNS), "a pkcs11-tool run never reached the relay"
    return found


def frames_of(stream: bytes) -> tuple[int, list[Frame]]:
    reader = FrameReader()
    frames = reader.feed(bytes(stream))
    assert reader.pending == 0, "a frame was cut short"
    return reader.version, frames


@pytest.fixture(scope="module")
def exchanges(conversations):
    """(argv, request frame, reply frame) for every call made, in order."""
    found = []
    for conversation in conversations:
        client_version, requests = frames_of(conversation.from_client)
        server_version, replies = frames_of(conversation.from_server)
        assert (client_version, server_version) == (0, 0)
        assert [f.call_code for f in requests] == [f.call_code for f in replies]
        found += [(conversation.argv, q, r) for q, r in zip(requests, replies)]
    return found


def test_the_streams_are_exactly_version_byte_then_frames(conversations):
    for conversation in conversations:
        for stream in (conversation.from_client, conversation.from_server):
            version, frames = frames_of(stream)
            assert bytes([version]) + b"".join(f.encode() for f in frames) == bytes(stream)
        _, requests = frames_of(conversation.from_client)
        _, replies = frames_of(conversation.from_server)
        assert {f.options for f in requests} == {b"client"} and {f.options for f in replies} == {b""}
        assert [f.call_code for f in requests] == list(range(0x10, 0x10 + len(requests)))


def test_every_captured_request_and_reply_round_trips(exchanges):
    for argv, request, reply in exchanges:
        asked = decode_request(request.body)
        assert encode_request(asked.call_id, *asked.args) == request.body, (argv, asked)
        answered = decode_response(reply.body, asked.call_id)
        if answered.is_error:
            assert encode_error(answered.ckr) == reply.body
        else:
            assert answered.call_id == asked.call_id
            assert encode_response(answered.call_id, *answered.args) == reply.body, (argv, answered)


def test_the_capture_exercises_most_calls(exchanges):
    seen = {decode_request(q.body).name for _, q, _ in exchanges}
    errors = {decode_request(q.body).name for _, q, r in exchanges if decode_response(r.body).is_error}
    wanted = {
        "C_Initialize",
        "C_Finalize",
        "C_GetInfo",
        "C_GetSlotList",
        "C_GetSlotInfo",
        "C_GetTokenInfo",
        "C_GetMechanismList",
        "C_GetMechanismInfo",
        "C_OpenSession",
        "C_CloseSession",
        "C_GetSessionInfo",
        "C_Login",
        "C_InitPIN",
        "C_SetPIN",
        "C_CreateObject",
        "C_DestroyObject",
        "C_GetAttributeValue",
        "C_FindObjectsInit",
        "C_FindObjects",
        "C_FindObjectsFinal",
        "C_EncryptInit",
        "C_Encrypt",
        "C_DecryptInit",
        "C_DigestInit",
        "C_Digest",
        "C_SignInit",
        "C_Sign",
        "C_VerifyInit",
        "C_Verify",
        "C_GenerateKey",
        "C_GenerateKeyPair",
        "C_GenerateRandom",
    }
    assert wanted <= seen, sorted(wanted - seen)
    print("captured calls:", ", ".join(sorted(seen, key=lambda name: BY_NAME[name].id)))
    assert "C_Login" in errors


def messages_named(exchanges, name):
    for _, request, reply in exchanges:
        asked = decode_request(request.body)
        if asked.name == name:
            yield asked, decode_response(reply.body, asked.call_id)


def test_captured_values_mean_what_pkcs11_tool_did(exchanges):
    init, _ = next(messages_named(exchanges, "C_Initialize"))
    assert init.args[0] == HANDSHAKE
    slots = [r.args[0] for _, r in messages_named(exchanges, "C_GetSlotList")]
    assert BufferSize(1) in slots and any(isinstance(s, tuple) and len(s) == 1 for s in slots)
    _, token = next(messages_named(exchanges, "C_GetTokenInfo"))
    assert token.args[0].label == TOKEN_LABEL.encode().ljust(32)
    _, info = next(messages_named(exchanges, "C_GetInfo"))
    assert isinstance(info.args[0], Info) and info.args[0].cryptoki_version.major == 2
    logins = [(q.args[2], r) for q, r in messages_named(exchanges, "C_Login")]
    assert (b"0000", True, CKR_PIN_INCORRECT) in [
        (pin, r.is_error, r.is_error and r.ckr) for pin, r in logins
    ]
    pairs = list(messages_named(exchanges, "C_GenerateKeyPair"))
    public_template = pairs[0][0].args[2]
    assert Attribute(CKA_MODULUS_BITS, 2048) in public_template
    assert Attribute(CKA_TOKEN, True) in public_template
    mechanisms = {q.args[1] for q, _ in messages_named(exchanges, "C_SignInit")}
    assert Mechanism(CKM_RSA_PKCS_PSS, RsaPkcsPssParams(CKM_SHA256, CKG_MGF1_SHA256, 32)) in mechanisms
    assert Mechanism(CKM_RSA_PKCS, None) in mechanisms
    oaep = [
        q.args[1]
        for q, _ in messages_named(exchanges, "C_DecryptInit")
        if q.args[1].type == CKM_RSA_PKCS_OAEP
    ]
    assert oaep and oaep[0].parameter.hash_alg == CKM_SHA256
    signatures = [r.args[0] for q, r in messages_named(exchanges, "C_Sign") if not r.is_error]
    assert any(isinstance(s, bytes) and len(s) == 256 for s in signatures)
    assert all(isinstance(q.args[2], int) for q, _ in messages_named(exchanges, "C_Sign"))  # fy
    randoms = [r.args[0] for _, r in messages_named(exchanges, "C_GenerateRandom")]
    assert any(isinstance(r, bytes) and len(r) == 32 for r in randoms)
    sensitive = [
        r.args
        for _, r in messages_named(exchanges, "C_GetAttributeValue")
        if not r.is_error and r.args[1] == 0x11
    ]  # CKR_ATTRIBUTE_SENSITIVE with the values
    assert sensitive and any(not a.available for a in sensitive[0][0])


# ---- hand-written: every structure, both ways ------------------------------------------------
def both_ways(encoded: bytes, decode, encode, expected_args):
    message = decode(encoded)
    assert message.args == expected_args
    assert encode(message.call_id, *message.args) == encoded


def test_info_structures():
    info = Info(Version(2, 40), b"ckdemo".ljust(32), 0, b"HA slot".ljust(32), Version(0, 1))
    wire = (
        head(3, b"vsusv")
        + b"\x02\x28"
        + u32(32)
        + b"ckdemo".ljust(32)
        + u64(0)
        + u32(32)
        + b"HA slot".ljust(32)
        + b"\x00\x01"
    )
    both_ways(wire, decode_response, encode_response, (info,))
    assert encode_response("C_GetInfo", Info(Version(2, 40), "ckdemo", 0, "HA slot", Version(0, 1))) == wire

    slot = SlotInfo(b"virtual".ljust(64), b"ckdemo".ljust(32), 0x5, Version(1, 2), Version(3, 4))
    wire = (
        head(5, b"ssuvv")
        + u32(64)
        + b"virtual".ljust(64)
        + u32(32)
        + b"ckdemo".ljust(32)
        + u64(5)
        + b"\x01\x02\x03\x04"
    )
    both_ways(wire, decode_response, encode_response, (slot,))

    token = TokenInfo(
        b"HA".ljust(32),
        b"m".ljust(32),
        b"model".ljust(16),
        b"0001".ljust(16),
        0x40D,
        10,
        1,
        10,
        0,
        255,
        4,
        100,
        50,
        200,
        150,
        Version(2, 6),
        Version(2, 7),
        b"2026112612000000",
    )
    wire = (
        head(6, b"ssssuuuuuuuuuuuvvs")
        + u32(32)
        + b"HA".ljust(32)
        + u32(32)
        + b"m".ljust(32)
        + u32(16)
        + b"model".ljust(16)
        + u32(16)
        + b"0001".ljust(16)
        + b"".join(u64(v) for v in (0x40D, 10, 1, 10, 0, 255, 4, 100, 50, 200, 150))
        + b"\x02\x06\x02\x07"
        + u32(16)
        + b"2026112612000000"
    )
    both_ways(wire, decode_response, encode_response, (token,))

    both_ways(
        head(8, b"uuu") + u64(1024) + u64(4096) + u64(0x800),
        decode_response,
        encode_response,
        (MechanismInfo(1024, 4096, 0x800),),
    )
    both_ways(
        head(13, b"uuuu") + u64(0x11) + u64(3) + u64(6) + u64(0),
        decode_response,
        encode_response,
        (SessionInfo(0x11, 3, 6, 0),),
    )


def test_space_strings_must_fit_and_have_their_fixed_size():
    with pytest.raises(CodecError):
        encode_response("C_GetInfo", Info(Version(2, 40), "x" * 33, 0, "", Version(0, 1)))
    short = head(3, b"vsusv") + b"\x02\x28" + u32(31) + b"x" * 31 + u64(0) + u32(32) + b" " * 32 + b"\0\1"
    with pytest.raises(CodecError):
        decode_response(short)


def test_arrays_buffers_and_strings():
    # C_GetSlotList: size query, then the list; the reply without data carries only the count
    both_ways(head(4, b"yfu") + b"\x01" + u32(0), decode_request, encode_request, (1, 0))
    both_ways(head(4, b"au") + b"\x00" + u32(2), decode_response, encode_response, (BufferSize(2),))
    both_ways(
        head(4, b"au") + b"\x01" + u32(2) + u64(0x11) + u64(0x12),
        decode_response,
        encode_response,
        ((0x11, 0x12),),
    )
    # C_InitToken: a byte array and a zero-terminated string (sent without its NUL)
    both_ways(
        head(9, b"uayz") + u64(0x11) + b"\x01" + u32(8) + b"12345678" + u32(5) + b"label",
        decode_request,
        encode_request,
        (0x11, b"12345678", b"label"),
    )
    # C_Sign: data, then the size of the caller's buffer; the reply too small: only the length
    both_ways(
        head(43, b"uayfy") + u64(7) + b"\x01" + u32(3) + b"abc" + u32(512),
        decode_request,
        encode_request,
        (7, b"abc", 512),
    )
    both_ways(head(43, b"ay") + b"\x00" + u32(256), decode_response, encode_response, (BufferSize(256),))
    both_ways(head(43, b"ay") + b"\x01" + u32(0), decode_response, encode_response, (b"",))
    both_ways(
        head(1, b"ayyay") + b"\x01" + u32(len(HANDSHAKE)) + HANDSHAKE + b"\x00\x01" + u32(1) + b"\x00",
        decode_request,
        encode_request,
        (HANDSHAKE, 0, b"\x00"),
    )
    both_ways(head(59, b"uu") + u64(2) + u64(3), decode_response, encode_response, (2, 3))
    both_ways(head(2, b""), decode_request, encode_request, ())


def test_mechanisms():
    def init(mechanism_wire: bytes) -> bytes:
        return head(42, b"uMu") + u64(5) + mechanism_wire + u64(9)

    both_ways(
        init(u32(CKM_RSA_PKCS) + u32(0xFFFFFFFF)),
        decode_request,
        encode_request,
        (5, Mechanism(CKM_RSA_PKCS), 9),
    )
    both_ways(
        init(u32(CKM_RSA_PKCS_PSS) + u64(CKM_SHA256) + u64(CKG_MGF1_SHA256) + u64(32)),
        decode_request,
        encode_request,
        (5, Mechanism(CKM_RSA_PKCS_PSS, RsaPkcsPssParams(CKM_SHA256, CKG_MGF1_SHA256, 32)), 9),
    )
    both_ways(
        init(u32(CKM_RSA_PKCS_OAEP) + u64(CKM_SHA256) + u64(CKG_MGF1_SHA256) + u64(0) + u32(0xFFFFFFFF)),
        decode_request,
        encode_request,
        (5, Mechanism(CKM_RSA_PKCS_OAEP, RsaPkcsOaepParams(CKM_SHA256, CKG_MGF1_SHA256, 0)), 9),
    )
    both_ways(
        init(
            u32(CKM_RSA_PKCS_OAEP)
            + u64(CKM_SHA256)
            + u64(CKG_MGF1_SHA256)
            + u64(CKZ_DATA_SPECIFIED)
            + u32(5)
            + b"label"
        ),
        decode_request,
        encode_request,
        (
            5,
            Mechanism(
                CKM_RSA_PKCS_OAEP,
                RsaPkcsOaepParams(CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, b"label"),
            ),
            9,
        ),
    )
    iv = bytes(range(16))  # the byte-array fallback: AES-CBC-PAD with its IV, for our own client
    both_ways(
        init(u32(CKM_AES_CBC_PAD) + u32(16) + iv),
        decode_request,
        encode_request,
        (5, Mechanism(CKM_AES_CBC_PAD, iv), 9),
    )
    both_ways(
        init(u32(CKM_AES_CBC_PAD) + u32(0)),
        decode_request,
        encode_request,
        (5, Mechanism(CKM_AES_CBC_PAD, b""), 9),
    )
    for bad in (
        Mechanism(CKM_RSA_PKCS_PSS, b"raw"),
        Mechanism(CKM_RSA_PKCS_OAEP),
        Mechanism(CKM_AES_CBC_PAD, RsaPkcsPssParams(0, 0, 0)),
        "CKM_RSA_PKCS",
    ):
        with pytest.raises(CodecError):
            encode_request("C_SignInit", 5, bad, 9)


def test_attribute_templates_with_values():
    template = (
        Attribute(CKA_CLASS, 4),
        Attribute(CKA_TOKEN, True),
        Attribute(CKA_LABEL, b"k1"),
        Attribute(CKA_START_DATE, b"20261126"),
        Attribute(CKA_EXTRACTABLE, False),
    )
    wire = (
        head(20, b"uaA")
        + u64(3)
        + u32(5)
        + u32(CKA_CLASS)
        + b"\x01"
        + u32(8)
        + u64(4)
        + u32(CKA_TOKEN)
        + b"\x01"
        + u32(1)
        + b"\x01"
        + u32(CKA_LABEL)
        + b"\x01"
        + u32(2)
        + u32(2)
        + b"k1"
        + u32(CKA_START_DATE)
        + b"\x01"
        + u32(8)
        + u32(8)
        + b"20261126"
        + u32(CKA_EXTRACTABLE)
        + b"\x01"
        + u32(1)
        + b"\x00"
    )
    both_ways(wire, decode_request, encode_request, (3, template))


def test_nested_templates_and_mechanism_arrays_carry_native_lengths():
    # 0.24.1 sends ulValueLen: 24 bytes per nested CK_ATTRIBUTE, 8 per CK_MECHANISM_TYPE (LP64)
    unwrap = Attribute(CKA_UNWRAP_TEMPLATE, [Attribute(CKA_TOKEN, True), Attribute(CKA_KEY_TYPE, 0x1F)])
    allowed = Attribute(CKA_ALLOWED_MECHANISMS, [CKM_RSA_PKCS, CKM_SHA256])
    assert (unwrap.length, allowed.length) == (48, 16)
    wire = (
        head(21, b"uuaA")
        + u64(3)
        + u64(9)
        + u32(2)
        + u32(CKA_UNWRAP_TEMPLATE)
        + b"\x01"
        + u32(48)
        + u32(2)
        + u32(CKA_TOKEN)
        + b"\x01"
        + u32(1)
        + b"\x01"
        + u32(CKA_KEY_TYPE)
        + b"\x01"
        + u32(8)
        + u64(0x1F)
        + u32(CKA_ALLOWED_MECHANISMS)
        + b"\x01"
        + u32(16)
        + u32(2)
        + u64(CKM_RSA_PKCS)
        + u64(CKM_SHA256)
    )
    both_ways(wire, decode_request, encode_request, (3, 9, (unwrap, allowed)))


def test_get_attribute_value_template_and_reply():
    both_ways(
        head(24, b"uufA") + u64(1) + u64(2) + u32(2) + u32(CKA_VALUE) + u32(0) + u32(CKA_LABEL) + u32(64),
        decode_request,
        encode_request,
        (1, 2, (AttributeSize(CKA_VALUE, 0), AttributeSize(CKA_LABEL, 64))),
    )
    # size reply: a byte array's value is NULL (0xffffffff) with its length; a sensitive one invalid
    reply = (
        head(24, b"aAu")
        + u32(3)
        + u32(CKA_VALUE)
        + b"\x00"
        + u32(CKA_LABEL)
        + b"\x01"
        + u32(5)
        + u32(0xFFFFFFFF)
        + u32(CKA_TOKEN)
        + b"\x01"
        + u32(1)
        + b"\x00"
        + u64(0x11)
    )
    both_ways(
        reply,
        decode_response,
        encode_response,
        (
            (Attribute(CKA_VALUE, None, UNAVAILABLE), Attribute(CKA_LABEL, None, 5), Attribute(CKA_TOKEN, 0)),
            0x11,
        ),
    )
    # a value longer than its announced length is refused, as rpc-message.c does
    with pytest.raises(CodecError):
        decode_response(
            head(24, b"aAu") + u32(1) + u32(CKA_LABEL) + b"\x01" + u32(1) + u32(2) + b"k1" + u64(0)
        )


def test_error_reply():
    wire = head(0, b"u") + u64(CKR_PIN_INCORRECT)
    assert encode_error(CKR_PIN_INCORRECT) == wire
    reply = decode_response(wire, "C_Login")
    assert reply.is_error and reply.ckr == CKR_PIN_INCORRECT
    for bad in (0, -1, 1 << 64):
        with pytest.raises(CodecError):
            encode_error(bad)
    with pytest.raises(CodecError):
        decode_response(head(0, b"u") + u64(0))  # CKR_OK is no error (rpc-client.c)
    with pytest.raises(CodecError):
        decode_request(wire)  # no request carries call id 0


def test_the_table_is_p11_kit_version_0():
    assert [c.id for c in CALLS] == list(range(66))
    assert BY_NAME["C_WaitForSlotEvent"].id == 65 and BY_ID[24].response == "aAu"
    for call in CALLS[1:]:
        assert call.name.startswith("C_")
        assert "".join(call.request_fields) == call.request


# ---- bad input: one exception type, nothing else leaks ---------------------------------------
def test_unknown_call_and_wrong_signature():
    with pytest.raises(UnknownCallError) as caught:
        decode_request(head(66, b"u") + u64(1))  # a 0.25 client's C_GetInterfaceList etc.
    assert caught.value.call_id == 66
    with pytest.raises(CodecError) as caught:
        decode_request(head(18, b"uuz") + u64(1) + u64(1) + u32(0))
    assert caught.value.call_id == 18
    with pytest.raises(CodecError):
        decode_request(u32(18) + u32(0xFFFFFFFF))  # NULL signature
    with pytest.raises(CodecError):
        decode_response(head(5, b"u") + u64(1), "C_GetSlotInfo")  # another call's reply


def test_huge_lengths_are_refused_before_anything_is_read():
    with pytest.raises(CodecError):
        decode_header(u32(0x10) + u32(0) + u32(MAX_BODY_LENGTH + 1))
    with pytest.raises(CodecError):
        FrameReader().feed(b"\x00" + u32(0x10) + u32(0xFFFFFFF0) + u32(8))
    with pytest.raises(CodecError):
        decode_request(head(64, b"ufy") + u64(1))  # truncated
    with pytest.raises(CodecError):
        decode_request(head(63, b"uay") + u64(1) + b"\x01" + u32(0x7FFFFFFF))
    with pytest.raises(CodecError):
        decode_request(head(63, b"uay") + u64(1) + b"\x01" + u32(0x7FFFFFF0) + b"x")
    with pytest.raises(CodecError):
        decode_response(head(27, b"au") + b"\x01" + u32(0xFFFFFFFF) + u64(1))
    with pytest.raises(CodecError):
        decode_request(head(26, b"uaA") + u64(1) + u32(0xFFFFFFFF))
    deep = head(26, b"uaA") + u64(1) + u32(1)
    for _ in range(10_000):  # nested templates: refused, no RecursionError
        deep += u32(CKA_UNWRAP_TEMPLATE) + b"\x01" + u32(24) + u32(1)
    with pytest.raises(CodecError):
        decode_request(deep)
    with pytest.raises(CodecError):
        decode_request(head(11, b"u") + u64(1) + b"trailing")


def decode_any(body: bytes) -> None:
    """Decode as request and as reply: success must round-trip, failure must be CodecError."""
    for decode, encode in ((decode_request, encode_request), (decode_response, encode_response)):
        try:
            message = decode(body)
        except CodecError:
            continue
        assert encode(message.call_id, *message.args) == body


def test_truncated_and_mutated_captured_frames_raise_only_codec_errors(exchanges):
    rng = random.Random(20261126)
    bodies = [f.body for _, q, r in exchanges for f in (q, r)]
    for body in bodies:
        for cut in sorted({0, 1, 3, 4, 7, 8, len(body) // 2, len(body) - 1}):
            if 0 <= cut < len(body):
                with pytest.raises(CodecError):
                    decode_request(body[:cut])
                with pytest.raises(CodecError):
                    decode_response(body[:cut])
    for _ in range(3000):
        body = bytearray(rng.choice(bodies))
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(body))
            body[position] = rng.choice((0, 1, 0xFF, 0x7F, rng.randrange(256)))
        decode_any(bytes(body))
    for _ in range(500):
        decode_any(rng.randbytes(rng.randint(0, 64)))


def test_frames():
    frame = encode_frame(0x10, b"body", b"client")
    assert frame == u32(0x10) + u32(6) + u32(4) + b"client" + b"body"
    reader = FrameReader()
    assert reader.feed(b"\x00" + frame[:5]) == [] and reader.version == 0
    assert reader.feed(frame[5:] + frame) == [Frame(0x10, b"body", b"client")] * 2
    with pytest.raises(CodecError):
        encode_frame(1 << 32, b"")


def test_the_fast_replies_are_the_bytes_the_general_encoder_writes():
    """encode_response builds empty and `ay` replies (data or a size) without a Writer: same
    bytes as the general path (a bytearray takes it), for every call with such a reply."""
    from ckdemo.rpc import codec
    from ckdemo.rpc.buffer import Writer
    from ckdemo.rpc.calls import BY_ID
    from ckdemo.rpc.codec import decode_response, encode_response

    checked = 0
    for call in BY_ID.values():
        if call.response == "ay":
            for data in (b"", b"\x00" * 3, bytes(range(256))):
                fast = encode_response(call.id, data)
                assert fast == encode_response(call.id, bytearray(data))
                assert decode_response(fast, call.id).args == (data,)
                checked += 1
            for size in (0, 64, 0xFFFFFFFF):
                fast = encode_response(call.id, BufferSize(size))
                writer = Writer(codec._RESPONSES[call.id].prefix)
                codec._write_byte_or_size(writer, BufferSize(size))
                assert fast == writer.getvalue()
                assert decode_response(fast, call.id).args == (BufferSize(size),)
            with pytest.raises(CodecError):
                encode_response(call.id, BufferSize(1 << 32))
        elif call.response == "":
            assert encode_response(call.id) == encode_response(call.name)
            assert decode_response(encode_response(call.id), call.id).args == ()
            checked += 1
    assert checked > 20


def test_the_fast_request_reader_agrees_with_the_general_one(exchanges):
    """Requests of simple shape (fixed fields, `ay`, `M`) are read in one pass: for every such
    call, captured and random well-formed bodies, mutated and cut ones, the fast reader gives
    the general decoder's fields or steps aside (None) for it to raise."""
    from ckdemo.rpc import codec

    rng = random.Random(20261127)
    shapes = {call_id: layout for call_id, layout in codec._REQUESTS.items() if layout.fast is not None}
    names = {BY_ID[call_id].name for call_id in shapes}
    assert {"C_SignInit", "C_Sign", "C_Encrypt", "C_GenerateRandom", "C_Verify", "C_DigestUpdate"} <= names

    def value(token):
        if token == "u":
            return rng.choice((0, 1, rng.getrandbits(64)))
        if token in ("fy", "fu"):
            return rng.choice((0, 32, rng.getrandbits(32)))
        if token == "y":
            return rng.randrange(256)
        if token == "ay":
            return rng.choice((BufferSize(rng.randrange(1 << 16)), rng.randbytes(rng.randrange(0, 300))))
        if rng.random() < 0.1:  # a structured parameter: the general decoder's
            from ckdemo.rpc import RsaPkcsPssParams

            return Mechanism(0x0D, RsaPkcsPssParams(0x250, 2, 32))
        return Mechanism(
            rng.choice((0x1, 0x40, 0x1041, 0x1081, 0x6)), rng.choice((None, b"", rng.randbytes(16)))
        )

    bodies = [q.body for _, q, _ in exchanges if q.body[:4] and int.from_bytes(q.body[:4], "big") in shapes]
    for call_id, layout in shapes.items():
        for _ in range(40):
            bodies.append(encode_request(call_id, *[value(t) for t in layout.fields]))
    mutated = []
    for body in bodies:
        for _ in range(6):
            changed = bytearray(body)
            for _ in range(rng.randint(1, 3)):
                changed[rng.randrange(len(changed))] = rng.choice((0, 1, 0xFF, 0x7F, rng.randrange(256)))
            mutated.append(bytes(changed))
        mutated.append(body[: rng.randrange(len(body))])
        mutated.append(body + b"\x00")
    fast_taken = 0
    for body in bodies + mutated:
        call_id = int.from_bytes(body[:4], "big") if len(body) >= 4 else None
        layout = shapes.get(call_id)
        try:
            expected = codec._decode(body, is_request=True)
        except CodecError:
            expected = None
        fast = None
        if layout is not None and body.startswith(layout.prefix):
            fast = codec._read_fast(body, len(layout.prefix), layout.fast)
        if fast is not None:
            fast_taken += 1
            assert expected is not None and fast == expected.args, body
        if expected is None:
            with pytest.raises(CodecError):
                decode_request(body)
        else:
            assert decode_request(body) == expected
    assert fast_taken > len(bodies) // 2
