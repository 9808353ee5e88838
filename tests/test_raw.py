"""The ctypes escape hatch against a real SoftHSM2, cross-checked with python-pkcs11 and pkcs11-tool.

Each test module gets its own copy of libsofthsm2.so (an independent module instance) and its own
SoftHSM config; each test gets a fresh token, made by softhsm2-util before a re-initialise.
"""

from __future__ import annotations

import ctypes
import itertools
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass

from ckdemo.codes import CKRError
from ckdemo.members.raw import RawModule
from ckdemo.model import CK_UNAVAILABLE_INFORMATION, CKU_SO, CKU_USER

SOFTHSM_LIB = "/usr/lib/softhsm/libsofthsm2.so"
USER_PIN, SO_PIN = "1234", "5678"

# Return codes from the spec, named here so the tests do not depend on the codes table.
CKR_NO_EVENT = 0x8
CKR_OBJECT_HANDLE_INVALID = 0x82
CKR_PIN_INCORRECT = 0xA0
CKR_SESSION_HANDLE_INVALID = 0xB3
CKM_AES_CBC_PAD = 0x1085
CKF_ENCRYPT, CKF_DECRYPT, CKF_WRAP, CKF_UNWRAP = 0x100, 0x200, 0x20000, 0x40000

pytestmark = pytest.mark.skipif(shutil.which("softhsm2-util") is None, reason="SoftHSM2 missing")


@dataclass
class SoftHSM:
    path: str
    lib: object
    raw: RawModule

    def new_token(self, label: str):
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                USER_PIN,
                "--so-pin",
                SO_PIN,
            ],
            check=True,
            capture_output=True,
        )
        self.lib.reinitialize()  # SoftHSM scans its token directory only in C_Initialize
        return self.lib.get_token(token_label=label)


_token_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n")
    copy = root / "libsofthsm2-test-raw.so"
    shutil.copy(SOFTHSM_LIB, copy)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SOFTHSM2_CONF", str(conf))  # read at every C_Initialize: keep it set
        lib = pkcs11.lib(str(copy))
        yield SoftHSM(path=str(copy), lib=lib, raw=RawModule(str(copy)))
        pkcs11.unload(str(copy))


@pytest.fixture
def token(softhsm):
    return softhsm.new_token(f"raw-{next(_token_numbers)}")


@pytest.fixture
def raw(softhsm):
    return softhsm.raw


def slot_of(token) -> int:
    return token.slot.slot_id


def pkcs11_tool(softhsm, *args: str) -> str:
    return subprocess.run(
        ["pkcs11-tool", "--module", softhsm.path, *args], check=True, capture_output=True, text=True
    ).stdout


# --- the same module instance -------------------------------------------------------------


def test_session_opened_by_python_pkcs11_is_visible_through_ctypes(token, raw):
    with token.open(rw=True) as session:
        info = raw.get_session_info(session.handle)
        assert info.state_name == "CKS_RW_PUBLIC_SESSION"
        assert info.slot_id == slot_of(token)
        assert info.flag_names == ("CKF_RW_SESSION", "CKF_SERIAL_SESSION")


def test_refuses_a_library_python_pkcs11_has_not_loaded(tmp_path):
    # A fresh dlopen would be a new, uninitialised instance; RTLD_NOLOAD refuses instead.
    other = tmp_path / "libsofthsm2-never-loaded.so"
    shutil.copy(SOFTHSM_LIB, other)
    with pytest.raises(OSError, match="not loaded"):
        RawModule(str(other))


def test_default_ctypes_mode_reaches_the_same_handle(softhsm):
    plain = ctypes.CDLL(softhsm.path)  # RTLD_NOW | RTLD_LOCAL: dlopen still dedupes by file
    assert plain._handle == softhsm.raw._dll._handle


def test_login_on_an_open_session_unlocks_private_objects(token, raw):
    with token.open(rw=True) as session:
        raw.login(session.handle, CKU_USER, USER_PIN)
        assert raw.get_session_info(session.handle).state_name == "CKS_RW_USER_FUNCTIONS"
        key = session.generate_key(
            KeyType.AES, 256, label="private-aes", store=True, template={Attribute.PRIVATE: True}
        )
        assert session.get_key(label="private-aes").handle == key.handle

        raw.logout(session.handle)
        assert raw.get_session_info(session.handle).state_name == "CKS_RW_PUBLIC_SESSION"
        with pytest.raises(pkcs11.NoSuchKey):
            session.get_key(label="private-aes")


