"""File functions (40 Encrypt file, 41 Decrypt file, 44 Hash file): streamed, multi-part calls.

Input files must be regular files (never a FIFO, a device such as /dev/zero, or a folder): they
are opened without blocking and checked on the open descriptor. Files read whole (single-part
calls, `@file` answers) are limited to MAX_FILE_BYTES; 40/41/44 stream any size in CHUNK pieces.
Output files are written to a temporary file beside the target and renamed on success, so a
failed operation never leaves a partial file behind; an existing target must be a regular file.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from ..menu.context import Context, InputError
from ..model import CKM_SHA256, CKM_SHA384, CKM_SHA512, CKM_SHA_1, GCMParam, OAEPParam

CHUNK = 64 * 1024
MAX_FILE_BYTES = 64 * 1024 * 1024  # a file read whole (an @file answer, one RSA block): 64 MiB
TEMP_NAME_EXTRA = 10  # atomic_output's temporary file: "." + name + "." + 8 random characters
CKM_AES_CBC_PAD, CKM_AES_GCM, CKM_RSA_PKCS_OAEP = 0x1085, 0x1087, 0x9
CIPHERS = [
    ("CKM_AES_CBC_PAD", CKM_AES_CBC_PAD),
    ("CKM_AES_GCM (128-bit tag appended)", CKM_AES_GCM),
    ("CKM_RSA_PKCS_OAEP (SHA-1, one block: small files only)", CKM_RSA_PKCS_OAEP),
]
HASHES = [
    ("CKM_SHA_1", CKM_SHA_1),
    ("CKM_SHA256", CKM_SHA256),
    ("CKM_SHA384", CKM_SHA384),
    ("CKM_SHA512", CKM_SHA512),
]
IV_BYTES = {CKM_AES_CBC_PAD: 16, CKM_AES_GCM: 12}


def file_name(text: str, doing: str = "read") -> Path:
    """A file name as typed; a NUL byte cannot be part of one (the OS would refuse it)."""
    if "\0" in text:
        raise InputError(f"Cannot {doing} {text!r}: a file name cannot contain a NUL byte.")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # ~user of no such user: the name as typed (then "no such file")
        return Path(text)


def open_regular(path: Path, max_bytes: int | None = None) -> BinaryIO:
    """The file opened for reading, if it is a regular file (of at most max_bytes). Opened
    non-blocking, so a FIFO cannot hang the menu, and checked on the descriptor itself."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        reason = "no such file" if exc.errno == errno.ENOENT else (exc.strerror or str(exc)).lower()
        raise InputError(f"Cannot read {path}: {reason}.") from None
    except ValueError:  # e.g. a NUL byte that came by another route
        raise InputError(f"Cannot read {path!r}: not a usable file name.") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        what = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise InputError(f"Cannot read {path}: {what} (only regular files are read).")
    if max_bytes is not None and info.st_size > max_bytes:
        os.close(fd)
        raise InputError(
            f"Cannot read {path}: {info.st_size} bytes, more than the "
            f"{max_bytes // (1024 * 1024)} MiB a file read whole may have."
        )
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes, read whole: at most max_bytes (a file that grows meanwhile too)."""
    with open_regular(path, max_bytes) as stream:
        try:
            data = stream.read(max_bytes + 1)
        except OSError as exc:
            raise InputError(f"Cannot read {path}: {(exc.strerror or str(exc)).lower()}.") from None
    if len(data) > max_bytes:
        raise InputError(
            f"Cannot read {path}: more than the {max_bytes // (1024 * 1024)} MiB a file read whole may have."
        )
    return data


def chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The open file in CHUNK pieces, for multi-part calls."""
    while True:
        piece = stream.read(CHUNK)
        if not piece:
            return
        yield piece


def input_file(ctx: Context, prompt: str, max_bytes: int | None = None) -> Path:
    """A regular file to read (checked again when it is opened); max_bytes if read whole."""
    path = file_name(ctx.ask(prompt))
    open_regular(path, max_bytes).close()
    return path


def output_file(ctx: Context, prompt: str) -> Path:
    return writable(file_name(ctx.ask(prompt), "write"))


def writable(path: Path) -> Path:
    """A target atomic_output may replace: a file name (with room for the temporary name beside
    it), its folder exists and is writable, and it is absent or a regular file (renaming over
    /dev/null or a FIFO would replace the device itself)."""
    try:
        return _writable(path)
    except OSError as exc:  # e.g. a name too long for the file system
        raise InputError(f"Cannot write {path}: {(exc.strerror or str(exc)).lower()}.") from None


def _writable(path: Path) -> Path:
    if not str(path) or path.is_dir():
        raise InputError(f"Cannot write {path}: a file name is needed.")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise InputError(f"Cannot write {path}: the folder does not exist or is not writable.")
    if len(os.fsencode(path.name)) + TEMP_NAME_EXTRA > os.pathconf(folder, "PC_NAME_MAX"):
        raise InputError(f"Cannot write {path}: the file name is too long.")
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return path
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) and path.is_file()):
        raise InputError(f"Cannot write {path}: it exists and is not a regular file.")
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
    single_part = mechanism == CKM_RSA_PKCS_OAEP  # one RSA block, read whole
    source = input_file(
        ctx,
        f"Enter file to {'encrypt' if encrypting else 'decrypt'} : ",
        MAX_FILE_BYTES if single_part else None,
    )
    target = output_file(ctx, "Enter output file : ")
    param = _param(ctx, opened.session, mechanism, encrypting)  # every answer read before refusing
    stream = open_regular(source, MAX_FILE_BYTES if single_part else None)
    size = os.fstat(stream.fileno()).st_size
    if size == 0 and (single_part or not encrypting):
        stream.close()
        raise InputError(f"{source} is empty: nothing to {'encrypt' if encrypting else 'decrypt'}.")
    session = opened.session
    written = 0
    with stream, atomic_output(target) as out:
        if single_part:
            data = stream.read(MAX_FILE_BYTES)
            result = (session.encrypt if encrypting else session.decrypt)(key, mechanism, data, param)
            out.write(result)
            written = len(result)
        else:
            multi_part = session.encrypt_stream if encrypting else session.decrypt_stream
            for piece in multi_part(key, mechanism, chunks(stream), param):
                out.write(piece)
                written += len(piece)
    ctx.say(
        f"{'Encrypted' if encrypting else 'Decrypted'} {size} bytes of "
        f"{source} into {target} ({written} bytes)."
    )


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
    with open_regular(source) as stream:
        size = os.fstat(stream.fileno()).st_size
        digest = opened.session.digest_stream(mechanism, chunks(stream))
    ctx.say(f"{name} of {source} ({size} bytes):")
    ctx.say(digest.hex())
