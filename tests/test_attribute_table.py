"""One table of CKA_* types checks every template before a member library sees it.

In this very process, on a real SoftHSM2 member through the slot protocol: templates that once
crashed python-pkcs11 natively (a type it has no packer for, an empty date, a nested template in
a search) must come back as the token's answer or a CKR, never kill the interpreter. A native
crash here ends the whole pytest run, which is the point: it cannot pass by accident.
"""

from __future__ import annotations

import datetime

import pytest

from conftest import USER_PIN, requires_softhsm
from support import private_workspace

from ckdemo import attribute_table as table
from ckdemo.codes import CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_VALUE_INVALID, CKRError
from ckdemo.rpc.attributes import Attribute
from ckdemo.rpc.values import from_wire, template_from_wire

pytestmark = requires_softhsm

CKA_CLASS, CKA_TOKEN, CKA_LABEL, CKA_VALUE, CKA_START_DATE = 0x0, 0x1, 0x3, 0x11, 0x110
CKA_DESTROYABLE, CKA_OTP_FORMAT, CKA_UNWRAP_TEMPLATE = 0x172, 0x220, 0x40000212
CKO_DATA, CKU_USER = 0x0, 1
# types python-pkcs11 0.10.1 names but cannot pack (each crashed it natively in a search)
UNPACKABLE = (0x80000000, 0x83, 0x220, 0x482, 0x62A)


# ---- the table alone ---------------------------------------------------------------------------
def test_each_kind_takes_its_values_and_refuses_others_with_value_invalid():
    good = {
        CKA_TOKEN: True,
        CKA_CLASS: 0,
        CKA_LABEL: "é",
        CKA_VALUE: b"",
        CKA_START_DATE: b"",
        0x111: datetime.date(2030, 1, 2),
        CKA_UNWRAP_TEMPLATE: {0x103: True},
        0x40000600: [0x1, 0x40],
        0x80000001: b"vendor",
        0xDEAD: b"unknown",
    }
    assert table.check(dict(good), "C_CreateObject") == good
    for code, bad in (
        (CKA_TOKEN, 1),
        (CKA_CLASS, True),
        (CKA_CLASS, -1),
        (CKA_CLASS, 2**64),
        (CKA_LABEL, b"x"),
        (CKA_LABEL, "\udc80"),
        (CKA_VALUE, "text"),
        (CKA_START_DATE, b"2030"),
        (CKA_UNWRAP_TEMPLATE, {0x103: 1}),
        (0x40000600, [-1]),
        (0x80000001, 5),
        (CKA_VALUE, b"x" * (table.MAX_VALUE_BYTES + 1)),
    ):
        with pytest.raises(CKRError) as refused:
            table.check({code: bad}, "C_CreateObject")
        assert refused.value.ckr == CKR_ATTRIBUTE_VALUE_INVALID, (hex(code), bad)
    with pytest.raises(CKRError) as refused:
        table.check({-5: b""}, "C_FindObjectsInit")
    assert refused.value.ckr == CKR_ATTRIBUTE_TYPE_INVALID
    nested = {}
    for _ in range(table.MAX_NESTING + 1):
        nested = {CKA_UNWRAP_TEMPLATE: nested}
    with pytest.raises(CKRError):
        table.check(nested, "C_CreateObject")


def test_wire_values_of_the_wrong_size_are_value_invalid():
    assert from_wire(Attribute(CKA_DESTROYABLE, b"\x01"), "f") is True  # 0.24.1 sends it as bytes
    assert from_wire(Attribute(CKA_OTP_FORMAT, (7).to_bytes(8, "little")), "f") == 7
    assert from_wire(Attribute(CKA_START_DATE, b"20301231"), "f") == datetime.date(2030, 12, 31)
    assert from_wire(Attribute(CKA_START_DATE, b""), "f") == b""
    assert from_wire(Attribute(0x80000000, b"x"), "f") == b"x"
    for wire in (
        Attribute(CKA_TOKEN, 1, 5),
        Attribute(CKA_CLASS, 0, 4),
        Attribute(CKA_DESTROYABLE, b"\x01\x02"),
        Attribute(CKA_OTP_FORMAT, b"x"),
        Attribute(CKA_START_DATE, b"2030123"),
        Attribute(CKA_START_DATE, b"20301332"),
        Attribute(CKA_LABEL, b"\xff"),
        Attribute(CKA_VALUE, b"abc", 100),
        Attribute(CKA_TOKEN, None, -1),
    ):
        with pytest.raises(CKRError) as refused:
            template_from_wire([wire], "C_CreateObject")
        assert refused.value.ckr == CKR_ATTRIBUTE_VALUE_INVALID, wire


