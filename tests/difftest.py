"""Differential test: the HA slot of `ckdemo serve` against ONE SoftHSM2 token.

The oracle is one plain SoftHSM2 token behind Debian's C `p11-kit server` (the `reference`
fixture of tests/test_serve_clients.py); the subject is the HA slot (0x5000) of `ckdemo serve` on
a provisioned home. One client, our own RPC codec (`RawClient` of tests/test_serve.py), sends the
same seeded random sequence of application calls to both, and every answer is compared: return
codes, attribute values, the objects a whole search found (not their order), outputs. Handles, slot ids and values
that are random per side (key material, signatures, ciphertexts, random bytes) are not compared
as such: handles are named by the order in which each side returned them, random outputs are
compared by length and checked on their own side (a signature verifies with that side's public
key in `cryptography`, a ciphertext decrypts back on that side). In fault mode a member of the
HA group is failed and restored between calls (`ckdemo member fail`, `restore`), on the HA side only.

Vocabulary: a *sequence* (one application: one connection per side, from C_Initialize to
C_Finalize) is a list of *steps* (one application action such as "sign and verify"), each a few
*calls*. Every call is built from the sequence's seed before it is sent, so a step list can be
replayed, and shrunk to the few steps that still show a difference (`shrink`).

Used by tests/test_difftest.py (a short seeded run) and scripts/difftest (the long run);
docs/DIFFTEST.md lists the allowed differences and the figures.
"""

from __future__ import annotations

import contextlib
import random
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import test_serve_clients
from conftest import SO_PIN, USER_PIN
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from test_serve import RawClient, start_server, stop_cleanly

from ckdemo import codes
from ckdemo.rpc import (
    HANDSHAKE,
    UNAVAILABLE,
    Attribute,
    AttributeSize,
    BufferSize,
    CodecError,
    Mechanism,
)

# ---- PKCS#11 names used here (v2.40) -----------------------------------------------------------
CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL, CKA_APPLICATION, CKA_VALUE = 0x0, 0x1, 0x2, 0x3, 0x10, 0x11
CKA_KEY_TYPE, CKA_ID, CKA_SENSITIVE, CKA_ENCRYPT, CKA_DECRYPT = 0x100, 0x102, 0x103, 0x104, 0x105
CKA_WRAP, CKA_UNWRAP, CKA_SIGN, CKA_VERIFY, CKA_DERIVE = 0x106, 0x107, 0x108, 0x10A, 0x10C
CKA_MODULUS, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT = 0x120, 0x121, 0x122, 0x123
CKA_VALUE_LEN, CKA_EXTRACTABLE, CKA_LOCAL, CKA_NEVER_EXTRACTABLE = 0x161, 0x162, 0x163, 0x164
CKA_ALWAYS_SENSITIVE, CKA_KEY_GEN_MECHANISM, CKA_MODIFIABLE, CKA_COPYABLE = 0x165, 0x166, 0x170, 0x171
CKA_DESTROYABLE, CKA_EC_PARAMS, CKA_EC_POINT = 0x172, 0x180, 0x181
ATTRIBUTE_NAMES = {value: name for name, value in globals().items() if name.startswith("CKA_")}

CKO_DATA, CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY = 0x0, 0x2, 0x3, 0x4
CKK_RSA, CKK_EC, CKK_GENERIC_SECRET, CKK_AES = 0x0, 0x3, 0x10, 0x1F
CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_RSA_PKCS, CKM_SHA256_RSA_PKCS = 0x0, 0x1, 0x40
CKM_SHA256, CKM_SHA256_HMAC, CKM_GENERIC_SECRET_KEY_GEN = 0x250, 0x251, 0x350
CKM_EC_KEY_PAIR_GEN, CKM_ECDSA, CKM_AES_KEY_GEN, CKM_AES_ECB = 0x1040, 0x1041, 0x1080, 0x1081
CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD = 0x2109, 0x210A  # PKCS#11 v2.40 section 2.14.3
CKU_SO, CKU_USER = 0, 1
CKF_RW_SESSION, CKF_SERIAL_SESSION, CKF_DONT_BLOCK = 0x2, 0x4, 0x1
P256 = bytes.fromhex("06082a8648ce3d030107")  # DER OID of prime256v1, as CKA_EC_PARAMS
INVALID_HANDLE = 0x7FFF_FFF0  # what a handle the side never returned becomes
ROOM = 4096  # the output buffer offered (0 is a size query)
MEMBERS = ("member1", "member2", "member3")
# member faults and what undoes each: `ckdemo member fail`, `restore` (any home), and with remote
# members (each a p11-kit server process) a power cut and a new server, a hang (SIGSTOP: the
# socket stays open, nothing answers) and its end
FAULTS = {"fail": "restore", "kill": "serve", "hang": "resume"}
REMOTE_FAULTS = ("fail", "kill", "hang")
REMOTE_MEMBER_TIMEOUT_S = 3  # a change waiting on a hung member gives it up after this long
RECOVERY_INTERVAL_S = "1"  # a restored member comes back at the first call a second later

# what C_GetAttributeValue asks of every object (one call; the token answers what applies)
READ_BACK = (
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_ID,
    CKA_VALUE,
    CKA_APPLICATION,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_LOCAL,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_KEY_GEN_MECHANISM,
    CKA_VALUE_LEN,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_DERIVE,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
)
# values that differ per side whatever the tokens do right: compared by presence and length
KEY_MATERIAL = frozenset({CKA_MODULUS, CKA_EC_POINT, CKA_PRIVATE_EXPONENT})
# a private key's big integers (an EC private key's CKA_VALUE, an RSA private exponent): SoftHSM2
# keeps them without leading zero bytes, so a P-256 scalar is 31 bytes long once in 256 keys,
# on either side (seed 700004: <31 bytes> vs <32 bytes>, one run in several)
VARYING_LENGTH = frozenset({CKA_VALUE, CKA_PRIVATE_EXPONENT})


def attribute_name(attribute_type: int) -> str:
    return ATTRIBUTE_NAMES.get(attribute_type, hex(attribute_type))


# ---- a call, with what it names resolved per side ------------------------------------------------
@dataclass(frozen=True)
class Ref:
    """A handle named by the sequence ("o3": the 3rd object made); each side maps it to its own."""

    kind: str  # "s" session, "o" object
    number: int

    def __str__(self) -> str:
        return f"{self.kind}{self.number}"


@dataclass(frozen=True)
class Out:
    """The bytes this side answered to earlier calls (concatenated), e.g. the signature to verify."""

    calls: tuple[int, ...]
    tamper: bool = False  # one bit flipped: a signature that must not verify

    def __str__(self) -> str:
        return f"<output of #{'+#'.join(map(str, self.calls))}{', one bit flipped' if self.tamper else ''}>"


@dataclass(frozen=True)
class Read:
    """The attributes this side answered to an earlier C_GetAttributeValue (for a local check)."""

    call: int

    def __str__(self) -> str:
        return f"<attributes read by #{self.call}>"


class _Slot:
    def __repr__(self) -> str:
        return "SLOT"


SLOT = _Slot()  # the side's one slot (0x5000 on the HA side)


@dataclass(frozen=True)
class Call:
    """One PKCS#11 call of a sequence, or a local check ("sw:..."), or a fault ("fault:...")."""

    id: int
    name: str
    args: tuple
    binds: tuple[Ref, ...] = ()  # the handles in the answer get these names
    random: bool = False  # its output bytes differ per side: compared by length
    size_varies: bool = False  # ... and so does their length (a wrapped RSA private key)
    masked: frozenset = frozenset()  # C_GetAttributeValue: types whose values are per side
    varying: frozenset = frozenset()  # ... and their lengths too (VARYING_LENGTH)
    hidden: frozenset = frozenset()  # C_GetAttributeValue: types not compared (CKA_ID not set)
    context: str = ""  # what the object is, for grouping differences
    asked: tuple = ()  # C_GetAttributeValue: (type, value) the application asked for

    def __str__(self) -> str:
        return f"#{self.id} {self.name}({', '.join(show(a) for a in self.args)})"


def show(value) -> str:
    if isinstance(value, Attribute):
        return f"{attribute_name(value.type)}={show(value.value)}"
    if isinstance(value, AttributeSize):
        return attribute_name(value.type)
    if isinstance(value, Mechanism):
        return f"mech={value.type:#x}"
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 12 else f"<{len(value)} bytes>"
    if isinstance(value, tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


@dataclass
class Step:
    """One application action: its calls, and what the generator learns from the reference."""

    number: int
    name: str
    calls: list[Call]
    learn: Callable[[dict[int, Any], Callable[[Ref], bool]], None] = lambda replies, kept: None


# ---- the two servers --------------------------------------------------------------------------
@dataclass
class Side:
    """One server, and what one application holds on it during a sequence."""

    name: str  # "reference" or "HA slot"
    socket: Path
    client: RawClient | None = None
    slot: int = 0
    handles: dict[Ref, int] = field(default_factory=dict)
    outputs: dict[int, tuple] = field(default_factory=dict)
    ignored: set[int] = field(default_factory=set)  # half key pairs the engine could not remove

    def resolve(self, value):
        if isinstance(value, Ref):
            return self.handles.get(value, INVALID_HANDLE)
        if value is SLOT:
            return self.slot
        if isinstance(value, Out):
            data = b"".join(self.output_bytes(call) for call in value.calls)
            return bytes([data[0] ^ 1]) + data[1:] if value.tamper and data else data
        if isinstance(value, Read):
            found = self.outputs.get(value.call, ())
            return found[0] if found else ()
        if isinstance(value, tuple):
            return tuple(self.resolve(v) for v in value)
        return value

    def output_bytes(self, call: int) -> bytes:
        found = self.outputs.get(call, ())
        return found[0] if found and isinstance(found[0], bytes) else b""

    def name_of(self, handle: int) -> str:
        """The sequence's name of an object handle (the latest, if a side gave one handle twice)."""
        names = [ref for ref, known in self.handles.items() if ref.kind in "of" and known == handle]
        return str(names[-1]) if names else f"?{handle:#x}"

    def name_found(self, handles: tuple[int, ...]) -> None:
        """Handles a search returned that the sequence has no name for (a token gives objects new
        handles when the application's last session closes, or at a logout) are named f1, f2 ...
        in the order this side returned them."""
        known = {h for ref, h in self.handles.items() if ref.kind in "of"}
        for handle in handles:
            if handle not in known:
                self.handles[Ref("f", sum(ref.kind == "f" for ref in self.handles) + 1)] = handle
                known.add(handle)


@dataclass
class Servers:
    reference: Side
    ha: Side  # the subject: the HA slot (or a second reference, to check the engine itself)
    home: Path | None = None  # the HA side's ckdemo home: None, no faults and no healing
    run_ckdemo: Callable | None = None
    faults: tuple[str, ...] = ("fail",)  # the member faults a sequence may inject (FAULTS)
    pending: list = field(default_factory=list)  # faults on their way (injected during calls)

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.reference, self.ha


class _Folders:
    """What the `reference` fixture asks of pytest's tmp_path_factory: fresh folders."""

    def __init__(self, base: Path):
        self.base = base

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name, dir=self.base))


