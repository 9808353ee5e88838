"""Luna's HA auto-recovery scenario as its documentation tells it, as shipped: `ckdemo run
scripts/ha-failover-demo`.

Its transcript is a golden file (tests/golden/ha-failover-demo.txt). The normaliser here is stricter
than tests/test_golden.py's: member serials become <member1>..<member3> by the member's position in
the provisioned home (so the group serial reads 1<member1>, and members listed in another order, or
a group serial built from another member, do not compare equal); SoftHSM slot ids, signature bytes,
the home and the library path are hidden. Status lines, HA Status lines (with their spacing), call
counts, member states and the order of every line stay as they are.

After an intended change of the screen, regenerate and review:
    CKDEMO_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/test_ha_demo.py && git diff tests/golden
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import (
    MEMBERS,
    SO_PIN,
    SOFTHSM_LIB,
    USER_PIN,
    assert_pins_hidden,
    no_traceback,
    requires_softhsm,
    softhsm_env,
)
from support import GOLDEN_DIR, REPO, assert_matches_golden, unalign_id_tables

pytestmark = requires_softhsm

SCRIPT = REPO / "scripts" / "ha-failover-demo"
GOLDEN = GOLDEN_DIR / "ha-failover-demo.txt"

HA_STATUS_HEADER = re.compile(r"^HA group (\S+) status:$")
# CKDemo on Luna: "   HSM 599447001      - CKR_OK" (three spaces, the serial padded to 14; ours have 16)
HA_STATUS_LINE = re.compile(r"^   HSM ([0-9a-f]{16}) - (CKR_[A-Z_]+)$")


def token_serials(home: Path) -> dict[str, str]:
    """{label: serial} of the home's tokens, read by softhsm2-util (not by ckdemo)."""
    done = subprocess.run(
        ["softhsm2-util", "--show-slots"], capture_output=True, text=True, timeout=60, env=softhsm_env(home)
    )
    assert done.returncode == 0, done.stderr
    found, serial = {}, ""
    for line in done.stdout.splitlines():
        name, _, value = line.strip().partition(":")
        if name == "Serial number":
            serial = value.strip()
        elif name == "Label" and value.strip():
            found[value.strip()] = serial
    assert sorted(found) == sorted(MEMBERS), found
    return found


def normalise(transcript: str, home: Path, serials: dict[str, str]) -> str:
    text = transcript.replace(str(home), "<HOME>").replace(SOFTHSM_LIB, "<LIBRARY>")
    # signatures first: a serial could in principle occur inside random bytes
    text = re.sub(r"(?m)^([0-9a-f]{2}){32,}$", lambda m: f"<HEX {len(m.group(0)) // 2} bytes>", text)
    for position, label in enumerate(MEMBERS, start=1):  # by position: order matters
        text = text.replace(serials[label], f"<member{position}>")
    text = re.sub(r"SoftHSM slot ID 0x[0-9a-f]+\b", "SoftHSM slot ID <ID>", text)
    text = re.sub(r"\(slot id \d+\)", "(slot id <ID>)", text)
    return "\n".join(unalign_id_tables(text.split("\n")))


@dataclass
class Demo:
    stdout: str
    stderr: str
    returncode: int
    home: Path
    serials: dict[str, str]  # label -> serial, from softhsm2-util

    def normalised(self, text: str | None = None) -> str:
        return normalise(self.stdout if text is None else text, self.home, self.serials)


@pytest.fixture(scope="module")
def demo(run_ckdemo, tmp_path_factory) -> Demo:
    home = tmp_path_factory.mktemp("ha-demo") / "home"
    run = run_ckdemo(home, "run", str(SCRIPT))
    return Demo(run.stdout, run.stderr, run.returncode, home, token_serials(home))


