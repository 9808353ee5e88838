"""OBJECT MANAGEMENT FUNCTIONS 20-27 on a physical slot and on the HA virtual slot.

Each test types a script into `ckdemo --home H run -`, then reads the tokens back with pkcs11-tool,
an independent client: what 20/21/25/22 changed must be on the token (on every member, for the HA
slot), and what 26/27 show must be what pkcs11-tool shows.

Handles: SoftHSM numbers sessions and objects from one counter per process, so the first session
of a run is handle 1 and the objects a run creates or finds next are 2, 3, ...; the HA slot
draws its virtual sessions and objects from one process-wide counter (ckdemo.ha.handles), above
the physical ones. Each test checks the handles the menu printed, so a script never works on an
object it did not mean.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key

from conftest import MEMBERS, SOFTHSM_LIB, USER_PIN, requires_softhsm, softhsm_env
from support import DOMAIN_KEY_LABEL, DOMAIN_KEYS, GROUP_LABELS, OK, statuses, summary

from ckdemo.ha.handles import VIRTUAL_HANDLE_BASE

pytestmark = requires_softhsm

AES_VALUE = "2b7e151628aed2a6abf7158809cf4f3c"  # FIPS-197 / SP 800-38A AES-128 key

# session 1 on slot#1 (member1), logged in as Crypto User
SLOT1_LOGIN = """\
    1
    1
    y
    3
    1
    1
    ${CKDEMO_USER_PIN}
    """
# the HA slot's session and first objects in a run: one process-wide counter of virtual handles
HA_SESSION, HA_FIRST, HA_SECOND = (VIRTUAL_HANDLE_BASE + n for n in (1, 2, 3))
# HA Init and HA Login on slot#5 (the HA Virtual Card Slot of a default home), then HA_SESSION there
HA_LOGIN = """\
    50
    5
    ${CKDEMO_SO_PIN}
    51
    5
    ${CKDEMO_USER_PIN}
    1
    5
    y
    """
QUIT = "0\n"


# ---------------------------------------------------------------- reading the transcript


def created(transcript: str) -> list[int]:
    """Handles printed by 20 Create object and 21 Copy object, in order."""
    return [
        int(h)
        for h in re.findall(
            r"^(?:Object created: handle|Object \d+ copied: new handle) (\d+)$", transcript, re.MULTILINE
        )
    ]


def found(transcript: str) -> list[list[tuple[int, str, str, str, str]]]:
    """Every 26 Find object table: [(handle, class, key type, label, id), ...] per search."""
    tables = []
    for block in re.findall(
        r"^Handle +Class +Key type +Label +ID\n-[- ]+\n(.*?)^\d+ object\(s\) found\.$",
        transcript,
        re.MULTILINE | re.DOTALL,
    ):
        rows = []
        for line in block.splitlines():
            handle, cls, key_type, label, key_id = re.fullmatch(
                r"(\d+)\s{2,}(CKO_\w+)\s{2,}(\S+)\s{2,}(.+?)\s{2,}(\S+)", line
            ).groups()
            if not label.startswith(GROUP_LABELS):  # the HA group's own objects on every member
                rows.append((int(handle), cls, key_type, label, key_id))
        tables.append(rows)
    return tables


def displayed(transcript: str) -> list[dict[str, str]]:
    """Every 27 Display Object table as {attribute: value}; wrapped hex lines joined."""
    tables = []
    for block in re.findall(
        r"^Attribute +Value\n-[- ]+\n(.*?)(?=^Status: )", transcript, re.MULTILINE | re.DOTALL
    ):
        rows: dict[str, str] = {}
        name = ""
        for line in block.splitlines():
            if line.startswith("CKA_"):
                name, _, value = line.partition(" ")
                rows[name] = value.strip()
            elif line.strip():  # a long byte string goes on over several lines
                rows[name] += line.strip()
        tables.append(rows)
    return tables


# ---------------------------------------------------------------- reading the token (pkcs11-tool)

TOOL_CLASSES = {
    "Data object": "CKO_DATA",
    "Secret Key Object": "CKO_SECRET_KEY",
    "Public Key Object": "CKO_PUBLIC_KEY",
    "Private Key Object": "CKO_PRIVATE_KEY",
    "Certificate Object": "CKO_CERTIFICATE",
}


def tool_objects(independent, home, token: str) -> list[dict[str, str]]:
    """pkcs11-tool --list-objects as the user on one token: one dict per object, with `class`
    (CKO_ name), `header` (e.g. 'AES length 16'), label, ID, Access, VALUE, ... as printed."""
    done = independent(home, "--token-label", token, "--login", "--pin", USER_PIN, "--list-objects")
    assert done.returncode == 0, done.stderr
    objects = []
    for line in done.stdout.splitlines():
        head = re.match(
            r"^(Data object|Secret Key Object|Public Key Object|Private Key Object|"
            r"Certificate Object)[; ]*(.*)$",
            line,
        )
        if head:
            objects.append({"class": TOOL_CLASSES[head.group(1)], "header": head.group(2).strip()})
            continue
        field = re.match(r"^\s+([\w ]+?):\s+(.*)$", line)
        if field and objects:
            objects[-1][field.group(1).strip()] = field.group(2).strip().strip("'")
    return [o for o in objects if not o.get("label", "").startswith(GROUP_LABELS)]


def tool_identities(independent, home, token: str) -> set[tuple[str, str, str]]:
    """(class, label, id) of every object pkcs11-tool sees; a missing ID shows as '(empty)',
    as 26 Find object shows it."""
    return {
        (o["class"], o.get("label", ""), o.get("ID", "(empty)"))
        for o in tool_objects(independent, home, token)
    }


def tool_read_bytes(home, token: str, kind: str, label: str) -> bytes:
    """--read-object as raw bytes (the `independent` fixture reads text)."""
    done = subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            SOFTHSM_LIB,
            "--token-label",
            token,
            "--login",
            "--pin",
            USER_PIN,
            "--read-object",
            "--type",
            kind,
            "--label",
            label,
        ],
        capture_output=True,
        env=softhsm_env(home),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# ---------------------------------------------------------------- 20 Create object (slot#1)


def test_create_a_data_object_and_an_aes_key_from_typed_values(menu, home, independent):
    code, out = menu(
        home,
        SLOT1_LOGIN,
        f"""\
        20
        1
        1
        CKA_LABEL=qa-notes
        CKA_TOKEN=true
        CKA_APPLICATION=qa-app
        CKA_VALUE=release 4 notes
        .
        20
        1
        2
        CKA_KEY_TYPE=aes
        CKA_LABEL=qa-aes
        CKA_ID=hex:0102
        CKA_TOKEN=true
        CKA_VALUE=hex:{AES_VALUE}
        CKA_SENSITIVE=true
        CKA_ENCRYPT=true
        CKA_DECRYPT=true
        .
        # a session object: gone with the process, never on the token
        20
        1
        1
        CKA_LABEL=qa-session-only
        CKA_VALUE=0x00ff
        .
        """,
        QUIT,
    )
    assert code == 0, out
    assert created(out) == [2, 3, 4]
    assert statuses(out) == [OK] * 5

    objects = tool_objects(independent, home, "member1")
    assert {(o["class"], o["label"]) for o in objects} == {
        ("CKO_DATA", "qa-notes"),
        ("CKO_SECRET_KEY", "qa-aes"),
    }
    data = next(o for o in objects if o["class"] == "CKO_DATA")
    assert data["application"] == "qa-app"
    assert tool_read_bytes(home, "member1", "data", "qa-notes") == b"release 4 notes"
    key = next(o for o in objects if o["class"] == "CKO_SECRET_KEY")
    assert key["header"] == "AES length 16"
    assert key["ID"] == "0102"
    assert "sensitive" in key["Access"].split(", ")
    assert "VALUE" not in key  # a sensitive value does not leave the token
    # the other members were not touched
    assert tool_objects(independent, home, "member2") == []


def test_create_refuses_what_it_cannot_use(menu, home, independent):
    """Each refused list ends at the refused line: the menu is back and reads the next choice."""
    code, out = menu(
        home,
        SLOT1_LOGIN,
        """\
        20
        1
        1
        CKA_LABEL
        @expect BAD_INPUT
        20
        1
        2
        CKA_VALUE=hex:zz
        @expect BAD_INPUT
        20
        1
        2
        CKA_TOKEN=maybe
        @expect BAD_INPUT
        20
        1
        1
        CKA_COLOUR=blue
        @expect BAD_INPUT
        20
        1
        9
        @expect BAD_INPUT
        # an AES key without its value: the module's own answer (a session object: SoftHSM
        # leaves the half-made object of a refused C_CreateObject behind on the token)
        20
        1
        2
        CKA_KEY_TYPE=aes
        CKA_LABEL=qa-no-value
        .
        @expect CKR_TEMPLATE_INCOMPLETE
        # a token object from a read-only session
        1
        1
        n
        20
        2
        1
        CKA_LABEL=qa-read-only
        CKA_TOKEN=true
        .
        @expect CKR_SESSION_READ_ONLY
        """,
        QUIT,
    )
    assert code == 0, out
    assert "Invalid input: 'CKA_LABEL': write NAME=VALUE, e.g. CKA_LABEL=mykey" in out
    assert "Invalid input: CKA_VALUE: 'hex:zz' is not valid hex" in out
    assert "Invalid input: CKA_TOKEN needs true or false, not 'maybe'" in out
    assert re.search(r"^Invalid input: unknown attribute 'CKA_COLOUR'", out, re.MULTILINE)
    assert "Invalid input (9): choose 1-5." in out
    assert "Status: C_CreateObject returned error. (CKR_TEMPLATE_INCOMPLETE 0x000000D0)" in out
    assert "Status: C_CreateObject returned error. (CKR_SESSION_READ_ONLY 0x000000B5)" in out
    assert created(out) == []
    assert summary(out) == "Replay: 10 steps, 10 met their expectation, 0 did not"
    assert tool_objects(independent, home, "member1") == []  # nothing half-made on the token


# ---------------------------------------------------------------- 26 Find object, 27 Display Object


@pytest.fixture(scope="module")
def stocked_home(tmp_path_factory, provision, menu):
    """member1 holding a data object, two AES keys (one readable), a generic secret and an RSA
    key pair from 45; made once, only read by the tests that use it."""
    home = provision(tmp_path_factory.mktemp("stocked") / "home")
    code, out = menu(
        home,
        SLOT1_LOGIN,
        f"""\
        20
        1
        1
        CKA_LABEL=qa-notes
        CKA_TOKEN=true
        CKA_VALUE=hex:00112233
        .
        20
        1
        2
        CKA_KEY_TYPE=aes
        CKA_LABEL=qa-aes-secret
        CKA_ID=hex:a1
        CKA_TOKEN=true
        CKA_VALUE=hex:{AES_VALUE}
        CKA_SENSITIVE=true
        .
        20
        1
        2
        CKA_KEY_TYPE=aes
        CKA_LABEL=qa-aes-open
        CKA_ID=hex:a2
        CKA_TOKEN=true
        CKA_VALUE=hex:000102030405060708090a0b0c0d0e0f1011121314151617
        CKA_SENSITIVE=false
        CKA_EXTRACTABLE=true
        .
        20
        1
        2
        CKA_KEY_TYPE=generic_secret
        CKA_LABEL=qa-hmac
        CKA_ID=hex:a3
        CKA_TOKEN=true
        CKA_VALUE=hex:{"aa" * 32}
        .
        45
        1
        1
        qa-rsa
        y
        ""
        ""
        """,
        QUIT,
    )
    assert code == 0, out
    assert created(out) == [2, 3, 4, 5]
    assert "Generated RSA 2048 key pair: public key handle 6, private key handle 7" in out
    return home


def test_find_by_class_label_id_and_key_type(menu, stocked_home):
    code, out = menu(
        stocked_home,
        SLOT1_LOGIN,
        """\
        26
        1
        CKA_CLASS=CKO_SECRET_KEY
        .
        26
        1
        CKA_LABEL=qa-notes
        .
        26
        1
        CKA_ID=hex:a2
        .
        26
        1
        CKA_KEY_TYPE=rsa
        .
        26
        1
        CKA_KEY_TYPE=aes
        CKA_ID=hex:a1
        .
        26
        1
        CKA_LABEL=no-such-object
        .
        """,
        QUIT,
    )
    assert code == 0, out
    by_class, by_label, by_id, by_type, by_two, nothing = found(out)
    assert sorted(r[3] for r in by_class) == ["qa-aes-open", "qa-aes-secret", "qa-hmac"]
    assert {r[1] for r in by_class} == {"CKO_SECRET_KEY"}
    assert {(r[3], r[2]) for r in by_class} == {
        ("qa-aes-open", "CKK_AES"),
        ("qa-aes-secret", "CKK_AES"),
        ("qa-hmac", "CKK_GENERIC_SECRET"),
    }
    assert [r[1:] for r in by_label] == [("CKO_DATA", "-", "qa-notes", "(empty)")]
    assert [r[1:] for r in by_id] == [("CKO_SECRET_KEY", "CKK_AES", "qa-aes-open", "a2")]
    assert sorted(r[1] for r in by_type) == ["CKO_PRIVATE_KEY", "CKO_PUBLIC_KEY"]
    assert {r[3] for r in by_type} == {"qa-rsa"}
    assert [r[3] for r in by_two] == ["qa-aes-secret"]
    assert nothing == []
    assert "0 object(s) found." in out
    # an object found twice keeps its handle within the process
    handles = {r[3]: r[0] for table in (by_class, by_id, by_two) for r in table}
    assert [r[0] for r in by_id] == [handles["qa-aes-open"]]
    assert [r[0] for r in by_two] == [handles["qa-aes-secret"]]


def test_find_everything_agrees_with_pkcs11_tool(menu, stocked_home, independent):
    code, out = menu(
        stocked_home,
        SLOT1_LOGIN,
        """\
        26
        1
        .
        """,
        QUIT,
    )
    assert code == 0, out
    [rows] = found(out)
    assert len(rows) == 6
    assert f"{len(rows) + DOMAIN_KEYS} object(s) found." in out  # + the HA group's domain keys
    ours = {(cls, label, key_id) for _, cls, _, label, key_id in rows}
    assert ours == tool_identities(independent, stocked_home, "member1")
    key_types = {label: key_type for _, cls, key_type, label, _ in rows if cls == "CKO_SECRET_KEY"}
    theirs = {
        o["label"]: o["header"].split(" length")[0]
        for o in tool_objects(independent, stocked_home, "member1")
        if o["class"] == "CKO_SECRET_KEY"
    }
    assert {
        label: {"CKK_AES": "AES", "CKK_GENERIC_SECRET": "Generic secret"}[kt]
        for label, kt in key_types.items()
    } == theirs


def test_display_object_agrees_with_pkcs11_tool_and_hides_sensitive_values(menu, stocked_home, independent):
    # 26 by a unique label gives the next handle of this process: 2, 3, 4, 5 in that order
    code, out = menu(
        stocked_home,
        SLOT1_LOGIN,
        """\
        26
        1
        CKA_LABEL=qa-aes-secret
        .
        26
        1
        CKA_LABEL=qa-aes-open
        .
        26
        1
        CKA_LABEL=qa-notes
        .
        26
        1
        CKA_LABEL=qa-rsa
        CKA_CLASS=CKO_PRIVATE_KEY
        .
        26
        1
        CKA_LABEL=qa-rsa
        CKA_CLASS=CKO_PUBLIC_KEY
        .
        27
        1
        2
        27
        1
        3
        27
        1
        4
        27
        1
        5
        27
        1
        6
        """,
        QUIT,
    )
    assert code == 0, out
    assert [t[0][0] for t in found(out)] == [2, 3, 4, 5, 6]
    secret, readable, notes, private, public = displayed(out)

    assert secret["CKA_LABEL"] == "qa-aes-secret"
    assert secret["CKA_VALUE"] == "<sensitive>"
    assert secret["CKA_SENSITIVE"] == "TRUE"
    assert secret["CKA_KEY_TYPE"] == "CKK_AES"
    assert secret["CKA_VALUE_LEN"] == "16"

    tool = {o["label"]: o for o in tool_objects(independent, stocked_home, "member1")}
    assert (
        readable["CKA_VALUE"]
        == tool["qa-aes-open"]["VALUE"]
        == "000102030405060708090a0b0c0d0e0f1011121314151617"
    )
    assert readable["CKA_EXTRACTABLE"] == "TRUE" and "extractable" in tool["qa-aes-open"]["Access"]
    assert readable["CKA_VALUE_LEN"] == "24" and tool["qa-aes-open"]["header"] == "AES length 24"
    assert readable["CKA_ID"] == tool["qa-aes-open"]["ID"] == "a2"

    assert notes["CKA_CLASS"] == "CKO_DATA"
    assert notes["CKA_VALUE"] == tool_read_bytes(stocked_home, "member1", "data", "qa-notes").hex()

    # the RSA pair from 45: secret parts hidden, public parts as pkcs11-tool reads them
    for part in (
        "CKA_PRIVATE_EXPONENT",
        "CKA_PRIME_1",
        "CKA_PRIME_2",
        "CKA_EXPONENT_1",
        "CKA_EXPONENT_2",
        "CKA_COEFFICIENT",
    ):
        assert private[part] == "<sensitive>", part
    numbers = load_der_public_key(
        tool_read_bytes(stocked_home, "member1", "pubkey", "qa-rsa")
    ).public_numbers()
    assert int(public["CKA_MODULUS"], 16) == int(private["CKA_MODULUS"], 16) == numbers.n
    assert int(public["CKA_PUBLIC_EXPONENT"], 16) == numbers.e
    assert public["CKA_MODULUS_BITS"] == "2048"
    assert private["CKA_LOCAL"] == "TRUE" and private["CKA_NEVER_EXTRACTABLE"] == "TRUE"
    assert "<sensitive>" not in "".join(public.values())


# ---------------------------------------------------------------- 21, 22, 23, 24, 25 on slot#1


def test_copy_set_get_size_and_destroy(menu, home, independent):
    code, out = menu(
        home,
        SLOT1_LOGIN,
        f"""\
        20
        1
        2
        CKA_KEY_TYPE=aes
        CKA_LABEL=qa-original
        CKA_ID=hex:01
        CKA_TOKEN=true
        CKA_VALUE=hex:{AES_VALUE}
        CKA_SENSITIVE=true
        .
        21
        1
        2
        CKA_LABEL=qa-copy
        CKA_ID=hex:02
        .
        25
        1
        2
        CKA_LABEL=qa-renamed
        24
        1
        2
        CKA_LABEL
        24
        1
        3
        id
        24
        1
        3
        CKA_VALUE
        @expect CKR_ATTRIBUTE_SENSITIVE
        23
        1
        2
        """,
        QUIT,
    )
    assert code == 0, out
    assert created(out) == [2, 3]
    assert "Object 2 copied: new handle 3" in out
    assert "CKA_LABEL of object 2 set to qa-renamed" in out
    assert "CKA_LABEL = qa-renamed" in out
    assert "CKA_ID = 02" in out  # a short name is looked up as CKA_ID
    assert "Status: C_GetAttributeValue returned error. (CKR_ATTRIBUTE_SENSITIVE 0x00000011)" in out
    # SoftHSM answers C_GetObjectSize with CK_UNAVAILABLE_INFORMATION
    assert "Object 2 size: unavailable (the module does not say)" in out
    assert tool_identities(independent, home, "member1") == {
        ("CKO_SECRET_KEY", "qa-renamed", "01"),
        ("CKO_SECRET_KEY", "qa-copy", "02"),
    }
    copy = next(o for o in tool_objects(independent, home, "member1") if o["label"] == "qa-copy")
    assert copy["header"] == "AES length 16" and "sensitive" in copy["Access"]

    # a second run: the copy goes; the original stays
    code, out = menu(
        home,
        SLOT1_LOGIN,
        """\
        26
        1
        CKA_LABEL=qa-copy
        .
        22
        1
        2
        22
        1
        2
        @expect CKR_OBJECT_HANDLE_INVALID
        27
        1
        2
        @expect CKR_OBJECT_HANDLE_INVALID
        """,
        QUIT,
    )
    assert code == 0, out
    assert [r[0] for r in found(out)[0]] == [2]
    assert "Object 2 destroyed." in out
    assert (
        len(
            re.findall(
                r"^Status: C_\w+ returned error\. \(CKR_OBJECT_HANDLE_INVALID 0x00000082\)$",
                out,
                re.MULTILINE,
            )
        )
        == 2
    )
    assert tool_identities(independent, home, "member1") == {("CKO_SECRET_KEY", "qa-renamed", "01")}


def test_object_functions_on_a_handle_that_does_not_exist(menu, shared_home, independent):
    code, out = menu(
        shared_home,
        SLOT1_LOGIN,
        """\
        21
        1
        99
        .
        @expect CKR_OBJECT_HANDLE_INVALID
        22
        1
        99
        @expect CKR_OBJECT_HANDLE_INVALID
        23
        1
        99
        @expect CKR_OBJECT_HANDLE_INVALID
        24
        1
        99
        CKA_LABEL
        @expect CKR_OBJECT_HANDLE_INVALID
        25
        1
        99
        CKA_LABEL=x
        @expect CKR_OBJECT_HANDLE_INVALID
        27
        1
        99
        @expect CKR_OBJECT_HANDLE_INVALID
        27
        1
        abc
        @expect BAD_INPUT
        24
        1
        1
        CKA_NO_SUCH
        @expect BAD_INPUT
        25
        1
        1
        CKA_LABEL
        @expect BAD_INPUT
        """,
        QUIT,
    )
    assert code == 0, out
    assert summary(out) == "Replay: 11 steps, 11 met their expectation, 0 did not"
    assert (
        len(
            re.findall(
                r"^Status: C_\w+ returned error\. \(CKR_OBJECT_HANDLE_INVALID 0x00000082\)$",
                out,
                re.MULTILINE,
            )
        )
        == 6
    )
    assert "Invalid input (abc): a number is needed." in out
    assert re.search(r"^Invalid input: unknown attribute 'CKA_NO_SUCH'", out, re.MULTILINE)
    assert "Invalid input: 'CKA_LABEL': write NAME=VALUE, e.g. CKA_LABEL=mykey" in out
    assert tool_objects(independent, shared_home, "member1") == []


def test_set_attribute_the_token_refuses(menu, home, independent):
    code, out = menu(
        home,
        SLOT1_LOGIN,
        f"""\
        20
        1
        2
        CKA_KEY_TYPE=aes
        CKA_LABEL=qa-fixed
        CKA_TOKEN=true
        CKA_VALUE=hex:{AES_VALUE}
        CKA_SENSITIVE=true
        CKA_MODIFIABLE=false
        .
        20
        1
        1
        CKA_LABEL=qa-notes
        CKA_TOKEN=true
        .
        25
        1
        2
        CKA_LABEL=qa-changed
        @expect CKR_ACTION_PROHIBITED
        25
        1
        3
        CKA_CLASS=CKO_SECRET_KEY
        @expect CKR_ATTRIBUTE_READ_ONLY
        """,
        QUIT,
    )
    assert code == 0, out
    assert created(out) == [2, 3]
    assert "Status: C_SetAttributeValue returned error. (CKR_ACTION_PROHIBITED 0x0000001B)" in out
    assert "Status: C_SetAttributeValue returned error. (CKR_ATTRIBUTE_READ_ONLY 0x00000010)" in out
    assert summary(out) == "Replay: 6 steps, 6 met their expectation, 0 did not"
    assert tool_identities(independent, home, "member1") == {
        ("CKO_SECRET_KEY", "qa-fixed", "(empty)"),
        ("CKO_DATA", "qa-notes", "(empty)"),
    }


def test_an_unknown_handle_names_the_function_asked_for(menu, shared_home):
    code, out = menu(
        shared_home,
        SLOT1_LOGIN,
        """\
        22
        1
        99
        @expect CKR_OBJECT_HANDLE_INVALID
        """,
        QUIT,
    )
    assert code == 0, out
    assert "Status: C_DestroyObject returned error. (CKR_OBJECT_HANDLE_INVALID 0x00000082)" in out


# ---------------------------------------------------------------- the HA slot: every member follows


def _members(independent, home) -> dict[str, set[tuple[str, str, str]]]:
    """(class, label, id) per member, without the HA group's own domain keys and journal mark."""
    return {
        m: {i for i in tool_identities(independent, home, m) if not i[1].startswith(GROUP_LABELS)}
        for m in MEMBERS
    }