@contextlib.contextmanager
def servers(folder: Path, provision, run_ckdemo, ckdemo_bin: Path, remote: bool = False) -> Iterator[Servers]:
    """Both servers for a run: the reference (test_serve_clients' fixture, called as the plain
    generator it wraps) and `ckdemo serve` of a home provisioned with a 1 s recovery interval.
    remote: the home's members are p11-kit server processes (`init --remote`), and a sequence's
    faults may also kill or hang one (REMOTE_FAULTS)."""
    home = provision(folder / "home", *(("--remote",) if remote else ()))
    done = run_ckdemo(home, "hagroup", "interval", "--seconds", RECOVERY_INTERVAL_S)
    assert done.returncode == 0, done.stdout + done.stderr
    if remote:
        conf = home / "Chrystoki.conf"
        conf.write_text(
            conf.read_text().replace(
                "CKDemo = {", f"CKDemo = {{\n   MemberTimeout = {REMOTE_MEMBER_TIMEOUT_S};", 1
            )
        )
    try:
        with contextlib.contextmanager(test_serve_clients.reference.__wrapped__)(
            _Folders(folder)
        ) as reference:
            served = start_server(ckdemo_bin, home, None, folder / "serve.log")
            try:
                yield Servers(
                    Side("reference", reference.socket),
                    Side("HA slot", served.socket),
                    home,
                    run_ckdemo,
                    REMOTE_FAULTS if remote else ("fail",),
                )
            finally:
                stop_cleanly(served)
    finally:
        if remote:
            run_ckdemo(home, "member", "kill", "all")


@contextlib.contextmanager
def two_references(folder: Path) -> Iterator[Servers]:
    """Two plain SoftHSM2 tokens, each behind its own `p11-kit server`: whatever the engine
    finds between them is the engine's own mistake (tests/test_difftest.py checks it finds none)."""
    make = contextlib.contextmanager(test_serve_clients.reference.__wrapped__)
    with make(_Folders(folder)) as first, make(_Folders(folder)) as second:
        yield Servers(Side("reference", first.socket), Side("second reference", second.socket))


def plain_fixtures() -> tuple[Callable, Callable, Path]:
    """provision, run_ckdemo and ckdemo_bin of tests/conftest.py outside pytest (scripts/difftest)."""
    import conftest

    ckdemo_bin = conftest.ckdemo_bin.__wrapped__()
    run_ckdemo = conftest.run_ckdemo.__wrapped__(ckdemo_bin)
    return conftest.provisioner(run_ckdemo), run_ckdemo, ckdemo_bin


# ---- sending a call to one side, and what of its answer is compared ----------------------------------
@dataclass(frozen=True)
class Lost:
    """The connection broke (or the reply was not the call's): the sequence ends there."""

    why: str


def send(side: Side, call: Call, servers: Servers):
    """The call on this side: a Message, a local check's verdict, or Lost."""
    args = side.resolve(call.args)
    if call.name.startswith("sw:"):
        verdict, output = LOCAL_CHECKS[call.name](*args)
        side.outputs[call.id] = (output,)
        return verdict
    if call.name.startswith("fault:"):
        return inject(servers, call.name.split(":")[1], *args)
    try:
        reply = side.client.call(call.name, *args)
    except (OSError, EOFError, AssertionError, ValueError, CodecError) as error:  # RawClient asserts the code
        return Lost(f"{type(error).__name__}: {error}")
    if not reply.is_error:
        side.outputs[call.id] = reply.args
        for ref, handle in zip(call.binds, reply.args):
            side.handles[ref] = handle
        if call.name == "C_FindObjects":
            side.name_found(reply.args[0])
    return reply


def ckr_of(reply) -> str:
    if isinstance(reply, Lost):
        return f"connection lost ({reply.why})"
    if isinstance(reply, str):
        return reply
    return codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK"


def view(call: Call, reply, side: Side) -> tuple:
    """What is compared of an answer: its code, then the call's output made side-independent."""
    ckr = ckr_of(reply)
    if ckr != "CKR_OK" or isinstance(reply, (str, Lost)):
        return (ckr,)
    args = reply.args
    if call.name == "C_FindObjects":
        return (ckr, tuple(side.name_of(h) for h in args[0] if h not in side.ignored))
    if call.name == "C_GetAttributeValue":
        return (codes.ckr_name(args[1]),) + tuple(attribute_view(call, a) for a in args[0])
    if call.name == "C_GetSlotList":
        return (ckr, len(args[0]) if isinstance(args[0], tuple) else args[0])
    if call.name == "C_GetSessionInfo":
        info = args[0]  # its slot id is the side's own
        return (ckr, f"state={info.state}", f"flags={info.flags:#x}", f"device_error={info.device_error}")
    if call.name == "C_GetTokenInfo":  # labels, serials, counts are the side's own
        info = args[0]
        return (ckr, f"flags={info.flags:#x}", f"pin={info.min_pin_len}..{info.max_pin_len}")
    if call.name == "C_WaitForSlotEvent":
        return (ckr, "the slot" if args[0] == side.slot else hex(args[0]))
    if call.binds:
        return (ckr,)
    return (ckr,) + tuple(output_view(call, value) for value in args)


def output_view(call: Call, value) -> Any:
    if isinstance(value, (bytes, BufferSize)) and call.size_varies:
        return "<bytes of a length that differs per key>" if isinstance(value, bytes) else "size"
    if isinstance(value, BufferSize):
        return f"size {value.length}"
    if isinstance(value, bytes) and call.random:
        return f"<{len(value)} bytes>"
    if isinstance(value, bytes):
        return value.hex()
    return value


def attribute_view(call: Call, attribute: Attribute) -> tuple:
    name = attribute_name(attribute.type)
    if attribute.type in call.hidden:
        return (name, "<not compared: CKA_ID not set by the application>")
    if attribute.length == UNAVAILABLE:
        return (name, "unavailable")
    if attribute.type in call.varying:  # its value, or a size query: per key, length and all
        return (name, "<bytes of a length that differs per key>")
    value = attribute.value
    if value is None:  # a size query
        return (name, f"size {attribute.length}")
    if isinstance(value, bytes) and attribute.type in call.masked:
        return (name, f"<{len(value)} bytes>")
    if isinstance(value, bytes):
        return (name, f"{value.hex()!r}")
    return (
        name,
        value
        if attribute.length == (1 if isinstance(value, int) and value < 2 else 8)
        else f"{value} (length {attribute.length})",
    )


# ---- local checks of outputs, on the side that made them --------------------------------------------
def public_key(attributes: tuple[Attribute, ...]):
    """A cryptography public key from CKA_MODULUS+CKA_PUBLIC_EXPONENT or CKA_EC_POINT, or None."""
    found = {a.type: a.value for a in attributes if a.length not in (UNAVAILABLE, 0)}
    if CKA_MODULUS in found and CKA_PUBLIC_EXPONENT in found:
        return rsa.RSAPublicNumbers(
            int.from_bytes(found[CKA_PUBLIC_EXPONENT], "big"), int.from_bytes(found[CKA_MODULUS], "big")
        ).public_key()
    if CKA_EC_POINT in found:  # a DER OCTET STRING around the uncompressed point
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), found[CKA_EC_POINT][2:])
    return None


