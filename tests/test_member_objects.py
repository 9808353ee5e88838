"""A member session names objects by handle and reads them through ctypes: python-pkcs11's own
objects (ten attributes read and a class made for each object it lists) are made only for the
operations only python-pkcs11 makes, one object at a time. A recovery comparing 10,000 keys
listed every one of them through python-pkcs11 and stalled every thread of the process in the
garbage collector (docs/PERFORMANCE.md), on real SoftHSM2 tokens here."""

from __future__ import annotations

import pkcs11
import pytest

from ckdemo.codes import CKR_OBJECT_HANDLE_INVALID, CKRError
from ckdemo.model import (
    CKA_CLASS,
    CKA_ENCRYPT,
    CKA_KEY_TYPE,
    CKA_VALUE_LEN,
    CKK_AES,
    CKA_ID,
    CKA_LABEL,
    CKA_PRIVATE,
    CKA_TOKEN,
    CKA_VALUE,
    CKO_DATA,
    CKO_SECRET_KEY,
    CKU_USER,
    KeySpec,
)
from conftest import USER_PIN, requires_softhsm
from support import private_workspace

pytestmark = requires_softhsm

CKM_AES_CBC_PAD = 0x1085
COUNT = 60


@pytest.fixture(scope="module")
def member_session(tmp_path_factory):
    _, workspace, _ = private_workspace(tmp_path_factory.mktemp("objects"), 1)
    slot = workspace.groups[0].members[0].slot
    session = slot.open_session(rw=True)
    session.login(CKU_USER, USER_PIN)
    yield session
    session.close()


def python_pkcs11_objects() -> int:
    """Classes python-pkcs11 made for the objects it holds (one per object listed)."""
    return len(pkcs11._pkcs11.Object.__subclasses__())


def test_searches_and_reads_make_no_python_pkcs11_object(member_session):
    made = [
        member_session.create_object(
            {
                CKA_CLASS: CKO_SECRET_KEY,
                CKA_KEY_TYPE: CKK_AES,
                CKA_TOKEN: False,
                CKA_PRIVATE: True,
                CKA_ENCRYPT: True,
                CKA_LABEL: f"k{n}",
                CKA_ID: b"k%d" % n,
                CKA_VALUE: bytes([n]) * 16,
            }
        )
        for n in range(COUNT)
    ]
    before = python_pkcs11_objects()
    found = member_session.find_objects({CKA_CLASS: CKO_SECRET_KEY})
    assert set(made) <= set(found)
    names = [member_session.get_attributes(handle, [CKA_LABEL, CKA_ID, CKA_VALUE_LEN]) for handle in made]
    assert names == [{CKA_LABEL: f"k{n}", CKA_ID: b"k%d" % n, CKA_VALUE_LEN: 16} for n in range(COUNT)]
    assert [member_session.read_attribute(handle, CKA_LABEL) for handle in made[:3]] == ["k0", "k1", "k2"]
    copy = member_session.copy_object(made[0], {CKA_LABEL: "copied"})
    member_session.set_attributes(copy, {CKA_LABEL: "renamed"})
    assert member_session.get_attributes(copy, [CKA_LABEL, CKA_ID]) == {CKA_LABEL: "renamed", CKA_ID: b"k0"}
    data = member_session.create_object({CKA_CLASS: CKO_DATA, CKA_TOKEN: False, CKA_VALUE: b"v"})
    assert member_session.get_attributes(data, [CKA_VALUE, CKA_ID]) == {CKA_VALUE: b"v"}  # (no CKA_ID)
    assert python_pkcs11_objects() == before


def test_an_operation_makes_the_one_object_it_needs(member_session):
    key = member_session.generate(KeySpec("aes", 16, "one-key", b"one-key"))[0]
    for n in range(COUNT):  # keys of the same class a careless search would make objects of
        member_session.generate(KeySpec("aes", 16, f"other-{n}", b"other-%d" % n))
    before = python_pkcs11_objects()
    iv = bytes(16)
    sealed = member_session.encrypt(key, CKM_AES_CBC_PAD, b"attack at dawn", iv)
    assert member_session.decrypt(key, CKM_AES_CBC_PAD, sealed, iv) == b"attack at dawn"
    assert python_pkcs11_objects() - before <= 1  # its own (a key with its ID and label: one)
    assert member_session.get_attributes(key, [CKA_CLASS])[CKA_CLASS] == CKO_SECRET_KEY


def test_a_handle_the_session_cannot_see_is_refused_by_name(member_session):
    for call in (
        lambda: member_session.get_attributes(0x7FFFFFF0, [CKA_LABEL]),
        lambda: member_session.copy_object(0x7FFFFFF0, {}),
        lambda: member_session.encrypt(0x7FFFFFF0, CKM_AES_CBC_PAD, b"x" * 16, bytes(16)),
        lambda: member_session.set_attributes(0x7FFFFFF0, {CKA_LABEL: "x"}),
    ):
        with pytest.raises(CKRError) as refused:
            call()
        assert refused.value.ckr == CKR_OBJECT_HANDLE_INVALID
