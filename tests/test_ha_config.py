"""HA configuration in Luna's own Chrystoki.conf format, and the `ckdemo hagroup` commands.

Two kinds of file:
- a Luna client's Chrystoki.conf (tests/data/luna-Chrystoki.conf: Chrystoki2 LibUNIX64 pointing at
  SoftHSM2, Luna/CardReader/Misc/LunaSA Client sections ckdemo has no use for, a VirtualToken group
  over a provisioned home's member serials, HAConfiguration with non-default values), used with
  `--config FILE` and SOFTHSM2_CONF from the environment, since it has no CKDemo section;
- a default home's own Chrystoki.conf, written by `ckdemo init`.

Token state is read back with softhsm2-util and pkcs11-tool, never with ckdemo itself.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from conftest import MEMBERS, USER_PIN, no_traceback, requires_softhsm
from test_ha_demo import token_serials

pytestmark = requires_softhsm

LUNA_TEMPLATE = Path(__file__).resolve().parent / "data" / "luna-Chrystoki.conf"
LUNA_GROUP = "lunaHA"
DEFAULT_GROUP = "ckdemo-ha"
HA_SLOT = "HA Virtual Card Slot"
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) HA group (\S+) member (\S+) ([a-z-]+)(?:: (.*))?$")


# ------------------------------------------------------------------------------ helpers


def slot_rows(transcript: str) -> list[tuple[int, str, str]]:
    """(slot#, description, label) of every row of the first Get Slot List (14) table."""
    lines = transcript.split("\n")
    start = lines.index("Enter your choice : 14")
    rows = []
    for line in lines[start + 1 :]:
        if line.endswith(" slots."):
            break
        match = re.match(r"^slot#(\d+)  +(.+?)  +(?:yes|no)(?:  +(\S+))?\s*$", line)
        if match:
            rows.append((int(match.group(1)), match.group(2), match.group(3) or ""))
    assert rows, transcript
    return rows


def ha_slot_number(transcript: str) -> int:
    [number] = [n for n, description, _ in slot_rows(transcript) if description == HA_SLOT]
    return number


def conf_lines(path: Path) -> list[str]:
    return path.read_bytes().decode().splitlines(keepends=True)


def error_lines(stderr: str) -> list[str]:
    """The lines that say what is wrong (click prints Usage/Try lines around its Error line)."""
    return [line for line in stderr.splitlines() if line.startswith(("Error:", "ckdemo:"))]


def objects(listing: str) -> list[tuple[str, str]]:
    """(label, hex id) of every object pkcs11-tool --list-objects printed."""
    return re.findall(r"label:\s+(.*?)\s*\n\s+ID:\s+([0-9a-f]+)", listing)


# ------------------------------------------------------------------------------ a Luna client file


@pytest.fixture(scope="module")
def luna_home(tmp_path_factory, provision) -> Path:
    """The tokens the Luna file's HA group is made of (only read, or failed and restored)."""
    return provision(tmp_path_factory.mktemp("luna") / "home")


@pytest.fixture
def luna(tmp_path, luna_home, run_ckdemo):
    """The Luna file with this home's member serials and a log folder filled in, and a runner
    for `ckdemo --config FILE ...` under SOFTHSM2_CONF of the home."""
    serials = token_serials(luna_home)
    log_dir = tmp_path / "halog"
    log_dir.mkdir()
    text = LUNA_TEMPLATE.read_text()
    for placeholder in ("@MEMBER1@", "@MEMBER2@", "@MEMBER3@", "@LOGDIR@"):
        assert placeholder in text
    for n, label in enumerate(MEMBERS, start=1):
        text = text.replace(f"@MEMBER{n}@", serials[label])
    conf = tmp_path / "Chrystoki.conf"
    conf.write_text(text.replace("@LOGDIR@", str(log_dir)))
    unused_home = tmp_path / "unused-home"

    class Luna:
        path, logs, home = conf, log_dir, unused_home
        member_serials = [serials[label] for label in MEMBERS]

        @staticmethod
        def run(*args: str, input: str | None = None, config: Path | None = None):
            return run_ckdemo(
                unused_home,
                "--config",
                str(config or conf),
                *args,
                input=input,
                env={"SOFTHSM2_CONF": str(luna_home / "softhsm2.conf")},
            )

    return Luna


def test_luna_file_hagroup_show(luna):
    done = luna.run("hagroup", "show")
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    m1, m2, m3 = luna.member_serials
    lines = done.stdout.splitlines()
    assert lines[0] == f"HA group {LUNA_GROUP}  serial 1{m1}"
    rows = [line.split() for line in lines[3:6]]
    assert rows == [
        ["1", m1, "member1", "yes", "CKR_OK"],
        ["2", m2, "member2", "yes", "CKR_OK"],
        ["3", m3, "member3", "yes", "CKR_OK"],
    ]
    assert (
        f"reconnAtt = 3 (attempts); AutoReconnectInterval = 7 s; HAOnly = 1; "
        f"haLogStatus = enabled; haLogPath = {luna.logs}" in lines
    )
    assert not (luna.home / "Chrystoki.conf").exists()  # --config never provisions a home
    assert not (luna.home / "tokens").exists()


def test_luna_file_haonly_hides_the_members(luna):
    done = luna.run("run", "-", input="14\n0\n")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = slot_rows(done.stdout)
    assert (ha_slot_number(done.stdout), HA_SLOT, LUNA_GROUP) == rows[-1]
    labels = [label for _, _, label in rows]
    for member in MEMBERS:
        assert member not in labels
    assert not any(member in done.stdout for member in MEMBERS)


def test_luna_file_haonly_lists_only_the_virtual_slot(luna):
    done = luna.run("run", "-", input="14\n0\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert slot_rows(done.stdout) == [(1, HA_SLOT, LUNA_GROUP)]
    assert "\n1 slots.\n" in done.stdout or "\n1 slot.\n" in done.stdout


def test_luna_file_settings_drive_the_running_group(luna):
    """reconnAtt 3, AutoReconnectInterval 7, haLogStatus/haLogPath from the Luna file are what a
    session runs with: 122 reports them, and a member failure goes to LOGDIR/haErrorLog.txt."""
    # HAOnly leaves one slot, the HA slot, and a lone slot is picked without "Select a slot:"
    done = luna.run("run", "-", input="@fail member2\n52\n122\n0\n")
    assert done.returncode == 0, done.stdout + done.stderr
    m1, m2, m3 = luna.member_serials
    assert f"   HSM {m2} - CKR_DEVICE_ERROR" in done.stdout
    assert "Recovery (activeBasic, inside a call): every 7 s, 3 attempts; load balancing on." in done.stdout
    log = (luna.logs / "haErrorLog.txt").read_text().splitlines()
    assert len(log) == 1, log
    match = LOG_LINE.match(log[0])
    assert match and match.group(2, 3, 4) == (f"1{m1}", m2, "failed"), log


def test_luna_file_retry_and_interval_change_only_their_lines(luna):
    before = conf_lines(luna.path)
    for args in (("retry", "--count", "5"), ("interval", "--seconds", "30")):
        done = luna.run("hagroup", *args)
        no_traceback(done.stdout, done.stderr)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            f"Updated {luna.path}",
            "A running ckdemo menu applies it "
            "before its next choice; a running `ckdemo serve` keeps "
            "the old value until it restarts.",
        ]
    after = conf_lines(luna.path)
    assert len(after) == len(before)
    changed = {i: (a, b) for i, (a, b) in enumerate(zip(before, after)) if a != b}
    assert sorted(changed.values()) == sorted(
        [
            ("   AutoReconnectInterval = 7;\n", "   AutoReconnectInterval = 30;\n"),
            ("   reconnAtt = 3;\n", "   reconnAtt = 5;\n"),
        ]
    ), changed
    # keys ckdemo has no use for are still there, unchanged
    text = luna.path.read_text()
    for line in (
        "   VirtualTokenActiveRecovery = activeBasic;",
        "   haLogToStdout = disabled;",
        "   logLen = 262144;",
        "   PEDTimeout3 = 20000;",
        "   ServerHtl00 = ;",
        "   ProtectedAuthenticationPathFlagStatus = 0;",
        "   lunaHA = 1;",
        "   # lunacm: hagroup retry -count 3 / hagroup interval -interval 7 / hagroup haonly -enable",
    ):
        assert line + "\n" in text
    show = luna.run("hagroup", "show")
    assert (
        "reconnAtt = 5 (attempts); AutoReconnectInterval = 30 s; HAOnly = 1; "
        f"haLogStatus = enabled; haLogPath = {luna.logs}" in show.stdout.splitlines()
    )


def test_luna_file_haonly_and_log_switches_change_only_their_lines(luna):
    before = conf_lines(luna.path)
    for args in (("haonly", "off"), ("log", "off")):
        done = luna.run("hagroup", *args)
        assert done.returncode == 0, done.stderr
    after = conf_lines(luna.path)
    changed = sorted((a, b) for a, b in zip(before, after) if a != b)
    assert len(after) == len(before)
    assert changed == [
        ("   HAOnly = 1;\n", "   HAOnly = 0;\n"),
        ("   haLogStatus = enabled;\n", "   haLogStatus = disabled;\n"),
    ], changed
    listing = luna.run("run", "-", input="14\n0\n")
    rows = slot_rows(listing.stdout)
    # no CKDemo section to order the members: physical slots come in the library's order
    assert sorted(label for _, _, label in rows[:-1]) == ["", *MEMBERS]
    assert rows[-1][1:] == (HA_SLOT, LUNA_GROUP)


def test_luna_file_with_a_non_numeric_reconnatt(luna):
    text = luna.path.read_text().replace("reconnAtt = 3;", "reconnAtt = three;")
    luna.path.write_text(text)
    for args, stdin in ((("hagroup", "show"), None), (("run", "-"), "14\n0\n")):
        done = luna.run(*args, input=stdin)
        no_traceback(done.stdout, done.stderr)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.splitlines() == ["ckdemo: HAConfiguration.reconnAtt = 'three' is not a number"]
    assert luna.path.read_text() == text


# ------------------------------------------------------------------------------ a default home


def test_hagroup_show_on_a_fresh_home(run_ckdemo, home):
    serials = token_serials(home)
    m1, m2, m3 = (serials[label] for label in MEMBERS)
    done = run_ckdemo(home, "hagroup", "show")
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"HA group {DEFAULT_GROUP}  serial 1{m1}\n"
        "#    HSM               Label    Found    Status\n"
        "---  ----------------  -------  -------  --------\n"
        f"1    {m1}  member1  yes      CKR_OK\n"
        f"2    {m2}  member2  yes      CKR_OK\n"
        f"3    {m3}  member3  yes      CKR_OK\n"
        "\n"
        "reconnAtt = -1 (unlimited); AutoReconnectInterval = 60 s; HAOnly = 0; haLogStatus = disabled\n"
        "Recovery mode:     activeBasic (inside an application call)\n"
        "Per-member call counts belong to a running session: menu choice 122.\n"
    )