# ---- on a real member, in this process ---------------------------------------------------------
@pytest.fixture(scope="module")
def member_session(tmp_path_factory):
    home, workspace, library = private_workspace(tmp_path_factory.mktemp("table"), 1)
    slot = next(s for s in workspace.slots if s not in workspace.groups)
    session = slot.open_session(rw=True)
    session.login(CKU_USER, USER_PIN)
    yield session
    session.close()


def answer(call, *args):
    try:
        return call(*args)
    except CKRError as error:
        return error.name


def test_templates_python_pkcs11_cannot_pack_reach_the_token_and_come_back_as_its_answer(member_session):
    session = member_session
    data = session.create_object({CKA_CLASS: CKO_DATA, CKA_TOKEN: False, CKA_LABEL: "table"})
    for code in UNPACKABLE:
        value = (7).to_bytes(8, "little") if code == CKA_OTP_FORMAT else b"x"
        typed = from_wire(Attribute(code, value), "C_FindObjectsInit")
        assert session.find_objects({code: typed}) == []  # SoftHSM2: no object has it
        assert (
            answer(session.create_object, {CKA_CLASS: CKO_DATA, CKA_TOKEN: False, code: typed})
            == "CKR_ATTRIBUTE_TYPE_INVALID"
        )
        assert answer(session.copy_object, data, {code: typed}) == "CKR_ATTRIBUTE_TYPE_INVALID"
        assert answer(session.set_attributes, data, {code: typed}) == "CKR_ATTRIBUTE_TYPE_INVALID"
    assert session.find_objects({CKA_UNWRAP_TEMPLATE: {0x103: True}}) == []
    assert answer(session.set_attributes, data, {CKA_START_DATE: b""}) == "CKR_ATTRIBUTE_TYPE_INVALID"
    assert session.find_objects({CKA_LABEL: "table"}) == [data]


def test_a_value_the_table_refuses_stops_the_whole_set_before_the_token(member_session):
    """The table is asked first, so nothing of the template reaches the token. (What the token
    itself refuses is its own affair: SoftHSM2 2.6.1 keeps the attributes it set before the one
    it refused, as a single SoftHSM2 token does for any application.)"""
    session = member_session
    data = session.create_object(
        {CKA_CLASS: CKO_DATA, CKA_TOKEN: False, CKA_LABEL: "before", CKA_VALUE: b"v"}
    )
    assert (
        answer(session.set_attributes, data, {CKA_LABEL: "after", CKA_DESTROYABLE: 5})
        == "CKR_ATTRIBUTE_VALUE_INVALID"
    )
    assert session.read_attribute(data, CKA_LABEL) == "before"
    session.set_attributes(data, {CKA_LABEL: "after"})
    assert session.read_attribute(data, CKA_LABEL) == "after"


def test_a_verify_on_a_member_whose_sessions_are_gone_is_a_member_failure(tmp_path):
    """A member failed (its sessions closed) before the HA slot's next call to it: C_Verify with
    a key whose type that member session had not read yet read it through python-pkcs11 outside
    the member's call guard, and the lost session came out as python-pkcs11's own exception: an
    internal error, CKR_GENERAL_ERROR to the application, where the HA slot moves a member
    failure on (differential test, seed 2200049: 'C_Verify: CKR_OK vs CKR_GENERAL_ERROR')."""
    from ckdemo.codes import CKR_DEVICE_ERROR
    from ckdemo.model import KeySpec

    ECDSA = 0x1041
    _, workspace, _ = private_workspace(tmp_path, 1)
    slot = next(s for s in workspace.slots if s not in workspace.groups)
    session = slot.open_session(rw=True)
    session.login(CKU_USER, USER_PIN)
    public, private = session.generate(KeySpec("ec", "P-256", "verify-later", b"\x7a", token=False))
    signature = session.sign(private, ECDSA, b"v" * 32)
    slot.fail()  # every session of the member is gone, as when it dies
    try:
        with pytest.raises(CKRError) as raised:
            session.verify(public, ECDSA, b"v" * 32, signature)
        assert raised.value.ckr == CKR_DEVICE_ERROR
    finally:
        slot.restore()