def test_wrong_pin_is_pin_incorrect_without_the_pin_in_the_text(token, raw):
    with token.open() as session:
        with pytest.raises(CKRError) as caught:
            raw.login(session.handle, CKU_USER, "9999")
        assert caught.value.ckr == CKR_PIN_INCORRECT
        assert caught.value.name == "CKR_PIN_INCORRECT"
        assert caught.value.function == "C_Login"
        assert "9999" not in str(caught.value)
        assert raw.get_session_info(session.handle).state_name == "CKS_RO_PUBLIC_SESSION"


def test_set_pin_then_only_the_new_pin_logs_in(token, raw):
    with token.open(rw=True) as session:
        raw.login(session.handle, CKU_USER, USER_PIN)
        raw.set_pin(session.handle, USER_PIN, "4321")
        raw.logout(session.handle)
        with pytest.raises(CKRError) as caught:
            raw.login(session.handle, CKU_USER, USER_PIN)
        assert caught.value.ckr == CKR_PIN_INCORRECT
        raw.login(session.handle, CKU_USER, "4321")
        assert raw.get_session_info(session.handle).state_name == "CKS_RW_USER_FUNCTIONS"
        raw.logout(session.handle)


def test_init_pin_from_an_so_session(token, raw):
    with token.open(rw=True) as session:
        raw.login(session.handle, CKU_SO, SO_PIN)
        assert raw.get_session_info(session.handle).state_name == "CKS_RW_SO_FUNCTIONS"
        raw.init_pin(session.handle, "2468")
        raw.logout(session.handle)
        raw.login(session.handle, CKU_USER, "2468")
        assert raw.get_session_info(session.handle).state_name == "CKS_RW_USER_FUNCTIONS"
        raw.logout(session.handle)


def test_init_token_on_the_free_slot(softhsm, token, raw):
    free = [s for s in raw.get_slot_list(True) if not raw.get_token_info(s).initialized]
    assert len(free) == 1
    with pytest.raises(ValueError):
        raw.init_token(free[0], SO_PIN, "x" * 33)

    raw.init_token(free[0], SO_PIN, "Fresh from C_InitToken")
    softhsm.lib.reinitialize()

    fresh = softhsm.lib.get_token(token_label="Fresh from C_InitToken")
    info = raw.get_token_info(slot_of(fresh))
    assert info.label == "Fresh from C_InitToken"
    assert "CKF_TOKEN_INITIALIZED" in info.flag_names
    assert "CKF_USER_PIN_INITIALIZED" not in info.flag_names
    with fresh.open(rw=True, so_pin=SO_PIN) as session:
        assert raw.get_session_info(session.handle).state_name == "CKS_RW_SO_FUNCTIONS"


# --- information calls, checked against an independent client ---------------------------------

PKCS11_TOOL_TOKEN_FLAGS = {
    "rng": 0x1,
    "readonly": 0x2,
    "login required": 0x4,
    "PIN initialized": 0x8,
    "PIN pad present": 0x100,
    "token initialized": 0x400,
    "user PIN count low": 0x10000,
    "final user PIN try": 0x20000,
    "user PIN locked": 0x40000,
    "user PIN to be changed": 0x80000,
    "SO PIN count low": 0x100000,
    "final SO PIN try": 0x200000,
    "SO PIN locked": 0x400000,
    "SO PIN to be changed": 0x800000,
}

PKCS11_TOOL_MECHANISM_FLAGS = {
    "hw": 0x1,
    "encrypt": 0x100,
    "decrypt": 0x200,
    "digest": 0x400,
    "sign": 0x800,
    "sign_recover": 0x1000,
    "verify": 0x2000,
    "verify_recover": 0x4000,
    "generate": 0x8000,
    "generate_key_pair": 0x10000,
    "wrap": 0x20000,
    "unwrap": 0x40000,
    "derive": 0x80000,
    "EC F_P": 0x100000,
    "EC F_2M": 0x200000,
    "EC parameters": 0x400000,
    "EC OID": 0x800000,
    "EC uncompressed": 0x1000000,
    "EC compressed": 0x2000000,
}