def test_retry_and_interval_create_and_fill_haconfiguration(run_ckdemo, home):
    conf = home / "Chrystoki.conf"
    before = conf.read_bytes()
    assert b"HAConfiguration" not in before
    assert run_ckdemo(home, "hagroup", "retry", "--count", "4").returncode == 0
    after_retry = conf.read_bytes()
    assert after_retry.startswith(before)  # nothing above it moved
    assert after_retry[len(before) :] == b"HAConfiguration = {\n   reconnAtt = 4;\n}\n"
    assert run_ckdemo(home, "hagroup", "interval", "--seconds", "2.5").returncode == 0
    assert conf.read_bytes() == before + (
        b"HAConfiguration = {\n   reconnAtt = 4;\n   AutoReconnectInterval = 2.5;\n}\n"
    )
    show = run_ckdemo(home, "hagroup", "show")
    assert (
        "reconnAtt = 4 (attempts); AutoReconnectInterval = 2.5 s; HAOnly = 0; "
        "haLogStatus = disabled" in show.stdout.splitlines()
    )
    stats = run_ckdemo(home, "run", "-", input="122\n5\n0\n")
    assert stats.returncode == 0, stats.stdout
    assert (
        "Recovery (activeBasic, inside a call): every 2.5 s, 4 attempts; load balancing on." in stats.stdout
    )


