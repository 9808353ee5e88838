"""CKR names and values, and python-pkcs11 exceptions read back as codes.

Oracles: python-pkcs11's own `map_rv_to_error` source (which class it raises for which code),
NSS's copy of the OASIS header for the values, and a wrong PIN on a real SoftHSM2 token.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pkcs11
import pkcs11.exceptions
import pytest

from ckdemo import codes
from ckdemo.codes import CKRError, ckr_name, ckr_value, describe, is_member_fatal
from ckdemo.members.errors import ckr_of, pkcs11_call, translate

SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")
NSS_HEADER = Path("/usr/include/nss/pkcs11t.h")

# `if rv == CKR_X:` / `elif rv == CKR_X:` then `exc = Class()` or `exc = PKCS11Error("...")`
_BRANCH = re.compile(r'rv == (CKR_\w+):\s*\n\s*exc = (\w+)\(\s*(?:"([^"]*)")?\s*\)')


def map_rv_to_error_pairs() -> list[tuple[str, str, str | None]]:
    source = (Path(pkcs11.__file__).parent / "_pkcs11.pxd").read_text()
    body = source[source.index("map_rv_to_error") :]
    return _BRANCH.findall(body)


# --- python-pkcs11 exceptions -> codes, against python-pkcs11's own source ----------------------


def test_oracle_sees_the_whole_map():
    pairs = map_rv_to_error_pairs()
    assert len(pairs) >= 75, "the regex no longer reads map_rv_to_error"
    for ckr, _class_name, _message in pairs:
        assert ckr in codes.CKR_NAMES.values(), f"{ckr} from python-pkcs11 is missing in codes"


def test_every_mapped_exception_gives_its_code():
    codes_of_class: dict[tuple[str, str | None], set[int]] = defaultdict(set)
    for ckr, class_name, message in map_rv_to_error_pairs():
        codes_of_class[class_name, message or None].add(ckr_value(ckr))
    for (class_name, message), expected in codes_of_class.items():
        cls = getattr(pkcs11.exceptions, class_name)
        exc = cls(message) if message else cls()
        assert ckr_of(exc) in expected, f"{class_name}({message!r}) -> {ckr_name(ckr_of(exc))}"


def test_every_exception_class_has_a_code_of_its_own():
    # A class added by a python-pkcs11 upgrade must not silently become CKR_GENERAL_ERROR.
    for name, cls in inspect.getmembers(pkcs11.exceptions, inspect.isclass):
        if issubclass(cls, pkcs11.exceptions.PKCS11Error) and cls is not pkcs11.exceptions.PKCS11Error:
            code = ckr_of(cls())
            assert code in codes.CKR_NAMES, name
            assert (code == codes.CKR_GENERAL_ERROR) == (cls is pkcs11.exceptions.GeneralError), name


def test_python_side_exceptions():
    assert ckr_of(pkcs11.exceptions.NoSuchToken("No token matching {}")) == codes.CKR_TOKEN_NOT_PRESENT
    assert ckr_of(pkcs11.exceptions.NoSuchKey()) == codes.CKR_KEY_HANDLE_INVALID
    assert ckr_of(pkcs11.exceptions.MultipleObjectsReturned()) == codes.CKR_ARGUMENTS_BAD
    assert (
        ckr_of(pkcs11.exceptions.ArgumentsBad("Set either `user_pin` or `so_pin`")) == codes.CKR_ARGUMENTS_BAD
    )
    assert (
        ckr_of(pkcs11.exceptions.PKCS11Error("Failed to cancel operation"))
        == codes.CKR_OPERATION_CANCEL_FAILED
    )


def test_bare_pkcs11error_messages():
    bare = pkcs11.exceptions.PKCS11Error
    assert ckr_of(bare("Unmapped error code 0x80000123")) == 0x80000123
    assert ckr_name(ckr_of(bare("Unmapped error code 0x80000123"))) == "CKR_VENDOR_DEFINED+0x123"
    assert (
        ckr_of(bare("Initialisation error (not initialized). Should never see this."))
        == codes.CKR_CRYPTOKI_NOT_INITIALIZED
    )
    assert (
        ckr_of(bare("Initialisation error (already initialized). Should never see this."))
        == codes.CKR_CRYPTOKI_ALREADY_INITIALIZED
    )
    assert ckr_of(bare("Buffer was too small. Should never see this.")) == codes.CKR_BUFFER_TOO_SMALL
    assert ckr_of(bare("OS exception while loading /nope.so: no such file")) == codes.CKR_GENERAL_ERROR


def test_translate_keeps_python_pkcs11_words_only_when_they_say_more():
    assert translate(pkcs11.exceptions.PKCS11Error("Unmapped error code 0x80000123"), "C_Sign").detail == ""
    error = translate(pkcs11.exceptions.NoSuchKey("No key matching {'label': 'k1'}"), "C_FindObjects")
    assert (error.name, error.function) == ("CKR_KEY_HANDLE_INVALID", "C_FindObjects")
    assert (
        str(error)
        == "C_FindObjects returned CKR_KEY_HANDLE_INVALID (0x00000060): No key matching {'label': 'k1'}"
    )


def test_pkcs11_call_translates_and_chains():
    original = pkcs11.exceptions.DeviceError()
    with pytest.raises(CKRError) as info:
        with pkcs11_call("C_Sign"):
            raise original
    assert info.value.ckr == codes.CKR_DEVICE_ERROR and info.value.function == "C_Sign"
    assert info.value.__cause__ is original


def test_pkcs11_call_lets_other_exceptions_pass():
    inner = CKRError(codes.CKR_PIN_INCORRECT, "C_Login")
    with pytest.raises(CKRError) as info:
        with pkcs11_call("C_OpenSession"):
            raise inner
    assert info.value is inner  # the innermost function name wins
    with pytest.raises(TypeError):
        with pkcs11_call("C_Sign"):
            raise TypeError("not a PKCS#11 error")


# --- a real return value from SoftHSM2 -----------------------------------------------------------


@pytest.fixture
def softhsm_copy(tmp_path, monkeypatch):
    """A private copy of SoftHSM2 (its own module instance) with one token 't1', user PIN 1234."""
    if not SOFTHSM.exists() or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM2 is not installed")
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    # SoftHSM reads its config at C_Initialize, and python-pkcs11 caches a library per path.
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "t1", "--pin", "1234", "--so-pin", "5678"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    copy = tmp_path / "libsofthsm2-copy.so"
    shutil.copyfile(SOFTHSM.resolve(), copy)
    lib = pkcs11.lib(str(copy))
    try:
        yield lib
    finally:
        pkcs11.unload(str(copy))


def test_wrong_pin_is_ckr_pin_incorrect(softhsm_copy):
    token = softhsm_copy.get_token(token_label="t1")
    with pytest.raises(CKRError) as info:
        with pkcs11_call("C_Login"):
            token.open(user_pin="0000")
    assert info.value.name == "CKR_PIN_INCORRECT"
    assert str(info.value) == "C_Login returned CKR_PIN_INCORRECT (0x000000A0)"
    assert isinstance(info.value.__cause__, pkcs11.exceptions.PinIncorrect)
    assert not is_member_fatal(info.value.ckr)  # an answer, not a broken member


# --- names and values ---------------------------------------------------------------------------


def test_values_match_the_oasis_header_as_shipped_by_nss():
    if not NSS_HEADER.exists():
        pytest.skip("libnss3-dev header not installed")
    defined = dict(re.findall(r"#define (CKR_\w+)\s+(0x[0-9A-Fa-f]+)UL", NSS_HEADER.read_text()))
    assert len(defined) >= 90
    for name, value in defined.items():
        assert ckr_value(name) == int(value, 16), name


def test_known_values():
    assert codes.CKR_PIN_INCORRECT == 0xA0
    assert codes.CKR_PUBLIC_KEY_INVALID == 0x1B9  # p11-kit 0.24's pkcs11.h says 0x1C4: it is wrong
    assert codes.CKR_AEAD_DECRYPT_FAILED == 0x42
    assert codes.CKR_KEY_EXHAUSTED == 0x203
    assert codes.CKR_NAMES[0x80000000] == "CKR_VENDOR_DEFINED"


def test_round_trip_for_every_name():
    assert len(codes.CKR_NAMES) >= 95
    for value, name in codes.CKR_NAMES.items():
        assert getattr(codes, name) == value
        assert ckr_name(value) == name
        assert ckr_value(name) == value
        assert ckr_value(name.removeprefix("CKR_").lower()) == value
        assert ckr_value(hex(value)) == value
        assert ckr_value(str(value)) == value


def test_unknown_codes_have_names_that_read_back():
    assert ckr_name(0x80000123) == "CKR_VENDOR_DEFINED+0x123"
    assert ckr_name(0x999) == "CKR_0x00000999"
    assert describe(0x80000123) == "CKR_VENDOR_DEFINED+0x123 (0x80000123)"
    for code in (0x80000123, 0x999, 0x4, 0xFFFFFFFF):
        assert ckr_value(ckr_name(code)) == code


def test_ckr_value_refuses_what_it_does_not_know():
    for bad in ("CKR_NO_SUCH_THING", "PIN_INCORECT", "", "-1", "A0"):
        with pytest.raises(KeyError):
            ckr_value(bad)


def test_describe_and_str():
    assert describe(codes.CKR_DEVICE_ERROR) == "CKR_DEVICE_ERROR (0x00000030)"
    error = CKRError(codes.CKR_PIN_INCORRECT, "C_Login")
    assert (error.ckr, error.function, error.detail, error.name) == (0xA0, "C_Login", "", "CKR_PIN_INCORRECT")
    assert str(error) == "C_Login returned CKR_PIN_INCORRECT (0x000000A0)"


@pytest.mark.parametrize(
    "name, fatal",
    [
        ("CKR_DEVICE_ERROR", True),
        ("CKR_DEVICE_REMOVED", True),
        ("CKR_TOKEN_NOT_PRESENT", True),
        ("CKR_CRYPTOKI_NOT_INITIALIZED", True),
        ("CKR_GENERAL_ERROR", False),
        ("CKR_PIN_INCORRECT", False),
        ("CKR_MECHANISM_INVALID", False),
        ("CKR_OK", False),
        ("CKR_SESSION_HANDLE_INVALID", False),
        ("CKR_VENDOR_DEFINED", False),
    ],
)
def test_is_member_fatal(name, fatal):
    assert is_member_fatal(ckr_value(name)) is fatal


def test_session_lost_is_not_member_fatal():
    assert codes.SESSION_LOST == {
        codes.CKR_SESSION_HANDLE_INVALID,
        codes.CKR_SESSION_CLOSED,
        codes.CKR_USER_NOT_LOGGED_IN,
    }
    assert not codes.SESSION_LOST & codes.MEMBER_FATAL
