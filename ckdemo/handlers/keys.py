"""KEY FUNCTIONS (60, 61, 63-67) on any slot: wrap/unwrap to files, ECDH, PBE, known keys, RNG
seeding and the EC curves a module accepts.

On the HA slot, unwrap, derive, PBE and create run on every member (the group's rule), so
nothing here tells the slot kinds apart.
"""

from __future__ import annotations

from ..codes import (
    CKR_ATTRIBUTE_TYPE_INVALID,
    CKR_KEY_FUNCTION_NOT_PERMITTED,
    CKR_MECHANISM_INVALID,
    MEMBER_FATAL,
    SESSION_LOST,
    CKRError,
    ckr_name,
)
from ..known_keys import KNOWN_KEYS, NAMED_CURVES, P256_EXPLICIT_PARAMS
from ..menu.context import Context, InputError
from ..model import (
    CKA_CLASS,
    CKA_DECRYPT,
    CKA_DERIVE,
    CKA_EC_POINT,
    CKA_ENCRYPT,
    CKA_EXTRACTABLE,
    CKA_KEY_TYPE,
    CKA_LABEL,
    CKA_PRIVATE,
    CKA_SENSITIVE,
    CKA_SIGN,
    CKA_TOKEN,
    CKA_UNWRAP,
    CKA_VALUE_LEN,
    CKA_VERIFY,
    CKA_WRAP,
    CKK_AES,
    CKK_EC,
    CKK_GENERIC_SECRET,
    CKK_RSA,
    CKM_AES_KEY_WRAP_PAD,
    CKM_EC_KEY_PAIR_GEN,
    CKO_PRIVATE_KEY,
    CKO_PUBLIC_KEY,
    CKO_SECRET_KEY,
    ECDHParam,
    OAEPParam,
)
from .files import atomic_output, input_file, output_file, read_regular

CKM_AES_KEY_WRAP, CKM_RSA_PKCS_OAEP, CKM_ECDH1_DERIVE = 0x2109, 0x9, 0x1050
CKM_PKCS5_PBKD2 = 0x3B0
CKF_EC_ECPARAMETERS = 0x400000  # CK_MECHANISM_INFO flag: explicit (user-defined) curves
# (menu label, mechanism, parameter)
WRAP_MECHANISMS = [
    ("CKM_AES_KEY_WRAP (RFC 3394: key length a multiple of 8)", CKM_AES_KEY_WRAP, None),
    ("CKM_AES_KEY_WRAP_PAD (RFC 5649: any key, private keys too)", CKM_AES_KEY_WRAP_PAD, None),
    ("CKM_RSA_PKCS_OAEP (SHA-1, MGF1-SHA-1)", CKM_RSA_PKCS_OAEP, OAEPParam()),
]
UNWRAP_CLASSES = [("Secret key", CKO_SECRET_KEY), ("Private key", CKO_PRIVATE_KEY)]
# class -> [(menu label, key type, capabilities of the new key)]
KEY_TYPES = {
    CKO_SECRET_KEY: [
        ("AES", CKK_AES, {CKA_ENCRYPT: True, CKA_DECRYPT: True, CKA_WRAP: True, CKA_UNWRAP: True}),
        ("Generic secret", CKK_GENERIC_SECRET, {CKA_SIGN: True, CKA_VERIFY: True, CKA_DERIVE: True}),
    ],
    CKO_PRIVATE_KEY: [
        ("RSA", CKK_RSA, {CKA_SIGN: True, CKA_DECRYPT: True, CKA_UNWRAP: True}),
        ("EC", CKK_EC, {CKA_SIGN: True, CKA_DERIVE: True}),
    ],
}
ALL_KEY_TYPES = [(name, key_type) for types in KEY_TYPES.values() for name, key_type, _ in types]
# (menu label, key type, length in bytes, capabilities)
DERIVED_KEYS = [
    ("AES-128", CKK_AES, 16, {CKA_ENCRYPT: True, CKA_DECRYPT: True}),
    ("AES-256", CKK_AES, 32, {CKA_ENCRYPT: True, CKA_DECRYPT: True}),
    ("Generic secret (32 bytes)", CKK_GENERIC_SECRET, 32, {CKA_SIGN: True, CKA_VERIFY: True}),
]
CLASS_TITLES = {CKO_SECRET_KEY: "secret key", CKO_PUBLIC_KEY: "public key", CKO_PRIVATE_KEY: "private key"}
PBE_ITERATIONS = 10000