def test_interval_alone_creates_haconfiguration(run_ckdemo, home):
    conf = home / "Chrystoki.conf"
    before = conf.read_bytes()
    done = run_ckdemo(home, "hagroup", "interval", "--seconds", "90")
    assert done.returncode == 0, done.stderr
    assert conf.read_bytes() == before + b"HAConfiguration = {\n   AutoReconnectInterval = 90;\n}\n"


def test_haonly_on_hides_the_members_and_off_shows_them(run_ckdemo, home):
    listing = run_ckdemo(home, "run", "-", input="14\n0\n")
    assert [label for _, _, label in slot_rows(listing.stdout)] == [*MEMBERS, "", DEFAULT_GROUP]
    assert run_ckdemo(home, "hagroup", "haonly", "on").returncode == 0
    assert "   HAOnly = 1;\n" in (home / "Chrystoki.conf").read_text()
    hidden = run_ckdemo(home, "run", "-", input="14\n0\n")
    assert hidden.returncode == 0, hidden.stdout
    rows = slot_rows(hidden.stdout)
    assert rows[-1][1:] == (HA_SLOT, DEFAULT_GROUP)
    assert not any(label in MEMBERS for _, _, label in rows), rows
    assert run_ckdemo(home, "hagroup", "haonly", "off").returncode == 0
    assert "   HAOnly = 0;\n" in (home / "Chrystoki.conf").read_text()
    shown = run_ckdemo(home, "run", "-", input="14\n0\n")
    assert [label for _, _, label in slot_rows(shown.stdout)] == [*MEMBERS, "", DEFAULT_GROUP]
    assert slot_rows(shown.stdout)[-1] == (5, HA_SLOT, DEFAULT_GROUP)


