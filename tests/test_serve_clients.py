"""Real clients nobody here wrote, each through Debian's p11-kit-client.so to
`ckdemo serve` over local SoftHSM2 members:
- `pkcs11-tool --test` on the HA slot passes every check it passes on one SoftHSM2 token served by
  the C reference, `p11-kit server`; both outputs are kept and compared check by check;
- OpenSSL through libengine-pkcs11-openssl signs with a `pkcs11:` URI key of the HA slot, and
  openssl verifies with the public key read straight from a member token;
- GnuTLS `p11tool` lists the HA key (only after login) and passes `--test-sign` on it;
- the attribute questions these clients ask (size queries, types a token does not have,
  vendor-defined types in templates) get the reference's answers, asked of both with our codec.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import SOFTHSM_LIB, SO_PIN, USER_PIN, clean_env, no_traceback, requires_softhsm, softhsm_env
from rpc_capture import P11KIT_CLIENT, _found, tools_missing
from ckdemo.libraries import OPENSSL_PKCS11_ENGINE
from test_serve import RawClient, Served, start_server, stop_cleanly, stop_server

from ckdemo import codes
from ckdemo.rpc import HANDSHAKE, Attribute, AttributeSize, Mechanism
from ckdemo.rpc.attributes import UNAVAILABLE

OPENSSL_ENGINE = _found(OPENSSL_PKCS11_ENGINE)  # libengine-pkcs11-openssl
HA_TOKEN = "ckdemo-ha"
REFERENCE_TOKEN = "member1"


def clients_missing() -> str | None:
    for tool in ("p11tool", "openssl", "stdbuf"):
        if not shutil.which(tool):
            return f"{tool} is not installed (scripts/bootstrap installs it)"
    if not os.path.exists(OPENSSL_ENGINE):
        return f"{OPENSSL_ENGINE} is not installed (scripts/bootstrap installs libengine-pkcs11-openssl)"
    return tools_missing()


pytestmark = [requires_softhsm, pytest.mark.skipif(bool(clients_missing()), reason=str(clients_missing()))]


def run(argv: list[str], env: dict[str, str], merged: bool = False) -> subprocess.CompletedProcess:
    """argv with env, output captured (stderr into stdout when merged); never a traceback."""
    done = subprocess.run(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        timeout=60,
    )
    no_traceback(shown(done))
    return done


def shown(done: subprocess.CompletedProcess) -> str:
    return done.stdout.decode(errors="replace") + (done.stderr or b"").decode(errors="replace")


# ---- the two servers --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory, provision, ckdemo_bin):
    """`ckdemo serve` of the HA slot of a home made by `ckdemo init` (domain keys included)."""
    home = provision(tmp_path_factory.mktemp("serve-clients") / "home")
    server = start_server(ckdemo_bin, home, None, home.parent / "serve.log")
    yield server
    stop_cleanly(server)


@dataclass
class Reference:
    """`p11-kit server` (C) serving one fresh SoftHSM2 token, the yardstick for pkcs11-tool --test."""

    socket: Path

    def env(self) -> dict[str, str]:
        return clean_env(P11_KIT_SERVER_ADDRESS=f"unix:path={self.socket}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    env = clean_env(SOFTHSM2_CONF=str(conf))
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            REFERENCE_TOKEN,
            "--pin",
            USER_PIN,
            "--so-pin",
            SO_PIN,
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    )
    socket_path = folder / "p11-kit.sock"
    # its own process group: p11-kit server forks one p11-kit-remote per connection
    server = subprocess.Popen(
        [
            "p11-kit",
            "server",
            "-f",
            "-n",
            str(socket_path),
            "--provider",
            SOFTHSM_LIB,
            f"pkcs11:token={REFERENCE_TOKEN}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            assert server.poll() is None and time.monotonic() < deadline, "p11-kit server did not start"
            time.sleep(0.02)
        yield Reference(socket_path)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)


def pkcs11_tool(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run(["pkcs11-tool", "--module", P11KIT_CLIENT, *args], env)


def make_rsa_key_pair(env: dict[str, str], key_id: str, label: str, key_type: str = "rsa:2048") -> None:
    made = pkcs11_tool(
        env,
        "--login",
        "--pin",
        USER_PIN,
        "--keypairgen",
        "--key-type",
        key_type,
        "--id",
        key_id,
        "--label",
        label,
    )
    assert made.returncode == 0 and b"Key pair generated" in made.stdout, shown(made)


# ---- pkcs11-tool --test, compared with the C reference -----------------------------------------------
SECTION = re.compile(
    r"(C_SeedRandom\(\) and C_GenerateRandom\(\)|Digests|Signatures?|Verify|"
    r"Key unwrap|Unwrap|Decryption|Decrypt)(?=[ :])"
)
CHECK = re.compile(r"\s+(?P<name>[\w-]+): (?P<verdict>.*)")


@dataclass
class SelfTestRun:
    """The checks of one `pkcs11-tool --test` run: (section, check) -> verdict, in output order."""

    output: str
    sections: dict[str, str]  # section -> its header line
    results: dict[tuple[str, str], str]
    aborted_at: tuple[str, str] | None

    @property
    def passed(self) -> set[tuple[str, str]]:
        return {check for check, verdict in self.results.items() if verdict == "OK"}


def parse_test_output(output: str) -> SelfTestRun:
    """Lines such as `  SHA256: OK`, `  seems to be OK`, `  all 4 digest functions seem to work`,
    `  ERR: ...`, `    RSA-PKCS-OAEP: mgf not set, ...` then `OK` alone, `error: ... failed`."""
    sections: dict[str, str] = {}
    results: dict[tuple[str, str], str] = {}
    section, last, aborted_at = "", None, None
    for line in output.splitlines():
        text = line.strip()
        if not text or line.startswith("Using slot"):
            continue
        if not line[0].isspace() and SECTION.match(line):
            section = SECTION.match(line).group(1)
            sections[section] = text
            continue
        if text == "OK" and last is not None:  # printed after a parameter note on the check's line
            results[last] = "OK"
        elif text == "Aborting.":
            aborted_at = last
        elif text.startswith(("ERR:", "error:")):
            results[(section, "ERR")] = text
        elif text.endswith(("seems to be OK", "seem to work")):
            last = (section, text)
            results[last] = "OK"
        elif (check := CHECK.fullmatch(line)) and not text.startswith(("testing", "--")):
            last = (section, check["name"])
            results[last] = check["verdict"].strip()
    return SelfTestRun(output, sections, results, aborted_at)


def keys_tested(output: str) -> list[str]:
    """The key lines pkcs11-tool --test prints as it goes (`  testing key 0 (p11test-rsa)` ...)."""
    return [line.strip() for line in output.splitlines() if re.match(r"\s*testing key \d", line)]


def keys_by_section(output: str) -> dict[str, set[str]]:
    """Section -> the labels of the keys it tested (not those it skipped as non-RSA)."""
    found: dict[str, set[str]] = {}
    section = ""
    for line in output.splitlines():
        if line and not line[0].isspace() and SECTION.match(line):
            section = SECTION.match(line).group(1)
        elif key := re.match(r"\s*testing key \d+ \(([^)]*)\)(.*)", line):
            if "skipping" not in key.group(2):
                found.setdefault(section, set()).add(key.group(1))
    return found


def run_test(env: dict[str, str], where: Path, *extra: str) -> SelfTestRun:
    # stdout line-buffered into the same pipe as stderr: errors land where they happened
    done = run(
        [
            "stdbuf",
            "-oL",
            "pkcs11-tool",
            "--module",
            P11KIT_CLIENT,
            "--test",
            "--login",
            "--pin",
            USER_PIN,
            *extra,
        ],
        env,
        merged=True,
    )
    output = done.stdout.decode(errors="replace")
    where.write_text(
        f"$ pkcs11-tool --module {P11KIT_CLIENT} --test --login --pin {USER_PIN} "
        f"{' '.join(extra)}\n{output}(exit code {done.returncode})\n"
    )
    return parse_test_output(output)


@pytest.fixture(scope="module")
def rsa_key_on_both(served, reference):
    """An RSA-2048 and an EC P-256 key pair on each side, so that --test has signatures and
    decryption to check, over more than one key (it enumerates them by index)."""
    for env in (served.env(), reference.env()):
        make_rsa_key_pair(env, "7e", "p11test-rsa")
        make_rsa_key_pair(env, "7f", "p11test-ec", "EC:prime256v1")


def key_order(output: str) -> list[str]:
    """The private keys in the order a `pkcs11-tool --test` run enumerated them (in its first
    section that went through the keys)."""
    order: list[str] = []
    for line in output.splitlines():
        if key := re.match(r"\s*testing key \d+ \(([^)]*)\)", line):
            if key.group(1) in order:  # the next section, or the first key again with 1 mechanism
                break
            order.append(key.group(1))
    return order


def reference_key_order(reference: Reference) -> list[str]:
    """The reference's private keys in the order it enumerates them (a search by class, as --test's)."""
    listed = pkcs11_tool(reference.env(), "--login", "--pin", USER_PIN, "--list-objects", "--type", "privkey")
    assert listed.returncode == 0, shown(listed)
    return re.findall(r"^\s*label:\s*(\S+)", shown(listed), re.MULTILINE)


def put_reference_keys_in_order(reference: Reference, wanted: list[str]) -> None:
    """pkcs11-tool --test tries every mechanism on the first key it enumerates and one on the others,
    so two runs can be compared check by check only over the same key order. Each side lists the
    two key pairs in an order of its own (the reference, a fresh SoftHSM2 process per connection,
    in the heap order it loaded their files in: RSA or EC first from one token to the next); a run
    where ckdemo serve had EC first and the reference RSA first failed the comparison (Verify: the
    mechanisms tried on the reference's first key only). The reference's EC key pair is made again,
    under new file names, until the reference enumerates as ckdemo serve's run did (same labels
    and IDs), and the test checks that both runs went through the keys in the same order."""
    if not wanted:  # ckdemo serve's run stopped before the keys: nothing to line up
        return
    for _ in range(30):  # each attempt is a coin toss
        if reference_key_order(reference) == wanted:
            return
        for kind in ("privkey", "pubkey"):
            gone = pkcs11_tool(
                reference.env(), "--login", "--pin", USER_PIN, "--delete-object", "--type", kind, "--id", "7f"
            )
            assert gone.returncode == 0, shown(gone)
        make_rsa_key_pair(reference.env(), "7f", "p11test-ec", "EC:prime256v1")
    pytest.fail(f"the reference never enumerated its keys as {wanted}: {reference_key_order(reference)}")


# --allow-sw: SoftHSM2 has no CKF_HW mechanism, and without it pkcs11-tool skips the Signatures
# section ("Signatures: not implemented") on both sides
@pytest.mark.parametrize("extra", [(), ("--allow-sw",)], ids=["as-issued", "allow-sw"])
def test_pkcs11_tool_test_passes_what_the_reference_passes(
    served, reference, rsa_key_on_both, tmp_path, extra
):
    ours = run_test(served.env(), tmp_path / "ckdemo-serve.txt", *extra)
    put_reference_keys_in_order(reference, key_order(ours.output))
    theirs = run_test(reference.env(), tmp_path / "p11-kit-server.txt", *extra)
    both = (
        f"\n--- ckdemo serve ({len(ours.passed)} checks OK; {tmp_path / 'ckdemo-serve.txt'}) ---\n"
        f"{ours.output}\n--- p11-kit server, one SoftHSM2 token ({len(theirs.passed)} checks OK; "
        f"{tmp_path / 'p11-kit-server.txt'}) ---\n{theirs.output}"
    )
    assert key_order(theirs.output) == key_order(ours.output), both  # compared over the same order
    # the yardstick really ran: digests, verification and decryption passed on the reference
    for check in (("Digests", "SHA256"), ("Decryption", "RSA-PKCS")):
        assert check in theirs.passed, f"the reference did not pass {check}:{both}"
    assert any(section == "Verify" for section, _ in theirs.passed), f"the reference verified nothing:{both}"
    assert any("p11test-ec" in line for line in keys_tested(theirs.output)), both  # both keys listed
    if extra:
        assert ("Signatures", "SHA256-RSA-PKCS") in theirs.passed, both
    missing = sorted(theirs.passed - ours.passed)
    assert not missing, f"OK on p11-kit server, not on ckdemo serve: {missing}{both}"
    for section, header in theirs.sections.items():  # every part the reference reached and ran
        assert section in ours.sections, f"ckdemo serve never reached {section}:{both}"
        if "not implemented" not in header:
            assert "not implemented" not in ours.sections[section], both
    # where ckdemo serve stops (SoftHSM2 2.6.1 refuses OAEP with SHA-256 and a label:
    # CKR_ARGUMENTS_BAD, fatal to pkcs11-tool), the reference fails or stops too
    if ours.aborted_at is not None:
        assert ours.aborted_at not in theirs.passed, f"ckdemo serve aborted at {ours.aborted_at}:{both}"
    # the same keys, each tested in every section the reference tests it in (in SoftHSM2's own
    # order on each side: the order of a token's search is its heap's, not the creation order,
    # so which key comes first, and gets every mechanism tried, differs from token to token)
    assert keys_by_section(ours.output) == keys_by_section(theirs.output), both
    errors = {section for (section, name), verdict in ours.results.items() if name == "ERR"}
    reference_errors = {section for (section, name), verdict in theirs.results.items() if name == "ERR"}
    assert errors <= reference_errors, f"errors only on ckdemo serve in {errors - reference_errors}:{both}"


# ---- OpenSSL through the pkcs11 engine ---------------------------------------------------------------
def openssl_env(served: Served, folder: Path) -> dict[str, str]:
    """An openssl.cnf that loads the engine "pkcs11" with p11-kit-client.so as its module."""
    config = folder / "openssl.cnf"
    config.write_text(
        "openssl_conf = openssl_init\n\n[openssl_init]\nengines = engine_section\n\n"
        "[engine_section]\npkcs11 = pkcs11_section\n\n"
        f"[pkcs11_section]\nengine_id = pkcs11\nMODULE_PATH = {P11KIT_CLIENT}\ninit = 0\n"
    )
    return dict(served.env(), OPENSSL_CONF=str(config))


@pytest.mark.parametrize("key_type, label", [("rsa:2048", "openssl-rsa"), ("EC:prime256v1", "openssl-ec")])
def test_openssl_engine_signs_with_an_ha_key_verified_by_a_member_key(served, tmp_path, key_type, label):
    key_id = "e1" if key_type.startswith("rsa") else "e2"
    made = pkcs11_tool(
        served.env(),
        "--login",
        "--pin",
        USER_PIN,
        "--keypairgen",
        "--key-type",
        key_type,
        "--id",
        key_id,
        "--label",
        label,
    )
    assert made.returncode == 0, shown(made)
    data, signature = tmp_path / "data.txt", tmp_path / "data.sig"
    data.write_bytes(b"signed by OpenSSL with a key of the HA slot\n")
    uri = f"pkcs11:token={HA_TOKEN};object={label};type=private;pin-value={USER_PIN}"
    signed = run(
        [
            "openssl",
            "dgst",
            "-engine",
            "pkcs11",
            "-keyform",
            "engine",
            "-sign",
            uri,
            "-sha256",
            "-out",
            str(signature),
            str(data),
        ],
        openssl_env(served, tmp_path),
    )
    assert signed.returncode == 0, shown(signed)
    # the public key straight from member2's token, not through the server
    public_der, public_pem = tmp_path / "public.der", tmp_path / "public.pem"
    read = subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            SOFTHSM_LIB,
            "--token-label",
            "member2",
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            label,
            "-o",
            str(public_der),
        ],
        env=softhsm_env(served.home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert read.returncode == 0, read.stdout + read.stderr
    converted = run(
        ["openssl", "pkey", "-pubin", "-inform", "DER", "-in", str(public_der), "-out", str(public_pem)],
        clean_env(),
    )
    assert converted.returncode == 0, shown(converted)
    verify = ["openssl", "dgst", "-sha256", "-verify", str(public_pem), "-signature", str(signature)]
    verified = run([*verify, str(data)], clean_env())
    assert verified.returncode == 0 and b"Verified OK" in verified.stdout, shown(verified)
    tampered = tmp_path / "tampered.txt"
    tampered.write_bytes(data.read_bytes().replace(b"HA", b"ha"))
    refused = run([*verify, str(tampered)], clean_env())
    assert refused.returncode != 0 and b"Verification failure" in refused.stdout, shown(refused)


def test_openssl_engine_with_a_wrong_pin_is_refused(served, tmp_path):
    uri = f"pkcs11:token={HA_TOKEN};object=openssl-rsa;type=private;pin-value=0000"
    data = tmp_path / "data.txt"
    data.write_bytes(b"x")
    refused = run(
        [
            "openssl",
            "dgst",
            "-engine",
            "pkcs11",
            "-keyform",
            "engine",
            "-sign",
            uri,
            "-sha256",
            "-out",
            str(tmp_path / "sig"),
            str(data),
        ],
        openssl_env(served, tmp_path),
    )
    assert refused.returncode != 0 and "PIN incorrect" in shown(refused), shown(refused)


# ---- GnuTLS p11tool -----------------------------------------------------------------------------------
def p11tool(served: Served, *args: str, pin: str = USER_PIN) -> subprocess.CompletedProcess:
    return run(["p11tool", "--provider", P11KIT_CLIENT, "--batch", *args], dict(served.env(), GNUTLS_PIN=pin))


@pytest.fixture(scope="module")
def p11tool_keys(served):
    make_rsa_key_pair(served.env(), "f1", "p11tool-rsa")
    made = pkcs11_tool(
        served.env(),
        "--login",
        "--pin",
        USER_PIN,
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "f2",
        "--label",
        "p11tool-ec",
    )
    assert made.returncode == 0, shown(made)


def test_p11tool_lists_the_ha_key_after_login_only(served, p11tool_keys):
    listed = p11tool(served, "--list-all", "--login", f"pkcs11:token={HA_TOKEN}")
    text = shown(listed)
    assert listed.returncode == 0, text
    for kind, url in (
        ("Private key (RSA-2048)", "object=p11tool-rsa;type=private"),
        ("Public key (RSA-2048)", "object=p11tool-rsa;type=public"),
        ("Private key (EC/ECDSA", "object=p11tool-ec;type=private"),
    ):
        assert kind in text and url in text, f"{kind} {url}:\n{text}"
    assert f"token={HA_TOKEN};id=%F1;object=p11tool-rsa;type=private" in text, text
    anonymous = shown(p11tool(served, "--list-all", f"pkcs11:token={HA_TOKEN}"))
    assert "object=p11tool-rsa;type=public" in anonymous, anonymous
    assert "type=private" not in anonymous, anonymous


@pytest.mark.parametrize("label, algorithm", [("p11tool-rsa", "RSA-SHA256"), ("p11tool-ec", "ECDSA-SHA256")])
def test_p11tool_test_sign_on_an_ha_key(served, p11tool_keys, label, algorithm):
    tested = p11tool(served, "--test-sign", "--login", f"pkcs11:token={HA_TOKEN};object={label};type=private")
    text = shown(tested)
    assert tested.returncode == 0, text
    for step in (
        f"Signing using {algorithm}... ok",
        "Verifying against private key parameters... ok",
        "Verifying against public key in the token... ok",
    ):
        assert step in text, text
    wrong = p11tool(
        served, "--test-sign", "--login", f"pkcs11:token={HA_TOKEN};object={label};type=private", pin="0000"
    )
    assert wrong.returncode != 0 and "Wrong PIN" in shown(wrong), shown(wrong)


# ---- attributes: the reference's answers -----------------------------------------------------------
CKA_CLASS, CKA_TOKEN, CKA_LABEL, CKA_VALUE, CKA_ID = 0x0, 0x1, 0x3, 0x11, 0x102
CKA_START_DATE, CKA_MODULUS, CKA_VALUE_LEN, CKA_LOCAL = 0x110, 0x120, 0x161, 0x163
CKA_KEY_GEN_MECHANISM, CKA_DESTROYABLE = 0x166, 0x172
HA_SLOT, CKF_TOKEN_INITIALIZED = 0x5000, 0x400
CKO_DATA, CKO_PUBLIC_KEY, CKO_PRIVATE_KEY = 0x0, 0x2, 0x3
CKM_EC_KEY_PAIR_GEN, CKM_AES_KEY_GEN = 0x1040, 0x1080
CK_UNAVAILABLE_INFORMATION = 2**64 - 1
UNNAMED_TYPES = (0xDEAD, 0x80000001)  # not in PKCS#11; vendor-defined (NSS and Luna have such)


def logged_in(socket_path: Path) -> tuple[RawClient, int]:
    client = RawClient(socket_path)
    client.ok("C_Initialize", HANDSHAKE, 0, b"\x00")
    (slots,) = client.ok("C_GetSlotList", 1, 8)
    (session,) = client.ok("C_OpenSession", slots[0], 0x6)
    client.ok("C_Login", session, 1, USER_PIN.encode())
    return client, session


def outcome(reply) -> str:
    return codes.ckr_name(reply.ckr if reply.is_error else codes.CKR_OK)


def attribute_answers(
    client: RawClient,
    session: int,
    key: int,
    wanted: list[int],
    room: int,
    compared: frozenset[int] = frozenset(),
) -> tuple:
    """(length or UNAVAILABLE, value) per wanted type, then the call's CKR (room 0: size query);
    the value only for the `compared` types (two tokens' keys differ)."""
    reply = client.call("C_GetAttributeValue", session, key, tuple(AttributeSize(t, room) for t in wanted))
    assert not reply.is_error, outcome(reply)
    attributes, ckr = reply.args
    return (
        tuple((a.length, a.value if a.type in compared else None) for a in attributes),
        codes.ckr_name(ckr),
    )


def test_attributes_and_templates_answered_as_the_reference_does(served, reference, rsa_key_on_both):
    wanted = [CKA_LABEL, CKA_VALUE, CKA_START_DATE, CKA_MODULUS, CKA_DESTROYABLE, *UNNAMED_TYPES]
    answers = {}
    for side, socket_path in (("ckdemo serve", served.socket), ("p11-kit server", reference.socket)):
        client, session = logged_in(socket_path)
        try:
            for object_class in (CKO_PRIVATE_KEY, CKO_PUBLIC_KEY):
                (key,) = client.find(session, Attribute(CKA_CLASS, object_class), Attribute(CKA_ID, b"\x7e"))
                for room in (0, 512):
                    answers[(side, object_class, room)] = attribute_answers(
                        client, session, key, wanted, room, frozenset({CKA_LABEL, CKA_DESTROYABLE})
                    )
            template = (
                Attribute(CKA_CLASS, CKO_DATA),
                Attribute(CKA_TOKEN, 0),
                Attribute(CKA_LABEL, b"unnamed"),
            )
            (data,) = client.ok("C_CreateObject", session, template)
            for unnamed in UNNAMED_TYPES:
                extra = Attribute(unnamed, b"x")
                answers[(side, "create", unnamed)] = outcome(
                    client.call("C_CreateObject", session, (*template, extra))
                )
                answers[(side, "set", unnamed)] = outcome(
                    client.call("C_SetAttributeValue", session, data, (extra,))
                )
                answers[(side, "copy", unnamed)] = outcome(
                    client.call("C_CopyObject", session, data, (extra,))
                )
                answers[(side, "find", unnamed)] = client.find(session, extra)
                generated = client.call(
                    "C_GenerateKey",
                    session,
                    Mechanism(CKM_AES_KEY_GEN),
                    (
                        Attribute(CKA_VALUE_LEN, 32),
                        Attribute(CKA_TOKEN, 1),
                        Attribute(CKA_LABEL, b"unnamed-aes"),
                        extra,
                    ),
                )
                answers[(side, "generate", unnamed)] = outcome(generated)
            # a key refused after it was made is destroyed again, on every member
            answers[(side, "left behind")] = client.find(session, Attribute(CKA_LABEL, b"unnamed-aes"))
        finally:
            client.close()
    differ = {
        key[1:]: (answer, answers[("p11-kit server", *key[1:])])
        for key, answer in answers.items()
        if key[0] == "ckdemo serve" and answer != answers[("p11-kit server", *key[1:])]
    }
    assert not differ, "\n".join(
        f"{what}: ckdemo serve {ours}, p11-kit server {theirs}" for what, (ours, theirs) in differ.items()
    )
    # what the comparison covers: absent types unavailable, CKA_DESTROYABLE one CK_BBOOL byte
    (label, value, start, modulus, destroyable, *unnamed), ckr = answers[
        ("ckdemo serve", CKO_PRIVATE_KEY, 512)
    ]
    assert ckr == "CKR_ATTRIBUTE_TYPE_INVALID" and value == (UNAVAILABLE, None)  # as SoftHSM2 ranks them
    assert destroyable == (1, b"\x01") and start[0] == 0 and modulus[0] == 256
    assert all(answer == (UNAVAILABLE, None) for answer in unnamed)
    assert answers[("ckdemo serve", "generate", UNNAMED_TYPES[0])] == "CKR_ATTRIBUTE_TYPE_INVALID"
    assert "internal error" not in served.log(), served.log()


def test_key_gen_mechanism_of_a_replica_is_unavailable_not_rsa(served, ckdemo_bin, tmp_path):
    """Through each member's own slot (--slots all): the member that generated the HA key says
    CKM_EC_KEY_PAIR_GEN, the replicas (made by unwrap) CK_UNAVAILABLE_INFORMATION, as SoftHSM2
    keeps it; never 0, which would be CKM_RSA_PKCS_KEY_PAIR_GEN."""
    made = pkcs11_tool(
        served.env(),
        "--login",
        "--pin",
        USER_PIN,
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "d2",
        "--label",
        "keygen-ec",
    )
    assert made.returncode == 0, shown(made)
    every_slot = start_server(
        ckdemo_bin, served.home, tmp_path / "all.sock", tmp_path / "all.log", "--slots", "all"
    )
    seen = []
    try:
        client = RawClient(every_slot.socket)
        client.ok("C_Initialize", HANDSHAKE, 0, b"\x00")
        (slots,) = client.ok("C_GetSlotList", 1, 8)
        for slot in slots:
            (token,) = client.ok("C_GetTokenInfo", slot)
            if slot == HA_SLOT or not token.flags & CKF_TOKEN_INITIALIZED:  # SoftHSM2's free slot
                continue
            (session,) = client.ok("C_OpenSession", slot, 0x6)
            client.ok("C_Login", session, 1, USER_PIN.encode())
            (key,) = client.find(session, Attribute(CKA_CLASS, CKO_PRIVATE_KEY), Attribute(CKA_ID, b"\xd2"))
            (local, mechanism), ckr = attribute_answers(
                client,
                session,
                key,
                [CKA_LOCAL, CKA_KEY_GEN_MECHANISM],
                8,
                frozenset({CKA_LOCAL, CKA_KEY_GEN_MECHANISM}),
            )
            assert ckr == "CKR_OK", ckr
            seen.append((local[1], mechanism[1]))
            client.ok("C_Logout", session)
        client.close()
    finally:
        assert stop_server(every_slot) == 0, every_slot.log()
    assert sorted(seen) == [(0, CK_UNAVAILABLE_INFORMATION)] * 2 + [(1, CKM_EC_KEY_PAIR_GEN)], seen


def test_always_authenticate_key_pair_signs_with_pkcs11_tool_and_is_so_on_every_member(served, tmp_path):
    """pkcs11-tool --always-auth (refused with CKR_ATTRIBUTE_READ_ONLY before): the key pair is
    made, pkcs11-tool signs with it (it logs in CKU_CONTEXT_SPECIFIC after C_SignInit, as the key
    asks) on whichever member serves, and every member's copy asks the same, read straight on
    each token with the user PIN."""
    made = pkcs11_tool(
        served.env(),
        "--login",
        "--pin",
        USER_PIN,
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--id",
        "d4",
        "--label",
        "always-auth",
        "--always-auth",
    )
    assert made.returncode == 0 and b"always authenticate" in made.stdout, shown(made)
    (tmp_path / "data").write_bytes(b"signed with a context-specific login")
    for round in range(3):  # three members serve in turn
        signed = pkcs11_tool(
            served.env(),
            "--login",
            "--pin",
            USER_PIN,
            "--sign",
            "--id",
            "d4",
            "-m",
            "SHA256-RSA-PKCS",
            "-i",
            str(tmp_path / "data"),
            "-o",
            str(tmp_path / f"sig{round}"),
        )
        assert signed.returncode == 0, shown(signed)
        checked = pkcs11_tool(
            served.env(),
            "--login",
            "--pin",
            USER_PIN,
            "--verify",
            "--id",
            "d4",
            "-m",
            "SHA256-RSA-PKCS",
            "-i",
            str(tmp_path / "data"),
            "--signature-file",
            str(tmp_path / f"sig{round}"),
        )
        assert checked.returncode == 0 and b"Signature is valid" in checked.stdout, shown(checked)
    for member in ("member1", "member2", "member3"):
        listed = subprocess.run(
            [
                "pkcs11-tool",
                "--module",
                SOFTHSM_LIB,
                "--token-label",
                member,
                "--login",
                "--pin",
                USER_PIN,
                "-O",
                "--type",
                "privkey",
                "--id",
                "d4",
            ],
            env=softhsm_env(served.home),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0 and "always authenticate" in listed.stdout, (
            listed.stdout + listed.stderr
        )
