"""`ckdemo bench-serve`: an application of p11-kit-client.so against `ckdemo serve` (the HA slot)
and against the C `p11-kit server` serving one SoftHSM2 token (the home's first member), in one
run, rounds alternating, so a neighbour's load hits both sides.

Every party is a process of its own, as in real use: `ckdemo serve` (a child running this
ckdemo), `p11-kit server` (its own process group), and the clients, each `python -m
ckdemo.bench_serve` loading p11-kit-client.so through the member layer with one server address
and driving the same prepared calls as `ckdemo bench` (ckdemo.bench.prepare). A client reads
JSON lines on stdin (first the set-up, PIN included, then `run` requests) and answers on stdout.

Measured: RSA-2048 sign and 32-byte random, ckdemo/p11-kit ratio per operation; RSA sign by one
client and by two clients at once against each server (do members serve two applications in
parallel?).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

P11KIT_CLIENT = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"  # Debian 12's p11-kit-modules
OPERATIONS = ("rsa-sign", "random")
START_TIMEOUT_S = 30.0
CLIENT_TIMEOUT_S = 120.0  # one round plus set-up; a client that stays silent longer is stuck


class BenchError(Exception):
    """Set-up failed: one line for the user."""


# ---- the client process ----------------------------------------------------------------------------
def client_main() -> int:
    """A client: set-up line {"pin", "operations", "data_size"}, then {"run": op, "seconds": s}
    lines answered with {"ops", "errors", "seconds", "first_error"}, then {"quit": true} answered
    with the latency figures per operation."""
    from .bench import Result, prepare, run_for
    from .codes import CKRError
    from .members.module import module_for
    from .members.slot import PhysicalSlot
    from .model import CKU_USER

    def say(message: dict) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    setup = json.loads(sys.stdin.readline())
    try:
        module = module_for(P11KIT_CLIENT)
        slot_ids = module.slot_ids(token_present=True)
        if not slot_ids:
            raise CKRError(0xE0, "C_GetSlotList", "no slot with a token")
        slot = PhysicalSlot(module, slot_ids[0])
        session = slot.open_session(rw=True)
        session.login(CKU_USER, setup["pin"])
        calls = {op: prepare(session, op, 0, setup["data_size"]) for op in setup["operations"]}
        for call in calls.values():
            call()  # warm-up, as ckdemo bench does
    except CKRError as error:
        say({"error": str(error)})
        return 2
    say({"ready": slot.token_info().label})
    results = {op: Result("client", op, 1) for op in calls}
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        op, round_result = request["run"], Result("client", request["run"], 1)
        run_for([calls[op]], request["seconds"], round_result, lambda n: None)
        results[op].ops += round_result.ops
        results[op].errors += round_result.errors
        results[op].seconds += round_result.seconds
        results[op].latencies_ns += round_result.latencies_ns
        say({"ops": round_result.ops, "errors": round_result.errors,
             "seconds": round_result.seconds, "first_error": round_result.first_error})
    say({op: result.as_dict()["latency_us"] for op, result in results.items()})
    try:
        session.close()
    except CKRError:
        pass  # the figures are taken
    return 0


class Client:
    """The parent's handle on a client process."""

    def __init__(self, name: str, address: str, pin: str, data_size: int) -> None:
        from .childenv import child_environment
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ckdemo.bench_serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=child_environment(P11_KIT_SERVER_ADDRESS=address))
        self.send({"pin": pin, "operations": list(OPERATIONS), "data_size": data_size})
        ready = self.receive()
        if "ready" not in ready:
            raise BenchError(f"client of {name}: {ready.get('error', ready)}")

    def send(self, message: dict) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def receive(self) -> dict:
        assert self.process.stdout is not None
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(self.process.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(CLIENT_TIMEOUT_S)
        if not answer or not answer[0]:
            self.process.kill()
            stderr = self.process.stderr.read().strip().splitlines() if self.process.stderr else []
            raise BenchError(f"client of {self.name} stopped answering"
                             + (f": {stderr[-1]}" if stderr else ""))
        return json.loads(answer[0])

    def finish(self) -> dict:
        self.send({"quit": True})
        latency = self.receive()
        self.process.stdin.close()
        self.process.wait(10)
        return latency

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


# ---- the servers -----------------------------------------------------------------------------------
def _wait_for_socket(path: Path, process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise BenchError(f"{what} did not start" + (f": {' / '.join(tail)}" if tail else ""))
        time.sleep(0.05)


def start_ckdemo_serve(home: Path, folder: Path) -> subprocess.Popen:
    from .childenv import child_environment
    socket_path, log = folder / "ckdemo.sock", folder / "ckdemo-serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "from ckdemo.cli import main; main(prog_name='ckdemo')",
             "--home", str(home), "serve", "--socket", str(socket_path)],
            stdout=out, stderr=subprocess.STDOUT, env=child_environment(), start_new_session=True)
    _wait_for_socket(socket_path, process, "ckdemo serve", log)
    return process