def test_ha_create_copy_set_and_destroy_reach_every_member(menu, home, independent):
    code, out = menu(
        home,
        HA_LOGIN,
        f"""\
        20
        {HA_SESSION}
        2
        CKA_KEY_TYPE=aes
        CKA_LABEL=qa-ha-aes
        CKA_ID=hex:0a01
        CKA_TOKEN=true
        CKA_VALUE=hex:{AES_VALUE}
        CKA_SENSITIVE=true
        CKA_ENCRYPT=true
        .
        21
        {HA_SESSION}
        {HA_FIRST}
        CKA_LABEL=qa-ha-copy
        CKA_ID=hex:0a02
        .
        """,
        QUIT,
    )
    assert code == 0, out
    assert created(out) == [HA_FIRST, HA_SECOND]
    both = {("CKO_SECRET_KEY", "qa-ha-aes", "0a01"), ("CKO_SECRET_KEY", "qa-ha-copy", "0a02")}
    assert _members(independent, home) == {m: both for m in MEMBERS}

    # a later run finds them again by label (HA_FIRST, HA_SECOND), renames one, destroys the other
    code, out = menu(
        home,
        HA_LOGIN,
        f"""\
        26
        {HA_SESSION}
        CKA_LABEL=qa-ha-aes
        .
        26
        {HA_SESSION}
        CKA_LABEL=qa-ha-copy
        .
        25
        {HA_SESSION}
        {HA_FIRST}
        CKA_LABEL=qa-ha-renamed
        22
        {HA_SESSION}
        {HA_SECOND}
        24
        {HA_SESSION}
        {HA_FIRST}
        CKA_LABEL
        """,
        QUIT,
    )
    assert code == 0, out
    assert [[r[0] for r in t] for t in found(out)] == [[HA_FIRST], [HA_SECOND]]
    assert "CKA_LABEL = qa-ha-renamed" in out
    after = {("CKO_SECRET_KEY", "qa-ha-renamed", "0a01")}
    assert _members(independent, home) == {m: after for m in MEMBERS}
    for member in MEMBERS:
        [key] = [o for o in tool_objects(independent, home, member) if o["label"] == "qa-ha-renamed"]
        assert key["header"] == "AES length 16" and "sensitive" in key["Access"], member