def ha_status_blocks(stdout: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every HA Status output: (group serial, [(member serial, CKR name), ...])."""
    lines = stdout.split("\n")
    blocks = []
    for i, line in enumerate(lines):
        header = HA_STATUS_HEADER.match(line)
        if header:
            rows = []
            for row in lines[i + 1 :]:
                match = HA_STATUS_LINE.match(row)
                if not match:
                    break
                rows.append((match.group(1), match.group(2)))
            blocks.append((header.group(1), rows))
    return blocks


# ------------------------------------------------------------------------------ the run itself


def test_demo_exits_0_with_every_step_met(demo):
    no_traceback(demo.stdout, demo.stderr)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr
    summary = re.search(r"(?m)^Replay: (\d+) steps, (\d+) met their expectation, 0 did not$", demo.stdout)
    assert summary and summary.group(1) == summary.group(2), demo.stdout[-500:]
    assert demo.stderr == ""


def test_demo_shows_no_pin(demo):
    assert_pins_hidden(demo.stdout, USER_PIN, SO_PIN)
    assert USER_PIN not in demo.stderr and SO_PIN not in demo.stderr


def test_ha_status_sequence_is_the_seeds(demo):
    """OK before the failure; CKR_DEVICE_ERROR at the first status after it, then
    CKR_TOKEN_NOT_PRESENT; all CKR_OK after the recovery. Members in group order."""
    m1, m2, m3 = (demo.serials[label] for label in MEMBERS)
    blocks = ha_status_blocks(demo.stdout)
    assert [[code for _, code in rows] for _, rows in blocks] == [
        ["CKR_OK", "CKR_OK", "CKR_OK"],
        ["CKR_DEVICE_ERROR", "CKR_OK", "CKR_OK"],
        ["CKR_TOKEN_NOT_PRESENT", "CKR_OK", "CKR_OK"],
        ["CKR_OK", "CKR_OK", "CKR_OK"],
    ], blocks
    for _, rows in blocks:
        assert [serial for serial, _ in rows] == [m1, m2, m3]


def test_ha_status_header_is_1_plus_member1_serial(demo):
    member1 = demo.serials["member1"]  # from softhsm2-util --show-slots, not from ckdemo
    headers = [
        line for line in demo.stdout.split("\n") if line.startswith("HA group ") and line.endswith(" status:")
    ]
    assert len(headers) == 4
    assert set(headers) == {f"HA group 1{member1} status:"}
    # each header is preceded by an empty line and followed by exactly the three member lines
    lines = demo.stdout.split("\n")
    for i, line in enumerate(lines):
        if line in headers:
            assert lines[i - 1] == ""
            assert [HA_STATUS_LINE.match(row) is not None for row in lines[i + 1 : i + 5]] == [
                True,
                True,
                True,
                False,
            ]
            assert lines[i + 4].startswith("Status: ")


def _step(stdout: str, data: str) -> list[str]:
    """The lines of the sign step that signed `data`: from its data prompt to its Status line."""
    lines = stdout.split("\n")
    start = lines.index(f"Enter data to sign (text, or @file) : {data}")
    end = next(j for j in range(start, len(lines)) if lines[j].startswith("Status: "))
    return lines[start : end + 1]


def test_failure_is_noticed_inside_the_sign_that_hit_it(demo):
    step = _step(demo.stdout, "HA demo: signed while member 1 is down")
    group = "1" + demo.serials["member1"]
    notice = f"  (HA group {group} member {demo.serials['member1']} failed: C_Sign returned CKR_DEVICE_ERROR)"
    assert notice in step, step
    assert step[-1] == "Status: Doing great, no errors (CKR_OK)"  # the application saw success
    assert any(re.fullmatch(r"[0-9a-f]{512}", line) for line in step)


def test_recovered_notice_comes_before_the_triggering_sign_finishes(demo):
    member1 = demo.serials["member1"]
    notice = f"  (HA group 1{member1} member {member1} recovered: after 1 attempt(s))"
    lines = demo.stdout.split("\n")
    assert lines.count(notice) == 1, "exactly one recovery, on the first call after the interval"
    step = _step(demo.stdout, "HA demo: signed after the recovery")
    assert notice in step, step
    assert step.index(notice) < len(step) - 1  # before the sign's Status line, i.e. inside it
    assert step[-1] == "Status: Doing great, no errors (CKR_OK)"
    # nothing recovered while the application was idle (restore and sleep come before that sign)
    restore = next(i for i, line in enumerate(lines) if line.startswith("@restore member1: "))
    assert lines.index(notice) > restore
    assert not any("recovered" in line for line in lines[:restore])


def test_member_stats_after_the_demo(demo):
    """122: all three members active again with their call counts, unlimited attempts, 2 s."""
    lines = demo.stdout.split("\n")
    start = lines.index("#    HSM               Label    State    Calls    Recovery attempts")
    rows = [line.split() for line in lines[start + 2 : start + 5]]
    assert [(r[1], r[2], r[3], r[5]) for r in rows] == [
        (demo.serials[label], label, "active", "-") for label in MEMBERS
    ]
    assert all(int(r[4]) >= 1 for r in rows), rows  # every member served calls
    assert (
        lines[start + 5]
        == "Recovery (activeBasic, inside a call): every 2 s, unlimited attempts; load balancing on."
    )


# ------------------------------------------------------------------------------ the golden file


def test_transcript_matches_golden(demo):
    assert demo.returncode == 0, demo.stdout[-2000:]
    assert_matches_golden(demo.normalised(), GOLDEN, "scripts/ha-failover-demo")


def test_golden_keeps_the_seed_shapes():
    """The golden file itself says what Luna's documentation says (a regenerated golden cannot drift)."""
    text = GOLDEN.read_text()
    assert text.count("HA group 1<member1> status:") == 4
    assert (
        "   HSM <member1> - CKR_DEVICE_ERROR\n   HSM <member2> - CKR_OK\n   HSM <member3> - CKR_OK\n" in text
    )
    assert (
        "   HSM <member1> - CKR_TOKEN_NOT_PRESENT\n   HSM <member2> - CKR_OK\n"
        "   HSM <member3> - CKR_OK\n" in text
    )
    assert "  slot#5 - HA Virtual Card Slot\n" in text  # CKDemo's slot list: two spaces, one a line
    assert text.count("<HEX 256 bytes>") == 4
    assert "slot#5  HA Virtual Card Slot  yes  ckdemo-ha" in text
    assert not re.search(r"\b[0-9a-f]{16}\b", text)


def test_no_unstable_value_survives_normalising(demo):
    text = demo.normalised()
    assert "SoftHSM slot ID 0x" not in text
    assert not re.search(r"\b[0-9a-f]{16}\b", text)  # every serial was a member's
    assert not re.search(r"[0-9a-f]{64}", text)  # signatures
    assert str(demo.home) not in text
    for position in (1, 2, 3):
        assert f"<member{position}>" in text


def _swap_first_status_rows(stdout: str, serials: dict[str, str]) -> str:
    a = f"   HSM {serials['member1']} - CKR_OK\n"
    b = f"   HSM {serials['member2']} - CKR_OK\n"
    return stdout.replace(a + b, b + a, 1)


MUTATIONS = {
    # HA Status: members in another order, another result, CKDemo's tab, the group serial
    "member order": lambda out, s: _swap_first_status_rows(out, s),
    "detection result": lambda out, s: out.replace(" - CKR_TOKEN_NOT_PRESENT", " - CKR_DEVICE_ERROR", 1),
    "spacing in HA Status": lambda out, s: out.replace(
        f"   HSM {s['member2']} - ", f"     HSM {s['member2']}\t- ", 1
    ),
    "slot list row": lambda out, s: out.replace(
        "  slot#5 - HA Virtual Card Slot\n", "\tslot#5 - HA Virtual Card Slot\n", 1
    ),
    "group serial": lambda out, s: out.replace(
        f"HA group 1{s['member1']} status:", f"HA group 1{s['member2']} status:", 1
    ),
    "unknown serial": lambda out, s: out.replace(f"HSM {s['member3']} ", "HSM 0123456789abcdef ", 1),
    # the 122 table: a call count, a state, a recovery counter
    "call count": lambda out, s: re.sub(
        r"(?m)^(1    \S+  member1  active   )(\d+)",
        lambda m: m.group(1) + str(int(m.group(2)) + 1),
        out,
        count=1,
    ),
    "member state": lambda out, s: re.sub(r"(?m)^(2    \S+  member2  )active", r"\1failed", out, count=1),
    "recovery counter": lambda out, s: re.sub(
        r"(?m)^(3    \S+  member3  active   \d+ +)-", r"\g<1>1", out, count=1
    ),
    # notices, status lines, signatures, the slot list, the summary
    "recovered notice moved": lambda out, s: _move_recovered_notice(out),
    "failover notice dropped": lambda out, s: re.sub(
        r"(?m)^  \(HA group \S+ member \S+ failed: .*\)\n", "", out, count=1
    ),
    "status line": lambda out, s: out.replace(
        "Status: Doing great, no errors (CKR_OK)",
        "Status: C_Sign returned error. (CKR_DEVICE_ERROR 0x00000030)",
        1,
    ),
    "shorter signature": lambda out, s: re.sub(r"(?m)^([0-9a-f]{510})[0-9a-f]{2}$", r"\1", out, count=1),
    "slot table row": lambda out, s: re.sub(
        r"(?m)^(slot#5  HA Virtual Card Slot  +yes  +)ckdemo-ha$", r"\1other-ha", out, count=1
    ),
    "summary": lambda out, s: re.sub(r"(?m)^Replay: \d+ steps", "Replay: 3 steps", out, count=1),
}


def _move_recovered_notice(stdout: str) -> str:
    """The recovered notice printed after the sign's Status line instead of before it."""
    lines = stdout.split("\n")
    i = next(i for i, line in enumerate(lines) if " recovered: " in line)
    notice = lines.pop(i)
    status = next(j for j in range(i, len(lines)) if lines[j].startswith("Status: "))
    lines.insert(status + 1, notice)
    return "\n".join(lines)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_real_change_is_not_normalised_away(demo, name):
    changed = MUTATIONS[name](demo.stdout, demo.serials)
    assert changed != demo.stdout, f"mutation {name!r} no longer applies: pick another sample"
    assert demo.normalised(changed) != demo.normalised()


# ------------------------------------------------------------------ a demo with no failover fails


def test_the_demo_checks_every_ha_status_it_shows(demo):
    """Four HA Status choices, four @expect-status lines met: the demo proves the failover it tells."""
    assert [line for line in demo.stdout.splitlines() if line.startswith("@expect-status")] == [
        "@expect-status all CKR_OK: ok",
        "@expect-status member1 CKR_DEVICE_ERROR: ok",
        "@expect-status member1 CKR_TOKEN_NOT_PRESENT: ok",
        "@expect-status all CKR_OK: ok",
    ]


def _failed_line(stdout: str) -> str:
    [line] = [l for l in stdout.splitlines() if l.startswith("FAILED ")]
    return line


def test_the_demo_without_its_failure_fails_at_the_first_status_after_it(run_ckdemo, home, tmp_path):
    script = tmp_path / "no-failover-demo"
    script.write_text(
        "".join(
            line
            for line in SCRIPT.read_text().splitlines(keepends=True)
            if not line.startswith(("@fail", "@restore"))
        )
    )
    done = run_ckdemo(home, "run", str(script))
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 1, done.stdout[-2000:]
    serial = token_serials(home)["member1"]
    assert re.fullmatch(
        rf"FAILED line \d+: choice 52 \(HA Status\): @expect-status member1 "
        rf"CKR_DEVICE_ERROR \(line \d+\) not met: HSM {serial} \(member1\) showed CKR_OK",
        _failed_line(done.stdout),
    ), _failed_line(done.stdout)
    assert done.stdout.rstrip().endswith("did not (stopped at the first failure)")


def test_the_demo_on_a_home_where_member1_is_in_another_group_fails(run_ckdemo, home, tmp_path):
    """A two-group home: @fail member1 fails a member of the second group, every row of the
    demo's group stays CKR_OK; the demo no longer reports success. (With two groups ${HA_SLOT}
    names none: the demo's group is named, as a user would name it.)"""
    serial = token_serials(home)["member1"]
    for args in (
        ("removemember", "-group", "ckdemo-ha", "-serial", serial),
        ("creategroup", "-label", "second", "-serial", serial),
    ):
        changed = run_ckdemo(home, "hagroup", *args)
        assert changed.returncode == 0, changed.stderr
    script = tmp_path / "two-group-demo"
    script.write_text(SCRIPT.read_text().replace("${HA_SLOT}", "${HA_SLOT_ckdemo_ha}"))
    done = run_ckdemo(home, "run", str(script))
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 1, done.stdout[-2000:]
    assert f"@fail member1: HSM {serial} (member1)" in done.stdout  # it did fail, elsewhere
    line = _failed_line(done.stdout)
    assert re.fullmatch(
        r"FAILED line \d+: choice 52 \(HA Status\): @expect-status member1 "
        r"CKR_DEVICE_ERROR \(line \d+\) not met: no member 'member1' in HA group \S+'s "
        r"status \(its members: 1 member2 \(\S+\), 2 member3 \(\S+\)\)",
        line,
    ), line
