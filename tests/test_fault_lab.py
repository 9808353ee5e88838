"""The fault lab: `ckdemo fault` add, list and clear against a running `ckdemo serve`, and what an
application (python-pkcs11 through Debian's p11-kit-client.so, tests/apps/sign_loop.py) sees.

Each fault is checked by its effect on the application, never by ckdemo's word alone: the
application's own per-signature lines, the exit code, the server log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import USER_PIN, no_traceback, requires_softhsm
from rpc_capture import P11KIT_CLIENT, tools_missing
from test_serve import start_server, stop_cleanly
from test_state_json import assert_envelope

from ckdemo.serve.faults import FaultBook, FaultError, FaultSpec

pytestmark = [requires_softhsm, pytest.mark.skipif(bool(tools_missing()), reason=str(tools_missing()))]

APP = Path(__file__).parent / "apps" / "sign_loop.py"
TOKEN = "ckdemo-ha"


@pytest.fixture(scope="module")
def served(tmp_path_factory, provision, ckdemo_bin):
    home = provision(tmp_path_factory.mktemp("fault-lab") / "home")
    server = start_server(ckdemo_bin, home, None, home.parent / "serve.log")
    yield server
    stop_cleanly(server)


@pytest.fixture
def fault(served, run_ckdemo):
    """`ckdemo fault ...` on the served home; every test leaves no fault behind."""

    def run(*args: str, ok: bool = True) -> str:
        done = run_ckdemo(served.home, "fault", *args)
        no_traceback(done.stdout, done.stderr)
        assert (done.returncode == 0) == ok, done.stdout + done.stderr
        return done.stdout + done.stderr

    yield run
    run("clear")
    assert "No fault in force." in run("list")


def app(served, count: int, *options: str, label: str = "lab-signer") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(APP), P11KIT_CLIENT, TOKEN, USER_PIN, str(count), "--label", label, *options],
        env=served.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines_of(process: subprocess.Popen, timeout: float = 60) -> tuple[int, list[dict]]:
    out, err = process.communicate(timeout=timeout)
    no_traceback(out, err)
    return process.returncode, [json.loads(line) for line in out.splitlines()]


def read_until(process: subprocess.Popen, wanted, timeout: float = 60) -> list[dict]:
    """The application's lines until one satisfies `wanted` (then it is stopped)."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    for raw in process.stdout:
        seen.append(json.loads(raw))
        if wanted(seen):
            break
        assert time.monotonic() < deadline, seen[-5:]
    process.terminate()
    process.wait(10)
    return seen


def signing(process: subprocess.Popen) -> None:
    """Until the application has signed once (it is connected and logged in)."""
    line = json.loads(process.stdout.readline())
    assert line.get("ok"), line


# ---- each fault, as the application sees it ------------------------------------------------------
def test_three_device_errors_on_c_sign_are_the_three_failures_the_application_sees(served, fault):
    assert "fault 1" not in fault("list")
    out = fault("add", "C_Sign", "--error", "CKR_DEVICE_ERROR", "--count", "3")
    assert "C_Sign: CKR_DEVICE_ERROR, next 3 call(s)" in out
    code, lines = lines_of(app(served, 6))
    assert code == 1
    assert [line.get("error") for line in lines] == ["DeviceError"] * 3 + [None] * 3, lines
    listed = fault("list")
    assert "(3 of 3 matching call(s) taken, spent)" in listed, listed
    # the operation the error ended is over on the server too: the next C_SignInit worked
    assert all(line["ok"] for line in lines[3:])


def test_latency_is_added_to_the_calls_it_names_only(served, fault):
    fault("add", "C_Sign", "--latency", "150", "--count", "4")  # 2 signatures: size query + sign
    started = time.monotonic()
    code, lines = lines_of(app(served, 2))
    assert code == 0 and len(lines) == 2
    assert time.monotonic() - started >= 0.6
    assert "(4 of 4 matching call(s) taken, spent)" in fault("list")


