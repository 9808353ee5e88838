"""File functions (40 Encrypt file, 41 Decrypt file, 44 Hash file): streamed, multi-part calls.

Output files are written to a temporary file beside the target and renamed on success, so a
failed operation never leaves a partial file behind.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..menu.context import Context, InputError
from ..model import CKM_SHA256, CKM_SHA384, CKM_SHA512, CKM_SHA_1, GCMParam, OAEPParam

CHUNK = 64 * 1024
CKM_AES_CBC_PAD, CKM_AES_GCM, CKM_RSA_PKCS_OAEP = 0x1085, 0x1087, 0x9
CIPHERS = [("CKM_AES_CBC_PAD", CKM_AES_CBC_PAD), ("CKM_AES_GCM (128-bit tag appended)", CKM_AES_GCM),
           ("CKM_RSA_PKCS_OAEP (SHA-1, one block: small files only)", CKM_RSA_PKCS_OAEP)]
HASHES = [("CKM_SHA_1", CKM_SHA_1), ("CKM_SHA256", CKM_SHA256), ("CKM_SHA384", CKM_SHA384),
          ("CKM_SHA512", CKM_SHA512)]
IV_BYTES = {CKM_AES_CBC_PAD: 16, CKM_AES_GCM: 12}


def chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as stream:
        while True:
            piece = stream.read(CHUNK)
            if not piece:
                return
            yield piece


def input_file(ctx: Context, prompt: str) -> Path:
    path = Path(ctx.ask(prompt)).expanduser()
    if not path.is_file():
        raise InputError(f"Cannot read {path}: no such file.")
    if not os.access(path, os.R_OK):
        raise InputError(f"Cannot read {path}: permission denied.")
    return path


def output_file(ctx: Context, prompt: str) -> Path:
    path = Path(ctx.ask(prompt)).expanduser()
    if not str(path) or path.is_dir():
        raise InputError(f"Cannot write {path}: a file name is needed.")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise InputError(f"Cannot write {path}: the folder does not exist or is not writable.")
    return path


@contextmanager
def atomic_output(path: Path):
    """A temporary file renamed to path only when the block succeeds."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)  # an ordinary file, as open() would have made it
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def _cipher(ctx: Context) -> int:
    for n, (name, _) in enumerate(CIPHERS, start=1):
        ctx.say(f"\t({n}) {name}")
    return CIPHERS[ctx.ask_int("Select mechanism: ", 1, len(CIPHERS)) - 1][1]


def _hex(ctx: Context, prompt: str, size: int | None, allow_empty: bool) -> bytes:
    text = ctx.ask(prompt)
    if not text and allow_empty:
        return b""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise InputError(f"Invalid input: {text!r} is not hex.") from None
    if size is not None and len(value) != size:
        raise InputError(f"Invalid input: {size} bytes ({2 * size} hex digits) are needed.")
    return value


def _param(ctx: Context, session, mechanism: int, encrypting: bool):
    if mechanism == CKM_RSA_PKCS_OAEP:
        return OAEPParam()
    size = IV_BYTES[mechanism]
    if encrypting:
        iv = _hex(ctx, f"Enter IV ({size} bytes hex, empty = random from the token) : ", size, True)
        iv = iv or session.generate_random(size)
        ctx.say(f"IV: {iv.hex()}")
    else:
        iv = _hex(ctx, f"Enter IV ({size} bytes hex) : ", size, False)
    if mechanism == CKM_AES_GCM:
        aad = ctx.ask("Enter additional authenticated data (text, empty = none) : ").encode()
        return GCMParam(iv, aad)
    return iv


def _crypt_file(ctx: Context, encrypting: bool) -> None:
    opened = ctx.choose_session()
    key = ctx.ask_int("Enter key handle : ", 0)
    mechanism = _cipher(ctx)
    source = input_file(ctx, f"Enter file to {'encrypt' if encrypting else 'decrypt'} : ")
    target = output_file(ctx, "Enter output file : ")
    param = _param(ctx, opened.session, mechanism, encrypting)  # every answer read before refusing
    if source.stat().st_size == 0 and (mechanism == CKM_RSA_PKCS_OAEP or not encrypting):
        raise InputError(f"{source} is empty: nothing to {'encrypt' if encrypting else 'decrypt'}.")
    session = opened.session
    written = 0
    with atomic_output(target) as out:
        if mechanism == CKM_RSA_PKCS_OAEP:  # single-part: one RSA block
            data = source.read_bytes()
            result = (session.encrypt if encrypting else session.decrypt)(key, mechanism, data, param)
            out.write(result)
            written = len(result)
        else:
            stream = session.encrypt_stream if encrypting else session.decrypt_stream
            for piece in stream(key, mechanism, chunks(source), param):
                out.write(piece)
                written += len(piece)
    ctx.say(f"{'Encrypted' if encrypting else 'Decrypted'} {source.stat().st_size} bytes of "
            f"{source} into {target} ({written} bytes).")


def encrypt_file(ctx: Context) -> None:
    _crypt_file(ctx, encrypting=True)


def decrypt_file(ctx: Context) -> None:
    _crypt_file(ctx, encrypting=False)


def hash_file(ctx: Context) -> None:
    opened = ctx.choose_session()
    for n, (name, _) in enumerate(HASHES, start=1):
        ctx.say(f"\t({n}) {name}")
    name, mechanism = HASHES[ctx.ask_int("Select mechanism: ", 1, len(HASHES)) - 1]
    source = input_file(ctx, "Enter file to hash : ")
    digest = opened.session.digest_stream(mechanism, chunks(source))
    ctx.say(f"{name} of {source} ({source.stat().st_size} bytes):")
    ctx.say(digest.hex())
