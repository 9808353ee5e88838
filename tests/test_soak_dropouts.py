"""`ckdemo soak` when a member drops out for good (its reconnAtt recovery attempts spent): one
line when it is given up, no wait for it at the end, the report names it, and the run's objects
are removed from it through its own slot (checked with python-pkcs11 straight on every member
token). And the end's wait, when a member can still come back, is said before it starts."""

from __future__ import annotations

import json
import re
import time

from conftest import MEMBERS, USER_PIN, no_traceback, requires_softhsm
from test_held_out import made_outside_ckdemo

pytestmark = requires_softhsm

# seed 1: the first kill at about 1.1 s, its member down 1-1.5 s; the next kill would come after
# 2 s, too late in a 3 s run. With one attempt 0.1 s after the failure, the member is given up.
ONE_DROP = (
    "--seconds",
    "3",
    "--seed",
    "1",
    "--interval",
    "0.1",
    "--kill-every",
    "1,1.5",
    "--down-for",
    "1,1.5",
)
GIVEN_UP = re.compile(
    r"soak: member (\w+) given up at ([\d.]+) s: 1 of 1 recovery attempt\(s\) failed, 0.1 s apart; "
    r"it stays out of service for the rest of the run"
)

# python-pkcs11 on SoftHSM2 itself, in a process of its own: every member token's objects,
# the user logged in
LIST_OBJECTS = """
import json, sys
import pkcs11
from pkcs11 import Attribute
lib = pkcs11.lib(sys.argv[1])
found = {}
for label in sys.argv[3:]:
    with lib.get_token(token_label=label).open(user_pin=sys.argv[2]) as session:
        found[label] = [o[Attribute.LABEL] for o in session.get_objects()]
print(json.dumps(found))
"""


def member_objects(home) -> dict[str, list[str]]:
    return json.loads(made_outside_ckdemo(home, LIST_OBJECTS, *MEMBERS))


def soak_objects(home) -> dict[str, list[str]]:
    return {
        label: [o for o in objects if o.startswith("soak-")]
        for label, objects in member_objects(home).items()
    }


def test_a_member_given_up_is_said_not_waited_for_and_cleared(home, run_ckdemo, tmp_path):
    assert run_ckdemo(home, "hagroup", "retry", "-count", "1").returncode == 0
    done = run_ckdemo(home, "soak", *ONE_DROP, "--json", "--html", str(tmp_path / "soak.html"))
    no_traceback(done.stdout, done.stderr)
    report = json.loads(done.stdout)
    assert done.returncode == 1, done.stderr  # a member lost for good fails the soak
    assert report["parameters"]["retry"] == 1 and report["parameters"]["interval_s"] == 0.1
    [kill] = report["around_failures"]
    [given] = report["given_up"]
    # seen while the workload ran, not at its end
    assert given["member"] == kill["member"] and kill["t_s"] < given["t_s"] < report["elapsed_s"]
    assert (given["attempts"], given["retry"], given["interval_s"]) == (1, 1, 0.1)
    # the run's two known keys (three objects) and the AES keys generated before it dropped
    assert given["removed"] >= 3, given
    assert report["leftovers"] == []
    assert report["consistency"]["all_members_active"] is False
    # said while it happened, one line; no wait for a member that cannot come back
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and GIVEN_UP.fullmatch(lines[0]), done.stderr
    assert GIVEN_UP.fullmatch(lines[0]).group(1) == given["member"]
    assert (
        f"<p>Member {given['member']} given up at {given['t_s']} s: 1 of 1 recovery attempt(s) failed, "
        "0.1 s apart.</p>"
    ) in (tmp_path / "soak.html").read_text()
    # nothing of the run left on any member token, the one given up included
    assert soak_objects(home) == {label: [] for label in MEMBERS}


def test_the_text_report_names_the_member_given_up(home, run_ckdemo):
    run_ckdemo(home, "hagroup", "retry", "-count", "1")
    done = run_ckdemo(home, "soak", *ONE_DROP)
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 1
    [line] = [line for line in done.stdout.splitlines() if line.startswith("given up:")]
    assert re.fullmatch(
        r"given up: member \w+ at [\d.]+ s, after 1 of 1 recovery attempt\(s\), 0.1 s apart; "
        r"\d+ object\(s\) of the run removed through its own slot",
        line,
    ), line
    assert "consistency: all members active False (1 given up)" in done.stdout