def start_p11kit_server(softhsm_conf: Path, library: str, token: str, folder: Path) -> subprocess.Popen:
    from .childenv import child_environment
    socket_path, log = folder / "p11-kit.sock", folder / "p11-kit-server.log"
    with open(log, "w") as out:
        # its own process group: it forks one p11-kit-remote per connection
        process = subprocess.Popen(
            ["p11-kit", "server", "-f", "-n", str(socket_path), "--provider", library,
             f"pkcs11:token={token}"], stdout=out, stderr=subprocess.STDOUT,
            env=child_environment(SOFTHSM2_CONF=str(softhsm_conf)), start_new_session=True)
    _wait_for_socket(socket_path, process, "p11-kit server", log)
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


# ---- the run --------------------------------------------------------------------------------------
@dataclass
class Figure:
    """ops and seconds summed over rounds; ops/s = ops / seconds (each client's own time)."""
    ops: int = 0
    seconds: float = 0.0
    errors: int = 0
    first_error: str = ""
    latency_us: dict[str, float] = field(default_factory=dict)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def add(self, answer: dict) -> None:
        self.ops += answer["ops"]
        self.seconds += answer["seconds"]
        self.errors += answer["errors"]
        self.first_error = self.first_error or answer["first_error"]


def _run_together(clients: list[Client], op: str, seconds: float) -> list[dict]:
    for client in clients:
        client.send({"run": op, "seconds": seconds})
    return [client.receive() for client in clients]


def run(home: Path, softhsm_conf: Path, library: str, reference_token: str, pin: str,
        seconds: float, rounds: int, data_size: int = 32,
        progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Both servers up, four clients (two per server), `rounds` alternating rounds of
    `seconds / rounds` per measurement; the servers and clients stopped whatever happens."""
    # sockets in a private (0700) temporary folder: short paths (a Unix socket path has 108 bytes)
    folder = Path(tempfile.mkdtemp(prefix="ckdemo-bench-"))
    processes: list[subprocess.Popen] = []
    clients: list[Client] = []
    try:
        processes.append(start_ckdemo_serve(home, folder))
        processes.append(start_p11kit_server(softhsm_conf, library, reference_token, folder))
        ours, theirs = (f"unix:path={folder / name}" for name in ("ckdemo.sock", "p11-kit.sock"))
        clients = [Client("ckdemo serve", ours, pin, data_size), Client("p11-kit server", theirs, pin, data_size),
                   Client("ckdemo serve (2nd)", ours, pin, data_size),
                   Client("p11-kit server (2nd)", theirs, pin, data_size)]
        a, b, a2, b2 = clients
        figures = {(side, op): Figure() for side in ("ckdemo", "p11-kit") for op in OPERATIONS}
        pairs = {side: Figure() for side in ("ckdemo", "p11-kit")}
        slice_s = seconds / rounds
        for number in range(1, rounds + 1):
            progress(f"round {number}/{rounds}")
            for op in OPERATIONS:
                figures["ckdemo", op].add(_run_together([a], op, slice_s)[0])
                figures["p11-kit", op].add(_run_together([b], op, slice_s)[0])
            for side, two in (("ckdemo", [a, a2]), ("p11-kit", [b, b2])):
                answers = _run_together(two, "rsa-sign", slice_s)
                pair = pairs[side]
                pair.ops += sum(x["ops"] for x in answers)
                pair.seconds += max(x["seconds"] for x in answers)
                pair.errors += sum(x["errors"] for x in answers)
                pair.first_error = pair.first_error or next((x["first_error"] for x in answers
                                                             if x["first_error"]), "")
        for side, client in (("ckdemo", a), ("p11-kit", b)):
            for op, latency in client.finish().items():
                figures[side, op].latency_us = latency
        for client in (a2, b2):
            client.finish()
        return _report(figures, pairs, seconds, rounds, reference_token)
    finally:
        for client in clients:
            client.kill()
        for process in reversed(processes):
            stop(process)
        shutil.rmtree(folder, ignore_errors=True)


def _report(figures: dict, pairs: dict, seconds: float, rounds: int, token: str) -> dict[str, Any]:
    def shown(figure: Figure) -> dict[str, Any]:
        return {"ops": figure.ops, "ops_per_s": round(figure.ops_per_s, 1), "errors": figure.errors,
                "first_error": figure.first_error, "latency_us": figure.latency_us}
    report: dict[str, Any] = {"seconds": seconds, "rounds": rounds, "reference_token": token,
                              "operations": {}, "two_clients": {}}
    for op in OPERATIONS:
        ours, theirs = figures["ckdemo", op], figures["p11-kit", op]
        report["operations"][op] = {
            "ckdemo": shown(ours), "p11-kit": shown(theirs),
            "ratio": round(ours.ops_per_s / theirs.ops_per_s, 3) if theirs.ops_per_s else None}
    for side in ("ckdemo", "p11-kit"):
        one, two = figures[side, "rsa-sign"], pairs[side]
        report["two_clients"][side] = {
            "one_client_ops_per_s": round(one.ops_per_s, 1), "two_clients_ops_per_s": round(two.ops_per_s, 1),
            "scaling": round(two.ops_per_s / one.ops_per_s, 3) if one.ops_per_s else None,
            "errors": two.errors, "first_error": two.first_error}
    return report


if __name__ == "__main__":
    sys.exit(client_main())
