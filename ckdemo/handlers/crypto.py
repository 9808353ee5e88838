"""Key generation, signing, key digests and random numbers (42, 43, 45, 46, 62) on any slot."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..menu.context import Context, InputError
from ..model import (
    CKG_MGF1_SHA256,
    CKG_MGF1_SHA384,
    CKG_MGF1_SHA512,
    CKM_ECDSA,
    CKM_SHA256,
    CKM_SHA384,
    CKM_SHA512,
    CKM_SHA_1,
    KeySpec,
    PSSParam,
)
from .files import MAX_FILE_BYTES, atomic_output, file_name, read_regular, writable

# (menu label, key kind, size)
KEY_CHOICES = [
    ("RSA 2048 key pair", "rsa", 2048),
    ("RSA 3072 key pair", "rsa", 3072),
    ("RSA 4096 key pair", "rsa", 4096),
    ("EC P-256 key pair", "ec", "P-256"),
    ("EC P-384 key pair", "ec", "P-384"),
    ("AES-128 key", "aes", 16),
    ("AES-256 key", "aes", 32),
    ("Generic secret (32 bytes)", "generic", 32),
]
# (menu label, mechanism, parameter, digest the harness applies first for raw ECDSA)
SIGN_MECHANISMS = [
    ("CKM_SHA256_RSA_PKCS", 0x40, None, None),
    ("CKM_SHA384_RSA_PKCS", 0x41, None, None),
    ("CKM_SHA512_RSA_PKCS", 0x42, None, None),
    ("CKM_SHA256_RSA_PKCS_PSS", 0x43, PSSParam(CKM_SHA256, CKG_MGF1_SHA256, 32), None),
    ("CKM_SHA384_RSA_PKCS_PSS", 0x44, PSSParam(CKM_SHA384, CKG_MGF1_SHA384, 48), None),
    ("CKM_SHA512_RSA_PKCS_PSS", 0x45, PSSParam(CKM_SHA512, CKG_MGF1_SHA512, 64), None),
    ("CKM_ECDSA (SHA-256 digest of the data)", CKM_ECDSA, None, "sha256"),
    ("CKM_ECDSA (SHA-384 digest of the data)", CKM_ECDSA, None, "sha384"),
    ("CKM_SHA256_HMAC", 0x251, None, None),
]
DIGESTS = [
    ("CKM_SHA_1", CKM_SHA_1),
    ("CKM_SHA256", CKM_SHA256),
    ("CKM_SHA384", CKM_SHA384),
    ("CKM_SHA512", CKM_SHA512),
]


def _data(ctx: Context, prompt: str, text: str | None = None) -> bytes:
    """Text as typed, or the bytes of @file: a regular file of at most MAX_FILE_BYTES (sign and
    verify are single-part calls; Hash file (44) streams a file of any size)."""
    text = ctx.ask(prompt) if text is None else text
    if text.startswith("@"):
        return read_regular(file_name(text[1:]), MAX_FILE_BYTES)
    if not text:
        raise InputError("Invalid input: empty data.")
    return text.encode("utf-8", "replace")


def output_file_or_none(text: str) -> Path | None:
    if not text:
        return None
    return writable(file_name(text, "write"))


def _mechanism(ctx: Context):
    for n, (name, *_) in enumerate(SIGN_MECHANISMS, start=1):
        ctx.say(f"\t({n}) {name}")
    n = ctx.ask_int("Select mechanism: ", 1, len(SIGN_MECHANISMS))
    return SIGN_MECHANISMS[n - 1]


def _prepare(prehash: str | None, data: bytes) -> bytes:
    # raw CKM_ECDSA signs a digest (SoftHSM has no CKM_ECDSA_SHA256): hash here, as CKDemo does
    return hashlib.new(prehash, data).digest() if prehash else data


def generate_key(ctx: Context) -> None:
    opened = ctx.choose_session()
    for n, (label, _, _) in enumerate(KEY_CHOICES, start=1):
        ctx.say(f"\t({n}) {label}")
    n = ctx.ask_int("Select key type: ", 1, len(KEY_CHOICES))
    title, kind, size = KEY_CHOICES[n - 1]
    label = ctx.ask("Enter key label : ", default=f"ckdemo-{kind}")
    token = ctx.ask_yes_no("Token object?", True)
    sensitive = ctx.ask_yes_no("Sensitive?", True)
    extractable = ctx.ask_yes_no("Extractable?", False)
    handles = opened.session.generate(
        KeySpec(kind, size, label, b"", token=token, sensitive=sensitive, extractable=extractable)
    )
    note = opened.slot.extractability_note(extractable)
    if note:
        ctx.say(f"({note})")
    if len(handles) == 2:
        ctx.workspace.remember(public_key=handles[0], private_key=handles[1], object=handles[1])
        ctx.say(f"Generated {title}: public key handle {handles[0]}, private key handle {handles[1]}")
    else:
        ctx.workspace.remember(object=handles[0])
        ctx.say(f"Generated {title}: key handle {handles[0]}")


def _signing_request(ctx: Context, role: str, what: str):
    """Session, key handle, mechanism (with parameter and pre-hash) and the data, as typed."""
    opened = ctx.choose_session()
    key = ctx.ask_int(f"Enter {role} key handle : ", 0)
    name, mechanism, param, prehash = _mechanism(ctx)
    data = _prepare(prehash, _data(ctx, f"Enter {what} (text, or @file) : "))
    return opened, key, name, mechanism, param, data


def sign(ctx: Context) -> None:
    opened, key, name, mechanism, param, data = _signing_request(ctx, "signing", "data to sign")
    save = ctx.ask("Save the signature to file (empty = no) : ")
    target = output_file_or_none(save)
    signature = opened.session.sign(key, mechanism, data, param)
    ctx.say(f"Signature ({len(signature)} bytes, {name.split()[0]}):")
    ctx.say(signature.hex() if ctx.workspace.options.hex_echo else "(hex echo off)")
    if target is not None:
        with atomic_output(target) as out:
            out.write(signature)
        ctx.say(f"Signature written to {target}.")


def verify(ctx: Context) -> None:
    opened, key, name, mechanism, param, data = _signing_request(ctx, "verification", "signed data")
    text = ctx.ask("Enter signature (hex, or @file) : ")
    if text.startswith("@"):
        signature = _data(ctx, "", text)
    else:
        try:
            signature = bytes.fromhex(text)
        except ValueError:
            raise InputError("Invalid input: the signature must be hex or @file.") from None
    opened.session.verify(key, mechanism, data, signature, param)
    ctx.say("Signature verified.")


def digest_key(ctx: Context) -> None:
    opened = ctx.choose_session()
    for n, (name, _) in enumerate(DIGESTS, start=1):
        ctx.say(f"\t({n}) {name}")
    name, mechanism = DIGESTS[ctx.ask_int("Select mechanism: ", 1, len(DIGESTS)) - 1]
    key = ctx.ask_int("Enter key handle : ", 0)
    digest = opened.session.digest_key(mechanism, key)
    ctx.say(f"{name} of key {key}:")
    ctx.say(digest.hex())


def generate_random(ctx: Context) -> None:
    opened = ctx.choose_session()
    length = ctx.ask_int("Enter number of random bytes : ", 1, 65536)
    data = opened.session.generate_random(length)
    ctx.say(f"{len(data)} random bytes:")
    ctx.say(data.hex() if ctx.workspace.options.hex_echo else "(hex echo off)")
