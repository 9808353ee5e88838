"""Key generation, signing and random numbers (42, 43, 45, 62) on any slot."""
from __future__ import annotations

from pathlib import Path

from ..menu.context import Context, InputError
from ..model import CKM_ECDSA, KeySpec

# (menu label, key kind, size)
KEY_CHOICES = [
    ("RSA 2048 key pair", "rsa", 2048), ("RSA 3072 key pair", "rsa", 3072),
    ("RSA 4096 key pair", "rsa", 4096), ("EC P-256 key pair", "ec", "P-256"),
    ("EC P-384 key pair", "ec", "P-384"), ("AES-128 key", "aes", 16), ("AES-256 key", "aes", 32),
    ("Generic secret (32 bytes)", "generic", 32),
]
SIGN_MECHANISMS = [
    ("CKM_SHA256_RSA_PKCS", 0x40), ("CKM_SHA384_RSA_PKCS", 0x41), ("CKM_SHA512_RSA_PKCS", 0x42),
    ("CKM_SHA256_RSA_PKCS_PSS", 0x43), ("CKM_ECDSA (SHA-256 digest of the data)", CKM_ECDSA),
    ("CKM_SHA256_HMAC", 0x251),
]


def _data(ctx: Context, prompt: str) -> bytes:
    text = ctx.ask(prompt)
    if text.startswith("@"):
        try:
            return Path(text[1:]).read_bytes()
        except OSError as exc:
            raise InputError(f"Cannot read {text[1:]}: {exc.strerror}.") from None
    if not text:
        raise InputError("Invalid input: empty data.")
    return text.encode()


def _mechanism(ctx: Context) -> tuple[str, int]:
    for n, (name, _) in enumerate(SIGN_MECHANISMS, start=1):
        ctx.say(f"\t({n}) {name}")
    n = ctx.ask_int("Select mechanism: ", 1, len(SIGN_MECHANISMS))
    return SIGN_MECHANISMS[n - 1]


def _prepare(mechanism: int, data: bytes) -> bytes:
    if mechanism == CKM_ECDSA:  # raw ECDSA signs a digest (SoftHSM has no CKM_ECDSA_SHA256)
        import hashlib
        return hashlib.sha256(data).digest()
    return data


def generate_key(ctx: Context) -> None:
    opened = ctx.choose_session()
    for n, (label, _, _) in enumerate(KEY_CHOICES, start=1):
        ctx.say(f"\t({n}) {label}")
    n = ctx.ask_int("Select key type: ", 1, len(KEY_CHOICES))
    title, kind, size = KEY_CHOICES[n - 1]
    label = ctx.ask("Enter key label : ", default=f"ckdemo-{kind}")
    token = ctx.ask_yes_no("Token object?", True)
    handles = opened.session.generate(KeySpec(kind, size, label, b"", token=token))
    if len(handles) == 2:
        ctx.say(f"Generated {title}: public key handle {handles[0]}, private key handle {handles[1]}")
    else:
        ctx.say(f"Generated {title}: key handle {handles[0]}")


def sign(ctx: Context) -> None:
    opened = ctx.choose_session()
    key = ctx.ask_int("Enter signing key handle : ", 0)
    name, mechanism = _mechanism(ctx)
    data = _data(ctx, "Enter data to sign (text, or @file) : ")
    signature = opened.session.sign(key, mechanism, _prepare(mechanism, data))
    ctx.say(f"Signature ({len(signature)} bytes, {name.split()[0]}):")
    ctx.say(signature.hex() if ctx.workspace.options.hex_echo else "(hex echo off)")


def verify(ctx: Context) -> None:
    opened = ctx.choose_session()
    key = ctx.ask_int("Enter verification key handle : ", 0)
    name, mechanism = _mechanism(ctx)
    data = _data(ctx, "Enter signed data (text, or @file) : ")
    text = ctx.ask("Enter signature (hex) : ")
    try:
        signature = bytes.fromhex(text)
    except ValueError:
        raise InputError("Invalid input: the signature must be hex.") from None
    opened.session.verify(key, mechanism, _prepare(mechanism, data), signature)
    ctx.say("Signature verified.")


def generate_random(ctx: Context) -> None:
    opened = ctx.choose_session()
    length = ctx.ask_int("Enter number of random bytes : ", 1, 65536)
    data = opened.session.generate_random(length)
    ctx.say(f"{len(data)} random bytes:")
    ctx.say(data.hex() if ctx.workspace.options.hex_echo else "(hex echo off)")
