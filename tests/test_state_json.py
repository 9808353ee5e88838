"""`--json` on the state views (`hagroup status|show|listgroups`, `member list`), read from real
runs: a fresh home, a running `ckdemo serve` with a member failed through its control channel,
and a remote home whose members are p11-kit servers. Every field must be in docs/JSON.md."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from conftest import SOFTHSM_LIB, no_traceback, requires_softhsm
from test_bench import undocumented
from test_serve import start_server, stop_server

pytestmark = requires_softhsm

ENVELOPE = ("ckdemo_version", "timestamp", "home", "config", "module", "modules")


def state(run_ckdemo, home, *args: str) -> dict:
    done = run_ckdemo(home, *args, "--json")
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)  # stdout holds the document and nothing else
    assert undocumented(document) == []
    return document


def assert_envelope(document: dict, home, started: datetime) -> None:
    from importlib.metadata import version

    assert list(document)[: len(ENVELOPE)] == list(ENVELOPE)
    assert document["ckdemo_version"] == version("ckdemo")
    assert document["timestamp"].endswith("Z")
    made = datetime.fromisoformat(document["timestamp"].replace("Z", "+00:00"))
    assert started - timedelta(seconds=1) <= made <= datetime.now(timezone.utc)
    assert document["home"] == str(home.resolve())
    assert document["module"] == SOFTHSM_LIB and document["modules"] == [SOFTHSM_LIB]


def configured_serials(home) -> list[str]:
    text = (home / "Chrystoki.conf").read_text()
    line = next(l for l in text.splitlines() if l.strip().startswith("VirtualToken00Members"))
    return line.split("=", 1)[1].strip(" ;").split(",")


def test_show_and_listgroups_as_json_on_a_fresh_home(home, run_ckdemo):
    started = datetime.now(timezone.utc)
    shown = state(run_ckdemo, home, "hagroup", "show")
    assert_envelope(shown, home, started)
    assert shown["live"] is True and shown["not_live_reason"] is None
    [group] = shown["groups"]
    assert group["label"] == "ckdemo-ha" and group["synchronize"] is True
    assert [m["serial"] for m in group["members"]] == configured_serials(home)
    assert [(m["number"], m["label"], m["role"], m["found"], m["status"]) for m in group["members"]] == [
        (1, "member1", "active", True, "CKR_OK"),
        (2, "member2", "active", True, "CKR_OK"),
        (3, "member3", "active", True, "CKR_OK"),
    ]
    assert shown["settings"] == {
        "reconnect_attempts": -1,
        "interval_s": 60.0,
        "ha_only": False,
        "log_enabled": False,
        "log_path": None,
        "recovery_mode": "activeBasic",
    }

    listed = state(run_ckdemo, home, "hagroup", "listgroups", "-group", group["serial"])
    assert listed["groups"] == shown["groups"]
    # a setting changed by a verb shows in the next document
    assert run_ckdemo(home, "hagroup", "retry", "-count", "3").returncode == 0
    assert state(run_ckdemo, home, "hagroup", "listgroups")["settings"]["reconnect_attempts"] == 3


def test_a_file_only_view_says_why_in_json(home, run_ckdemo):
    """A library that does not load: the groups from the file, members not asked, and why."""
    missing = str(home / "no-such-library.so")
    done = run_ckdemo(home, "--module", missing, "hagroup", "show", "--json")
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["module"] == missing and shown["live"] is False
    assert shown["not_live_reason"]
    assert {(m["found"], m["status"]) for m in shown["groups"][0]["members"]} == {(None, None)}


def test_status_as_json_shows_a_member_failed_through_the_running_server(home, ckdemo_bin, run_ckdemo):
    served = start_server(ckdemo_bin, home, None, home.parent / "serve.log")
    try:
        before = state(run_ckdemo, home, "hagroup", "status")
        assert_envelope(before, home, datetime.now(timezone.utc) - timedelta(seconds=5))
        assert before["source"] == "ckdemo serve" and before["recovery"] is None
        [group] = before["groups"]
        assert [(m["label"], m["status"], m["recovery_exhausted"]) for m in group["members"]] == [
            ("member1", "CKR_OK", False),
            ("member2", "CKR_OK", False),
            ("member3", "CKR_OK", False),
        ]

        failed = run_ckdemo(home, "member", "fail", "member1")
        assert failed.returncode == 0, failed.stderr
        first = state(run_ckdemo, home, "hagroup", "status")["groups"][0]["members"]
        assert [(m["number"], m["serial"], m["status"]) for m in first] == [
            (1, group["members"][0]["serial"], "CKR_DEVICE_ERROR"),
            (2, group["members"][1]["serial"], "CKR_OK"),
            (3, group["members"][2]["serial"], "CKR_OK"),
        ]
        later = state(run_ckdemo, home, "hagroup", "status")["groups"][0]["members"]
        assert later[0]["status"] == "CKR_TOKEN_NOT_PRESENT"

        assert run_ckdemo(home, "member", "restore", "member1").returncode == 0
        recovered = state(run_ckdemo, home, "hagroup", "status", "--recover")
        assert recovered["recovery"] == [f"HSM {group['members'][0]['serial']} (member1): recovered"]
        assert {m["status"] for m in recovered["groups"][0]["members"]} == {"CKR_OK"}
    finally:
        assert stop_server(served) == 0, served.log()
    no_traceback(served.log())


def test_status_as_json_without_a_server_is_one_line(home, run_ckdemo):
    done = run_ckdemo(home, "hagroup", "status", "--json")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "no ckdemo serve runs" in done.stderr


def test_member_list_and_show_as_json_on_a_remote_home(remote_home, run_ckdemo):
    home = remote_home
    started = datetime.now(timezone.utc)
    assert run_ckdemo(home, "member", "serve", "member2").returncode == 0
    listed = state(run_ckdemo, home, "member", "list")
    assert_envelope(listed, home, started)
    members = {m["label"]: m for m in listed["members"]}
    assert list(members) == ["member1", "member2", "member3"]
    assert members["member2"]["state"] == "running" and isinstance(members["member2"]["pid"], int)
    assert (members["member1"]["state"], members["member1"]["pid"]) == ("dead", None)
    assert members["member2"]["socket"] == str(home.resolve() / "run" / "member2.sock")
    assert {m["served_by"] for m in members.values()} == {"ckdemo"}
    assert {m["provider"] for m in members.values()} == {SOFTHSM_LIB}

    shown = state(run_ckdemo, home, "hagroup", "show")  # reaches the members over p11-kit RPC
    assert shown["live"] is True
    assert {m["status"] for m in shown["groups"][0]["members"]} == {"CKR_OK"}


def test_member_list_as_json_on_a_local_home_is_one_line(home, run_ckdemo):
    done = run_ckdemo(home, "member", "list", "--json")
    assert done.returncode == 2 and done.stdout == ""
    assert "no remote members" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "args", [("hagroup", "show"), ("hagroup", "listgroups"), ("hagroup", "status"), ("member", "list")]
)
def test_help_offers_json(run_ckdemo, home, args):
    done = run_ckdemo(home, *args, "--help")
    assert done.returncode == 0 and "--json" in done.stdout and "docs/JSON.md" in done.stdout
