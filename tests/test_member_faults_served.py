"""Member faults through a running `ckdemo serve` (its control channel, ckdemo/lab/member_lab.py):
from Python (FaultLab, the `fault_lab` fixture of the pytest plugin), from the command line
(`ckdemo member ...`, `ckdemo fault clear`), on real members: remote ones (each its own `p11-kit
server` process, really killed and stopped) and members served in serve's process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import clean_env, no_traceback, requires_softhsm, servers_of
from rpc_capture import tools_missing

from ckdemo.lab.api import FaultLab, LabFailed

pytestmark = [requires_softhsm, pytest.mark.skipif(bool(tools_missing()), reason=str(tools_missing()))]

APP = Path(__file__).parent / "apps" / "sign_loop.py"
CKDEMO = str(Path(sys.executable).parent / "ckdemo")
POLL_S = 0.02


@pytest.fixture(scope="module")
def fault_lab_home(tmp_path_factory, provision, run_ckdemo):
    """The plugin's fixture overridden, as an application's suite would: remote members."""
    home = provision(tmp_path_factory.mktemp("lab") / "home", "--remote")
    assert run_ckdemo(home, "hagroup", "interval", "--seconds", "1").returncode == 0
    yield home
    run_ckdemo(home, "member", "kill", "all")


def ckdemo(home: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [CKDEMO, "--home", str(home), *args], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    no_traceback(done.stdout, done.stderr)
    return done


def stopped_servers(home: Path) -> list[int]:
    """The member server processes of `home` that are stopped (SIGSTOP): state T."""
    found = []
    for pid in servers_of(home):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
                found.append(pid)
        except OSError:
            continue
    return found


def server_pid(home: Path, label: str) -> int:
    return int((home / "run" / f"{label}.pid").read_text().split()[0])


def wait_for(condition, what: str, timeout: float = 20.0):
    ends = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < ends, f"not within {timeout:g} s: {what}"
        time.sleep(POLL_S)
    return found


def test_an_application_signing_in_a_loop_sees_nothing_of_a_member_killed_hung_and_slowed(
    fault_lab, tmp_path
):
    """As an application team writes it: python-pkcs11 (tests/apps/sign_loop.py) signs in a loop
    through the lab while the member serving it is killed, then the one serving it then is hung,
    then the next one slowed; each fault lasts until the application has made 12 more
    signatures (the hang until the HA group has given the member up); not one call fails, and
    each fault reached the application's calls (serve's log, the calls' times)."""
    home = fault_lab.home
    stop = tmp_path / "stop"
    app = subprocess.Popen(
        [
            sys.executable,
            str(APP),
            fault_lab.module,
            fault_lab.token_label,
            fault_lab.user_pin,
            "1000000",
            "--seconds",
            "60",
            "--until-file",
            str(stop),
        ],
        env=fault_lab.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    phase: list[dict] = []
    served = {m["label"]: m["calls"] for m in fault_lab.members()}

    def signs(more: int):
        """A condition: the application has made `more` signatures since the phase began (the
        phase's calls kept in `phase`)."""
        phase.clear()

        def done() -> bool:
            phase.extend(fault_lab.calls(new_only=True))
            return sum(c["call"] == "C_Sign" and c["result"] == "CKR_OK" for c in phase) >= more

        return done

    def serving() -> str:
        """The member that served the most calls since the last look."""
        now = {m["label"]: m["calls"] for m in fault_lab.members()}
        busiest = max(now, key=lambda label: now[label] - served[label])
        served.update(now)
        return busiest

    def slowest() -> float:
        return max(c["ms"] for c in phase)

    try:
        wait_for(signs(5), "the application signs")
        killed = serving()
        pid = server_pid(home, killed)
        assert fault_lab.kill_member(killed) == "down"
        wait_for(lambda: pid not in servers_of(home), f"{killed}'s server is gone")
        wait_for(signs(12), f"12 signatures with {killed} killed")
        wait_for(
            lambda: f"member {killed}'s server went away" in fault_lab.log_tail(200),
            f"the HA group fails {killed} over (serve's log)",
        )
        fault_lab.restore_member(killed)
        hung = serving()
        assert hung != killed and fault_lab.hang_member(hung) == "hung"
        wait_for(lambda: server_pid(home, hung) in stopped_servers(home), f"{hung} stopped")
        assert [(m["member"], m["action"]) for m in fault_lab.member_faults()] == [(hung, "hang")]
        wait_for(signs(12), f"12 signatures with {hung} hung")
        during_hang = list(phase)
        # the application's calls reached it: the HA group gave it up after MemberHedgeFloor (0.5 s)
        wait_for(
            lambda: f"no answer from member {hung}" in fault_lab.log_tail(200),
            f"the HA group gives {hung} up (serve's log)",
        )
        assert fault_lab.resume_member(hung) == "up"
        wait_for(lambda: stopped_servers(home) == [], f"{hung} running again")
        wait_for(signs(2), "the calls of the hang behind us")
        phase.extend(during_hang)
        assert slowest() >= 400, slowest()  # one waited for the hung member 0.5 s, then moved on
        slowed = serving()
        assert fault_lab.slow_member(slowed, ms=100) == "slow"
        enough = signs(12)
        wait_for(lambda: enough() and slowest() >= 30, f"12 signatures with {slowed} slow, one late")
        assert slowest() < 400, slowest()  # late, but never given up
        ended = fault_lab.stop_member(slowed)
        assert [(e["member"], e["action"], e["ms"]) for e in ended] == [(slowed, "slow", 100.0)]
        assert ended[0]["cycles"] >= 1
        wait_for(lambda: stopped_servers(home) == [], f"{slowed} running again")
    finally:
        stop.touch()
        out, err = app.communicate(timeout=60)
    no_traceback(out, err)
    lines = [json.loads(line) for line in out.splitlines()]
    assert app.returncode == 0 and all(line["ok"] for line in lines), out[-2000:] + err
    assert len(lines) >= 41
    assert fault_lab.failures() == [], fault_lab.failures()[:5]  # every call since the lab started


def test_bad_member_requests_are_one_line_each_and_change_nothing(fault_lab):
    home = fault_lab.home
    for ask, said in [
        (lambda: fault_lab.kill_member("member9"), "no member 'member9' in the HA group(s) served"),
        (lambda: fault_lab.slow_member("member2", ms=-5), "ms is above 0 and at most 60000, not -5"),
        (lambda: fault_lab.slow_member("member2", ms=10**9), "ms is above 0 and at most 60000"),
        (lambda: fault_lab.slow_member("member2", ms="fast"), "ms is a number, not 'fast'"),
        (lambda: fault_lab.flap_member("member2", every=0), "every is at least 0.2 s"),
        (lambda: fault_lab.flap_member("member2", every=1, down=1), "below every"),
        (lambda: fault_lab.slow_member("member2", ms=50, for_=-1), "for is above 0"),
        (
            lambda: fault_lab._ask("member_slow", member="member2", ms=5, speed=3),
            "slow takes no speed (it takes ms, for)",
        ),
        (lambda: fault_lab._ask("member_hang"), "which member?"),
    ]:
        with pytest.raises(LabFailed) as refused:
            ask()
        assert said in str(refused.value) and "\n" not in str(refused.value), str(refused.value)
    assert fault_lab.member_faults() == []
    fault_lab.kill_member("member2")
    with pytest.raises(LabFailed, match="member2's server is not running"):
        fault_lab.slow_member("member2", ms=50)
    fault_lab.restore_member("member2")
    fault_lab.hang_member("member1")
    with pytest.raises(
        LabFailed, match="member1 is hung .*: stop that first .`ckdemo member resume member1`"
    ):
        fault_lab.slow_member("member1", ms=50)
    fault_lab.slow_member("member3", ms=50)
    with pytest.raises(LabFailed, match=r"member3 is slow \(answers up to 50 ms late\): stop that first"):
        fault_lab.fail_member("member3")  # the loop would restore it again behind the test's back
    # the same from the command line: one line on stderr, exit 2, no traceback
    for args, said in [
        (("member", "slow", "member9", "--ms", "50"), "no member 'member9'"),
        (("member", "slow", "member2", "--ms", "-5"), "slow: ms is above 0"),
        (("member", "slow", "member2", "--ms", "1e9"), "slow: ms is above 0"),
        (("member", "flap", "member2", "--every", "0"), "flap: every is at least 0.2 s"),
        (("member", "hang", "member7"), "no member 'member7'"),
        (("member", "fail", "member3"), "member3 is slow"),
    ]:
        done = ckdemo(home, *args)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and said in done.stderr, done.stderr
    fault_lab.clear()  # the fixture does it too; here it is what the next lines look at
    assert fault_lab.member_faults() == []
    log = fault_lab.log_path.read_text()
    no_traceback(log)
    assert "internal error" not in log, log
    wait_for(lambda: stopped_servers(home) == [], "every member running")


def test_the_command_line_and_fault_clear_go_through_the_running_serve(fault_lab):
    home = fault_lab.home
    assert ckdemo(home, "member", "hang", "member1").stdout == "member1: server process stopped (SIGSTOP)\n"
    done = ckdemo(home, "member", "slow", "member2", "--ms", "50", "--for", "0.3")
    assert done.returncode == 0 and "member2: slow (answers up to 50 ms late), for 0.3 s" in done.stderr
    stops = int(done.stdout.split("member2: ")[1].split(" stop(s)")[0])
    assert 2 <= stops <= 6, done.stdout  # 0.3 s in stops of 50 ms and runs of 20 ms
    fault_lab.flap_member("member3", every=0.4)
    listed = ckdemo(home, "fault", "list").stdout
    assert (
        "member member1: hung" in listed and "member member3: flapping (down 0.2 s in every 0.4 s)" in listed
    )
    cleared = ckdemo(home, "fault", "clear")
    assert cleared.returncode == 0 and "member member3: flapping" in cleared.stdout, cleared.stdout
    assert fault_lab.member_faults() == []
    wait_for(lambda: stopped_servers(home) == [], "every member running")
    assert {server_pid(home, m) for m in ("member1", "member2", "member3")} <= set(servers_of(home))


def test_a_lab_that_ends_leaves_no_member_stopped(tmp_path, provision):
    """Servers started by `ckdemo member serve` outlive the lab: none may be left stopped."""
    home = provision(tmp_path / "home", "--remote")
    assert ckdemo(home, "member", "serve").returncode == 0
    try:
        with FaultLab(home=home) as lab:
            lab.hang_member("member1")
            lab.slow_member("member2", ms=200)
            wait_for(lambda: server_pid(home, "member1") in stopped_servers(home), "member1 stopped")
        assert stopped_servers(home) == [], "a member server was left stopped behind the lab"
        assert server_pid(home, "member1") in servers_of(home)
    finally:
        ckdemo(home, "member", "kill", "all")


def test_members_served_in_process_flap_through_the_running_serve_and_refuse_what_cannot_be_real(
    tmp_path, provision
):
    home = provision(tmp_path / "home")
    with FaultLab(home=home) as lab:
        # the command line through the running serve, as `ckdemo member flap` of a remote member
        done = ckdemo(home, "member", "flap", "member2", "--every", "0.3", "--for", "0.7")
        assert done.returncode == 0, done.stderr
        downs = int(done.stdout.split("member2: down ")[1].split(" time(s)")[0])
        assert 2 <= downs <= 4 and "up again" in done.stdout, done.stdout
        log = lab.log_path.read_text()
        assert log.count("member member2: flap (failed in its HA group)") == downs, log
        assert log.count("member member2: flap (restored in its HA group)") >= downs
        assert lab.member_faults() == []
        assert lab.kill_member("member1") == "down"  # failed in its HA group
        assert {m["label"]: m["status"] for m in lab.members()}["member1"] == "CKR_DEVICE_ERROR"
        lab.restore_member("member1")
        for refused in (lambda: lab.hang_member("member1"), lambda: lab.slow_member("member1", ms=50)):
            with pytest.raises(
                LabFailed,
                match="needs a member whose p11-kit server process ckdemo "
                "runs: member1 is served inside the ckdemo process",
            ):
                refused()
        for args in (("hang", "member1"), ("slow", "member1", "--ms", "50")):
            refused = ckdemo(home, "member", *args)
            assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
            assert (
                "needs a member whose p11-kit server process ckdemo runs: member1 is served "
                "inside the ckdemo process serving the HA slot" in refused.stderr
            ), refused.stderr
        assert lab.member_faults() == []