def _pick(ctx: Context, prompt: str, labels: list[str]) -> int:
    """A numbered list; returns the 0-based index chosen."""
    for n, label in enumerate(labels, start=1):
        ctx.say(f"\t({n}) {label}")
    return ctx.ask_int(prompt, 1, len(labels)) - 1


def _hex_or_text(text: str, what: str) -> bytes:
    """'hex:00ff' / '0x00ff' as bytes, anything else as its UTF-8 text."""
    lowered = text.lower()
    if lowered.startswith(("hex:", "0x")):
        digits = text[4:] if lowered.startswith("hex:") else text[2:]
        try:
            data = bytes.fromhex(digits)
        except ValueError:
            raise InputError(f"Invalid input: the {what} is not valid hex.") from None
    else:
        data = text.encode()
    if not data:
        raise InputError(f"Invalid input: an empty {what}.")
    return data


def _require(session, handle: int, attribute: int, name: str, function: str) -> None:
    """The member library offers an operation only on keys whose attribute allows it, so a key
    without it is answered here as the module would answer it (PKCS#11: the key's own flag)."""
    try:
        allowed = session.read_attribute(handle, attribute)
    except CKRError as exc:
        if exc.ckr != CKR_ATTRIBUTE_TYPE_INVALID:
            raise
        raise CKRError(
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            function,
            f"object {handle} has no {name}: its class cannot do this (checked by ckdemo before the call)",
        ) from None
    if not allowed:
        raise CKRError(
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            function,
            f"key {handle} has {name}=FALSE (checked by ckdemo before the call)",
        )


def _show(ctx: Context, data: bytes) -> None:
    ctx.say(data.hex() if ctx.workspace.options.hex_echo else "(hex echo off)")


def _created(token: bool) -> str:
    return "token object" if token else "session object"


# ---- 60 Wrap key, 61 Unwrap key ----------------------------------------------------------------
def wrap_key(ctx: Context) -> None:
    opened = ctx.choose_session()
    wrapping = ctx.ask_int("Enter wrapping key handle : ", 0)
    key = ctx.ask_int("Enter handle of the key to wrap : ", 0)
    name, mechanism, param = WRAP_MECHANISMS[
        _pick(ctx, "Select mechanism: ", [m[0] for m in WRAP_MECHANISMS])
    ]
    target = output_file(ctx, "Enter output file name : ")
    _require(opened.session, wrapping, CKA_WRAP, "CKA_WRAP", "C_WrapKey")
    wrapped = opened.session.wrap_key(wrapping, key, mechanism, param)
    try:
        with atomic_output(target) as out:
            out.write(wrapped)
    except OSError as exc:
        raise InputError(f"Cannot write {target}: {exc.strerror}.") from None
    ctx.say(
        f"Key {key} wrapped with key {wrapping} ({name.split()[0]}): {len(wrapped)} bytes written to {target}"
    )
    _show(ctx, wrapped)


def unwrap_key(ctx: Context) -> None:
    opened = ctx.choose_session()
    unwrapping = ctx.ask_int("Enter unwrapping key handle : ", 0)
    name, mechanism, param = WRAP_MECHANISMS[
        _pick(ctx, "Select mechanism: ", [m[0] for m in WRAP_MECHANISMS])
    ]
    source = input_file(ctx, "Enter input file name (the wrapped key) : ")
    data = read_regular(source)
    if not data:
        raise InputError(f"Invalid input: {source} is empty.")
    object_class = UNWRAP_CLASSES[
        _pick(ctx, "Select the class of the wrapped key: ", [label for label, _ in UNWRAP_CLASSES])
    ][1]
    type_name, key_type = ALL_KEY_TYPES[_pick(ctx, "Select its key type: ", [n for n, _ in ALL_KEY_TYPES])]
    capabilities = {t: caps for _, t, caps in KEY_TYPES[object_class]}
    if key_type not in capabilities:
        raise InputError(f"Invalid input: a {CLASS_TITLES[object_class]} cannot be of type {type_name}.")
    label = ctx.ask("Enter label for the unwrapped key [ckdemo-unwrapped] : ", "ckdemo-unwrapped")
    token = ctx.ask_yes_no("Token object?", ctx.workspace.options.token_objects)
    # it arrived wrapped, so it may leave wrapped again; its value is never readable
    template = {
        CKA_LABEL: label,
        CKA_TOKEN: token,
        CKA_PRIVATE: True,
        CKA_SENSITIVE: True,
        CKA_EXTRACTABLE: True,
        **capabilities[key_type],
    }
    _require(opened.session, unwrapping, CKA_UNWRAP, "CKA_UNWRAP", "C_UnwrapKey")
    handle = opened.session.unwrap_key(unwrapping, object_class, key_type, data, mechanism, template, param)
    ctx.workspace.remember(object=handle)
    ctx.say(
        f"Unwrapped {CLASS_TITLES[object_class]}, type {type_name} ({name.split()[0]}, "
        f"{_created(token)}): handle {handle}"
    )