def flags_from_names(names: list[str], table: dict[str, int]) -> int:
    flags = 0
    for name in names:
        other = re.fullmatch(r"other flags=0x([0-9a-f]+)", name)
        flags |= int(other.group(1), 16) if other else table[name]
    return flags


def listed_token_slots(softhsm) -> dict[int, dict[str, str]]:
    """`pkcs11-tool --list-token-slots`, as {slot id: {field: value}}."""
    slots, fields = {}, None
    for line in pkcs11_tool(softhsm, "--list-token-slots").splitlines():
        header = re.match(r"Slot \d+ \(0x([0-9a-f]+)\): (.*)", line)
        if header:
            fields = slots[int(header.group(1), 16)] = {"description": header.group(2).strip()}
        elif fields is not None and ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return slots


def test_token_info_matches_pkcs11_tool(softhsm, token, raw):
    info = raw.get_token_info(slot_of(token))
    listed = listed_token_slots(softhsm)[slot_of(token)]

    assert info.label == listed["token label"] == token.label
    assert info.manufacturer_id == listed["token manufacturer"]
    assert info.model == listed["token model"]
    assert info.serial_number == listed["serial num"] == token.serial.decode()
    assert info.flags == flags_from_names(listed["token flags"].split(", "), PKCS11_TOOL_TOKEN_FLAGS)
    assert {"CKF_RNG", "CKF_LOGIN_REQUIRED", "CKF_USER_PIN_INITIALIZED", "CKF_TOKEN_INITIALIZED"} <= set(
        info.flag_names
    )
    assert f"{info.min_pin_len}/{info.max_pin_len}" == listed["pin min/max"]
    assert "%d.%d" % info.hardware_version == listed["hardware version"]
    assert "%d.%d" % info.firmware_version == listed["firmware version"]