def test_ha_log_one_line_per_event(run_ckdemo, home, tmp_path):
    logs = tmp_path / "ha-logs"
    logs.mkdir()
    done = run_ckdemo(home, "hagroup", "log", "on", "--path", str(logs))
    assert done.returncode == 0, done.stderr
    text = (home / "Chrystoki.conf").read_text()
    assert "   haLogStatus = enabled;\n" in text and f"   haLogPath = {logs};\n" in text
    script = (
        "@ha-interval 0.2\n@fail member2\n52\n5\n"  # failed
        "@sleep 0.3\n52\n5\n"  # recovery attempt, member still down: fails
        "@restore member2\n@sleep 0.3\n52\n5\n0\n"
    )  # recovered
    started = time.time()
    run = run_ckdemo(home, "run", "-", input=script)
    finished = time.time()
    assert run.returncode == 0, run.stdout + run.stderr
    serials = token_serials(home)
    assert sorted(p.name for p in logs.iterdir()) == ["haErrorLog.txt"]
    lines = (logs / "haErrorLog.txt").read_text().splitlines()
    events = [LOG_LINE.match(line) for line in lines]
    assert all(events), lines
    assert [(m.group(2), m.group(3), m.group(4)) for m in events] == [
        (f"1{serials['member1']}", serials["member2"], event)
        for event in ("failed", "recovery-attempt", "recovered")
    ], lines
    assert "CKR_DEVICE_ERROR" in events[0].group(5)
    assert events[1].group(5).startswith("#1 failed")
    for match in events:
        stamp = time.mktime(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S"))
        assert started - 1 <= stamp <= finished + 1, (match.group(1), started, finished)
    assert not (home / "ha.log").exists()


def test_synchronize_copies_a_key_back_to_the_member_that_lost_it(run_ckdemo, home, independent):
    """A key generated on the HA slot, destroyed on member3 through its physical slot (22),
    comes back with `hagroup synchronize`: same id, same key material (pkcs11-tool)."""
    generate = (
        "50\n5\n${CKDEMO_SO_PIN}\n51\n5\n${CKDEMO_USER_PIN}\n1\n5\ny\n"
        "45\n${LAST_SESSION}\n7\nsync-key\ny\ny\nn\n0\n"
    )
    done = run_ckdemo(home, "run", "-", input=generate)
    assert done.returncode == 0, done.stdout
    find = "1\n3\ny\n3\n1\n1\n${CKDEMO_USER_PIN}\n26\n1\nCKA_LABEL=sync-key\n.\n"
    found = run_ckdemo(home, "run", "-", input=find + "0\n")
    assert found.returncode == 0, found.stdout
    [handle] = re.findall(r"(?m)^(\d+) +CKO_SECRET_KEY +CKK_AES +sync-key ", found.stdout)
    destroy = run_ckdemo(home, "run", "-", input=find + f"22\n1\n{handle}\n0\n")
    assert destroy.returncode == 0, destroy.stdout
    assert f"Object {handle} destroyed." in destroy.stdout

    def listing(member: str) -> list[tuple[str, str]]:
        result = independent(home, "--token-label", member, "--login", "--pin", USER_PIN, "--list-objects")
        assert result.returncode == 0, result.stderr
        return [o for o in objects(result.stdout) if o[0] == "sync-key"]

    [key] = listing("member1")
    assert listing("member2") == [key]
    assert listing("member3") == []

    sync = run_ckdemo(home, "hagroup", "synchronize")
    no_traceback(sync.stdout, sync.stderr)
    assert sync.returncode == 0, sync.stderr
    assert sync.stdout == f"HA group {DEFAULT_GROUP}: 1 object(s) copied.\n"
    for member in MEMBERS:
        assert listing(member) == [key], member
    # the same key, not a new one: AES-ECB of one block agrees on member1 and member3
    block = home.parent / "block"
    block.write_bytes(bytes(16))
    ciphertexts = []
    for member in ("member1", "member3"):
        out = home.parent / f"enc-{member}"
        result = independent(
            home,
            "--token-label",
            member,
            "--login",
            "--pin",
            USER_PIN,
            "--encrypt",
            "-m",
            "AES-ECB",
            "--id",
            key[1],
            "--input-file",
            str(block),
            "--output-file",
            str(out),
        )
        assert result.returncode == 0, result.stderr
        ciphertexts.append(out.read_bytes())
    assert len(ciphertexts[0]) == 16 and ciphertexts[0] == ciphertexts[1]
    again = run_ckdemo(home, "hagroup", "synchronize")
    assert again.stdout == f"HA group {DEFAULT_GROUP}: 0 object(s) copied.\n"
    assert listing("member3") == [key]


@pytest.mark.parametrize(
    "args, option",
    [
        (("retry", "--count", "-5"), "--count"),
        (("retry", "--count", "many"), "--count"),
        (("interval", "--seconds", "0"), "--seconds"),
        (("interval", "--seconds", "-3"), "--seconds"),
        (("haonly", "maybe"), "on|off"),
    ],
)
def test_bad_values_are_refused_and_the_file_is_left_alone(run_ckdemo, home, args, option):
    conf = home / "Chrystoki.conf"
    before = conf.read_bytes()
    done = run_ckdemo(home, "hagroup", *args)
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 2, done.stderr
    [line] = error_lines(done.stderr)
    assert option in line and args[-1] in line, line
    assert done.stdout == ""
    assert conf.read_bytes() == before


@pytest.mark.parametrize("key, value", [("reconnAtt", "three"), ("AutoReconnectInterval", "1m")])
def test_non_numeric_setting_in_the_file(run_ckdemo, home, key, value):
    conf = home / "Chrystoki.conf"
    conf.write_text(conf.read_text() + f"HAConfiguration = {{\n   {key} = {value};\n}}\n")
    for args, stdin in ((("hagroup", "show"), None), (("run", "-"), "14\n0\n")):
        done = run_ckdemo(home, *args, input=stdin)
        no_traceback(done.stdout, done.stderr)
        assert done.returncode == 2, (args, done.stdout)
        assert done.stderr.splitlines() == [f"ckdemo: HAConfiguration.{key} = {value!r} is not a number"]


@pytest.mark.parametrize(
    "args", [("hagroup", "show"), ("hagroup", "retry", "--count", "3"), ("hagroup", "synchronize")]
)
def test_missing_config_file(run_ckdemo, tmp_path, args):
    missing = tmp_path / "missing.conf"
    done = run_ckdemo(tmp_path / "home", "--config", str(missing), *args)
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"ckdemo: config file not found: {missing}"]
    assert done.stdout == ""
    assert not missing.exists()  # a write command does not create it
    assert not (tmp_path / "home").exists()