# ---- 63 Derive Key (ECDH1) ------------------------------------------------------------------------
def derive_key(ctx: Context) -> None:
    opened = ctx.choose_session()
    base = ctx.ask_int("Enter base key handle (your EC private key) : ", 0)
    peer = _peer(ctx.ask("Enter the peer's EC public key handle, or its point as hex:04... : "))
    title, key_type, length, capabilities = DERIVED_KEYS[
        _pick(ctx, "Select derived key type: ", [d[0] for d in DERIVED_KEYS])
    ]
    label = ctx.ask("Enter label for the derived key [ckdemo-derived] : ", "ckdemo-derived")
    token = ctx.ask_yes_no("Token object?", ctx.workspace.options.token_objects)
    _require(opened.session, base, CKA_DERIVE, "CKA_DERIVE", "C_DeriveKey")
    point = peer if isinstance(peer, bytes) else _point_of(opened.session, peer)
    template = {
        CKA_LABEL: label,
        CKA_TOKEN: token,
        CKA_PRIVATE: True,
        CKA_SENSITIVE: True,
        CKA_EXTRACTABLE: True,
        **capabilities,
    }
    handle = opened.session.derive_key(base, CKM_ECDH1_DERIVE, ECDHParam(point), key_type, length, template)
    ctx.workspace.remember(object=handle)
    ctx.say(f"Derived {title} key (CKM_ECDH1_DERIVE, KDF null, {_created(token)}): handle {handle}")


def _peer(text: str) -> bytes | int:
    """A typed point (raw, 04 || x || y, as PKCS#11 v2.30+ has modules take it) or a handle."""
    if text.lower().startswith(("hex:", "0x")):
        return _raw_point(_hex_or_text(text, "EC point"))
    try:
        return int(text, 0)
    except ValueError:
        raise InputError(f"Invalid input ({text}): a public key handle or hex:04...") from None


def _point_of(session, handle: int) -> bytes:
    try:
        return _raw_point(bytes(session.read_attribute(handle, CKA_EC_POINT)))
    except CKRError as exc:
        if exc.ckr != CKR_ATTRIBUTE_TYPE_INVALID:
            raise
        raise CKRError(
            exc.ckr, exc.function, f"object {handle} has no CKA_EC_POINT (not an EC public key)"
        ) from None


RAW_POINT_SIZES = (65, 97, 133)  # 04 || x || y on P-256, P-384, P-521


