"""`ckdemo bench-serve`: an application of p11-kit-client.so against `ckdemo serve` (the HA slot)
and against the C `p11-kit server` serving one SoftHSM2 token (the home's first member), in one
run, rounds alternating, so a neighbour's load hits both sides.

Every party is a process of its own, as in real use: `ckdemo serve` (a child running this
ckdemo), `p11-kit server` (its own process group), and the clients (scripts/bench-serve-client:
python-pkcs11 on p11-kit-client.so with one server address, the known RSA-2048 test key as a
session object). A client reads JSON lines on stdin (first the set-up, PIN included, then `run`
requests) and answers on stdout.

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
from typing import Any

from .interruption import StopRequest

OPERATIONS = ("rsa-sign", "random")
MEASUREMENTS = 2 * len(OPERATIONS) + 2  # a round: each operation on each server, then each pair
START_TIMEOUT_S = 30.0
CLIENT_TIMEOUT_S = 120.0  # one round plus set-up; a client that stays silent longer is stuck


class BenchError(Exception):
    """Set-up failed: one line for the user."""


@dataclass
class Progress:
    """Where a run stands, for a display to read: each round makes MEASUREMENTS measurements
    of `seconds / rounds` one after the other (each operation on each server, then the pair of
    clients on each server)."""

    seconds: float  # --seconds: time per measurement, all rounds together
    rounds: int
    round: int = 0  # the round under way, from 1; 0 while servers and clients start
    done: int = 0  # measurements made
    began_at: float | None = None  # time.monotonic() when the first round began

    @property
    def total(self) -> int:
        return MEASUREMENTS * self.rounds

    def fraction(self) -> float:
        return self.done / self.total

    def eta_s(self) -> float | None:
        """The measuring time left at the pace so far (set-up and shut-down not counted); None
        before round 1."""
        if self.began_at is None:
            return None
        elapsed = time.monotonic() - self.began_at
        if not self.done:  # as planned until a measurement says what one costs here
            return max(0.0, self.seconds * MEASUREMENTS - elapsed)
        return elapsed / self.done * (self.total - self.done)


# ---- the clients ----------------------------------------------------------------------------------
# python-pkcs11 straight on p11-kit-client.so, in a process of its own: a script of the
# repository, since only ckdemo's member layer may load PKCS#11 libraries inside the package
CLIENT_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench-serve-client"


class Client:
    """The parent's handle on a client process."""

    def __init__(self, name: str, address: str, pin: str, data_size: int) -> None:
        from .childenv import child_environment

        self.name = name
        if not CLIENT_SCRIPT.exists():
            raise BenchError(
                f"{CLIENT_SCRIPT} is missing: bench-serve runs from the repository "
                "(make setup installs it in place)"
            )
        self.process = subprocess.Popen(
            [sys.executable, str(CLIENT_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_environment(P11_KIT_SERVER_ADDRESS=address),
        )
        self.send({"pin": pin, "data_size": data_size})
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
        reader = threading.Thread(target=lambda: answer.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(CLIENT_TIMEOUT_S)
        if not answer or not answer[0]:
            self.process.kill()
            stderr = self.process.stderr.read().strip().splitlines() if self.process.stderr else []
            raise BenchError(
                f"client of {self.name} stopped answering" + (f": {stderr[-1]}" if stderr else "")
            )
        return json.loads(answer[0])

    def finish(self) -> dict:
        self.send({"quit": True})
        latency = self.receive()
        self.process.stdin.close()
        self.process.wait(10)
        return latency

    def interrupt(self) -> None:
        """Ends the measurement under way now: the client answers with what it did so far."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

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
            [
                sys.executable,
                "-c",
                "from ckdemo.cli import main; main(prog_name='ckdemo')",
                "--home",
                str(home),
                "serve",
                "--socket",
                str(socket_path),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_environment(),
            start_new_session=True,
        )
    _wait_for_socket(socket_path, process, "ckdemo serve", log)
    return process


def start_p11kit_server(softhsm_conf: Path, library: str, token: str, folder: Path) -> subprocess.Popen:
    from .childenv import child_environment

    socket_path, log = folder / "p11-kit.sock", folder / "p11-kit-server.log"
    with open(log, "w") as out:
        # its own process group: it forks one p11-kit-remote per connection
        process = subprocess.Popen(
            [
                "p11-kit",
                "server",
                "-f",
                "-n",
                str(socket_path),
                "--provider",
                library,
                f"pkcs11:token={token}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_environment(SOFTHSM2_CONF=str(softhsm_conf)),
            start_new_session=True,
        )
    _wait_for_socket(socket_path, process, "p11-kit server", log)
    return process


def stop_server(process: subprocess.Popen) -> None:
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
    per_round: list[float] = field(default_factory=list)  # ops/s of each round

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def add(self, answer: dict) -> None:
        self.ops += answer["ops"]
        self.seconds += answer["seconds"]
        self.errors += answer["errors"]
        self.first_error = self.first_error or answer["first_error"]
        if answer["seconds"]:
            self.per_round.append(answer["ops"] / answer["seconds"])


def paired(ours: Figure, theirs: Figure) -> dict[str, Any]:
    """The ratio of each round (the two servers measured one after the other), its median and
    quartiles: the machine's drift and a neighbour's load show as spread, not as a wrong ratio."""
    ratios = sorted(a / b for a, b in zip(ours.per_round, theirs.per_round) if b)
    if not ratios:
        return {"median": None, "q1": None, "q3": None, "rounds": 0}

    def at(fraction: float) -> float:  # linear interpolation between the closest ranks
        position = fraction * (len(ratios) - 1)
        low = int(position)
        high = min(low + 1, len(ratios) - 1)
        return round(ratios[low] + (ratios[high] - ratios[low]) * (position - low), 3)

    return {"median": at(0.5), "q1": at(0.25), "q3": at(0.75), "rounds": len(ratios)}


def _run_together(clients: list[Client], op: str, seconds: float) -> list[dict]:
    for client in clients:
        client.send({"run": op, "seconds": seconds})
    return [client.receive() for client in clients]


def run(
    home: Path,
    softhsm_conf: Path,
    library: str,
    reference_token: str,
    pin: str,
    seconds: float,
    rounds: int,
    data_size: int = 32,
    progress: Progress | None = None,
    stop: StopRequest | None = None,
) -> dict[str, Any]:
    """Both servers up, four clients (two per server), `rounds` alternating rounds of
    `seconds / rounds` per measurement; the servers and clients stopped whatever happens.
    When `stop` is requested, the clients end the measurement under way and the report holds
    what was measured so far ("interrupted": true). `progress`, when given, is kept up to date
    as the rounds go (a display reads it)."""
    stop = stop or StopRequest()
    progress = progress or Progress(seconds, rounds)
    figures = {(side, op): Figure() for side in ("ckdemo", "p11-kit") for op in OPERATIONS}
    pairs = {side: Figure() for side in ("ckdemo", "p11-kit")}
    # sockets in a private (0700) temporary folder: short paths (a Unix socket path has 108 bytes)
    folder = Path(tempfile.mkdtemp(prefix="ckdemo-bench-"))
    processes: list[subprocess.Popen] = []
    clients: list[Client] = []
    stop.listen(lambda: [client.interrupt() for client in clients])
    try:
        processes.append(start_ckdemo_serve(home, folder))
        processes.append(start_p11kit_server(softhsm_conf, library, reference_token, folder))
        ours, theirs = (f"unix:path={folder / name}" for name in ("ckdemo.sock", "p11-kit.sock"))
        for name, address in (
            ("ckdemo serve", ours),
            ("p11-kit server", theirs),
            ("ckdemo serve (2nd)", ours),
            ("p11-kit server (2nd)", theirs),
        ):
            if stop.is_set():
                return _report(figures, pairs, seconds, rounds, reference_token, interrupted=True)
            clients.append(Client(name, address, pin, data_size))
        a, b, a2, b2 = clients
        slice_s = seconds / rounds
        for number in range(1, rounds + 1):
            if stop.is_set():
                break
            progress.round = number
            if progress.began_at is None:
                progress.began_at = time.monotonic()
            # who goes first changes every round: the first of a pair runs right after the
            # two-client load of the round before, and must not always be the same server
            singles, doubles = [("ckdemo", a), ("p11-kit", b)], [("ckdemo", [a, a2]), ("p11-kit", [b, b2])]
            if number % 2 == 0:
                singles.reverse()
                doubles.reverse()
            for op in OPERATIONS:
                for side, client in singles:
                    if not stop.is_set():
                        figures[side, op].add(_run_together([client], op, slice_s)[0])
                        progress.done += 1
            for side, two in doubles:
                if stop.is_set():
                    break
                answers = _run_together(two, "rsa-sign", slice_s)
                pair = pairs[side]
                pair.ops += sum(x["ops"] for x in answers)
                pair.seconds += max(x["seconds"] for x in answers)
                pair.errors += sum(x["errors"] for x in answers)
                pair.first_error = pair.first_error or next(
                    (x["first_error"] for x in answers if x["first_error"]), ""
                )
                progress.done += 1
        for side, client in (("ckdemo", a), ("p11-kit", b)):
            for op, latency in client.finish().items():
                figures[side, op].latency_us = latency
        for client in (a2, b2):
            client.finish()
        return _report(figures, pairs, seconds, rounds, reference_token, stop.is_set())
    finally:
        for client in clients:
            client.kill()
        for process in reversed(processes):
            stop_server(process)
        shutil.rmtree(folder, ignore_errors=True)


def _report(
    figures: dict, pairs: dict, seconds: float, rounds: int, token: str, interrupted: bool = False
) -> dict[str, Any]:
    def shown(figure: Figure) -> dict[str, Any]:
        return {
            "ops": figure.ops,
            "ops_per_s": round(figure.ops_per_s, 1),
            "errors": figure.errors,
            "first_error": figure.first_error,
            "latency_us": figure.latency_us,
        }

    report: dict[str, Any] = {
        "seconds": seconds,
        "rounds": rounds,
        "reference_token": token,
        "interrupted": interrupted,
        "operations": {},
        "two_clients": {},
    }
    for op in OPERATIONS:
        ours, theirs = figures["ckdemo", op], figures["p11-kit", op]
        report["operations"][op] = {
            "ckdemo": shown(ours),
            "p11-kit": shown(theirs),
            "ratio": round(ours.ops_per_s / theirs.ops_per_s, 3) if theirs.ops_per_s else None,
            "ratio_per_round": paired(ours, theirs),
        }
    for side in ("ckdemo", "p11-kit"):
        one, two = figures[side, "rsa-sign"], pairs[side]
        report["two_clients"][side] = {
            "one_client_ops_per_s": round(one.ops_per_s, 1),
            "two_clients_ops_per_s": round(two.ops_per_s, 1),
            "scaling": round(two.ops_per_s / one.ops_per_s, 3) if one.ops_per_s else None,
            "errors": two.errors,
            "first_error": two.first_error,
        }
    return report
