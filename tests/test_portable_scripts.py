"""Shipped scripts survive another set-up: slot numbers come from ${HA_SLOT},
${HA_SLOT_<label>} and ${MEMBER_SLOT_n}, so the same script runs with 2 or 3 members and under
HAOnly (where the HA slot is the only one and CKDemo does not ask for it); a script that needs a
slot this set-up does not have says so in one line before anything runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import no_traceback, requires_softhsm
from support import REPO
from test_ha_demo import ha_status_blocks, token_serials
from test_handles import two_groups

pytestmark = requires_softhsm

SCRIPTS = REPO / "scripts"
HA_SCRIPTS = ["ha-failover-demo", "crypto-tour"]  # on the HA slot (crypto-tour by its @default)
MEMBER_SCRIPTS = ["token-tour", "keys-tour", "negative-cases"]  # on member 1's slot
TOUR_SLOT_SCRIPTS = [
    "token-tour",
    "keys-tour",
]  # ... through ${TOUR_SLOT} (run --token-label chooses another)
SUMMARY = re.compile(r"(?m)^Replay: (\d+) steps, (\d+) met their expectation, 0 did not$")


@pytest.fixture(scope="module", params=[2, 3], ids=["2 members", "3 members"])
def setup(request, tmp_path_factory, provision, run_ckdemo):
    """A home with N members; the test switches HAOnly on or off (`ckdemo hagroup haonly`)."""
    base = tmp_path_factory.mktemp(f"portable-{request.param}")
    home = provision(base / "home", "--members", str(request.param))

    def run(name: str, ha_only: bool, env: dict[str, str] | None = None):
        switched = run_ckdemo(home, "hagroup", "haonly", "on" if ha_only else "off")
        assert switched.returncode == 0, switched.stderr
        work = base / f"work-{name}-{ha_only}"
        work.mkdir(exist_ok=True)
        done = run_ckdemo(home, "run", str(SCRIPTS / name), env=env, cwd=work)
        no_traceback(done.stdout, done.stderr)
        return done

    return request.param, run


def assert_every_step_met(done) -> None:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    summary = SUMMARY.search(done.stdout)
    assert summary and summary.group(1) == summary.group(2), done.stdout[-500:]


@pytest.mark.parametrize("ha_only", [False, True], ids=["all slots", "HAOnly"])
def test_ha_failover_demo_runs_in_every_setup(setup, ha_only):
    members, run = setup
    done = run("ha-failover-demo", ha_only)
    assert_every_step_met(done)
    blocks = ha_status_blocks(done.stdout)
    ok, down = ["CKR_OK"] * members, ["CKR_OK"] * (members - 1)
    assert [[code for _, code in rows] for _, rows in blocks] == [
        ok,
        ["CKR_DEVICE_ERROR"] + down,
        ["CKR_TOKEN_NOT_PRESENT"] + down,
        ok,
    ]
    ha_slot = 1 if ha_only else members + 2  # the members, SoftHSM's free slot, then the HA slot
    assert f"Session handle: 1000001 (slot#{ha_slot}, R/W)" in done.stdout
    if ha_only:  # one slot: CKDemo picks it without asking, the script's ${HA_SLOT} line is skipped
        assert "Select a slot:" not in done.stdout
        assert done.stdout.count("(the only slot, slot#1, is picked without asking: ${HA_SLOT})") == 8
    else:  # the slot number is shown, not masked: it is no secret
        assert done.stdout.count(f"Select a slot: {ha_slot}\n") == 8


@pytest.mark.parametrize("ha_only", [False, True], ids=["all slots", "HAOnly"])
def test_crypto_tour_defaults_to_the_ha_slot(setup, ha_only):
    members, run = setup
    done = run("crypto-tour", ha_only)
    assert_every_step_met(done)
    assert "@default TOUR_SLOT ${HA_SLOT}: used" in done.stdout
    ha_slot = 1 if ha_only else members + 2
    assert f"Session handle: 1000001 (slot#{ha_slot}, R/W)" in done.stdout


@pytest.mark.parametrize("name", MEMBER_SCRIPTS)
def test_member_slot_scripts_run_on_member1_whatever_the_member_count(setup, name):
    members, run = setup
    done = run(name, False)
    assert_every_step_met(done)
    assert "Session handle: 1 (slot#1, R/W)" in done.stdout


@pytest.mark.parametrize("name", MEMBER_SCRIPTS)
def test_member_slot_scripts_under_haonly_say_why_in_one_line(setup, name):
    members, run = setup
    done = run(name, True)
    assert done.returncode == 2
    assert done.stdout == ""  # before anything ran, not even the menu
    [line] = done.stderr.splitlines()
    why = (
        r"member 1 \(member1\) has no slot in the list: HAOnly lists only the HA virtual slots "
        r"\(ckdemo hagroup haonly off\)"
    )
    if name in TOUR_SLOT_SCRIPTS:  # the tours' slot is ${TOUR_SLOT}, member 1's by its @default
        assert re.fullmatch(
            rf"ckdemo: \S+/scripts/{name}:\d+: \$\{{TOUR_SLOT\}} is not set and its "
            rf"@default needs \$\{{MEMBER_SLOT_1\}}: {why} \(or export TOUR_SLOT=...\)",
            line,
        ), line
    else:
        assert re.fullmatch(rf"ckdemo: \S+/scripts/{name}:\d+: \$\{{MEMBER_SLOT_1\}}: {why}", line), line


def test_crypto_tour_under_haonly_on_another_slot_fails_the_step(setup):
    """A slot variable naming a slot other than the only one: that choice fails, nothing else."""
    members, run = setup
    done = run("crypto-tour", True, env={"TOUR_SLOT": "3"})
    assert done.returncode == 1
    lines = (SCRIPTS / "crypto-tour").read_text().splitlines()
    slot_line = lines.index("${TOUR_SLOT}") + 1  # the script's own numbering, from 1
    assert f"line {slot_line}: **** is not slot#1, the only slot." in done.stdout
    assert f"FAILED line {slot_line - 1}: choice 1 (Open Session) ended with BAD_INPUT" in done.stdout


# ---------------------------------------------------------------- several groups, wrong numbers


@pytest.fixture(scope="module")
def two_group_home(tmp_path_factory, provision) -> Path:
    home = provision(tmp_path_factory.mktemp("two-groups") / "home")
    two_groups(home)  # ha-a over member1, member2 (slot#5); ha-b over member3 (slot#6)
    return home


def test_each_group_has_its_own_slot_variable(two_group_home, menu):
    serials = token_serials(two_group_home)
    code, out = menu(two_group_home, "52\n${HA_SLOT_ha_b}\n52\n${HA_SLOT_ha_a}\n11\n${MEMBER_SLOT_3}\n0\n")
    assert code == 0, out
    assert [(group, [s for s, _ in rows]) for group, rows in ha_status_blocks(out)] == [
        ("1" + serials["member3"], [serials["member3"]]),
        ("1" + serials["member1"], [serials["member1"], serials["member2"]]),
    ]
    assert "Select a slot: 6\n" in out and "Select a slot: 5\n" in out and "Select a slot: 3\n" in out


def test_ha_slot_with_two_groups_asks_for_a_label(two_group_home, run_ckdemo):
    done = run_ckdemo(two_group_home, "run", "-", input="# which group?\n52\n${HA_SLOT}\n0\n")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "ckdemo: <stdin>:3: ${HA_SLOT}: 2 HA groups are configured: name one "
        "(${HA_SLOT_ha_a}, ${HA_SLOT_ha_b})\n"
    )


@pytest.mark.parametrize(
    "script, message",
    [
        ("11\n${MEMBER_SLOT_4}\n0\n", "<stdin>:2: ${MEMBER_SLOT_4}: the HA group has 3 member(s)"),
        (
            "52\n${HA_SLOT_nope}\n0\n",
            "<stdin>:2: ${HA_SLOT_nope}: no HA group has that label (groups: ${HA_SLOT_ckdemo_ha})",
        ),
        ("@default SLOT\n11\n0\n", "<stdin>:1: @default needs a variable name and its value"),
        ("@default HA_SLOT 1\n11\n0\n", "<stdin>:1: @default needs a variable name and its value"),
        (
            "@default S ${QA_UNSET_VARIABLE}\n11\n${S}\n0\n",
            "<stdin>:3: ${S} is not set and its @default needs ${QA_UNSET_VARIABLE} is not set "
            "(export QA_UNSET_VARIABLE=...) (or export S=...)",
        ),
    ],
)
def test_a_slot_the_setup_lacks_is_one_line_before_anything_runs(shared_home, run_ckdemo, script, message):
    done = run_ckdemo(shared_home, "run", "-", input=script)
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"ckdemo: {message}"), line


def test_default_gives_way_to_the_environment_and_is_masked_like_it(shared_home, run_ckdemo):
    script = "@default QA_SLOT ${MEMBER_SLOT_2}\n11\n${QA_SLOT}\n0\n"
    default = run_ckdemo(shared_home, "run", "-", input=script)
    assert default.returncode == 0, default.stdout
    assert "@default QA_SLOT ${MEMBER_SLOT_2}: used" in default.stdout
    assert "   Slot             : slot#2 (slot id" in default.stdout
    given = run_ckdemo(shared_home, "run", "-", input=script, env={"QA_SLOT": "3"})
    assert given.returncode == 0, given.stdout
    assert "@default QA_SLOT ${MEMBER_SLOT_2}: not used, the environment sets QA_SLOT" in given.stdout
    assert "Select a slot: ****\n" in given.stdout
    assert "   Slot             : slot#3 (slot id" in given.stdout