def test_a_hang_holds_the_call_until_the_fault_is_cleared(served, fault):
    fault("add", "C_Sign", "--hang", "0", "--count", "1", "--after", "0")
    process = app(served, 2)
    deadline = time.monotonic() + 30
    while "1 of 1 matching" not in fault("list"):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    assert process.poll() is None, "the application went on while its call hung"
    fault("clear")
    code, lines = lines_of(process)
    assert code == 0 and [line["ok"] for line in lines] == [True, True]


def test_a_disconnect_closes_the_connection_and_the_server_serves_on(served, fault):
    fault("add", "C_Sign", "--disconnect", "--count", "1")
    code, lines = lines_of(app(served, 2))
    assert code == 1
    assert lines[0] == {"n": 0, "ok": False, "error": "DeviceError"}, lines  # p11-kit's client
    served.wait_for_log("closed by a fault (disconnect)")
    code, lines = lines_of(app(served, 1))  # a new application is served as before
    assert code == 0 and [(l["n"], l["ok"]) for l in lines] == [(0, True)]


def test_a_corrupt_signature_is_caught_by_an_application_that_verifies(served, fault):
    fault("add", "C_Sign", "--corrupt", "--count", "1")
    code, lines = lines_of(app(served, 2, "--verify"))
    assert code == 1
    assert lines[0] == {"n": 0, "ok": False, "error": "wrong signature"} and lines[1]["ok"] is True
    fault("add", "C_Sign", "--corrupt", "--count", "1")
    code, lines = lines_of(app(served, 2))  # one that does not verify signs on, none the wiser
    assert code == 0 and [line["ok"] for line in lines] == [True, True]


def test_an_hsm_restart_ends_the_sessions_and_the_login_of_a_running_application(served, fault):
    process = app(served, 1_000_000, "--reopen")
    signing(process)
    fault("add", "--restart-hsm")
    seen = read_until(process, lambda s: any(l.get("reopened") for l in s) and s[-1].get("ok"))
    failures = [line for line in seen if line.get("ok") is False]
    assert [line["error"] for line in failures] == ["SessionHandleInvalid"], failures
    served.wait_for_log("HSM restart: its sessions and login are gone")


def test_a_library_reset_answers_not_initialized_until_the_application_initializes_again(served, fault):
    process = app(served, 1_000_000, "--reopen")
    signing(process)
    fault("add", "--reset-library")
    seen = read_until(process, lambda s: len([l for l in s if l.get("reopened") is False]) >= 2)
    assert "not initialized" in next(l for l in seen if l.get("ok") is False)["error"]
    assert not any(l.get("reopened") for l in seen), "a new session without C_Initialize"
    process = app(served, 1_000_000, "--reinitialize")
    signing(process)
    fault("add", "--reset-library")
    seen = read_until(process, lambda s: any(l.get("reopened") for l in s) and s[-1].get("ok"))
    assert len([line for line in seen if line.get("ok") is False]) == 1, seen


# ---- what people type ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, says",
    [
        (("C_Sgn", "--error", "CKR_DEVICE_ERROR"), "unknown call 'C_Sgn'"),
        (("C_Sign", "--error", "CKR_NOPE"), "unknown return value 'CKR_NOPE'"),
        (("C_Sign", "--error", "CKR_OK"), "--error needs a failure code"),
        (("C_Sign", "--latency", "-5"), "--latency is 0 or more"),
        (("C_Sign", "--hang", "1e12"), "--hang is above 0 and at most 86400"),
        (("C_Sign", "--error", "5", "--count", "0"), "--count is a whole number from 1"),
        (("C_Sign", "--error", "5", "--probability", "1.5"), "a probability is above 0 and at most 1"),
        (("C_Sign", "--error", "5", "--latency", "3"), "a fault does one thing"),
        (("C_Sign",), "a fault does one thing"),
        (("C_Login", "--corrupt"), "--corrupt changes an output"),
        (("C_Initialize", "--error", "5"), "C_Initialize is never faulted"),
        (("C_Sign", "--restart-hsm"), "are events of their own"),
    ],
)
def test_a_bad_fault_gets_one_clear_line_and_nothing_is_added(served, fault, args, says):
    out = fault("add", *args, ok=False)
    assert says in out and len(out.strip().splitlines()) == 1, out
    assert "No fault in force." in fault("list")