def check_signature(mechanism: int, attributes, data: bytes, signature: bytes) -> tuple[str, bytes]:
    key = public_key(attributes)
    if key is None or not signature:
        return "not checked (no public key or no signature)", b""
    try:
        if mechanism == CKM_SHA256_RSA_PKCS:
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif mechanism == CKM_RSA_PKCS:
            if key.recover_data_from_signature(signature, padding.PKCS1v15(), None) != data:
                raise InvalidSignature
        else:
            half = len(signature) // 2
            der = utils.encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
            key.verify(der, data, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except (InvalidSignature, ValueError):
        return "signature INVALID for this side's public key", b""
    return "signature valid for this side's public key", b""


def encrypt_in_software(attributes, data: bytes) -> tuple[str, bytes]:
    """RSA PKCS#1 v1.5 encryption with this side's public key: its token must decrypt it."""
    key = public_key(attributes)
    if not isinstance(key, rsa.RSAPublicKey):
        return "not encrypted (no RSA public key)", b""
    return "encrypted with this side's public key", key.encrypt(data, padding.PKCS1v15())


LOCAL_CHECKS: dict[str, Callable[..., tuple[str, bytes]]] = {
    "sw:verify": check_signature,
    "sw:encrypt": encrypt_in_software,
}


# ---- faults, on the HA side only -------------------------------------------------------------------
def inject(servers: Servers, command: str, member: str, delay_ms: int | None = None) -> str:
    """`ckdemo member` fail, restore, kill, serve, hang or resume with a MEMBER (or `hagroup recover`); with a
    delay, in a thread that waits that long first: the fault lands while the next calls are on
    their way (a fault injected later waits for it)."""
    for pending in servers.pending:
        pending.join()
    servers.pending.clear()
    args = ("hagroup", "recover") if command == "recover" else ("member", command, member)
    if delay_ms is not None:
        thread = threading.Thread(
            target=lambda: (time.sleep(delay_ms / 1000), servers.run_ckdemo(servers.home, *args)), daemon=True
        )
        thread.start()
        servers.pending.append(thread)
        return "done"
    done = servers.run_ckdemo(servers.home, *args)
    return "done" if done.returncode == 0 else f"refused: {(done.stdout + done.stderr).strip()[-200:]}"


# ---- differences --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    seed: int
    step: int
    call: str
    kind: str  # what differs, the same for every instance of one behaviour
    reference: str
    ha: str
    allowed: str = ""  # the allowed difference it is (docs/DIFFTEST.md), "" for a defect
    family: str = ""  # the kind without the object it happened to (report and shrink group by it)

    def __post_init__(self):
        if not self.family:
            object.__setattr__(self, "family", self.kind)

    def __str__(self) -> str:
        return (
            f"seed {self.seed} step {self.step} {self.call}: {self.kind}\n"
            f"    reference: {self.reference}\n    HA slot:   {self.ha}"
            + (f"\n    allowed: {self.allowed}" if self.allowed else "")
        )


@dataclass(frozen=True)
class Allowance:
    """A difference the HA slot may show, and why (docs/DIFFTEST.md repeats the list)."""

    name: str
    reason: str
    matches: Callable[[str, str, str], bool]  # (call name, reference answer, HA answer)
    ends_step: bool = False  # the rest of the step follows from it (an operation refused)


HALF_PAIR = "a key left by a refused C_GenerateKeyPair or C_UnwrapKey"
ID_SIZE = "the HA slot's CKA_ID of a key made without one, in a small buffer"
RENAMED_IN_SEARCH = "an object found under its old handle on one side, under a new one on the other"
# not an Allowance (it depends on the calls between, not on the two answers): search_differences
SEARCH_OVER_LOGOUT = (
    "a search begun before a logout and read after it: SoftHSM2 goes on listing the handles it "
    "found at C_FindObjectsInit (a private object's is invalid since the logout); the HA slot "
    "lists the private objects under the handles they have now"
)
PARTIAL_SET = "a refused C_SetAttributeValue on a session object keeps part of it"
ALLOWED = (
    Allowance(
        "C_DigestKey of a short sensitive key",
        "ckdemo refuses to digest a sensitive key under 16 bytes (CKR_KEY_INDIGESTIBLE), on "
        "purpose: its SHA-256 gives the key away by brute force (docs/SECURITY.md)",
        lambda name, ref, ha: name == "C_DigestKey" and ha.startswith("CKR_KEY_INDIGESTIBLE"),
        ends_step=True,
    ),
    Allowance(
        "slot events: CKR_NO_EVENT",
        "SoftHSM2 2.6.1 does not implement C_WaitForSlotEvent (CKR_FUNCTION_NOT_SUPPORTED); the HA "
        "slot serves the CKF_DONT_BLOCK form and answers CKR_NO_EVENT when nothing happened: an "
        "application cannot tell a token that has no event from one that cannot say",
        lambda name, ref, ha: (
            name == "C_WaitForSlotEvent"
            and ref.startswith("CKR_FUNCTION_NOT_SUPPORTED")
            and ha.startswith("CKR_NO_EVENT")
        ),
    ),
    Allowance(
        "slot events: the HA slot's member events",
        "the HA slot reports a member failing or coming back as an event on its slot (as "
        "Luna's HA slot does: applications poll it to notice failovers); SoftHSM2 2.6.1 "
        "has no slot events at all",
        lambda name, ref, ha: (
            name == "C_WaitForSlotEvent"
            and ref.startswith("CKR_FUNCTION_NOT_SUPPORTED")
            and ha.startswith("CKR_OK")
        ),
    ),
    Allowance(
        "an RSA or ECDSA Init with a key of another type",
        "the HA slot refuses it at Init with CKR_KEY_TYPE_INCONSISTENT, as PKCS#11 says; "
        "SoftHSM2 2.6.1 accepts the Init and fails later, or (C_Verify with an RSA mechanism "
        "and an EC key) kills its process, which for the HA slot is every member's process",
        lambda name, ref, ha: (
            name in ("C_SignInit", "C_VerifyInit", "C_EncryptInit", "C_DecryptInit")
            and ref.startswith("CKR_OK")
            and ha.startswith("CKR_KEY_TYPE_INCONSISTENT")
        ),
        ends_step=True,
    ),
    Allowance(
        "an Init with a handle that names no key",
        "PKCS#11 v2.40 answers C_SignInit, C_VerifyInit, C_EncryptInit and C_DecryptInit with "
        "CKR_KEY_HANDLE_INVALID for a handle that is no key (CKR_OBJECT_HANDLE_INVALID is not "
        "among their return values), and so does the HA slot; SoftHSM2 2.6.1 answers "
        "CKR_OBJECT_HANDLE_INVALID",
        lambda name, ref, ha: (
            name in ("C_SignInit", "C_VerifyInit", "C_EncryptInit", "C_DecryptInit")
            and ref.startswith("CKR_OBJECT_HANDLE_INVALID")
            and ha.startswith("CKR_KEY_HANDLE_INVALID")
        ),
    ),
    Allowance(
        "C_Logout with no login",
        "PKCS#11 v2.40 (C_Logout) answers CKR_USER_NOT_LOGGED_IN when nobody is logged in, "
        "and so does the HA slot; SoftHSM2 2.6.1 answers CKR_OK",
        lambda name, ref, ha: (
            name == "C_Logout" and ref.startswith("CKR_OK") and ha.startswith("CKR_USER_NOT_LOGGED_IN")
        ),
    ),
    Allowance(
        "the order of a search's results",
        "one token lists the objects a search finds in an order of its own (SoftHSM2 2.6.1: "
        "their addresses in its memory); the HA slot lists them in the order the group made "
        "or first saw them, the same in every session and on every member. PKCS#11 gives "
        "C_FindObjects no order; the same objects are found",
        lambda name, ref, ha: (
            name == SEARCH
            and ref.endswith("]")
            and ha.endswith("]")
            and Counter(map(unnamed, ref[8:-1].split(", "))) == Counter(map(unnamed, ha[8:-1].split(", ")))
        ),
    ),
    Allowance(
        HALF_PAIR,
        "SoftHSM2 2.6.1 makes one half of a key pair, then refuses the other half's template "
        "(an attribute of the other class, CKR_ATTRIBUTE_TYPE_INVALID) and keeps the half it "
        "made, sometimes without its CKA_ID; it refuses an unwrap whose template has "
        "CKA_MODIFIABLE FALSE before another attribute (CKR_ATTRIBUTE_READ_ONLY) and keeps the "
        "key, without those attributes. A refused call must make nothing (PKCS#11). The HA "
        "slot removes such a key from its member (or orders the template); the engine removes "
        "it from the reference. A token key so kept may be found by no search while the "
        "application that made it runs, and by the next application: the sequence's last "
        "check then allows as many token objects more on the reference as it refused such "
        "unwraps",
        lambda name, ref, ha: (
            name in LEAVES_OBJECTS and ha.startswith("0 object") and not ref.startswith("0 object")
        ),
    ),
    Allowance(
        PARTIAL_SET,
        "SoftHSM2 2.6.1 sets a template's attributes one by one and, on a session object, keeps "
        "those it set before the attribute it refused (its session objects have no transactions; "
        "a token object's change is undone). The HA slot changes nothing when it refuses, on "
        "session and token objects alike (all or nothing across members); the engine puts the "
        "reference's partial change back",
        lambda name, ref, ha: (
            name == "C_SetAttributeValue" and "nothing (put back" in ha and "nothing (put back" not in ref
        ),
    ),
    Allowance(
        ID_SIZE,
        "the HA slot gives a key made without CKA_ID an 8-byte one (members find its replicas by "
        "it; the value is not compared, see above); SoftHSM2's is empty. A read offering a buffer "
        "smaller than 8 bytes (the engine offers 1 byte now and then) is CKR_BUFFER_TOO_SMALL on "
        "the HA slot where the empty one fits; allowed only when every attribute read answers the "
        "same on both sides (the CKA_ID is then the only one that can be too large)",
        lambda name, ref, ha: (
            name == "C_GetAttributeValue" and ref == "CKR_OK" and ha == "CKR_BUFFER_TOO_SMALL"
        ),
    ),
    Allowance(
        "PIN lock after 10 wrong PINs",
        "the HA slot locks the user PIN after 10 wrong PINs in a row (FailedLoginLimit, as a "
        "Luna partition); SoftHSM2 never locks. The engine never sends 10 in a row",
        lambda name, ref, ha: name == "C_Login" and ha.startswith("CKR_PIN_LOCKED"),
    ),
)


def compare(seed: int, step: Step, call: Call, reference: tuple, ha: tuple, after: str) -> list[Difference]:
    """The differences of one call's two views; `after`: an allowance that ended the step."""
    if reference == ha:
        return []
    if call.name == "C_GetAttributeValue" and len(reference) == len(ha) > 1:
        # the code may differ for the CKA_ID alone (hidden): then every attribute answers alike
        id_only = CKA_ID in call.hidden and reference[1:] == ha[1:]
        found = (
            [
                Difference(
                    seed,
                    step.number,
                    str(call),
                    f"{call.name} code ({call.context})",
                    reference[0],
                    ha[0],
                    next(
                        (a.name for a in ALLOWED if id_only and a.matches(call.name, reference[0], ha[0])), ""
                    ),
                    family=f"{call.name}: {reference[0]} vs {ha[0]}",
                )
            ]
            if reference[0] != ha[0]
            else []
        )
        asked = {attribute_name(t): v for t, v in call.asked}
        for ours, theirs in zip(reference[1:], ha[1:]):
            if ours != theirs:
                wish = f"asked {show(asked[ours[0]])}" if ours[0] in asked else "not in the template"
                values = f"{show_answer(ours[1:])} vs {show_answer(theirs[1:])}"
                found.append(
                    Difference(
                        seed,
                        step.number,
                        str(call),
                        f"{call.name} {ours[0]} of a {call.context} ({wish}): {values}",
                        show_answer(ours[1:]),
                        show_answer(theirs[1:]),
                        family=f"{call.name} {ours[0]}: {values}",
                    )
                )
        return [replace(d, allowed=d.allowed or after) for d in found]
    ref_text, ha_text = show_answer(reference), show_answer(ha)
    kind = (
        f"{call.name}: {reference[0]} vs {ha[0]}" if reference[0] != ha[0] else f"{call.name}: other output"
    )
    if call.name == "C_FindObjects" and reference[0] == ha[0]:
        kind = f"{call.name}: {search_difference(reference[1], ha[1])}"
        if kind.endswith("in another order"):
            return []  # a chunk of a search with no C_FindObjectsInit of this sequence: a set, as below
    family = kind
    if call.context and call.name != "C_FindObjects":
        kind += f" ({call.context})"
    allowed = after or next((a.name for a in ALLOWED if a.matches(call.name, ref_text, ha_text)), "")
    return [Difference(seed, step.number, str(call), kind, ref_text, ha_text, allowed, family)]


def search_difference(ours: tuple[str, ...], theirs: tuple[str, ...]) -> str:
    """What differs between two lists of found objects, up to the naming of new handles (f1, f2 ...
    are named per side in the order that side returned them: any f is any other f)."""
    ours_named, theirs_named = Counter(map(unnamed, ours)), Counter(map(unnamed, theirs))
    if ours_named == theirs_named:
        return "the same objects in another order"
    only_ours, only_theirs = ours_named - theirs_named, theirs_named - ours_named
    if len(ours) == len(theirs) and {"f*"} in ({*only_ours}, {*only_theirs}):
        return RENAMED_IN_SEARCH
    return f"other objects ({len(ours)} vs {len(theirs)})" if len(ours) != len(theirs) else "other objects"


def unnamed(name: str) -> str:
    """f1, f2 ...: an object this side gave a handle the sequence has no name for (see name_found)."""
    return "f*" if name.startswith("f") else name


# ---- searches, compared whole -------------------------------------------------------------------
SEARCH = "C_FindObjectsInit..Final"


@dataclass
class Search:
    """One search of one session, C_FindObjectsInit to C_FindObjectsFinal (or the session's end),
    collected on both sides: the objects it found are compared as a set when it ends, as a token
    lists them in an order of its own (SoftHSM2: their memory addresses)."""

    init: str  # the C_FindObjectsInit, as the sequence names it
    found: tuple[list[str], list[str]] = field(default_factory=lambda: ([], []))
    ended: list[bool] = field(default_factory=lambda: [False, False])  # a chunk shorter than asked
    spoiled: bool = False  # a chunk's code differed: recorded already, the rest says nothing more
    logged_out: bool = False  # the application logged out while it went on (SEARCH_OVER_LOGOUT)


def follow_searches(
    sequence: Sequence,
    step: Step,
    call: Call,
    views: tuple[tuple, tuple],
    returned: tuple[int, int] | None = None,
) -> list[Difference]:
    """Collect the chunks of the searches of this call's session; the differences of those it ends.
    returned: how many handles each side's C_FindObjects returned (views leave ignored ones out)."""
    answers = views[0][0], views[1][0]
    session = call.args[0] if call.args else None
    if call.name in ("C_CloseAllSessions", "C_Finalize"):
        ending = list(sequence.searches)
    elif call.name in ("C_FindObjectsFinal", "C_CloseSession") or (
        call.name == "C_FindObjectsInit" and "CKR_OK" in answers
    ):  # else the search goes on
        ending = [session] if session in sequence.searches else []
    else:
        ending = []
    found = [
        d
        for ended in ending
        for d in search_differences(sequence.seed, step.number, sequence.searches.pop(ended))
    ]
    if call.name == "C_Logout" and answers[0] == "CKR_OK":
        for search in sequence.searches.values():
            search.logged_out = True
    if call.name == "C_FindObjectsInit" and answers == ("CKR_OK", "CKR_OK"):
        sequence.searches[session] = Search(str(call))
    elif call.name in ("C_FindObjectsInit", "C_FindObjects") and session in sequence.searches:
        search = sequence.searches[session]
        search.spoiled |= answers[0] != answers[1]
        if call.name == "C_FindObjects" and not search.spoiled and answers[0] == "CKR_OK":
            for side, side_view in enumerate(views):
                search.found[side].extend(side_view[1])
                search.ended[side] |= (returned[side] if returned else len(side_view[1])) < call.args[1]
    return found


def search_differences(seed: int, step: int, search: Search) -> list[Difference]:
    """A whole search: which objects each side found, as a set. A search read in part on both
    sides (every chunk full) is not compared: which objects come first is the side's own order."""
    ours, theirs = (tuple(names) for names in search.found)
    if search.spoiled or not any(search.ended) or ours == theirs:
        return []
    ref_text, ha_text = (
        f"CKR_OK [{', '.join(names)}]" + ("" if ended else " and more, not read")
        for names, ended in zip(search.found, search.ended)
    )
    if not all(search.ended):
        kind = (
            f"{SEARCH}: other objects ({len(ours)}{'' if search.ended[0] else '+'} vs "
            f"{len(theirs)}{'' if search.ended[1] else '+'})"
        )
    else:
        kind = f"{SEARCH}: {search_difference(ours, theirs)}"
    allowed = next((a.name for a in ALLOWED if a.matches(SEARCH, ref_text, ha_text)), "")
    if search.logged_out and kind.endswith(RENAMED_IN_SEARCH):
        allowed = SEARCH_OVER_LOGOUT
    return [Difference(seed, step, search.init, kind, ref_text, ha_text, allowed)]


def show_answer(answer: tuple) -> str:
    return " ".join(str(part) if not isinstance(part, tuple) else show(part) for part in answer)


# ---- what the generator knows (from the reference's answers) ----------------------------------------
@dataclass
class Thing:
    """An object both sides made in this sequence."""

    ref: Ref
    cls: int
    key_type: int | None
    origin: str  # generated, created, copied, unwrapped
    attrs: dict[int, Any]  # what the application asked for or set
    partner: Ref | None = None  # the other half of a key pair
    value: bytes | None = None  # a secret value both sides share; None: per side
    session: Ref | None = None  # the session of a session object
    size: int = 0  # RSA bits, secret bytes

    def describe(self) -> str:
        kind = {
            CKO_DATA: "data object",
            CKO_PUBLIC_KEY: "public key",
            CKO_PRIVATE_KEY: "private key",
            CKO_SECRET_KEY: "secret key",
        }[self.cls]
        key = {CKK_RSA: "RSA ", CKK_EC: "EC ", CKK_AES: "AES ", CKK_GENERIC_SECRET: "generic "}.get(
            self.key_type, ""
        )
        return f"{self.origin} {key}{kind}"

    def known(self) -> dict[int, Any]:
        """Attribute values a search may use."""
        found = {CKA_CLASS: self.cls, **self.attrs}
        if self.key_type is not None:
            found[CKA_KEY_TYPE] = self.key_type
        return found

    @property
    def secret_known(self) -> bool:
        return self.value is not None


@dataclass
class Model:
    things: dict[Ref, Thing] = field(default_factory=dict)
    sessions: dict[Ref, bool] = field(default_factory=dict)  # session -> read/write
    login: str | None = None  # None, "user", "so": the application's login
    gone: list[Ref] = field(default_factory=list)  # destroyed objects, closed sessions
    failed_member: tuple[str, str] | None = None  # (member, fault kind)

    def close(self, session: Ref) -> None:
        self.sessions.pop(session, None)
        self.gone.append(session)
        for ref in [r for r, t in self.things.items() if t.session == session]:
            self.forget(ref)
        if not self.sessions:  # PKCS#11: the last session closed logs the application out, and
            self.login = None  # SoftHSM2 gives every object a new handle after that
            for ref in list(self.things):
                self.forget(ref)

    def logout(self) -> None:
        """SoftHSM2 drops the handles of private objects at a logout (PKCS#11 allows it): only
        objects made CKA_PRIVATE=FALSE keep theirs."""
        self.login = None
        for ref in [r for r, t in self.things.items() if t.attrs.get(CKA_PRIVATE) != 0]:
            self.forget(ref)

    def forget(self, ref: Ref) -> None:
        if self.things.pop(ref, None) is not None:
            self.gone.append(ref)


def ok(replies: dict[int, Any], call: Call) -> bool:
    return ckr_of(replies.get(call.id, Lost("not sent"))) == "CKR_OK"


LABELS = (b"alpha", b"beta", b"gamma", b"")
IDS = (b"\x01", b"\x02", b"\xa1\xb2", b"\x03\x04\x05")
SECRET_FLAGS = (
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
)
PUBLIC_FLAGS = (CKA_TOKEN, CKA_PRIVATE, CKA_ENCRYPT, CKA_VERIFY, CKA_WRAP, CKA_MODIFIABLE)
PRIVATE_FLAGS = (
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_UNWRAP,
    CKA_MODIFIABLE,
)
DATA_FLAGS = (CKA_TOKEN, CKA_PRIVATE, CKA_MODIFIABLE)
FIND_TYPES = (
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_LABEL,
    CKA_ID,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_SIGN,
    CKA_ENCRYPT,
    CKA_VERIFY,
    CKA_MODIFIABLE,
)


def may(thing: Thing, usage: int) -> bool:
    """The application did not forbid this use (CKA_SIGN, CKA_ENCRYPT ...) of the object."""
    return thing.attrs.get(usage) != 0


def template(attrs: dict[int, Any]) -> tuple[Attribute, ...]:
    return tuple(Attribute(t, v) for t, v in attrs.items())


class Generator:
    """Seeded random steps of one application; `learn` keeps the model in line with the reference."""

    def __init__(self, seed: int, faults: int = 0, calls: int = 100, kinds: tuple[str, ...] = ("fail",)):
        self.rng = random.Random(seed)
        self.kinds = kinds
        self.model = Model()
        self.counters = Counter()
        self.steps = 0
        self.calls: list[Call] = []
        # member faults: when (calls sent) each is injected, in the first 70 % of the sequence
        span = range(calls // 10, max(calls // 10 + faults, calls * 7 // 10))
        self.fault_at = sorted(self.rng.sample(span, faults))
        self.restore_in = 0

    # -- naming ----------------------------------------------------------------------------------
    def new(self, kind: str) -> Ref:
        self.counters[kind] += 1
        return Ref(kind, self.counters[kind])

    def call(self, name: str, *args, **options) -> Call:
        self.counters["call"] += 1
        made = Call(self.counters["call"], name, args, **options)
        self.calls.append(made)
        return made

    def step(self, name: str, calls: list[Call], learn=None) -> Step:
        self.steps += 1
        return Step(self.steps - 1, name, calls, learn or (lambda replies, kept: None))

    # -- random choices --------------------------------------------------------------------------
    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def session(self) -> Ref:
        if self.model.gone and self.chance(0.02):  # a closed session, now and then
            stale = [r for r in self.model.gone if r.kind == "s"]
            if stale:
                return self.rng.choice(stale)
        return self.rng.choice(sorted(self.model.sessions, key=lambda r: r.number))

    def thing(self, *wishes: Callable[[Thing], bool]) -> Thing | None:
        """An object for the first wish some object fits (any object, now and then: the
        refusals are compared too)."""
        every = list(self.model.things.values())
        for wanted in wishes if not self.chance(0.05) else ():
            fitting = [t for t in every if wanted(t)]
            if fitting:
                return self.rng.choice(fitting)
        return self.rng.choice(every) if every else None

    def flags(self, names: tuple[int, ...], p: float = 0.35) -> dict[int, Any]:
        """Some of these CK_BBOOL attributes, each TRUE or FALSE; keys are made extractable, and
        AES keys able to wrap and unwrap, more often than chance would, so that wraps succeed."""
        found = {t: self.rng.choice((0, 1)) for t in names if self.chance(p)}
        for wanted in (CKA_EXTRACTABLE, CKA_WRAP, CKA_UNWRAP):
            if wanted in names and self.chance(0.25):
                found[wanted] = 1
        return found

    def naming(self) -> dict[int, Any]:
        found = {}
        if self.chance(0.7):
            found[CKA_LABEL] = self.rng.choice(LABELS)
        if self.chance(0.5):
            found[CKA_ID] = self.rng.choice(IDS)
        return found

    def data(self, low: int, high: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(low, high))

    # -- the steps, by weight ----------------------------------------------------------------------
    def next_step(self) -> Step:
        model = self.model
        if not model.sessions:
            return self.open_session()
        weights = {
            self.open_session: 3,
            self.close_session: 1.5,
            self.close_all: 0.3,
            self.login: 8 if model.login is None else 0.7,
            self.login_wrong: 0.6,
            self.login_so: 0.4,
            self.logout: 3 if model.login == "so" else 1.5,
            self.session_info: 1.5,
            self.token_info: 1,
            self.event: 1,
            self.stray: 1,
            self.generate_key: 5,
            self.generate_key_pair: 3,
            self.create_data: 3,
            self.create_secret: 3,
            self.get_attributes: 9,
            self.find: 7,
            self.digest: 2,
            self.random: 1.5,
        }
        if model.things:
            weights.update(
                {
                    self.copy: 2.5,
                    self.destroy: 2.5,
                    self.set_attributes: 5,
                    self.sign: 6,
                    self.encrypt: 5,
                    self.digest_key: 1.5,
                }
            )
        if any(t.key_type == CKK_AES for t in model.things.values()):
            weights[self.wrap] = 5
        actions, chances = zip(*weights.items())
        return self.rng.choices(actions, chances)[0]()

    # -- sessions and logins ---------------------------------------------------------------------------
    def open_session(self) -> Step:
        flags = self.rng.choices((CKF_SERIAL_SESSION | CKF_RW_SESSION, CKF_SERIAL_SESSION, 0), (70, 27, 3))[0]
        ref = self.new("s")
        opened = self.call("C_OpenSession", SLOT, flags, binds=(ref,))

        def learn(replies, kept):
            if ok(replies, opened) and kept(ref):
                self.model.sessions[ref] = bool(flags & CKF_RW_SESSION)

        return self.step("open a session", [opened], learn)

    def close_session(self) -> Step:
        session = self.session()
        closed = self.call("C_CloseSession", session)

        def learn(replies, kept):
            if ok(replies, closed):
                self.model.close(session)

        return self.step("close a session", [closed], learn)

    def close_all(self) -> Step:
        closed = self.call("C_CloseAllSessions", SLOT)

        def learn(replies, kept):
            if ok(replies, closed):
                for session in list(self.model.sessions):
                    self.model.close(session)

        return self.step("close all sessions", [closed], learn)

    def login(self, user: int = CKU_USER, pin: str = USER_PIN, wrong_first: bool = False) -> Step:
        session = self.session()
        calls = [self.call("C_Login", session, user, b"0000")] if wrong_first else []
        calls.append(self.call("C_Login", session, user, pin.encode()))

        def learn(replies, kept):
            if ok(replies, calls[-1]):
                self.model.login = "user" if user == CKU_USER else "so"

        return self.step("log in" + (" after a wrong PIN" if wrong_first else ""), calls, learn)

    def login_wrong(self) -> Step:
        """A wrong PIN, always followed by the right one (the HA slot locks after 10 in a row)."""
        return self.login(wrong_first=True)

    def login_so(self) -> Step:
        return self.login(CKU_SO, SO_PIN)

    def logout(self) -> Step:
        out = self.call("C_Logout", self.session())

        def learn(replies, kept):
            if ok(replies, out):
                self.model.logout()

        return self.step("log out", [out], learn)

    def session_info(self) -> Step:
        return self.step("session info", [self.call("C_GetSessionInfo", self.session())])

    def token_info(self) -> Step:
        return self.step("token info", [self.call("C_GetTokenInfo", SLOT)])

    def event(self) -> Step:
        return self.step("slot event", [self.call("C_WaitForSlotEvent", CKF_DONT_BLOCK)])

    def stray(self) -> Step:
        """A call out of order or on something gone: the refusals must match too."""
        session = self.session()
        gone = [r for r in self.model.gone if r.kind == "o"]
        choice = self.rng.randrange(5)
        if choice == 0:
            calls = [self.call("C_Sign", session, b"no operation", ROOM)]
        elif choice == 1:
            calls = [self.call("C_FindObjects", session, 10)]
        elif choice == 2 and gone:
            calls = [
                self.call(
                    "C_GetAttributeValue",
                    session,
                    self.rng.choice(gone),
                    (AttributeSize(CKA_LABEL, ROOM),),
                    context="a destroyed object",
                )
            ]
        elif choice == 3:
            calls = [self.call("C_Login", session, 7, USER_PIN.encode())]
        else:
            calls = [
                self.call("C_DigestInit", session, Mechanism(CKM_SHA256)),
                self.call("C_DigestInit", session, Mechanism(CKM_SHA256)),
                self.call("C_Digest", session, b"twice", ROOM),
            ]
        return self.step("a call out of order", calls)

    # -- making objects -------------------------------------------------------------------------------
    def made(self, call: Call, *things: Thing) -> Callable:
        """learn(): the things exist when the reference made them and both sides kept them."""

        def learn(replies, kept):
            if ok(replies, call):
                for thing in things:
                    if kept(thing.ref):
                        self.model.things[thing.ref] = thing

        return learn

    def session_of(self, attrs: dict[int, Any], session: Ref) -> Ref | None:
        return None if attrs.get(CKA_TOKEN) else session

    def generate_key(self) -> Step:
        session, aes = self.session(), self.chance(0.6)
        attrs = self.flags(SECRET_FLAGS) | self.naming()
        size = self.rng.choice((16, 24, 32, 15) if aes else (1, 2, 8, 16, 32, 64))
        if self.chance(0.93):
            attrs[CKA_VALUE_LEN] = size
        ref = self.new("o")
        mechanism = CKM_AES_KEY_GEN if aes else CKM_GENERIC_SECRET_KEY_GEN
        made = self.call("C_GenerateKey", session, Mechanism(mechanism), template(attrs), binds=(ref,))
        thing = Thing(
            ref,
            CKO_SECRET_KEY,
            CKK_AES if aes else CKK_GENERIC_SECRET,
            "generated",
            attrs,
            session=self.session_of(attrs, session),
            size=size,
        )
        return self.step("generate a secret key", [made], self.made(made, thing))

    def generate_key_pair(self) -> Step:
        session, rsa_pair = self.session(), self.chance(0.6)
        public = self.flags(PUBLIC_FLAGS) | self.naming()
        private = self.flags(PRIVATE_FLAGS) | {t: v for t, v in public.items() if t in (CKA_LABEL, CKA_ID)}
        if self.chance(0.05):  # an attribute of the other class
            public[CKA_SIGN] = 1
        bits = self.rng.choice((1024, 1024, 1024, 2048))
        if rsa_pair:
            public[CKA_MODULUS_BITS] = bits
        else:
            public[CKA_EC_PARAMS] = P256
        pub, priv = self.new("o"), self.new("o")
        mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN if rsa_pair else CKM_EC_KEY_PAIR_GEN
        made = self.call(
            "C_GenerateKeyPair",
            session,
            Mechanism(mechanism),
            template(public),
            template(private),
            binds=(pub, priv),
        )
        key_type = CKK_RSA if rsa_pair else CKK_EC
        things = (
            Thing(
                pub,
                CKO_PUBLIC_KEY,
                key_type,
                "generated",
                public,
                priv,
                session=self.session_of(public, session),
                size=bits,
            ),
            Thing(
                priv,
                CKO_PRIVATE_KEY,
                key_type,
                "generated",
                private,
                pub,
                session=self.session_of(private, session),
                size=bits,
            ),
        )
        return self.step("generate a key pair", [made], self.made(made, *things))

    def create_data(self) -> Step:
        session = self.session()
        attrs = {CKA_CLASS: CKO_DATA} | self.flags(DATA_FLAGS, 0.5) | self.naming()
        attrs.pop(CKA_ID, None)  # a data object has no CKA_ID
        if self.chance(0.6):
            attrs[CKA_VALUE] = self.data(0, 40)
        if self.chance(0.3):
            attrs[CKA_APPLICATION] = self.rng.choice((b"app-one", b"app-two"))
        ref = self.new("o")
        made = self.call("C_CreateObject", session, template(attrs), binds=(ref,))
        thing = Thing(ref, CKO_DATA, None, "created", attrs, session=self.session_of(attrs, session))
        return self.step("create a data object", [made], self.made(made, thing))

    def create_secret(self) -> Step:
        """A secret key of a known value: its outputs are the same on both sides."""
        session, aes = self.session(), self.chance(0.7)
        value = self.rng.randbytes(self.rng.choice((16, 24, 32)) if aes else self.rng.choice((1, 8, 16, 32)))
        key_type = CKK_AES if aes else CKK_GENERIC_SECRET
        attrs = {CKA_CLASS: CKO_SECRET_KEY, CKA_KEY_TYPE: key_type, CKA_VALUE: value}
        attrs |= self.flags(SECRET_FLAGS) | self.naming()
        ref = self.new("o")
        made = self.call("C_CreateObject", session, template(attrs), binds=(ref,))
        known = {t: v for t, v in attrs.items() if t not in (CKA_CLASS, CKA_KEY_TYPE, CKA_VALUE)}
        thing = Thing(
            ref,
            CKO_SECRET_KEY,
            key_type,
            "created",
            known,
            value=value,
            session=self.session_of(attrs, session),
            size=len(value),
        )
        return self.step("create a secret key of a known value", [made], self.made(made, thing))

    def copy(self) -> Step:
        session, source = self.session(), self.thing()
        attrs = self.flags((CKA_TOKEN, CKA_PRIVATE, CKA_MODIFIABLE), 0.3)
        if self.chance(0.5):
            attrs[CKA_LABEL] = self.rng.choice(LABELS)
        if source.cls in (CKO_SECRET_KEY, CKO_PRIVATE_KEY) and self.chance(0.3):
            attrs[self.rng.choice((CKA_SENSITIVE, CKA_EXTRACTABLE))] = self.rng.choice((0, 1))
        ref = self.new("o")
        made = self.call(
            "C_CopyObject", session, source.ref, template(attrs), binds=(ref,), context=source.describe()
        )
        session_of = self.session_of(attrs, session) if CKA_TOKEN in attrs else source.session
        thing = replace(
            source, ref=ref, origin="copied", attrs=source.attrs | attrs, session=session_of, partner=None
        )
        return self.step("copy an object", [made], self.made(made, thing))

    def destroy(self) -> Step:
        target = self.thing()
        gone = self.call("C_DestroyObject", self.session(), target.ref, context=target.describe())

        def learn(replies, kept):
            if ok(replies, gone):
                self.model.forget(target.ref)

        return self.step("destroy an object", [gone], learn)

    def set_attributes(self) -> Step:
        session, target = self.session(), self.thing()
        choices = [
            {CKA_LABEL: self.rng.choice(LABELS)},
            {CKA_VALUE: b"new value"},
            {CKA_MODIFIABLE: 0},
            {CKA_CLASS: CKO_DATA},
            {CKA_TOKEN: 1},
            {CKA_PRIVATE: 1},
        ]
        if target.cls != CKO_DATA:
            choices += [
                {CKA_ID: self.rng.choice(IDS)},
                {CKA_EXTRACTABLE: 0},
                {CKA_EXTRACTABLE: 1},
                {CKA_SENSITIVE: 1},
                {CKA_SENSITIVE: 0},
                {CKA_SIGN: self.rng.choice((0, 1))},
                {CKA_ENCRYPT: self.rng.choice((0, 1))},
                {CKA_KEY_TYPE: CKK_AES},
            ]
        else:
            choices.append({CKA_APPLICATION: b"app-three"})
        attrs = self.rng.choice(choices)
        if self.chance(0.2):
            attrs = attrs | self.rng.choice(choices)
        changed = self.call(
            "C_SetAttributeValue", session, target.ref, template(attrs), context=target.describe()
        )

        def learn(replies, kept):
            if ok(replies, changed):
                target.attrs.update(attrs)
                if CKA_VALUE in attrs and target.cls == CKO_DATA:
                    target.attrs[CKA_VALUE] = attrs[CKA_VALUE]

        return self.step("set attributes", [changed], learn)

    # -- reading objects -------------------------------------------------------------------------------
    def read(self, session: Ref, target: Thing, types: tuple[int, ...], room: int = ROOM) -> Call:
        """C_GetAttributeValue, with what differs per side masked for this object."""
        masked = set(KEY_MATERIAL)
        if target.cls != CKO_DATA and not target.secret_known:
            masked.add(CKA_VALUE)
        hidden = {CKA_ID} if CKA_ID not in target.attrs and target.cls != CKO_DATA else set()
        varying = masked & VARYING_LENGTH if target.cls == CKO_PRIVATE_KEY else set()
        return self.call(
            "C_GetAttributeValue",
            session,
            target.ref,
            tuple(AttributeSize(t, room) for t in types),
            masked=frozenset(masked),
            varying=frozenset(varying),
            hidden=frozenset(hidden),
            context=target.describe(),
            asked=tuple(target.attrs.items()),
        )

    def get_attributes(self) -> Step:
        target = self.thing()
        if target is None:
            return self.random()
        types = (
            READ_BACK if self.chance(0.5) else tuple(t for t in READ_BACK if self.chance(0.3)) or (CKA_LABEL,)
        )
        room = self.rng.choices((ROOM, 0, 1), (80, 15, 5))[0]
        return self.step("read attributes", [self.read(self.session(), target, types, room)])

    def find(self) -> Step:
        session = self.session()
        wanted: dict[int, Any] = {}
        if self.model.things and self.chance(0.85):
            known = self.thing().known()
            for t in self.rng.sample(sorted(known), min(len(known), self.rng.randint(1, 3))):
                if t in FIND_TYPES:
                    wanted[t] = known[t]
        elif self.chance(0.3):
            wanted[CKA_LABEL] = self.rng.choice(LABELS)
        most = self.rng.choice((1, 3, 100))
        rounds = min(6, len(self.model.things) // most + 2)
        calls = [self.call("C_FindObjectsInit", session, template(wanted))]
        calls += [
            self.call("C_FindObjects", session, most, context=f"template {show(template(wanted))}")
            for _ in range(rounds)
        ]
        if self.chance(0.95):
            calls.append(self.call("C_FindObjectsFinal", session))
        return self.step("find objects", calls)

    # -- cryptography ---------------------------------------------------------------------------------
    def signing(self, key: Thing) -> tuple[int, bytes]:
        """A mechanism for this key, and data it can sign."""
        if self.chance(0.05):  # a mechanism of another key type; never an RSA one on another key:
            # SoftHSM2 2.6.1 accepts that C_VerifyInit, then its C_Verify crashes the process
            other = {CKK_RSA: (CKM_ECDSA, CKM_SHA256_HMAC), CKK_EC: (CKM_SHA256_HMAC,)}
            return self.rng.choice(other.get(key.key_type, (CKM_ECDSA,))), self.rng.randbytes(32)
        if key.key_type == CKK_RSA:
            mechanism = self.rng.choice((CKM_SHA256_RSA_PKCS, CKM_RSA_PKCS))
            return mechanism, self.data(1, 100 if mechanism == CKM_RSA_PKCS else 300)
        if key.key_type == CKK_EC:
            return CKM_ECDSA, self.rng.randbytes(32)
        return CKM_SHA256_HMAC, self.data(0, 100)

    def sign(self) -> Step:
        session = self.session()
        key = self.thing(
            lambda t: (
                may(t, CKA_SIGN)
                and (t.cls == CKO_PRIVATE_KEY or t.key_type == CKK_GENERIC_SECRET and t.size >= 32)
            ),
            lambda t: t.cls in (CKO_PRIVATE_KEY, CKO_SECRET_KEY),
        )
        mechanism, data = self.signing(key)
        per_side = mechanism != CKM_SHA256_HMAC or not key.secret_known
        calls = [self.call("C_SignInit", session, Mechanism(mechanism), key.ref, context=key.describe())]
        if self.chance(0.3):
            calls.append(self.call("C_Sign", session, data, 0))
        if mechanism != CKM_ECDSA and mechanism != CKM_RSA_PKCS and self.chance(0.25):
            half = len(data) // 2
            calls += [
                self.call("C_SignUpdate", session, data[:half]),
                self.call("C_SignUpdate", session, data[half:]),
            ]
            signature = self.call("C_SignFinal", session, ROOM, random=per_side)
        else:
            signature = self.call("C_Sign", session, data, ROOM, random=per_side)
        calls.append(signature)
        calls += self.verify(session, key, mechanism, data, signature)
        return self.step("sign and verify", calls)

    def verify(self, session: Ref, key: Thing, mechanism: int, data: bytes, signature: Call) -> list[Call]:
        """Check a signature on its own side: in software with the public key, and by the token."""
        checker = self.model.things.get(key.partner) if key.cls == CKO_PRIVATE_KEY else key
        if checker is None:
            return []
        calls = []
        if checker.cls == CKO_PUBLIC_KEY:
            read = self.read(
                session,
                checker,
                (CKA_MODULUS, CKA_PUBLIC_EXPONENT) if checker.key_type == CKK_RSA else (CKA_EC_POINT,),
            )
            calls += [read, self.call("sw:verify", mechanism, Read(read.id), data, Out((signature.id,)))]
        for tamper in (False, True) if self.chance(0.3) else (False,):
            calls += [
                self.call(
                    "C_VerifyInit", session, Mechanism(mechanism), checker.ref, context=checker.describe()
                ),
                self.call("C_Verify", session, data, Out((signature.id,), tamper)),
            ]
        return calls

    def encrypt(self) -> Step:
        session = self.session()
        key = self.thing(
            lambda t: (
                may(t, CKA_ENCRYPT)
                and (t.cls == CKO_PUBLIC_KEY and t.key_type == CKK_RSA or t.key_type == CKK_AES)
            ),
            lambda t: t.cls == CKO_PUBLIC_KEY and t.key_type == CKK_RSA or t.key_type == CKK_AES,
        )
        if key.cls == CKO_PUBLIC_KEY or key.key_type == CKK_RSA:
            return self.step("encrypt and decrypt (RSA)", self.rsa_round_trip(session, key))
        return self.step("encrypt and decrypt (AES)", self.aes_round_trip(session, key))

    def rsa_round_trip(self, session: Ref, key: Thing) -> list[Call]:
        data = self.data(1, 100)
        private = self.model.things.get(key.partner) or key
        public = key if key.cls == CKO_PUBLIC_KEY else self.model.things.get(key.partner) or key
        calls = [
            self.call(
                "C_EncryptInit", session, Mechanism(CKM_RSA_PKCS), public.ref, context=public.describe()
            ),
            self.call("C_Encrypt", session, data, ROOM, random=True),
        ]
        sources = [calls[-1]]
        if self.chance(0.4):  # and a ciphertext made outside the token, with this side's public key
            read = self.read(session, public, (CKA_MODULUS, CKA_PUBLIC_EXPONENT))
            calls += [read, self.call("sw:encrypt", Read(read.id), data)]
            sources.append(calls[-1])
        for source in sources:
            calls += [
                self.call(
                    "C_DecryptInit", session, Mechanism(CKM_RSA_PKCS), private.ref, context=private.describe()
                ),
                self.call("C_Decrypt", session, Out((source.id,)), ROOM),
            ]
        return calls

    def aes_round_trip(self, session: Ref, key: Thing) -> list[Call]:
        blocks = self.rng.randint(1, 4)
        data = self.rng.randbytes(16 * blocks + (1 if self.chance(0.05) else 0))
        per_side = not key.secret_known
        calls = [self.call("C_EncryptInit", session, Mechanism(CKM_AES_ECB), key.ref, context=key.describe())]
        if self.chance(0.3):
            calls += [
                self.call("C_EncryptUpdate", session, data[:16], ROOM, random=per_side),
                self.call("C_EncryptUpdate", session, data[16:], ROOM, random=per_side),
                self.call("C_EncryptFinal", session, ROOM, random=per_side),
            ]
        else:
            calls.append(self.call("C_Encrypt", session, data, ROOM, random=per_side))
        ciphertext = Out(tuple(c.id for c in calls[1:]))
        calls += [
            self.call("C_DecryptInit", session, Mechanism(CKM_AES_ECB), key.ref, context=key.describe()),
            self.call("C_Decrypt", session, ciphertext, ROOM),
        ]
        return calls

    def digest(self) -> Step:
        session, data = self.session(), self.data(0, 200)
        calls = [self.call("C_DigestInit", session, Mechanism(CKM_SHA256))]
        if self.chance(0.3):
            calls += [self.call("C_DigestUpdate", session, data), self.call("C_DigestFinal", session, ROOM)]
        else:
            calls.append(self.call("C_Digest", session, data, self.rng.choice((ROOM, 0))))
        return self.step("digest", calls)

    def digest_key(self) -> Step:
        session = self.session()
        key = self.thing(lambda t: t.cls == CKO_SECRET_KEY)
        calls = [
            self.call("C_DigestInit", session, Mechanism(CKM_SHA256)),
            self.call("C_DigestUpdate", session, b"prefix"),
            self.call("C_DigestKey", session, key.ref, context=key.describe()),
            self.call("C_DigestFinal", session, ROOM, random=not key.secret_known),
        ]
        return self.step("digest a key", calls)

    def random(self) -> Step:
        length = self.rng.choice((1, 16, 32, 100))
        return self.step("random", [self.call("C_GenerateRandom", self.session(), length, random=True)])

    def wrap(self) -> Step:
        """Wrap a key under one of the application's AES keys, then unwrap it as a new object."""
        session = self.session()
        wrapping = self.thing(
            lambda t: t.key_type == CKK_AES and t.attrs.get(CKA_WRAP) == t.attrs.get(CKA_UNWRAP) == 1,
            lambda t: t.key_type == CKK_AES and t.attrs.get(CKA_WRAP) == 1,
            lambda t: t.key_type == CKK_AES,
        )
        target = self.thing(
            lambda t: (
                t.attrs.get(CKA_EXTRACTABLE) == 1
                and t.ref != wrapping.ref
                and t.cls in (CKO_SECRET_KEY, CKO_PRIVATE_KEY)
            ),
            lambda t: t.cls in (CKO_SECRET_KEY, CKO_PRIVATE_KEY) and t.ref != wrapping.ref,
        )
        mechanism = Mechanism(self.rng.choice((CKM_AES_KEY_WRAP_PAD,) * 3 + (CKM_AES_KEY_WRAP,)))
        per_side = not (wrapping.secret_known and target.secret_known)
        wrapped = self.call(
            "C_WrapKey",
            session,
            mechanism,
            wrapping.ref,
            target.ref,
            self.rng.choice((ROOM,) * 4 + (0,)),
            random=per_side,
            size_varies=target.cls == CKO_PRIVATE_KEY,
            context=f"{target.describe()} under {wrapping.describe()}",
        )
        attrs = {CKA_CLASS: target.cls} | (
            {CKA_KEY_TYPE: target.key_type} if target.key_type is not None else {}
        )
        attrs |= self.flags(SECRET_FLAGS if target.cls == CKO_SECRET_KEY else PRIVATE_FLAGS) | self.naming()
        ref = self.new("o")
        unwrapped = self.call(
            "C_UnwrapKey",
            session,
            mechanism,
            wrapping.ref,
            Out((wrapped.id,)),
            template(attrs),
            binds=(ref,),
            context=f"{target.describe()} under {wrapping.describe()}",
        )
        known = {t: v for t, v in attrs.items() if t not in (CKA_CLASS, CKA_KEY_TYPE)}
        thing = Thing(
            ref,
            target.cls,
            target.key_type,
            "unwrapped",
            known,
            value=target.value,
            session=self.session_of(attrs, session),
            size=target.size,
        )
        return self.step("wrap and unwrap", [wrapped, unwrapped], self.made(unwrapped, thing))

    # -- faults (HA side only) --------------------------------------------------------------------
    def fault(self, calls_sent: int) -> Step | None:
        """A member fault when the schedule says so (of a kind the home allows: FAULTS), undone
        3-20 steps later; else None."""
        model = self.model
        if model.failed_member is not None:
            self.restore_in -= 1
            if self.restore_in > 0:
                return None
            (member, kind), model.failed_member = model.failed_member, None
            return self.step(f"{FAULTS[kind]} {member}", [self.call(f"fault:{FAULTS[kind]}", member)])
        if not self.fault_at or calls_sent < self.fault_at[0]:
            return None
        self.fault_at.pop(0)
        member, self.restore_in = self.rng.choice(MEMBERS), self.rng.randint(3, 20)
        kind, during = self.kinds[0], None
        if len(self.kinds) > 1:  # (a home of one kind of fault keeps its seeds' sequences)
            kind = self.rng.choice(self.kinds)
            during = self.rng.choice((None, self.rng.randint(2, 60)))  # between calls, or during the next
        model.failed_member = (member, kind)
        return self.step(
            f"{kind} {member}" + (f" during the next calls (+{during} ms)" if during else ""),
            [self.call(f"fault:{kind}", member, *((during,) if during else ()))],
        )


# ---- one sequence ----------------------------------------------------------------------------------
@dataclass
class Sequence:
    """What one application did on both sides, and what differed."""

    seed: int
    faults: int
    steps: list[Step] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    calls: int = 0  # PKCS#11 calls sent to each side
    injected: int = 0  # member faults injected on the HA side
    lost: bool = False  # a connection broke: the sequence ended there
    notes: list[str] = field(default_factory=list)
    trace: list[str] | None = None  # every call with both answers, when asked for
    coverage: Counter = field(default_factory=Counter)  # (call name, the reference's answer)
    searches: dict[Ref, Search] = field(default_factory=dict)  # the session's search under way
    unseen: int = 0  # refusals of an unseen_stray_possible call by the reference (SoftHSM2's defect)


def run_sequence(servers: Servers, seed: int, calls: int, faults: int = 0, trace: bool = False) -> Sequence:
    """A new seeded sequence of about `calls` calls (faults: member faults on the HA side)."""
    generator = Generator(seed, faults, calls, servers.faults)
    sequence = Sequence(seed, faults, trace=[] if trace else None)
    step = opening(generator)
    while True:
        sequence.steps.append(step)
        if not play(servers, sequence, step, learn=True) or step.name == "finish":
            break
        if sequence.calls >= calls:
            step = closing(generator)
        else:
            step = generator.fault(sequence.calls) or generator.next_step()
    finish(servers, sequence)
    return sequence


def opening(generator: Generator) -> Step:
    return generator.step(
        "start",
        [generator.call("C_Initialize", HANDSHAKE, 0, b"\x00"), generator.call("C_GetSlotList", 1, 8)],
    )


def closing(generator: Generator) -> Step:
    return generator.step("finish", [generator.call("C_Finalize")])


def connect(servers: Servers) -> None:
    for side in servers.sides:
        side.client, side.slot = RawClient(side.socket), 0
        side.handles.clear()
        side.outputs.clear()
        side.ignored.clear()


def play(servers: Servers, sequence: Sequence, step: Step, learn: bool) -> bool:
    """One step on both sides, compared call by call; False when a connection broke."""
    if step.number == 0:
        connect(servers)
    reference, ha = servers.sides
    replies, after = {}, ""
    for call in step.calls:
        if call.name.startswith("fault:"):
            verdict = send(ha, call, servers)
            sequence.injected += call.name[6:] in FAULTS
            if sequence.trace is not None:
                sequence.trace.append(f"step {step.number} {call} on the HA side: {verdict}")
            if verdict != "done":
                sequence.notes.append(f"seed {sequence.seed} step {step.number} {call}: {verdict}")
            continue
        keys_before = (
            [keys_before_making(side, side.resolve(call.args[0])) for side in servers.sides]
            if call.name in LEAVES_OBJECTS
            else None
        )
        set_before = (
            [values_now(side, call) for side in servers.sides] if call.name == "C_SetAttributeValue" else None
        )
        ours, theirs = send(reference, call, servers), send(ha, call, servers)
        sequence.calls += not call.name.startswith("sw:")
        replies[call.id] = ours
        if call.name == "C_GetSlotList":
            for side, reply in ((reference, ours), (ha, theirs)):
                side.slot = reply.args[0][0] if ckr_of(reply) == "CKR_OK" and reply.args[0] else 0
        views = view(call, ours, reference), view(call, theirs, ha)
        sequence.coverage[(call.name, views[0][0])] += 1
        in_search = call.name == "C_FindObjects" and call.args[0] in sequence.searches
        returned = tuple(
            len(r.args[0]) if call.name == "C_FindObjects" and ckr_of(r) == "CKR_OK" else 0
            for r in (ours, theirs)
        )
        found = follow_searches(sequence, step, call, views, returned)
        found += compare(sequence.seed, step, call, *((v[:1] for v in views) if in_search else views), after)
        if keys_before is not None:
            found += half_pairs(sequence.seed, step, call, servers, keys_before, views)
        if unseen_stray_possible(call):
            sequence.unseen += views[0][0] == "CKR_ATTRIBUTE_READ_ONLY"
        if set_before is not None:
            found += partial_sets(sequence.seed, step, call, servers, set_before, views)
        if sequence.trace is not None:
            sequence.trace.append(
                f"step {step.number} {call}\n    reference: {show_answer(views[0])}"
                + ("" if views[0] == views[1] else f"\n    HA slot:   {show_answer(views[1])}")
            )
        sequence.differences += found
        after = after or next(
            (
                f"follows from: {d.allowed}"
                for d in found
                if d.allowed and any(a.ends_step and a.name == d.allowed for a in ALLOWED)
            ),
            "",
        )
        if isinstance(ours, Lost) or isinstance(theirs, Lost):
            sequence.lost = True
            return False
    drop_orphans(servers, step)
    if learn:
        step.learn(replies, lambda ref: ref in reference.handles and ref in ha.handles)
    return True


# calls after whose refusal SoftHSM2 2.6.1 may keep what it made: the half of a key pair, and
# the key of an unwrap (or derivation) whose template sets CKA_MODIFIABLE FALSE before another
# attribute (CKR_ATTRIBUTE_READ_ONLY for the rest; the object stays, without them)
LEAVES_OBJECTS = ("C_GenerateKeyPair", "C_UnwrapKey", "C_DeriveKey")


def keys_seen(side: Side, session: int) -> set[int] | None:
    """Every key the application's session sees (SoftHSM2 numbers another session's session
    objects anew in each session); None when it cannot look (an operation)."""
    try:
        return {
            h
            for cls in (CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY)
            for h in side.client.find(session, Attribute(CKA_CLASS, cls))
        }
    except (OSError, EOFError, AssertionError, ValueError, CodecError):
        return None


def keys_before_making(side: Side, session: int) -> tuple[int, set[int] | None, bool]:
    """(the session looked in, the keys it sees, whether the engine opened it): the
    application's session, or, when an operation there keeps the engine from searching, a
    session of the engine's own (closed again after the call: half_pairs)."""
    known = keys_seen(side, session)
    if known is not None:
        return session, known, False
    try:
        reply = side.client.call("C_OpenSession", side.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
    except (OSError, EOFError, AssertionError, ValueError, CodecError):
        return session, None, False
    if reply.is_error:
        return session, None, False
    return reply.args[0], keys_seen(side, reply.args[0]), True


def unseen_stray_possible(call: Call) -> bool:
    """An unwrap or derivation into a token key whose template sets CKA_MODIFIABLE FALSE before
    another attribute: SoftHSM2 refuses it (CKR_ATTRIBUTE_READ_ONLY) and may keep the token key
    it made in the token's files where no search finds it, neither the application's nor
    another's while the application runs; the next application finds it (seed 1800091:
    'token objects left after the sequence: 3 vs 2'). The end of the sequence allows that many
    objects more on the reference (finish)."""
    if call.name not in ("C_UnwrapKey", "C_DeriveKey"):
        return False
    types = [a.type for a in call.args[-1]]
    values = {a.type: a.value for a in call.args[-1]}
    return (
        bool(values.get(CKA_TOKEN))
        and CKA_MODIFIABLE in types
        and not values[CKA_MODIFIABLE]
        and types[-1] != CKA_MODIFIABLE
    )


def half_pairs(seed: int, step: Step, call: Call, servers: Servers, before: list, views) -> list[Difference]:
    """SoftHSM2 keeps the half of a key pair it made before refusing the other half's template
    (an attribute of the other class). The engine removes what a refused generation left on
    either side, and a side that left something where the other did not is a difference:
    allowed for the reference (one SoftHSM2 token's defect), a defect for the HA slot. A half
    the token will not destroy in this process is left out of that side's searches (ignored)."""
    left = []
    for side, (session, known, opened), side_view in zip(servers.sides, before, views):
        after = keys_seen(side, session) if known is not None and side_view[0] != "CKR_OK" else None
        stray = sorted(after - known) if after is not None else []
        for handle in stray:
            reply = side.client.call("C_DestroyObject", session, handle)
            if reply.is_error:  # SoftHSM2's half made in this process answers CKR_OBJECT_HANDLE_INVALID
                side.ignored.add(handle)  # to everything but a search: searches leave it out
        if opened:
            side.client.call("C_CloseSession", session)
        left.append(len(stray))
    if left[0] == left[1]:
        return []
    ref_text, ha_text = (
        f"{n} object(s) left after {v[0]} (removed by the engine)" for n, v in zip(left, views)
    )
    allowed = next((a.name for a in ALLOWED if a.matches(call.name, ref_text, ha_text)), "")
    return [
        Difference(
            seed,
            step.number,
            str(call),
            f"{call.name}: objects left after the refusal",
            ref_text,
            ha_text,
            allowed,
        )
    ]


def values_now(side: Side, call: Call) -> dict[int, Any] | None:
    """The values a C_SetAttributeValue's template names, as the object has them now (those
    readable); None when they cannot be read."""
    session, handle, template = side.resolve(call.args)
    try:
        reply = side.client.call(
            "C_GetAttributeValue", session, handle, tuple(AttributeSize(a.type, 4096) for a in template)
        )
    except (OSError, EOFError, AssertionError, ValueError, CodecError):
        return None
    if reply.is_error:
        return None
    return {a.type: a.value for a in reply.args[0] if a.length != UNAVAILABLE}


def partial_sets(
    seed: int, step: Step, call: Call, servers: Servers, before: list, views
) -> list[Difference]:
    """SoftHSM2 keeps, on a session object, the attributes a refused C_SetAttributeValue set
    before the one it refused (its session objects have no transactions; a token object's
    change is undone). The engine puts them back on either side and a side that kept a change
    where the other did not is one difference: allowed for the reference, a defect for the HA
    slot, whose sets are all or nothing."""
    kept, stuck = [], False
    for side, known, side_view in zip(servers.sides, before, views):
        now = values_now(side, call) if known is not None and side_view[0] != "CKR_OK" else None
        changed = (
            {a: v for a, v in known.items() if now is not None and (a not in now or now[a] != v)}
            if known is not None
            else {}
        )
        session, handle, _ = side.resolve(call.args)
        for attribute, value in changed.items():
            stuck |= side.client.call(
                "C_SetAttributeValue", session, handle, (Attribute(attribute, value),)
            ).is_error
        kept.append(sorted(attribute_name(a) for a in changed))
    if kept[0] == kept[1]:
        return []
    if stuck:  # a one-way change (SENSITIVE FALSE -> TRUE) cannot be put back: the object goes
        target = call.args[1]
        for side in servers.sides:
            if target in side.handles:
                side.client.call("C_DestroyObject", side.resolve(call.args[0]), side.handles.pop(target))
    ref_text, ha_text = (
        f"changed after {v[0]}: {', '.join(k) or 'nothing'} (put back by the engine)"
        for k, v in zip(kept, views)
    )
    allowed = next((a.name for a in ALLOWED if a.matches(call.name, ref_text, ha_text)), "")
    return [
        Difference(
            seed,
            step.number,
            str(call),
            f"{call.name}: attributes changed by the refused call",
            ref_text,
            ha_text,
            allowed,
        )
    ]


def drop_orphans(servers: Servers, step: Step) -> None:
    """What one side made and the other refused (a difference already recorded) is removed again,
    so that one difference does not show again in every later search."""
    reference, ha = servers.sides
    for call in step.calls:
        for ref in call.binds:
            if (ref in reference.handles) == (ref in ha.handles):
                continue
            side = reference if ref in reference.handles else ha
            handle = side.handles.pop(ref)
            if ref.kind == "o":
                side.client.call("C_DestroyObject", side.resolve(call.args[0]), handle)
            else:
                side.client.call("C_CloseSession", handle)


def finish(servers: Servers, sequence: Sequence) -> None:
    """Close the application, bring failed members back, and clear both tokens for the next one."""
    for side in servers.sides:
        if side.client is not None:
            side.client.close()
            side.client = None
    for pending in servers.pending:  # a fault injected during the last calls
        pending.join()
    servers.pending.clear()
    outstanding: dict[str, str] = {}  # member -> the fault injected and not undone
    for call in (call for step in sequence.steps for call in step.calls if call.name.startswith("fault:")):
        if call.name[6:] in FAULTS:
            outstanding[call.args[0]] = call.name[6:]
        else:
            outstanding.pop(call.args[0], None)
    failed = {call.args[0] for step in sequence.steps for call in step.calls if call.name[6:] in FAULTS}
    for member, kind in sorted(outstanding.items()):
        inject(servers, FAULTS[kind], member)
    if servers.home is not None:
        heal(servers, sequence, bool(failed))
    if sequence.lost:
        return
    # the token keeps those it made: halves it would not destroy, keys no search showed (the
    # reference's only: the HA slot leaves nothing after such a refusal, or it is a defect)
    halves = [len(side.ignored) for side in servers.sides]
    halves[0] += sequence.unseen
    left = [clear_token(side) for side in servers.sides]
    if left[0] != left[1]:
        counts = [int(m.group(1)) if (m := re.match(r"(\d+) objects$", text)) else None for text in left]
        extra = counts[0] - counts[1] if None not in counts else 0
        sequence.differences.append(
            Difference(
                sequence.seed,
                len(sequence.steps),
                "(a new application, logged in) find all, destroy each",
                "token objects left after the sequence: other answer",
                left[0],
                left[1],
                f"follows from: {HALF_PAIR}" if 0 < extra <= halves[0] - halves[1] else "",
            )
        )


def heal(servers: Servers, sequence: Sequence, faulted: bool) -> None:
    """Members still out of the HA group are brought back (`hagroup recover`), so that the next
    sequence starts whole; when no fault was injected, the sequence's own calls put them out."""
    status = servers.run_ckdemo(servers.home, "hagroup", "status").stdout
    out = re.findall(r"^ +HSM (\S+) +- (CKR_\w+)$", status, re.MULTILINE)
    if all(ckr == "CKR_OK" for _, ckr in out) and len(out) == len(MEMBERS):
        return
    if not faulted:
        sequence.notes.append(
            f"seed {sequence.seed}: after the sequence (no fault injected) members were out of "
            f"the HA group: {', '.join(f'{serial} {ckr}' for serial, ckr in out)}"
        )
    inject(servers, "recover", "")


def clear_token(side: Side) -> str:
    """Destroy every object a logged-in user sees on this side's token: "N objects", or the
    call that failed."""
    client = RawClient(side.socket)
    try:
        client.call("C_Initialize", HANDSHAKE, 0, b"\x00")
        reply = client.call("C_GetSlotList", 1, 8)
        if reply.is_error or not reply.args[0]:
            return f"C_GetSlotList: {ckr_of(reply)}"
        reply = client.call("C_OpenSession", reply.args[0][0], CKF_SERIAL_SESSION | CKF_RW_SESSION)
        if reply.is_error:
            return f"C_OpenSession: {ckr_of(reply)}"
        session = reply.args[0]
        login = client.ckr("C_Login", session, CKU_USER, USER_PIN.encode())
        found = client.find(session)
        refused = [
            codes.ckr_name(ckr)
            for ckr in (client.ckr("C_DestroyObject", session, h) for h in found)
            if ckr != codes.CKR_OK
        ]
        if login == codes.CKR_OK:
            client.call("C_Logout", session)
        client.call("C_Finalize")
        return (
            f"{len(found)} objects"
            + (f" (destroy refused: {', '.join(refused)})" if refused else "")
            + ("" if login == codes.CKR_OK else f" (C_Login: {codes.ckr_name(login)})")
        )
    except (OSError, AssertionError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        client.close()


# ---- replaying, and shrinking a sequence to the steps that show one difference -------------------------
def replay(servers: Servers, seed: int, steps: list[Step]) -> Sequence:
    """The same steps again (no generator): what differs now."""
    sequence = Sequence(seed, 0)
    for step in steps:
        sequence.steps.append(step)
        if not play(servers, sequence, step, learn=False):
            break
    finish(servers, sequence)
    return sequence


def shows(servers: Servers, seed: int, steps: list[Step], family: str) -> bool:
    return any(d.family == family for d in replay(servers, seed, steps).differences)


def shrink(servers: Servers, sequence: Sequence, family: str, deadline: float) -> list[Step]:
    """The fewest steps (delta debugging over steps, the opening one kept) that still show a
    difference of this family; calls of removed steps are not sent, so what they made stays unknown."""
    first = min(d.step for d in sequence.differences if d.family == family)
    steps = [s for s in sequence.steps if s.number <= first]
    if not shows(servers, sequence.seed, steps, family):
        return steps  # not reproduced alone (it depends on which member answered): kept whole
    chunks = 2
    while len(steps) > 2 and time.monotonic() < deadline:
        body = steps[1:]
        size = -(-len(body) // chunks)
        for start in range(0, len(body), size):
            candidate = steps[:1] + body[:start] + body[start + size :]
            if candidate[-1].number == first and shows(servers, sequence.seed, candidate, family):
                steps, chunks = candidate, max(chunks - 1, 2)
                break
        else:
            if size == 1:
                break
            chunks = min(len(body), chunks * 2)
    return steps


def transcript(steps: list[Step]) -> str:
    """The calls of some steps, one a line (handles as the sequence names them)."""
    return "\n".join(
        f"  step {step.number} ({step.name}): " + "; ".join(str(c) for c in step.calls) for step in steps
    )


# ---- a run: many sequences ------------------------------------------------------------------------
@dataclass
class Run:
    seed: int
    calls_per_sequence: int
    faults_per_sequence: int
    sequences: list[Sequence] = field(default_factory=list)
    seconds: float = 0.0
    shrunk: dict[str, tuple[int, list[Step]]] = field(default_factory=dict)  # family -> (seed, steps)

    @property
    def differences(self) -> list[Difference]:
        return [d for s in self.sequences for d in s.differences]

    @property
    def defects(self) -> list[Difference]:
        return [d for d in self.differences if not d.allowed]

    def families(self) -> list[tuple[str, int, int, Difference]]:
        """(family, how many, in how many sequences, first instance): defects first, then those
        seen in most sequences."""
        counted = Counter(d.family for d in self.differences)
        spread = Counter(family for family, _ in {(d.family, d.seed) for d in self.differences})
        first = {}
        for d in self.differences:
            first.setdefault(d.family, d)
        return sorted(
            ((f, n, spread[f], first[f]) for f, n in counted.items()),
            key=lambda item: (bool(item[3].allowed), -item[2], -item[1], item[0]),
        )


def sequence_seed(seed: int, index: int) -> int:
    return seed * 100_000 + index


def run(
    servers: Servers,
    seed: int,
    sequences: int,
    calls: int,
    faults: int = 0,
    minutes: float | None = None,
    progress: Callable[[Sequence], None] = lambda s: None,
    traced: frozenset[int] = frozenset(),
) -> Run:
    """`sequences` sequences of `calls` calls; every other one (odd index) with `faults` member
    faults on the HA side. minutes: no new sequence after that long. traced: sequence seeds
    whose every call is kept with both answers (Sequence.trace): a defect that shows only after
    the sequences before it (a replay alone starts from fresh tokens) is seen call by call."""
    done = Run(seed, calls, faults)
    started = time.monotonic()
    for index in range(sequences):
        if minutes is not None and time.monotonic() - started > minutes * 60:
            break
        sequence = run_sequence(
            servers,
            sequence_seed(seed, index),
            calls,
            faults if index % 2 else 0,
            trace=sequence_seed(seed, index) in traced,
        )
        done.sequences.append(sequence)
        progress(sequence)
        if sequence.lost:
            break
    done.seconds = time.monotonic() - started
    return done


def shrink_defects(servers: Servers, done: Run, most: int, seconds_each: float) -> None:
    """Shrink the first sequence of up to `most` defect families, those seen in most sequences first."""
    by_seed = {s.seed: s for s in done.sequences}
    for family, _, _, first in [f for f in done.families() if not f[3].allowed][:most]:
        steps = shrink(servers, by_seed[first.seed], family, time.monotonic() + seconds_each)
        done.shrunk[family] = (first.seed, steps)


# ---- the report -----------------------------------------------------------------------------------
def summary(done: Run) -> str:
    faulted = [s for s in done.sequences if s.faults]
    return (
        f"{len(done.sequences)} sequences ({len(faulted)} with member faults) x "
        f"{done.calls_per_sequence} calls, {sum(s.calls for s in done.sequences)} calls sent to each "
        f"side, {sum(s.injected for s in done.sequences)} member faults injected, "
        f"{len(done.differences)} differences ({len(done.defects)} defects, "
        f"{len(done.differences) - len(done.defects)} allowed) in {len(done.families())} families "
        f"({len({d.kind for d in done.differences})} kinds), {done.seconds:.0f} s"
    )


def coverage(done: Run) -> str:
    """Calls sent, by name: how many, and how many of them the reference answered CKR_OK (or,
    for a local check, found good)."""
    total, good = Counter(), Counter()
    for sequence in done.sequences:
        for (name, answer), count in sequence.coverage.items():
            total[name] += count
            good[name] += (
                count if answer == "CKR_OK" or answer.startswith(("signature valid", "encrypted")) else 0
            )
    return ", ".join(
        f"{name} {total[name]} ({good[name]} OK)" for name in sorted(total, key=lambda n: -total[n])
    )


def report(done: Run, title: str, rows: int = 60) -> str:
    """Markdown: the figures, the differences by family (the first `rows`), the shrunk sequences."""
    lines = [
        f"### {title}",
        "",
        summary(done) + ".",
        "",
        f"Calls (reference answered OK): {coverage(done)}.",
        "",
        "| # | family | count | sequences | allowed | first seen (seed, step): call | reference | HA slot |",
        "|---|---|---|---|---|---|---|---|",
    ]
    families = done.families()
    for number, (family, count, spread, first) in enumerate(families[:rows], 1):
        lines.append(
            f"| {number} | {cell(family)} | {count} | {spread} | {cell(first.allowed) or 'no: DEFECT'} | "
            f"{first.seed}, {first.step}: {cell(first.call, 100)} | {cell(first.reference)} | "
            f"{cell(first.ha)} |"
        )
    if len(families) > rows:
        rest = families[rows:]
        lines.append(f"| | {len(rest)} more families, {sum(f[1] for f in rest)} differences | | | | | | |")
    for family, (seed, steps) in done.shrunk.items():
        lines += [
            "",
            f"Smallest sequence found for `{family}` (seed {seed}, {len(steps)} steps):",
            "```",
            transcript(steps),
            "```",
        ]
    notes = [n for s in done.sequences for n in s.notes]
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes[:20]]
    return "\n".join(lines) + "\n"


def cell(text: str, most: int = 160) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= most else text[: most - 3] + "..."