def test_token_info_counts_are_full_width_ulongs_and_utc_time_is_now(token, raw):
    info = raw.get_token_info(slot_of(token))
    # SoftHSM reports no session counts or memory: the all-ones CK_ULONG proves 64-bit fields.
    assert info.session_count == info.rw_session_count == CK_UNAVAILABLE_INFORMATION
    assert info.free_private_memory == CK_UNAVAILABLE_INFORMATION
    assert len(info.utc_time) == 16
    stamp = datetime.strptime(info.utc_time[:14], "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    assert abs(stamp - datetime.now(timezone.utc)) < timedelta(minutes=5)


def test_slot_info_and_slot_list(softhsm, token, raw):
    listed = listed_token_slots(softhsm)
    assert raw.get_slot_list(True) == list(listed)
    assert raw.get_slot_list(True) == [s.slot_id for s in softhsm.lib.get_slots(token_present=True)]
    info = raw.get_slot_info(slot_of(token))
    assert info.description == listed[slot_of(token)]["description"] == token.slot.slot_description
    assert info.manufacturer_id == token.slot.manufacturer_id
    assert info.flag_names == ("CKF_TOKEN_PRESENT",) and info.token_present


def test_library_info_matches_python_pkcs11(softhsm, raw):
    info = raw.get_info()
    assert info.manufacturer_id == softhsm.lib.manufacturer_id
    assert info.library_description == softhsm.lib.library_description
    assert info.cryptoki_version == softhsm.lib.cryptoki_version == (2, 40)
    assert info.library_version == softhsm.lib.library_version
    assert info.path == softhsm.path


def test_mechanism_list_and_info_match_pkcs11_tool(softhsm, token, raw):
    mechanisms = raw.get_mechanism_list(slot_of(token))
    assert set(mechanisms) == {int(m) for m in token.slot.get_mechanisms()}
    lines = pkcs11_tool(softhsm, "--slot", str(slot_of(token)), "-M").splitlines()
    lines = lines[lines.index("Supported mechanisms:") + 1 :]
    assert len(lines) == len(mechanisms)  # pkcs11-tool prints C_GetMechanismList order

    for mechanism, line in zip(mechanisms, lines):
        name, *parts = line.strip().split(", ")
        if name.startswith("mechtype-0x"):
            assert int(name[len("mechtype-") :], 16) == mechanism
        info = raw.get_mechanism_info(slot_of(token), mechanism)
        key_size = [p for p in parts if p.startswith("keySize=")]
        flags = [p for p in parts if not p.startswith("keySize=")]
        expected_sizes = (
            (key_size[0] if key_size else "keySize={0,0}").replace("{,", "{0,").replace(",}", ",0}")
        )
        assert f"keySize={{{info.min_key_size},{info.max_key_size}}}" == expected_sizes, name
        assert info.flags == flags_from_names(flags, PKCS11_TOOL_MECHANISM_FLAGS), name


def test_aes_cbc_pad_mechanism_info(token, raw):
    info = raw.get_mechanism_info(slot_of(token), CKM_AES_CBC_PAD)
    assert (info.mechanism, info.name) == (CKM_AES_CBC_PAD, "")
    assert (info.min_key_size, info.max_key_size) == (16, 32)
    # SoftHSM 2.6.1 advertises encrypt/decrypt only for CBC-PAD (pkcs11-tool -M agrees),
    # although the spec allows wrap/unwrap with it.
    assert info.flags == CKF_ENCRYPT | CKF_DECRYPT
    assert info.flag_names == ("CKF_ENCRYPT", "CKF_DECRYPT")


def test_ec_mechanism_flag_names(token, raw):
    info = raw.get_mechanism_info(slot_of(token), 0x1041)  # CKM_ECDSA
    assert info.flag_names == (
        "CKF_SIGN",
        "CKF_VERIFY",
        "CKF_EC_F_P",
        "CKF_EC_NAMEDCURVE",
        "CKF_EC_UNCOMPRESS",
    )


# --- sessions and objects --------------------------------------------------------------------


def test_get_object_size(token, raw):
    with token.open(rw=True) as session:
        data = session.create_object(
            {
                Attribute.CLASS: ObjectClass.DATA,
                Attribute.TOKEN: False,
                Attribute.PRIVATE: False,
                Attribute.VALUE: b"x" * 100,
            }
        )
        # SoftHSM answers every object with CK_UNAVAILABLE_INFORMATION (a valid answer).
        assert raw.get_object_size(session.handle, data.handle) == CK_UNAVAILABLE_INFORMATION
        with pytest.raises(CKRError) as caught:
            raw.get_object_size(session.handle, data.handle + 1000)
        assert (caught.value.ckr, caught.value.function) == (CKR_OBJECT_HANDLE_INVALID, "C_GetObjectSize")


def test_open_and_close_session(token, raw):
    handle = raw.open_session(slot_of(token), rw=False)
    info = raw.get_session_info(handle)
    assert (info.state_name, info.flag_names) == ("CKS_RO_PUBLIC_SESSION", ("CKF_SERIAL_SESSION",))
    assert len(raw.generate_random(handle, 32)) == 32
    assert raw.generate_random(handle, 32) != raw.generate_random(handle, 32)
    raw.close_session(handle)
    with pytest.raises(CKRError) as caught:
        raw.get_session_info(handle)
    assert (caught.value.ckr, caught.value.function) == (CKR_SESSION_HANDLE_INVALID, "C_GetSessionInfo")


def test_close_all_sessions(token, raw):
    sessions = [token.open(), token.open(rw=True)]  # closed behind python-pkcs11's back
    raw.close_all_sessions(slot_of(token))
    for session in sessions:
        with pytest.raises(CKRError) as caught:
            raw.get_session_info(session.handle)
        assert caught.value.ckr == CKR_SESSION_HANDLE_INVALID


def test_wait_for_slot_event_without_blocking(raw):
    with pytest.raises(CKRError) as caught:
        raw.wait_for_slot_event(block=False)
    assert (caught.value.ckr, caught.value.function) == (CKR_NO_EVENT, "C_WaitForSlotEvent")


def test_has_symbol(raw):
    assert raw.has_symbol("C_Sign")
    assert raw.has_symbol("C_GetFunctionList")
    assert not raw.has_symbol("CA_GetHAState")  # a Luna extension