def test_bad_control_requests_get_one_line_each(served, fault):
    from test_serve_control import raw_request

    control = served.home / "run" / "ckdemo.ctl"
    for payload, says in [
        (b'{"command": "fault_add"}\n', "a fault is a table"),
        (b'{"command": "fault_add", "fault": {"calls": 5, "error": 5}}\n', "calls are PKCS#11"),
        (b'{"command": "fault_add", "fault": {"error": true}}\n', "--error takes a CKR_* name"),
        (b'{"command": "fault_add", "fault": {"hang": "NaN"}}\n', "--hang takes a finite number"),
        (b'{"command": "fault_add", "fault": {"nonsense": 1}}\n', "unknown fault setting"),
        (b'{"command": "fault_clear", "id": "x"}\n', "a fault id is a number"),
        (b'{"command": "fault_clear", "id": 99999}\n', "no fault 99999"),
    ]:
        reply = raw_request(control, payload)
        assert reply["ok"] is False and says in reply["error"], (payload, reply)
    assert "No fault in force." in fault("list")
    no_traceback(served.log())


def test_fault_list_json_shows_what_each_fault_did(served, fault, run_ckdemo):
    fault("add", "sign", "--error", "CKR_FUNCTION_FAILED", "--every", "2", "--count", "1")
    started = datetime.now(timezone.utc)
    done = run_ckdemo(served.home, "fault", "list", "--json")
    listed = json.loads(done.stdout)
    assert_envelope(listed, served.home, started)
    assert listed["faults"][0]["calls"] == ["C_SignInit", "C_Sign", "C_SignUpdate", "C_SignFinal"]
    assert listed["faults"][0]["error"] == "CKR_FUNCTION_FAILED"
    assert listed["faults"][0]["injected"] == 0


# ---- the rules, on an injected clock -------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_count_every_window_and_connection_select_the_calls():
    clock = Clock()
    book = FaultBook(clock=clock)
    book.add(FaultSpec.parse({"calls": "C_Sign", "error": "CKR_DEVICE_ERROR", "every": 3, "count": 2}))
    taken = [book.for_call(1, "C_Sign") is not None for _ in range(9)]
    assert taken == [False, False, True, False, False, True, False, False, False]
    book.clear()
    assert not book.active
    book.add(FaultSpec.parse({"calls": "C_Verify", "latency": 5, "after": 10, "for": 5, "connection": 2}))
    assert book.for_call(2, "C_Verify") is None  # not started
    clock.now += 10
    assert book.for_call(1, "C_Verify") is None  # another connection
    assert book.for_call(2, "C_Sign") is None  # another call
    assert book.for_call(2, "C_Verify").delay_s == pytest.approx(0.005)
    clock.now += 5
    assert book.for_call(2, "C_Verify") is None  # over


def test_a_seed_makes_the_same_calls_faulty_again():
    def taken(seed: int) -> list[bool]:
        book = FaultBook(clock=Clock())
        book.add(
            FaultSpec.parse(
                {"calls": "crypto", "error": "CKR_DEVICE_ERROR", "probability": 0.3, "seed": seed}
            )
        )
        return [book.for_call(1, "C_Decrypt") is not None for _ in range(200)]

    assert taken(7) == taken(7)
    assert taken(7) != taken(8)
    assert 30 < sum(taken(7)) < 90


def test_clearing_a_hang_answers_the_held_call_and_stopping_leaves_none():
    book = FaultBook(clock=Clock())
    book.add(FaultSpec.parse({"calls": "C_Sign", "hang": True}))
    injection = book.for_call(1, "C_Sign")
    import threading

    done = threading.Event()
    threading.Thread(target=lambda: (book.wait_out(injection), done.set()), daemon=True).start()
    assert not done.wait(0.2)
    book.close()
    assert done.wait(5) and book.faults() == [] and not book.active


