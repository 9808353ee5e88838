"""OTHERS (90 Self Test, 94/95 Open/Close Access, 97 Set App ID) and the Luna-only choices.

The self test runs published known-answer vectors (ckdemo/known_keys.py) on a session of its
own, with public session copies of the known keys, and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable

from .. import known_keys as kk
from ..codes import (
    CKR_FUNCTION_FAILED,
    CKR_FUNCTION_NOT_SUPPORTED,
    CKR_RANDOM_NO_RNG,
    CKR_SIGNATURE_INVALID,
    CKRError,
)
from ..menu.context import Context, InputError
from ..model import CKM_ECDSA, CKM_SHA256_RSA_PKCS

CKM_AES_ECB, CKM_AES_CBC, CKM_SHA256_HMAC = 0x1081, 0x1082, 0x251
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
SELF_TEST_LABEL = "ckdemo-selftest"  # its keys never share a label with the user's known keys


# ---- 90 Self Test ----------------------------------------------------------------------------------
class KeyShelf:
    """Public session copies of known keys, made on first use and destroyed at the end."""

    def __init__(self, session) -> None:
        self.session = session
        self.made: dict[str, list[int]] = {}

    def handles(self, key: kk.KnownKey) -> list[int]:
        if key.title not in self.made:
            self.made[key.title] = []
            tag = f"{len(self.made)}"
            for template in key.templates(
                token=False,
                private=False,
                label=f"{SELF_TEST_LABEL}-{tag}",
                key_id=f"{SELF_TEST_LABEL}-{tag}".encode(),
            ):
                self.made[key.title].append(self.session.create_object(template))
        return self.made[key.title]

    def destroy(self) -> None:
        for handles in self.made.values():
            for handle in reversed(handles):
                try:
                    self.session.destroy_object(handle)
                except CKRError:
                    pass  # a session object goes with its session anyway


@dataclass(frozen=True)
class SelfTest:
    title: str
    mechanism: int | None  # None: needs no mechanism (random)
    mechanism_name: str
    run: Callable[[object, KeyShelf], str | None]  # None when it passes, else what went wrong


def _compare(got: bytes, expected: bytes) -> str | None:
    if got == expected:
        return None
    return f"got {got.hex()[:16]}..., expected {expected.hex()[:16]}..."


def _digest(mechanism: int, expected: bytes):
    return lambda session, shelf: _compare(session.digest(mechanism, kk.ABC), expected)


def _aes_ecb(session, shelf: KeyShelf) -> str | None:
    key = shelf.handles(kk.KNOWN_AES256)[0]
    return _compare(
        session.encrypt(key, CKM_AES_ECB, kk.AES_ECB_PLAINTEXT), kk.AES_ECB_CIPHERTEXT
    ) or _compare(session.decrypt(key, CKM_AES_ECB, kk.AES_ECB_CIPHERTEXT), kk.AES_ECB_PLAINTEXT)


def _aes_cbc(session, shelf: KeyShelf) -> str | None:
    key = shelf.handles(kk.SP800_38A_AES256)[0]
    iv = kk.AES_CBC_IV
    return _compare(
        session.encrypt(key, CKM_AES_CBC, kk.AES_CBC_PLAINTEXT, iv), kk.AES_CBC_CIPHERTEXT
    ) or _compare(session.decrypt(key, CKM_AES_CBC, kk.AES_CBC_CIPHERTEXT, iv), kk.AES_CBC_PLAINTEXT)


def _hmac(session, shelf: KeyShelf) -> str | None:
    tc6 = shelf.handles(kk.RFC4231_TC6)[0]
    known = shelf.handles(kk.KNOWN_HMAC)[0]
    return _compare(
        session.sign(tc6, CKM_SHA256_HMAC, kk.RFC4231_TC6_DATA), kk.RFC4231_TC6_HMAC_SHA256
    ) or _compare(session.sign(known, CKM_SHA256_HMAC, kk.SIGNED_MESSAGE), kk.HMAC_SHA256_OF_MESSAGE)


def _rsa(session, shelf: KeyShelf) -> str | None:
    public, private = shelf.handles(kk.KNOWN_RSA2048)
    problem = _compare(session.sign(private, CKM_SHA256_RSA_PKCS, kk.SIGNED_MESSAGE), kk.RSA_SHA256_SIGNATURE)
    if problem is None:
        session.verify(public, CKM_SHA256_RSA_PKCS, kk.SIGNED_MESSAGE, kk.RSA_SHA256_SIGNATURE)
    return problem


def _ecdsa(session, shelf: KeyShelf) -> str | None:
    public, private = shelf.handles(kk.KNOWN_EC_P256)
    digest = hashlib.sha256(kk.SIGNED_MESSAGE).digest()  # raw CKM_ECDSA signs a digest
    try:
        session.verify(public, CKM_ECDSA, digest, session.sign(private, CKM_ECDSA, digest))
    except CKRError as exc:
        if exc.ckr != CKR_SIGNATURE_INVALID:
            raise
        return "its own signature does not verify"
    try:
        session.verify(public, CKM_ECDSA, digest, kk.ECDSA_SIGNATURE)
    except CKRError as exc:
        if exc.ckr != CKR_SIGNATURE_INVALID:
            raise
        return "the known signature (made by cryptography) does not verify"
    return None


def _random(session, shelf: KeyShelf) -> str | None:
    first, second = session.generate_random(32), session.generate_random(32)
    if len(first) != 32 or len(second) != 32:
        return f"asked 32 bytes, got {len(first)} and {len(second)}"
    return "two draws of 32 bytes are equal" if first == second else None


SELF_TESTS = [
    SelfTest("SHA-1 'abc' (FIPS 180)", 0x220, "CKM_SHA_1", _digest(0x220, kk.DIGESTS[0][2])),
    SelfTest("SHA-256 'abc' (FIPS 180)", 0x250, "CKM_SHA256", _digest(0x250, kk.DIGESTS[1][2])),
    SelfTest("SHA-512 'abc' (FIPS 180)", 0x270, "CKM_SHA512", _digest(0x270, kk.DIGESTS[2][2])),
    SelfTest("AES-256 ECB (FIPS-197 C.3)", CKM_AES_ECB, "CKM_AES_ECB", _aes_ecb),
    SelfTest("AES-256 CBC (SP 800-38A F.2.5)", CKM_AES_CBC, "CKM_AES_CBC", _aes_cbc),
    SelfTest("HMAC-SHA256 (RFC 4231 TC6, known key)", CKM_SHA256_HMAC, "CKM_SHA256_HMAC", _hmac),
    SelfTest("RSA-2048 PKCS#1 v1.5 sign, known key", CKM_SHA256_RSA_PKCS, "CKM_SHA256_RSA_PKCS", _rsa),
    SelfTest("ECDSA P-256 sign/verify, known key", CKM_ECDSA, "CKM_ECDSA", _ecdsa),
    SelfTest("Random: two draws differ", None, "C_GenerateRandom", _random),
]


def run_self_tests(session, mechanisms: set[int]) -> list[tuple[str, str, str, str]]:
    """(test, mechanism, PASS, FAIL or SKIP, detail) for each known-answer test."""
    shelf = KeyShelf(session)
    rows = []
    try:
        for test in SELF_TESTS:
            if test.mechanism is not None and test.mechanism not in mechanisms:
                rows.append((test.title, test.mechanism_name, SKIP, "not in the mechanism list"))
                continue
            try:
                problem = test.run(session, shelf)
            except CKRError as exc:
                if test.mechanism is None and exc.ckr in (CKR_RANDOM_NO_RNG, CKR_FUNCTION_NOT_SUPPORTED):
                    rows.append((test.title, test.mechanism_name, SKIP, f"no RNG ({exc.name})"))
                    continue
                problem = f"{exc.function} returned {exc.name}"
            rows.append((test.title, test.mechanism_name, FAIL if problem else PASS, problem or ""))
    finally:
        shelf.destroy()
    return rows


def self_test(ctx: Context) -> None:
    number, slot = ctx.choose_slot()
    mechanisms = {code for code, _ in slot.mechanisms()}
    session = slot.open_session(rw=True)
    try:
        rows = run_self_tests(session, mechanisms)
    finally:
        try:
            session.close()
        except CKRError:
            pass  # the results stand; a session that will not close is gone anyway
    ctx.table(rows, ["Test", "Mechanism", "Result", "Detail"])
    counts = {result: sum(1 for row in rows if row[2] == result) for result in (PASS, FAIL, SKIP)}
    ctx.say(
        f"Self test on slot#{number}: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped."
    )
    if counts[FAIL]:
        raise CKRError(CKR_FUNCTION_FAILED, "Self Test", f"{counts[FAIL]} self-tests failed")


# ---- 94 Open Access, 95 Close Access, 97 Set App ID ------------------------------------------------
def _module_note(ctx: Context, function: str) -> str:
    """Whether any loaded module exports the vendor function (found by symbol, never called)."""
    if not re.fullmatch(r"CA_\w+", function):
        return "ckdemo cannot detect it by symbol"
    paths = ctx.workspace.exports(function)
    if not paths:
        return "no loaded module exports it"
    names = ", ".join(path.rsplit("/", 1)[-1] for path in paths)
    return f"{names} {'exports' if len(paths) == 1 else 'export'} {function}, but ckdemo does not call it yet"


def _app_id(ctx: Context) -> str:
    app_id = ctx.workspace.app_id
    return "not set" if app_id is None else f"{app_id[0]}.{app_id[1]}"


def open_access(ctx: Context) -> None:
    ctx.say(
        f"Open Access: Luna extension CA_OpenApplicationID (app ID {_app_id(ctx)}); "
        f"{_module_note(ctx, 'CA_OpenApplicationID')}. Nothing to do in standard PKCS#11: "
        "sessions and login already belong to this process."
    )


def close_access(ctx: Context) -> None:
    ctx.say(
        f"Close Access: Luna extension CA_CloseApplicationID (app ID {_app_id(ctx)}); "
        f"{_module_note(ctx, 'CA_CloseApplicationID')}. Nothing to do in standard PKCS#11: "
        "closing the sessions (2) ends their access."
    )


def set_app_id(ctx: Context) -> None:
    ctx.say(f"Current app ID: {_app_id(ctx)}")
    text = ctx.ask("Enter app ID major (empty = keep the current one) : ")
    if not text:
        return
    try:
        major = int(text, 0)
    except ValueError:
        raise InputError(f"Invalid input ({text}): a number is needed.") from None
    minor = ctx.ask_int("Enter app ID minor : ", 0, 0xFFFFFFFF)
    if not 0 <= major <= 0xFFFFFFFF:
        raise InputError(f"Invalid input ({major}): choose 0-{0xFFFFFFFF}.")
    ctx.workspace.app_id = (major, minor)
    ctx.say(
        f"App ID set to {major}.{minor} (stored by ckdemo for Open/Close Access; "
        f"Luna's CA_SetApplicationID: {_module_note(ctx, 'CA_SetApplicationID')})."
    )


# ---- Luna-only choices (16-19, 70-87, 101-110) -----------------------------------------------------
def luna_only(ctx: Context, entry) -> None:
    """A choice that needs a Luna extension: name it, and say whether a loaded module has it."""
    raise CKRError(
        CKR_FUNCTION_NOT_SUPPORTED,
        entry.title,
        f"Luna extension {entry.extension}; {_module_note(ctx, entry.extension)} (not standard PKCS#11).",
    )
