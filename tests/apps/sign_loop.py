"""An application as application teams write them: python-pkcs11 through p11-kit-client.so,
signing in a loop. One JSON line per signature: {"n", "ok"} or {"n", "ok": false, "error"};
--verify checks each signature with the public key (a wrong signature is a failure, "error":
"wrong signature"); --reopen opens a new session and logs in again after a failure (a
retry-and-reopen wrapper); --reinitialize also finalizes and initializes the library first
(what CKR_CRYPTOKI_NOT_INITIALIZED asks for). The key is a token EC key pair labelled --label,
made on the first run. Exit 1 when any signature failed.

--seconds S stops after S seconds (or COUNT signatures, whichever comes first); --until-file F
stops once the file F exists. --parts K signs
each message in K parts (C_SignUpdate ... C_SignFinal) with an RSA-2048 key pair and
CKM_SHA256_RSA_PKCS (SoftHSM2's ECDSA does not hash, so it has no multi-part form).

Usage: sign_loop.py MODULE TOKEN_LABEL PIN COUNT [--label L] [--verify] [--reopen] [--reinitialize]
                    [--seconds S] [--until-file F]
"""

import hashlib
import json
import sys
import time
from pathlib import Path

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error
from pkcs11.util.ec import encode_named_curve_parameters


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


def keys(session, label: str, rsa: bool = False):
    if rsa:
        try:
            return (
                session.get_key(ObjectClass.PRIVATE_KEY, KeyType.RSA, label=label + "-rsa"),
                session.get_key(ObjectClass.PUBLIC_KEY, KeyType.RSA, label=label + "-rsa"),
            )
        except pkcs11.NoSuchKey:
            public, private = session.generate_keypair(KeyType.RSA, 2048, label=label + "-rsa", store=True)
            return private, public
    try:
        return (
            session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, label=label),
            session.get_key(ObjectClass.PUBLIC_KEY, KeyType.EC, label=label),
        )
    except pkcs11.NoSuchKey:
        curve = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
        )
        public, private = curve.generate_keypair(label=label, store=True)
        return private, public


def open_session(token, pin: str):
    """A session, logged in (a second session of an application that is logged in already
    cannot log in again: PKCS#11 answers CKR_USER_ALREADY_LOGGED_IN, and it needs no login)."""
    try:
        return token.open(user_pin=pin, rw=True)
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        return token.open(rw=True)


def error_name(error: PKCS11Error) -> str:
    return type(error).__name__ if type(error) is not PKCS11Error else str(error)


def main() -> int:
    module, token_label, pin, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    label = sys.argv[sys.argv.index("--label") + 1] if "--label" in sys.argv else "lab-signer"
    verify, reopen, reinitialize = (
        "--verify" in sys.argv,
        "--reopen" in sys.argv,
        "--reinitialize" in sys.argv,
    )
    seconds = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else None
    parts = int(sys.argv[sys.argv.index("--parts") + 1]) if "--parts" in sys.argv else 0
    until = Path(sys.argv[sys.argv.index("--until-file") + 1]) if "--until-file" in sys.argv else None
    lib = pkcs11.lib(module)
    token = lib.get_token(token_label=token_label)
    session = open_session(token, pin)
    private, public = keys(session, label, rsa=bool(parts))
    failures = 0
    ends = time.monotonic() + seconds if seconds else None
    for n in range(count):
        if (ends is not None and time.monotonic() > ends) or (until is not None and until.exists()):
            break
        digest = hashlib.sha256(b"payload %d" % n).digest()
        started = time.monotonic()
        try:
            if parts:  # an iterable: python-pkcs11 signs it with C_SignUpdate per part
                chunks = [b"part %d of message %d;" % (k, n) for k in range(parts)]
                signature = private.sign(iter(chunks), mechanism=Mechanism.SHA256_RSA_PKCS)
                good = public.verify(b"".join(chunks), signature, mechanism=Mechanism.SHA256_RSA_PKCS)
            else:
                signature = private.sign(digest, mechanism=Mechanism.ECDSA)
                good = public.verify(digest, signature, mechanism=Mechanism.ECDSA) if verify else True
            if not good:
                failures += 1
                say(n=n, ok=False, error="wrong signature")
                continue
            say(n=n, ok=True, ms=round((time.monotonic() - started) * 1000, 3))
        except PKCS11Error as error:
            failures += 1
            say(n=n, ok=False, error=error_name(error))
            if not (reopen or reinitialize):
                continue
            try:
                if reinitialize:
                    lib.reinitialize()
                    token = lib.get_token(token_label=token_label)
                session = open_session(token, pin)
                private, public = keys(session, label, rsa=bool(parts))
                say(n=n, reopened=True)
            except PKCS11Error as again:
                say(n=n, reopened=False, error=error_name(again))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