def test_a_fault_never_takes_initialize_or_finalize():
    book = FaultBook(clock=Clock())
    book.add(FaultSpec.parse({"error": "CKR_DEVICE_ERROR"}))  # every call
    assert book.for_call(1, "C_Initialize") is None and book.for_call(1, "C_Finalize") is None
    assert book.for_call(1, "C_GetInfo").error == 0x30
    with pytest.raises(FaultError, match="exactly one"):
        FaultSpec.parse({"calls": "C_Sign"})


REMOVAL_APP = r"""
import json, sys
import pkcs11
from pkcs11.exceptions import PKCS11Error
module, label, pin = sys.argv[1:4]
lib = pkcs11.lib(module)
token = lib.get_token(token_label=label)
session = token.open(user_pin=pin)
print("ready", flush=True)
sys.stdin.readline()  # the token is removed now
seen = {}
def attempt(name, call):
    try:
        call()
        seen[name] = "ok"
    except PKCS11Error as error:
        seen[name] = type(error).__name__
attempt("random on the old session", lambda: session.generate_random(64))
attempt("open a session", lambda: token.open(user_pin=pin))
slot = lib.get_slots()[0]
seen["token present"] = bool(slot.flags & pkcs11.SlotFlag.TOKEN_PRESENT)
seen["slots with a token"] = len(lib.get_slots(token_present=True))
print(json.dumps(seen), flush=True)
sys.stdin.readline()  # the token is back
seen = {}
attempt("open a session", lambda: token.open(user_pin=pin).generate_random(16))
seen["token present"] = bool(lib.get_slots()[0].flags & pkcs11.SlotFlag.TOKEN_PRESENT)
print(json.dumps(seen), flush=True)
"""


