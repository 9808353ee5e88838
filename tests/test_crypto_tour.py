"""scripts/crypto-tour as golden transcripts on a physical slot (slot#1) and on the HA virtual slot
(slot#5), each replayed once in a fresh home, and its results checked against the published known
keys (docs/KNOWN_KEYS.md) with `cryptography` and `hashlib`.

The normaliser is strict: it hides the provision (home and library paths, SoftHSM slot ids) and the
outputs a mechanism randomises (ECDSA and PSS signatures, the OAEP-wrapped key, random bytes), each
only where its header says so and only at the length the header gives. Everything else (prompts,
answers, handles, deterministic signatures, hashes, status lines) must match byte for byte.

After an intended change of the tour or the screen, regenerate and review:
    CKDEMO_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/test_crypto_tour.py && git diff tests/golden
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, padding as block_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from conftest import SOFTHSM_LIB, no_traceback, requires_softhsm
from support import GOLDEN_DIR, REPO, assert_matches_golden

from ckdemo.ha.handles import VIRTUAL_HANDLE_BASE

pytestmark = requires_softhsm

TOUR = REPO / "scripts" / "crypto-tour"
# TOUR_SLOT per tour: member1; unset, so the script's `@default TOUR_SLOT ${HA_SLOT}` picks the HA slot
SLOTS = {"physical": "1", "ha": None}
SLOT_NUMBER = {"physical": 1, "ha": 5}  # in a default home: slot#5 is the HA Virtual Card Slot

MESSAGE = b"ckdemo known-answer test"  # what the tour signs
CBC_IV = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
GCM_IV, GCM_AAD = bytes.fromhex("cafebabefacedbaddecaf888"), b"crypto tour"
TOUR_FILES = {
    "crypto-tour.sig",
    "crypto-tour.cbc",
    "crypto-tour.cbc.out",
    "crypto-tour.gcm",
    "crypto-tour.gcm.out",
    "crypto-tour-aes.oaep",
    "crypto-tour-unwrapped.cbc",
}


# ---------------------------------------------------------------- the strict normaliser

# header line -> the output on the next line is randomised; group "bytes" is its length
RANDOMISED = [
    re.compile(r"^Signature \((?P<bytes>\d+) bytes, (CKM_ECDSA|CKM_SHA(256|384|512)_RSA_PKCS_PSS)\):$"),
    re.compile(r"^(?P<bytes>\d+) random bytes:$"),
    re.compile(r"^Key \d+ wrapped with key \d+ \(CKM_RSA_PKCS_OAEP\): (?P<bytes>\d+) bytes written to \S+$"),
]


class NotNormalisable(AssertionError):
    """A randomised output is not where or how long its header says."""


def normalise(transcript: str, home: Path) -> str:
    text = transcript.replace(str(home), "<HOME>").replace(SOFTHSM_LIB, "<LIBRARY>")
    text = re.sub(r"SoftHSM slot ID 0x[0-9a-f]+\b", "SoftHSM slot ID <ID>", text)
    lines = text.split("\n")
    for i, line in enumerate(lines):
        for header in RANDOMISED:
            match = header.match(line)
            if not match:
                continue
            size = int(match.group("bytes"))
            if i + 1 >= len(lines) or not re.fullmatch(rf"[0-9a-f]{{{2 * size}}}", lines[i + 1]):
                raise NotNormalisable(f"line {i + 2}: {size} bytes of hex expected after {line!r}")
            lines[i + 1] = f"<randomised: {size} bytes>"
    return "\n".join(lines)


# ---------------------------------------------------------------- the published known keys


@dataclass(frozen=True)
class KnownKeys:
    aes: bytes
    hmac: bytes
    rsa: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey


@pytest.fixture(scope="module")
def known() -> KnownKeys:
    """The values docs/KNOWN_KEYS.md publishes (not ckdemo's own constants)."""
    text = (REPO / "docs" / "KNOWN_KEYS.md").read_text()
    aes = re.search(r"^AES-256: `([0-9a-f]{64})`$", text, re.MULTILINE).group(1)
    mac = re.search(r"^HMAC: `[^`]+` = `([0-9a-f]+)`$", text, re.MULTILINE).group(1)
    keys = [
        load_pem_private_key(block.encode(), None)
        for block in re.findall(
            r"-----BEGIN PRIVATE KEY-----\n.*?\n-----END PRIVATE KEY-----", text, re.DOTALL
        )
    ]
    [rsa_key] = [k for k in keys if isinstance(k, rsa.RSAPrivateKey)]
    [ec_key] = [k for k in keys if isinstance(k, ec.EllipticCurvePrivateKey)]
    return KnownKeys(bytes.fromhex(aes), bytes.fromhex(mac), rsa_key, ec_key)


# ---------------------------------------------------------------- the two replays


@dataclass(frozen=True)
class Tour:
    stdout: str
    home: Path
    work: Path  # the current folder of the run: the tour's files

    def file(self, name: str) -> bytes:
        return (self.work / name).read_bytes()


@pytest.fixture(scope="module")
def tours(run_ckdemo, provision, tmp_path_factory) -> dict[str, Tour]:
    done = {}
    for kind, slot in SLOTS.items():
        base = tmp_path_factory.mktemp(f"crypto-tour-{kind}")
        home, work = provision(base / "home"), base / "work"
        work.mkdir()
        run = run_ckdemo(home, "run", str(TOUR), env={"TOUR_SLOT": slot} if slot else None, cwd=work)
        no_traceback(run.stdout, run.stderr)
        assert run.returncode == 0, run.stdout + run.stderr
        done[kind] = Tour(run.stdout, home, work)
    return done


def after(transcript: str, header: str) -> list[str]:
    """The line printed after every line matching `header` (a regex)."""
    return re.findall(rf"^{header}\n(.*)$", transcript, re.MULTILINE)


# ---------------------------------------------------------------- golden


@pytest.mark.parametrize("kind", SLOTS)
def test_tour_meets_every_expectation(tours, kind):
    tour = tours[kind]
    assert tour.stdout.rstrip().endswith("Replay: 28 steps, 28 met their expectation, 0 did not")
    assert tour.stdout.count("@expect CKR_SIGNATURE_INVALID: ok") == 2
    assert "@expect CKR_GENERAL_ERROR: ok" in tour.stdout
    first = {"physical": 1, "ha": VIRTUAL_HANDLE_BASE + 1}[kind]  # SoftHSM's own; the HA counter's
    assert f"Session handle: {first} (slot#{SLOT_NUMBER[kind]}, R/W)" in tour.stdout
    used = {"physical": "not used, the environment sets TOUR_SLOT", "ha": "used"}[kind]
    assert f"@default TOUR_SLOT ${{HA_SLOT}}: {used}" in tour.stdout
    assert {p.name for p in tour.work.iterdir()} == TOUR_FILES


@pytest.mark.parametrize("kind", SLOTS)
def test_transcript_matches_golden(tours, kind):
    tour = tours[kind]
    assert_matches_golden(
        normalise(tour.stdout, tour.home),
        GOLDEN_DIR / f"crypto-tour-{kind}.txt",
        f"scripts/crypto-tour ({kind})",
    )


def test_a_second_run_normalises_to_the_same_text(run_ckdemo, provision, tours, tmp_path):
    """What the normaliser hides did change between two runs; nothing else did."""
    home, work = provision(tmp_path / "home"), tmp_path / "work"
    work.mkdir()
    again = run_ckdemo(home, "run", str(TOUR), env={"TOUR_SLOT": "1"}, cwd=work)
    assert again.returncode == 0, again.stdout
    first = tours["physical"]
    for header in (
        r"Signature \(64 bytes, CKM_ECDSA\):",
        r"16 random bytes:",
        r"Key \d+ wrapped with key \d+ \(CKM_RSA_PKCS_OAEP\): .*",
    ):
        assert after(again.stdout, header) != after(first.stdout, header), header
    assert normalise(again.stdout, home) == normalise(first.stdout, first.home)


@pytest.mark.parametrize(
    "pattern, replacement",
    [
        (r"(?m)^6e5d34969f", "7e5d34969f"),  # the deterministic RSA signature
        (r"(?m)^0b9b0f7e858b", "0b9b0f7e858c"),  # the HMAC
        (r"(?m)^663d09d3", "663d09d4"),  # a hash
        (r"(?m)^(Enter signing key handle : )\d+$", r"\g<1>9"),  # a handle
        (r"(?m)^Signature verified\.$", "Signature checked."),
        (r"\(CKR_SIGNATURE_INVALID 0x000000C0\)", "(CKR_SIGNATURE_LEN_RANGE 0x000000C1)"),
        (r"(?m)^(Signature \(\d+ bytes, )CKM_SHA256_RSA_PKCS\):", r"\1CKM_SHA384_RSA_PKCS):"),
        (
            r"(?m)^(Encrypted 256 bytes of crypto-tour.sig into crypto-tour.cbc) \(272 bytes\)",
            r"\1 (288 bytes)",
        ),
    ],
)
def test_a_real_change_is_not_normalised_away(tours, pattern, replacement):
    tour = tours["physical"]
    changed, count = re.subn(pattern, replacement, tour.stdout, count=1)
    assert count == 1, f"{pattern!r} is no longer in the tour: pick another sample"
    assert normalise(changed, tour.home) != normalise(tour.stdout, tour.home)


@pytest.mark.parametrize(
    "pattern, replacement",
    [
        (r"(?m)^(16 random bytes:\n)([0-9a-f]{32})$", r"\g<1>\g<2>00"),  # longer than its header says
        (r"(?m)^(Signature \(64 bytes, CKM_ECDSA\):\n)[0-9a-f]{128}$", r"\1(hex echo off)"),
        (r"(?m)^(Key \d+ wrapped with key \d+ \(CKM_RSA_PKCS_OAEP\): )256( bytes)", r"\g<1>255\2"),
    ],
)
def test_a_randomised_output_out_of_shape_is_an_error(tours, pattern, replacement):
    tour = tours["physical"]
    changed, count = re.subn(pattern, replacement, tour.stdout, count=1)
    assert count == 1, pattern
    with pytest.raises(NotNormalisable):
        normalise(changed, tour.home)


def test_nothing_unstable_survives_normalising(tours):
    for tour in tours.values():
        text = normalise(tour.stdout, tour.home)
        assert "SoftHSM slot ID 0x" not in text
        assert str(tour.home) not in text
        assert text.count("<randomised: ") == 4  # PSS, ECDSA, the OAEP-wrapped key, random bytes
        assert "<randomised: 256 bytes>" in text and "<randomised: 64 bytes>" in text


# ---------------------------------------------------------------- independent checks of the results


@pytest.mark.parametrize("kind", SLOTS)
def test_signatures_agree_with_the_published_keys(tours, known, kind):
    out = tours[kind].stdout
    v15 = known.rsa.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256())  # deterministic
    assert tours[kind].file("crypto-tour.sig") == v15
    assert after(out, r"Signature \(256 bytes, CKM_SHA256_RSA_PKCS\):") == [v15.hex()]
    assert after(out, r"Signature \(32 bytes, CKM_SHA256_HMAC\):") == [
        hmac.new(known.hmac, MESSAGE, hashlib.sha256).hexdigest()
    ]
    [pss] = after(out, r"Signature \(256 bytes, CKM_SHA256_RSA_PKCS_PSS\):")
    known.rsa.public_key().verify(
        bytes.fromhex(pss), MESSAGE, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()
    )
    [ecdsa] = after(out, r"Signature \(64 bytes, CKM_ECDSA\):")
    r, s = int(ecdsa[:64], 16), int(ecdsa[64:], 16)
    known.ec.public_key().verify(encode_dss_signature(r, s), MESSAGE, ec.ECDSA(hashes.SHA256()))
    # the ECDSA signature the tour typed for 43, which it verified: `cryptography` agrees
    typed = re.search(
        r"^Enter signature \(hex, or @file\) : ([0-9a-f]{128})\nSignature verified\.$", out, re.MULTILINE
    ).group(1)
    known.ec.public_key().verify(
        encode_dss_signature(int(typed[:64], 16), int(typed[64:], 16)), MESSAGE, ec.ECDSA(hashes.SHA256())
    )