def test_ha_find_and_display_agree_with_every_member(menu, home, independent):
    code, out = menu(
        home,
        HA_LOGIN,
        f"""\
        20
        {HA_SESSION}
        2
        CKA_KEY_TYPE=aes
        CKA_LABEL=qa-ha-open
        CKA_ID=hex:0b01
        CKA_TOKEN=true
        CKA_VALUE=hex:000102030405060708090a0b0c0d0e0f
        CKA_SENSITIVE=false
        CKA_EXTRACTABLE=true
        .
        20
        {HA_SESSION}
        2
        CKA_KEY_TYPE=generic_secret
        CKA_LABEL=qa-ha-secret
        CKA_ID=hex:0b02
        CKA_TOKEN=true
        CKA_VALUE=hex:2222222222222222222222222222222222222222222222222222222222222222
        CKA_SENSITIVE=true
        .
        26
        {HA_SESSION}
        .
        27
        {HA_SESSION}
        {HA_FIRST}
        27
        {HA_SESSION}
        {HA_SECOND}
        23
        {HA_SESSION}
        {HA_FIRST}
        27
        {HA_SESSION}
        99
        @expect CKR_OBJECT_HANDLE_INVALID
        """,
        QUIT,
    )
    assert code == 0, out
    assert created(out) == [HA_FIRST, HA_SECOND]
    [rows] = found(out)
    ours = {(cls, label, key_id) for _, cls, _, label, key_id in rows}
    assert not any(label.startswith(DOMAIN_KEY_LABEL) for _, label, _ in ours)  # the group's own
    for member in MEMBERS:
        assert tool_identities(independent, home, member) == ours, member
    opened, secret = displayed(out)[:2]
    for member in MEMBERS:
        tool = {o["label"]: o for o in tool_objects(independent, home, member)}
        assert opened["CKA_VALUE"] == tool["qa-ha-open"]["VALUE"] == "000102030405060708090a0b0c0d0e0f"
        assert "VALUE" not in tool["qa-ha-secret"]
    assert secret["CKA_VALUE"] == "<sensitive>"
    assert f"Object {HA_FIRST} size: unavailable (the module does not say)" in out
    assert "Status: C_GetAttributeValue returned error. (CKR_OBJECT_HANDLE_INVALID 0x00000082)" in out


def test_ha_data_object_reaches_every_member(menu, home, independent):
    code, out = menu(
        home,
        HA_LOGIN,
        f"""\
        20
        {HA_SESSION}
        1
        CKA_LABEL=qa-ha-notes
        CKA_TOKEN=true
        CKA_VALUE=ha notes
        .
        """,
        QUIT,
    )
    assert code == 0, out
    assert created(out) == [HA_FIRST]
    for member in MEMBERS:
        assert _members(independent, home)[member] == {("CKO_DATA", "qa-ha-notes", "(empty)")}, member
        assert tool_read_bytes(home, member, "data", "qa-ha-notes") == b"ha notes"
