"""The control channel of a running `ckdemo serve` (HOME/run/ckdemo.ctl): with local members the
server holds the members, so `ckdemo member fail` and `restore` and `ckdemo hagroup status` reach them
only through it. An application (pkcs11-tool through p11-kit-client.so) keeps working while a
member is failed; HA Status shows CKR_DEVICE_ERROR, then CKR_TOKEN_NOT_PRESENT, then
CKR_OK after recovery.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat

import pytest

from conftest import no_traceback, requires_softhsm
from rpc_capture import tools_missing
from test_serve import start_server, stop_server

pytestmark = [requires_softhsm, pytest.mark.skipif(bool(tools_missing()), reason=str(tools_missing()))]


def member_status(text: str) -> dict[str, str]:
    """{serial: CKR_...} from HA Status lines (`   HSM <serial>      - CKR_...`, CKDemo's rows)."""
    return dict(re.findall(r"^   HSM (\S+) +- (CKR_\w+)$", text, re.MULTILINE))


def raw_request(path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(20)
        sock.connect(str(path))
        sock.sendall(payload)
        return json.loads(sock.makefile("rb").readline())


@pytest.fixture
def served(home, ckdemo_bin):
    server = start_server(ckdemo_bin, home, None, home.parent / "serve.log")
    yield server
    code = stop_server(server)
    no_traceback(server.log())
    assert code == 0, server.log()


def test_fail_restore_and_status_through_the_running_server(served, run_ckdemo):
    home = served.home
    control = home / "run" / "ckdemo.ctl"
    assert stat.S_IMODE(os.stat(control).st_mode) == 0o600

    def ckdemo(*args: str):
        done = run_ckdemo(home, *args)
        no_traceback(done.stdout, done.stderr)
        return done

    before = ckdemo("hagroup", "status")
    assert before.returncode == 0, before.stderr
    assert before.stdout.startswith("HA group 1"), before.stdout
    serials = list(member_status(before.stdout))
    assert len(serials) == 3 and set(member_status(before.stdout).values()) == {"CKR_OK"}
    member1 = serials[0]

    failed = ckdemo("member", "fail", "member1")
    assert failed.returncode == 0, failed.stderr
    assert f"HSM {member1} (member1) is down" in failed.stdout
    served.wait_for_log(f"control: HSM {member1} (member1) failed")

    # the application does not notice: six calls, so the balancer meets member1 (if the first
    # status had not already failed it over)
    for _ in range(6):
        done = served.tool("--generate-random", "32")
        assert done.returncode == 0 and len(done.stdout) == 32, done.stderr

    first = member_status(ckdemo("hagroup", "status").stdout)
    assert first == {member1: "CKR_DEVICE_ERROR", serials[1]: "CKR_OK", serials[2]: "CKR_OK"}
    second = member_status(ckdemo("hagroup", "status").stdout)
    assert second[member1] == "CKR_TOKEN_NOT_PRESENT"

    restored = ckdemo("member", "restore", "member1")
    assert restored.returncode == 0, restored.stderr
    assert (
        f"HSM {member1} (member1): its token is reachable again (simulated failure lifted); the HA group takes it back on a call after "
        in restored.stdout
    )
    assert "back in service" not in restored.stdout  # it is not, until a recovery takes it back
    # X is 60 s by default: nothing recovers it yet; manual recovery does
    assert member_status(ckdemo("hagroup", "status").stdout)[member1] == "CKR_TOKEN_NOT_PRESENT"
    recovered = ckdemo("hagroup", "status", "--recover")
    assert f"HSM {member1} (member1): recovered" in recovered.stdout
    assert set(member_status(recovered.stdout).values()) == {"CKR_OK"}
    again = ckdemo("hagroup", "status", "--recover")
    assert "Every member is in service: nothing to recover." in again.stdout

    wrong = ckdemo("member", "fail", "nobody")
    assert wrong.returncode == 2
    assert "no member 'nobody'" in wrong.stderr and "member1, member2, member3" in wrong.stderr
    served.wait_for_log(f"member {member1} recovered")  # the group's events are logged too
    assert f"member {member1} failed" in served.log() and f"member {member1} recovered" in served.log()


def test_bad_requests_get_an_error_and_the_channel_goes_on(served, run_ckdemo):
    control = served.home / "run" / "ckdemo.ctl"
    garbage = raw_request(control, b"not json\n")
    assert garbage["ok"] is False and garbage["error"].startswith("not a JSON request"), garbage
    assert raw_request(control, b"[1, 2]\n") == {"ok": False, "error": "a request is a JSON object"}
    unknown = raw_request(control, b'{"command": "shutdown"}\n')
    assert unknown["ok"] is False and "unknown command 'shutdown'" in unknown["error"]
    assert raw_request(control, b'{"command": "fail"}\n')["ok"] is False
    assert raw_request(control, b"x" * 10000 + b"\n")["error"].startswith("request longer than")
    # several requests on one connection, then the server still answers everyone
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(20)
        sock.connect(str(control))
        sock.sendall(b'{"command": "status"}\n{"command": "recover"}\n')
        reader = sock.makefile("rb")
        status, recover = json.loads(reader.readline()), json.loads(reader.readline())
    assert status["ok"] and status["groups"][0]["label"] == "ckdemo-ha"
    assert [m["status"] for m in status["groups"][0]["members"]] == ["CKR_OK"] * 3
    assert recover == {"ok": True, "lines": ["Every member is in service: nothing to recover."]}
    assert served.tool("--generate-random", "16").returncode == 0
    assert run_ckdemo(served.home, "hagroup", "status").returncode == 0


def test_without_a_server_the_commands_say_so(home, run_ckdemo):
    for args in (("hagroup", "status"), ("member", "fail", "member1"), ("member", "restore", "member1")):
        done = run_ckdemo(home, *args)
        no_traceback(done.stdout, done.stderr)
        assert done.returncode == 2, done.stdout
        assert "no ckdemo serve runs for this home" in done.stderr, done.stderr


def test_the_control_socket_ends_with_the_server(home, ckdemo_bin, run_ckdemo):
    server = start_server(ckdemo_bin, home, None, home.parent / "serve.log")
    control = home / "run" / "ckdemo.ctl"
    assert control.exists()
    # a second server of the same home (another socket) serves without a control channel
    second = start_server(ckdemo_bin, home, home.parent / "second.sock", home.parent / "second.log")
    assert stop_server(second) == 0
    assert f"no control channel: another ckdemo serve answers on {control}" in second.log()
    assert "ckdemo.ctl removed" not in second.log()
    assert control.exists() and run_ckdemo(home, "hagroup", "status").returncode == 0
    assert stop_server(server) == 0
    assert not control.exists()
    assert "ckdemo.ctl removed" in server.log()
    assert "no ckdemo serve runs" in run_ckdemo(home, "hagroup", "status").stderr


def test_status_through_the_server_says_when_recovery_is_off(home, ckdemo_bin, run_ckdemo):
    """N = 0 (`hagroup retry --count 0`): a failed member is never recovered automatically, and
    `ckdemo hagroup status` beside the server says so with the way out, as 52 does in the menu;
    `ckdemo hagroup recover` takes it back through the server."""
    assert run_ckdemo(home, "hagroup", "retry", "--count", "0").returncode == 0
    served = start_server(ckdemo_bin, home, None, home.parent / "serve.log")
    try:
        assert run_ckdemo(home, "member", "fail", "member2").returncode == 0
        status = run_ckdemo(home, "hagroup", "status")
        member2 = [s for s, c in member_status(status.stdout).items() if c != "CKR_OK"]
        assert len(member2) == 1, status.stdout
        assert (
            f"HSM {member2[0]}: automatic recovery is off (0 attempts); "
            "`ckdemo hagroup recover` recovers it now"
        ) in status.stdout
        restored = run_ckdemo(home, "member", "restore", "member2")
        assert restored.returncode == 0, restored.stderr
        assert (
            f"HSM {member2[0]} (member2): its token is reachable again (simulated failure lifted), "
            "but it stays out of service; automatic recovery is off (0 attempts): "
            "`ckdemo hagroup recover` takes it back."
        ) in restored.stdout, restored.stdout
        assert "back in service" not in restored.stdout
        assert member_status(run_ckdemo(home, "hagroup", "status").stdout)[member2[0]] != "CKR_OK"
        recovered = run_ckdemo(home, "hagroup", "recover")
        no_traceback(recovered.stdout, recovered.stderr)
        assert f"HSM {member2[0]} (member2): recovered" in recovered.stdout, recovered.stdout
        after = run_ckdemo(home, "hagroup", "status")
        assert set(member_status(after.stdout).values()) == {"CKR_OK"}
        assert "automatic recovery is off" not in after.stdout
    finally:
        code = stop_server(served)
    no_traceback(served.log())
    assert code == 0, served.log()


def test_active_enhanced_recovers_a_member_in_the_background_with_no_application_call(
    home, ckdemo_bin, run_ckdemo
):
    """`hagroup recoverymode -mode activeEnhanced`, X = 0.3 s: a member failed through the control
    channel (and seen failed by HA Status), then restored, is taken back by serve's own recovery
    thread: the HA log line comes with no application connected and no call after the restore."""
    assert run_ckdemo(home, "hagroup", "recoverymode", "-mode", "activeEnhanced").returncode == 0
    assert run_ckdemo(home, "hagroup", "interval", "--seconds", "0.3").returncode == 0
    served = start_server(ckdemo_bin, home, None, home.parent / "serve.log")
    try:
        assert "recovery activeEnhanced (in the background), every 0.3 s" in served.log()
        failed = run_ckdemo(home, "member", "fail", "member2")
        assert failed.returncode == 0, failed.stderr
        serial = re.search(r"HSM (\S+) \(member2\) is down", failed.stdout).group(1)
        status = run_ckdemo(home, "hagroup", "status")  # HA Status asks every member: detected
        assert member_status(status.stdout)[serial] == "CKR_DEVICE_ERROR", status.stdout
        restored = run_ckdemo(home, "member", "restore", "member2")
        assert restored.returncode == 0, restored.stderr
        served.wait_for_log(f"member {serial} recovered")
        assert "connection 1 opened" not in served.log()  # no application made it happen
    finally:
        code = stop_server(served)
        no_traceback(served.log())
        assert code == 0, served.log()


def test_p11kit_module_file_lets_p11kit_proxy_users_see_the_slot(home, ckdemo_bin, tmp_path):
    """`serve --p11-kit-module NAME`: `p11-kit list-modules` and pkcs11-tool through
    p11-kit-proxy.so (no P11_KIT_SERVER_ADDRESS) see the HA token; the file goes at stop."""
    import shutil
    import subprocess
    from ckdemo.libraries import P11KIT_PROXY, LibraryNotFound, find
    from ckdemo.serve.module_file import module_dir

    try:
        proxy = find(P11KIT_PROXY)
    except LibraryNotFound as missing:
        pytest.skip(str(missing))
    if shutil.which("p11-kit") is None:
        pytest.skip("p11-kit missing")
    name = f"ckdemo-test-{os.getpid()}"
    served = start_server(ckdemo_bin, home, None, home.parent / "serve.log", "--p11-kit-module", name)
    module = module_dir() / f"{name}.module"
    try:
        assert module.exists() and "remote: unix:path=" in module.read_text()
        listed = subprocess.run(["p11-kit", "list-modules"], capture_output=True, text=True, timeout=60)
        assert f"{name}:" in listed.stdout and "token: ckdemo-ha" in listed.stdout, listed.stdout[-2000:]
        slots = subprocess.run(
            ["pkcs11-tool", "--module", proxy, "-L"],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "P11_KIT_SERVER_ADDRESS"},
        )
        assert "token label        : ckdemo-ha" in slots.stdout, slots.stdout + slots.stderr
    finally:
        code = stop_server(served)
    assert code == 0 and not module.exists(), served.log()
    stopped = served.log().splitlines()[-1]
    assert " stopped: sessions closed, " in stopped and stopped.endswith(
        f" and p11-kit module file {module} removed"
    ), stopped
    module.write_text("module: /nonexistent.so\n")  # someone else's file of that name
    try:
        out = tmp_path / "refused.log"
        done = subprocess.run(
            [str(ckdemo_bin), "--home", str(home), "serve", "--p11-kit-module", name],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and "is not ckdemo's" in done.stderr, done.stderr
        assert module.read_text() == "module: /nonexistent.so\n" and not out.exists()
    finally:
        module.unlink()


def test_status_says_the_recovery_mode_and_counters_and_recover_acts_on_the_named_group(
    home, ckdemo_bin, run_ckdemo
):
    """Beside a running server: `hagroup status` says the recovery mode, X, N and the attempts
    made on a member out of service (text and --json), and `hagroup recover -group L` recovers
    that group only (it recovered every group)."""
    from test_hagroup_verbs import ok, token_serials

    m3 = token_serials(home)["member3"]
    ok(run_ckdemo(home, "hagroup", "removemember", "-group", "ckdemo-ha", "-serial", m3))
    ok(run_ckdemo(home, "hagroup", "creategroup", "-label", "second", "-serial", m3))
    served = start_server(ckdemo_bin, home, None, home.parent / "serve.log")
    try:
        failed = ok(run_ckdemo(home, "member", "fail", "member1"))
        member1 = re.search(r"HSM (\S+) \(member1\) is down", failed).group(1)
        status = ok(run_ckdemo(home, "hagroup", "status"))
        assert "recovery activeBasic (inside a call), every 60 s, unlimited attempts" in status
        assert f"   HSM {member1}: recovery attempt 0 of unlimited" in status, status
        document = json.loads(ok(run_ckdemo(home, "hagroup", "status", "--json")))
        (first,) = [g for g in document["groups"] if g["label"] == "ckdemo-ha"]
        assert (first["recovery_mode"], first["interval_s"], first["retry"]) == ("activeBasic", 60, -1)
        attempts = {m["serial"]: m["recovery_attempts"] for m in first["members"]}
        assert attempts[member1] == 0 and list(attempts.values()).count(None) == 1
        ok(run_ckdemo(home, "member", "restore", "member1"))
        other = ok(run_ckdemo(home, "hagroup", "recover", "-group", "second"))
        assert "Every member is in service: nothing to recover." in other and "recovered" not in other
        assert member_status(ok(run_ckdemo(home, "hagroup", "status")))[member1] != "CKR_OK"
        named = ok(run_ckdemo(home, "hagroup", "recover", "-group", "ckdemo-ha"))
        assert f"HSM {member1} (member1): recovered" in named, named
    finally:
        code = stop_server(served)
    no_traceback(served.log())
    assert code == 0, served.log()