@pytest.mark.parametrize("kind", SLOTS)
def test_files_hashes_and_key_digest_agree_with_cryptography_and_hashlib(tours, known, kind):
    tour = tours[kind]
    signature = tour.file("crypto-tour.sig")
    padder = block_padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(known.aes), modes.CBC(CBC_IV)).encryptor()
    cbc = encryptor.update(padder.update(signature) + padder.finalize()) + encryptor.finalize()
    assert tour.file("crypto-tour.cbc") == cbc
    assert tour.file("crypto-tour.gcm") == AESGCM(known.aes).encrypt(GCM_IV, signature, GCM_AAD)
    assert tour.file("crypto-tour.cbc.out") == tour.file("crypto-tour.gcm.out") == signature
    # the key unwrapped from the OAEP file is the known AES key: it encrypts alike
    assert (
        known.rsa.decrypt(
            tour.file("crypto-tour-aes.oaep"), padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
        )
        == known.aes
    )
    assert tour.file("crypto-tour-unwrapped.cbc") == cbc
    [wrapped] = after(tour.stdout, r"Key \d+ wrapped with key \d+ \(CKM_RSA_PKCS_OAEP\): .*")
    assert bytes.fromhex(wrapped) == tour.file("crypto-tour-aes.oaep")

    hashes_shown = after(tour.stdout, r"CKM_SHA256 of \S+ \(\d+ bytes\):")
    sha = hashlib.sha256
    assert hashes_shown == [sha(signature).hexdigest()] * 3 + [sha(cbc).hexdigest()] * 2
    assert after(tour.stdout, r"CKM_SHA256 of key \d+:") == [sha(known.aes).hexdigest()]
    [random_hex] = after(tour.stdout, r"16 random bytes:")
    assert re.fullmatch(r"[0-9a-f]{32}", random_hex)


def test_the_ha_slot_answers_as_the_physical_slot(tours):
    """Same deterministic results and the same statuses on both slot kinds; only handles and the
    slot differ, and the randomised outputs."""

    def answers(tour: Tour) -> tuple[list[str], list[str]]:
        text = normalise(tour.stdout, tour.home)
        results = re.findall(
            r"^(?:[0-9a-f]{32,}|<randomised: \d+ bytes>|Signature verified\.)$", text, re.MULTILINE
        )
        return results, re.findall(r"^Status: .*$", text, re.MULTILINE)

    assert answers(tours["ha"]) == answers(tours["physical"])
    handles = {
        kind: re.findall(r"^(ckdemo-known-\S+) +\S+ key +.*?  (\d+) +created$", t.stdout, re.MULTILINE)
        for kind, t in tours.items()
    }
    assert [label for label, _ in handles["ha"]] == [label for label, _ in handles["physical"]]
    assert len(handles["ha"]) == 6