def test_the_end_says_what_it_waits_for(home, run_ckdemo):
    """Unlimited attempts (the default): a member killed at 1.5 s for 5 s is still down when the
    3 s run ends; it is brought back, and the wait for its recovery is said before it starts."""
    done = run_ckdemo(
        home,
        *("soak", "--seconds", "3", "--interval", "0.1", "--kill-every", "1.5,1.5", "--down-for", "5,5"),
        "--json",
    )
    no_traceback(done.stdout, done.stderr)
    report = json.loads(done.stdout)
    [kill] = report["around_failures"]
    assert done.stderr.splitlines() == [
        f"soak: waiting up to 15 s for member(s) {kill['member']} to be recovered (an attempt every 0.1 s)"
    ]
    assert report["given_up"] == [] and report["consistency"]["all_members_active"] is True
    assert done.returncode == 0, done.stdout
    assert soak_objects(home) == {label: [] for label in MEMBERS}


def test_a_negative_worst_added_p99_is_explained():
    from ckdemo.commands.soak_text import worst_added

    figures = {"worst_added_p99_ms": -1.25, "p99_ms": 9.5, "parameters": {"window_s": 2.0}}
    assert worst_added(figures) == [
        "worst p99 added around a failure: -1.25 ms",
        "  (negative: in the 2 s after every failure the calls' p99 stayed below the run's 9.5 ms: "
        "the run's slowest calls came away from the failures)",
    ]
    assert worst_added({**figures, "worst_added_p99_ms": 3.0}) == ["worst p99 added around a failure: 3.0 ms"]


def test_a_member_out_of_reach_is_named_with_what_it_keeps_and_cleared_once_reachable(tmp_path):
    """In process, on real SoftHSM2 tokens: member 2 fails with automatic recovery off, so it is
    given up at once; while its slot fails, the run's objects on it are named as leftovers with
    the pkcs11-tool lines that remove them; once its slot answers again, they are removed."""
    from support import private_workspace

    from ckdemo.codes import CKR_DEVICE_ERROR, CKRError
    from ckdemo.model import CKA_LABEL, CKU_USER
    from ckdemo.soak import _create_keys
    from ckdemo.soak_dropouts import Dropouts

    _, workspace, _ = private_workspace(tmp_path, 2)
    group = workspace.groups[0]
    group.login(CKU_USER, USER_PIN)
    _create_keys(group.open_session(rw=True), "t1")  # soak-t1: three objects on both members
    group.policy.configure(retries=0)  # automatic recovery off: a failed member is given up
    member = group.members[1]
    group.fail_member(member)
    group.member_failed(member, CKRError(CKR_DEVICE_ERROR, "C_Sign"))
    said: list[str] = []
    dropouts = Dropouts(group, time.monotonic(), said.append)
    dropouts.check()
    dropouts.check()  # said once
    assert [line.split(" s: ", 1)[1] for line in said] == [
        "automatic recovery is off (hagroup retry: 0); it stays out of service for the rest of the run"
    ]
    assert said[0].startswith(f"soak: member {member.serial} given up at ")
    dropouts.reach(USER_PIN)
    dropouts.clear("soak-t1", "pkcs11-tool --module M")
    [left] = dropouts.as_dict()["leftovers"]
    assert (left["member"], left["objects"]) == (member.serial, None)
    assert left["why"].startswith("not reachable: ") and "CKR_DEVICE_ERROR" in left["why"]
    assert left["remove"].startswith(
        f"once it is: pkcs11-tool --module M --token-label {member.label} --login"
    )
    assert "labelled soak-t1" in left["remove"]
    assert dropouts.as_dict()["given_up"][0]["removed"] is None

    group.restore_member(member)  # its slot answers again; the group still does not take it back
    again = Dropouts(group, time.monotonic(), said.append)
    again.check()
    again.reach(USER_PIN)
    again.clear("soak-t1", "pkcs11-tool --module M")
    assert again.as_dict()["leftovers"] == [] and again.as_dict()["given_up"][0]["removed"] == 3
    assert not member.active
    own = member.slot.open_session(rw=False)
    own.login(CKU_USER, USER_PIN)
    labels = [own.get_attributes(h, [CKA_LABEL]).get(CKA_LABEL) for h in own.find_objects({})]
    assert not any(str(label).startswith("soak-t1") for label in labels), labels