def test_a_removed_token_ends_the_sessions_and_refuses_new_ones_until_it_is_back(served, fault, tmp_path):
    """python-pkcs11 through p11-kit-client.so sees what a removed token does; an RPC client of
    our own (not ckdemo's codec) polls C_WaitForSlotEvent: one event at the removal, one at the
    insertion; one that connects after them sees neither."""
    from hostile_client import Client

    CKF_DONT_BLOCK, CKR_NO_EVENT = 1, 0x8
    poller = Client(served.socket)
    poller.initialize()
    assert poller.call("C_WaitForSlotEvent", CKF_DONT_BLOCK).rv == CKR_NO_EVENT
    script = tmp_path / "removal.py"
    script.write_text(REMOVAL_APP)
    process = subprocess.Popen(
        [sys.executable, str(script), P11KIT_CLIENT, TOKEN, USER_PIN],
        env=served.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    fault("add", "--remove-token")
    process.stdin.write("\n")
    process.stdin.flush()
    removed = json.loads(process.stdout.readline())
    fault("add", "--insert-token")
    process.stdin.write("\n")
    process.stdin.flush()
    back = json.loads(process.stdout.readline())
    out, err = process.communicate(timeout=30)
    no_traceback(out, err)
    assert removed["random on the old session"] == "SessionHandleInvalid", removed
    assert removed["open a session"] == "TokenNotPresent", removed
    assert removed["token present"] is False and removed["slots with a token"] == 0
    assert back == {"open a session": "ok", "token present": True}, back
    served.wait_for_log("token removed: its sessions are gone")
    events = [poller.call("C_WaitForSlotEvent", CKF_DONT_BLOCK) for _ in range(3)]
    assert [e.rv for e in events] == [0, 0, CKR_NO_EVENT] and events[0].values == [0x5000], events
    late = Client(served.socket)
    late.initialize()
    assert late.call("C_WaitForSlotEvent", CKF_DONT_BLOCK).rv == CKR_NO_EVENT
    poller.close()
    late.close()


def test_a_changed_serial_number_is_what_token_info_reads_from_then_on(served, fault):
    before = served.text("-L")
    fault("add", "--change-serial")
    after = served.text("-L")

    def serial(text: str) -> str:
        return next(l.split(":", 1)[1].strip() for l in text.splitlines() if "serial num" in l)

    assert serial(after) != serial(before) and serial(after).endswith("-1"), (before, after)
    fault("add", "--change-serial")
    assert serial(served.text("-L")).endswith("-2")
    assert (
        fault("add", "--insert-token", ok=False)
        .strip()
        .endswith("the token is in its slot (remove it first)")
    )


def test_a_changed_slot_makes_a_kept_slot_id_invalid_and_sessions_say_the_new_one(
    tmp_path, provision, ckdemo_bin, run_ckdemo
):
    """An appliance whose partitions come back numbered anew: from the change on, C_GetSlotList
    gives another id, the id an application kept is CKR_SLOT_ID_INVALID, and a session opened
    before says the new one. Seen by an RPC client of our own (not ckdemo's codec), on a server
    of its own (the module's server keeps its slot for the other tests)."""
    from hostile_client import Client

    CKR_SLOT_ID_INVALID = 0x3
    home = provision(tmp_path / "home")
    server = start_server(ckdemo_bin, home, None, tmp_path / "serve.log")
    try:
        client = Client(server.socket)
        client.initialize()
        (slots,) = client.ok("C_GetSlotList", 1, 8)
        old = slots[0]
        (session,) = client.ok("C_OpenSession", old, 0x6)
        done = run_ckdemo(home, "fault", "add", "--change-slot")
        assert done.returncode == 0 and "another slot" in done.stdout, done.stdout + done.stderr
        (moved,) = client.ok("C_GetSlotList", 1, 8)
        assert len(moved) == 1 and moved[0] != old
        assert client.call("C_GetSlotInfo", old).rv == CKR_SLOT_ID_INVALID
        assert client.call("C_OpenSession", old, 0x6).rv == CKR_SLOT_ID_INVALID
        assert client.call("C_GetSlotInfo", moved[0]).rv == 0
        assert client.ok("C_GetSessionInfo", session)[0] == moved[0]  # the session goes on, there
        (new_session,) = client.ok("C_OpenSession", moved[0], 0x6)
        assert client.ok("C_GetSessionInfo", new_session)[0] == moved[0]
        client.close()
    finally:
        stop_cleanly(server)
    assert "the token moves to another slot (change 1)" in (tmp_path / "serve.log").read_text()


def test_after_an_hsm_restart_object_handles_change_and_old_ones_are_invalid(served, fault):
    """As after an appliance reboot (nginx with pkcs11-provider kept stale handles: its bug is
    what this shows): an RPC client of our own keeps an object handle across the restart; it is
    CKR_OBJECT_HANDLE_INVALID in the new session, and a new search finds the object under
    another number that works."""
    from hostile_client import Client

    CKA_LABEL, CKA_CLASS, CKO_DATA, CKA_TOKEN, CKA_VALUE = 0x3, 0x0, 0x0, 0x1, 0x11
    client = Client(served.socket)
    session = client.open_session(0x5000, USER_PIN)
    (made,) = client.ok(
        "C_CreateObject",
        session,
        [(CKA_CLASS, CKO_DATA), (CKA_TOKEN, False), (CKA_LABEL, b"before-reboot"), (CKA_VALUE, b"v")],
    )
    assert client.find(session, [(CKA_LABEL, b"before-reboot")]) == [made]
    (kept,) = client.ok(
        "C_CreateObject",
        session,
        [(CKA_CLASS, CKO_DATA), (CKA_TOKEN, True), (CKA_LABEL, b"survives-reboot"), (CKA_VALUE, b"w")],
    )
    fault("add", "--restart-hsm")
    assert client.call("C_FindObjectsInit", session, []).rv == 0xB3  # CKR_SESSION_HANDLE_INVALID
    (again,) = client.ok("C_OpenSession", 0x5000, 0x6)
    client.ok("C_Login", again, 1, USER_PIN.encode())
    stale = client.call("C_GetAttributeValue", again, kept, [(CKA_LABEL, 64)])
    assert stale.rv == 0x82, stale  # CKR_OBJECT_HANDLE_INVALID: the handle from before
    found = client.find(again, [(CKA_LABEL, b"survives-reboot")])
    assert len(found) == 1 and found[0] != kept
    assert client.call("C_GetAttributeValue", again, found[0], [(CKA_LABEL, 64)]).rv == 0
    assert client.find(again, [(CKA_LABEL, b"before-reboot")]) == []  # a session object: gone
    client.ok("C_DestroyObject", again, found[0])
    client.close()
