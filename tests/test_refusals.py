"""Small holes an attacker (or a careless user) found, each closed with one clear answer:
an unknown wrap mechanism, a short sensitive key's digest, a script whose @default refers to
itself, a read-only home, a regular file where serve's socket goes, init with --module, a
switch that is not 0 or 1."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from conftest import SO_PIN, USER_PIN, no_traceback, requires_softhsm
from support import private_workspace

from ckdemo.codes import CKRError
from ckdemo.model import KeySpec

pytestmark = requires_softhsm

CKA_VALUE, CKM_SHA256, CKM_AES_KEY_WRAP = 0x11, 0x250, 0x2109


@pytest.fixture(scope="module")
def ha(tmp_path_factory):
    home, workspace, _ = private_workspace(tmp_path_factory.mktemp("refusals"), 2)
    group = workspace.groups[0]
    group.ha_init(SO_PIN)
    group.login(1, USER_PIN)
    session = group.open_session()
    yield session
    session.close()


def ckr(call, *args) -> str:
    try:
        call(*args)
    except CKRError as error:
        return error.name
    return "CKR_OK"


def test_a_mechanism_python_pkcs11_cannot_name_is_mechanism_invalid_not_a_crash(ha):
    (key,) = ha.generate(KeySpec("aes", 32, "wrapper", b"", extractable=True))
    for mechanism in (0x2E6D7C6F, 0x80000001):
        assert ckr(ha.wrap_key, key, key, mechanism) == "CKR_MECHANISM_INVALID"
        assert ckr(ha.sign, key, mechanism, b"x") == "CKR_MECHANISM_INVALID"


def test_a_short_sensitive_key_is_not_digested_a_long_one_is(ha):
    (short,) = ha.generate(KeySpec("generic", 2, "short", b"", sensitive=True))
    assert ckr(ha.digest_key, CKM_SHA256, short) == "CKR_KEY_INDIGESTIBLE"
    (readable,) = ha.generate(KeySpec("generic", 2, "short-readable", b"", sensitive=False, extractable=True))
    value = ha.get_attributes(readable, [CKA_VALUE])[CKA_VALUE]
    # not sensitive: its value is readable anyway, so its digest gives nothing away
    assert ha.digest_key(CKM_SHA256, readable) == hashlib.sha256(value).digest()
    (long_key,) = ha.generate(KeySpec("generic", 32, "long", b"", sensitive=True))
    for _ in range(4):  # whichever member answers (replicas read CKA_VALUE_LEN 0)
        assert len(ha.digest_key(CKM_SHA256, long_key)) == 32


def test_a_default_that_refers_to_itself_is_one_line(tmp_path, run_ckdemo, shared_home):
    for script, cycle in (
        ("@default X ${X}\n${X}\n0\n", "${X} -> ${X}"),
        ("@default X ${Y}\n@default Y ${X}\n${X}\n0\n", "${X} -> ${Y} -> ${X}"),
    ):
        path = tmp_path / "loop.txt"
        path.write_text(script)
        done = run_ckdemo(shared_home, "run", str(path))
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"refer back to themselves ({cycle})" in done.stderr
        no_traceback(done.stdout, done.stderr)


def test_serve_never_replaces_a_regular_file_with_its_socket(tmp_path, run_ckdemo, shared_home):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    done = run_ckdemo(shared_home, "serve", "--socket", str(precious))
    assert done.returncode == 2 and "is not a socket" in done.stderr, done.stderr
    assert precious.read_text() == "keep me"


def test_init_says_module_does_not_apply(tmp_path, run_ckdemo):
    home = tmp_path / "home"
    done = run_ckdemo(home, "--module", "/nonexistent.so", "init")
    assert done.returncode == 2 and "--module /nonexistent.so" in done.stderr, done.stderr
    assert not (home / "Chrystoki.conf").exists()


def test_a_switch_that_is_not_0_or_1_is_one_line(tmp_path, provision, run_ckdemo):
    home = provision(tmp_path / "home")
    with open(home / "Chrystoki.conf", "a") as conf:
        conf.write("\nHASynchronize = {\n   ckdemo-ha = nan;\n}\n")
    done = run_ckdemo(home, "hagroup", "show")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().endswith("HASynchronize.ckdemo-ha = 'nan' is not 1 (on) or 0 (off)")


def test_a_read_only_home_is_one_line_per_call_not_an_internal_error(tmp_path, provision, run_ckdemo):
    home = provision(tmp_path / "home")
    mounted = tmp_path / "ro"
    mounted.mkdir()
    bound = subprocess.run(["mount", "--bind", str(home), str(mounted)], capture_output=True)
    if bound.returncode != 0:
        pytest.skip(f"a read-only bind mount needs root: {bound.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mounted)], check=True)
        assert not os.access(mounted, os.W_OK) or os.geteuid() == 0
        done = run_ckdemo(mounted, "run", "-", input=f"51\n5\n{USER_PIN}\n52\n0\n")
        text = done.stdout + done.stderr
        assert "the home must be writable" in text and "CKR_FUNCTION_FAILED" in text, text
        assert "internal error" not in text.lower()
        no_traceback(text)
    finally:
        subprocess.run(["umount", str(mounted)], check=True)


def test_a_refused_set_attribute_value_changes_nothing_on_any_member(ha):
    """SoftHSM2 keeps the attributes it set before the one it refuses; on the HA slot that left
    member 1 with the new label and the others with the old one, and searches alternated."""
    data = ha.create_object({0x0: 0, 0x1: False, 0x3: "before", CKA_VALUE: b"v"})
    assert ckr(ha.set_attributes, data, {0x3: "after", 0x0: 4}) == "CKR_ATTRIBUTE_READ_ONLY"
    for _ in range(4):  # whichever member answers
        assert ha.get_attributes(data, [0x3]) == {0x3: "before"}
        assert ha.find_objects({0x3: "after"}) == []
        assert ha.find_objects({0x3: "before"}) == [data]
    ha.set_attributes(data, {0x3: "after"})
    assert [ha.get_attributes(data, [0x3])[0x3] for _ in range(4)] == ["after"] * 4


def test_verifying_with_an_rsa_mechanism_and_an_ec_key_is_refused_not_a_crash(ha):
    """SoftHSM2 2.6.1 accepts C_VerifyInit(CKM_SHA256_RSA_PKCS) with an EC key and its C_Verify
    then kills the process: here, the process running this test."""
    public, private = ha.generate(KeySpec("ec", "P-256", "ec-verify", b""))
    signature = ha.sign(private, 0x1041, b"d" * 32)
    assert ckr(ha.verify, public, 0x40, b"data", signature) == "CKR_KEY_TYPE_INCONSISTENT"
    assert ckr(ha.verify, public, 0x1041, b"d" * 32, signature) == "CKR_OK"


def test_an_so_refused_a_private_key_is_an_answer_not_every_member_failing(tmp_path):
    """Differential test: SO login, C_GenerateKey of a private token key. One token answers
    CKR_USER_NOT_LOGGED_IN; the HA slot took it for members that forgot their login, failed
    every member and answered CKR_DEVICE_ERROR to every application until a recovery."""
    home, workspace, _ = private_workspace(tmp_path, 2)
    group = workspace.groups[0]
    group.ha_init(SO_PIN)
    session = group.open_session()
    session.login(0, SO_PIN)
    assert ckr(session.generate, KeySpec("aes", 32, "so-key", b"")) == "CKR_USER_NOT_LOGGED_IN"
    assert all(member.active for member in group.members), group.members
    assert len(session.generate_random(8)) == 8
    session.logout()
    session.close()


def test_a_key_a_member_will_not_digest_leaves_no_digest_running_on_the_shared_session(ha):
    """SoftHSM2 2.6.1 leaves its digest running after refusing a C_DigestKey
    (CKR_KEY_INDIGESTIBLE: only secret keys are digested): the member session, which every
    application of the HA slot shares, then answered CKR_OPERATION_ACTIVE to every search, and
    the member fell out of the group at its next recovery (seen in the differential test)."""
    keys = ha.generate(KeySpec("ec", "P-256", "not-digested", b"", sensitive=False, extractable=True))
    keys += ha.generate(KeySpec("rsa", 1024, "not-digested", b"", sensitive=False, extractable=True))
    for key in keys:  # an EC public key is digested by SoftHSM2, the others are refused
        answers = {ckr(ha.digest_parts, CKM_SHA256, [b"prefix", key]) for _ in range(3)}  # each member
        answers |= {ckr(ha.digest_key, CKM_SHA256, key) for _ in range(3)}
        assert len(answers) == 1 and answers <= {"CKR_OK", "CKR_KEY_INDIGESTIBLE"}, answers
    for _ in range(6):
        assert len(ha.find_objects({0x3: "not-digested"})) == 4  # CKA_LABEL
        assert len(ha.digest(CKM_SHA256, b"abc")) == 32
    assert all(member.active for member in ha.group.members)