def _raw_point(data: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING around the point: take the point out of it. A raw
    point's size is known first (as SoftHSM2 reads ECDH public data): a P-256 point whose x
    begins with 0x3f (63, its size less 2) read as DER lost two bytes, 1 point in 256."""
    if len(data) in RAW_POINT_SIZES and data[0] == 0x04:
        return data
    if len(data) > 2 and data[0] == 0x04:
        if data[1] < 0x80 and data[1] == len(data) - 2:
            return data[2:]
        if data[1] == 0x81 and len(data) > 3 and data[2] == len(data) - 3:
            return data[3:]
    return data


# ---- 64 PBE Key Gen ------------------------------------------------------------------------------
def pbe_key_gen(ctx: Context) -> None:
    opened = ctx.choose_session()
    password = ctx.ask_secret("Enter password : ")
    salt = _hex_or_text(ctx.ask("Enter salt (text, or hex:...) : "), "salt")
    iterations = ctx.ask_int(
        f"Enter iteration count [{PBE_ITERATIONS}] : ", 1, 10_000_000, default=PBE_ITERATIONS
    )
    label = ctx.ask("Enter label for the key [ckdemo-pbe] : ", "ckdemo-pbe")
    if CKM_PKCS5_PBKD2 not in {code for code, _ in opened.slot.mechanisms()}:
        ctx.say(
            "CKM_PKCS5_PBKD2 is not in this slot's mechanism list; "
            "asking the module anyway, for its own answer."
        )
    template = {
        CKA_CLASS: CKO_SECRET_KEY,
        CKA_KEY_TYPE: CKK_AES,
        CKA_VALUE_LEN: 32,
        CKA_TOKEN: False,
        CKA_LABEL: label,
        CKA_ENCRYPT: True,
        CKA_DECRYPT: True,
    }
    try:
        handle = opened.session.pbe_generate(password, salt, iterations, template)
    except CKRError as exc:
        if exc.ckr == CKR_MECHANISM_INVALID:
            raise CKRError(
                exc.ckr, exc.function, "the module has no PBE mechanism (CKM_PKCS5_PBKD2)"
            ) from exc
        raise
    ctx.workspace.remember(object=handle)
    ctx.say(
        f"AES-256 key from PBKDF2-HMAC-SHA256 ({iterations} iterations, "
        f"{len(salt)}-byte salt, session object): handle {handle}"
    )


# ---- 65 Create known keys ------------------------------------------------------------------------
def create_known_keys(ctx: Context) -> None:
    opened = ctx.choose_session()
    token = ctx.ask_yes_no("Token objects?", ctx.workspace.options.token_objects)
    session = opened.session
    rows = []
    for key in KNOWN_KEYS:
        for template in key.templates(token=token, private=True):
            cls = template[CKA_CLASS]
            found = session.find_objects({CKA_CLASS: cls, CKA_LABEL: key.label, CKA_TOKEN: token})
            if found:  # the values are fixed: one copy of each is enough
                handle, done = found[0], "already there"
            else:
                handle, done = session.create_object(template), "created"
            rows.append((key.label, CLASS_TITLES[cls], key.title, handle, done))
            ctx.workspace.remember(**{_script_name(key, cls): handle})
    ctx.table(rows, ["Label", "Class", "Key", "Handle", "Result"])
    ctx.say(f"Known keys as {_created(token)}s; values and how to reproduce results: docs/KNOWN_KEYS.md")


def _script_name(key, object_class: int) -> str:
    """known_aes256, known_rsa2048_private, ...: scripts name the handles ${LAST_KNOWN_...}."""
    name = key.label.removeprefix("ckdemo-").replace("-", "_")
    if len(key.objects) == 1:
        return name
    return f"{name}_{'public' if object_class == CKO_PUBLIC_KEY else 'private'}"


# ---- 66 Seed RNG ---------------------------------------------------------------------------------
def seed_rng(ctx: Context) -> None:
    opened = ctx.choose_session()
    seed = _hex_or_text(ctx.ask("Enter seed (text, or hex:...) : "), "seed")
    opened.session.seed_random(seed)
    ctx.say(
        f"RNG seeded with {len(seed)} bytes (C_SeedRandom mixes them in; it does not make "
        "the output repeatable)."
    )


# ---- 67 EC User Defined Curves -------------------------------------------------------------------
def ec_curves(ctx: Context) -> None:
    opened = ctx.choose_session()
    rows, accepted = [], 0
    for name, oid, params in NAMED_CURVES:
        result = _probe(opened.session, params)
        accepted += result == "CKR_OK"
        rows.append((name, oid, "accepted" if result == "CKR_OK" else result))
    ctx.table(rows, ["Curve", "OID", "Result"])
    ctx.say(
        f"{accepted} of {len(NAMED_CURVES)} named curves accepted "
        "(a session key pair generated on each, then destroyed)."
    )
    info = opened.slot.mechanism_info(CKM_EC_KEY_PAIR_GEN)
    if info.flags & CKF_EC_ECPARAMETERS:
        ctx.say(
            "CKM_EC_KEY_PAIR_GEN has CKF_EC_ECPARAMETERS: the module takes user-defined "
            "curves (explicit EC parameters)."
        )
        if not ctx.ask_yes_no("Try P-256 given as explicit parameters?", True):
            return
    else:
        ctx.say(
            "CKM_EC_KEY_PAIR_GEN has no CKF_EC_ECPARAMETERS: the module does not support "
            "user-defined curves (explicit EC parameters)."
        )
        if not ctx.ask_yes_no("Try P-256 given as explicit parameters anyway?", False):
            return
    result = _probe(opened.session, P256_EXPLICIT_PARAMS)
    if result != "CKR_OK":
        ctx.say(f"P-256 as explicit parameters: refused ({result}).")
    elif info.flags & CKF_EC_ECPARAMETERS:
        ctx.say("P-256 as explicit parameters: accepted.")
    else:
        ctx.say(
            "P-256 as explicit parameters: accepted, although the module does not "
            "advertise CKF_EC_ECPARAMETERS."
        )


def _probe(session, params: bytes) -> str:
    """'CKR_OK', or the module's answer for a curve it refuses."""
    try:
        session.probe_ec_curve(params)
    except CKRError as exc:
        if exc.ckr in MEMBER_FATAL or exc.ckr in SESSION_LOST:
            raise  # not an answer about the curve
        return ckr_name(exc.ckr)
    return "CKR_OK"
