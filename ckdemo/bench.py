"""`ckdemo bench`: a multitoken-style throughput and latency run on any slot, or HA vs direct.

Works through the slot interface only, so the HA virtual slot and a physical slot are measured
by the same code. With two slots, rounds alternate between them in one run, so the ratio is not
skewed by a noisy neighbour that comes and goes.
"""

from __future__ import annotations

import itertools
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .codes import CKRError
from .histogram import LatencyHistogram
from .known_keys import KNOWN_AES256, KNOWN_EC_P256, KNOWN_RSA2048
from .model import CKM_ECDSA, CKM_SHA256_RSA_PKCS, KeySpec

CKM_AES_CBC_PAD, CKM_AES_ECB, CKM_SHA256 = 0x1085, 0x1081, 0x250
OPERATIONS = ("rsa-sign", "ecdsa-sign", "aes-encrypt", "aes-ecb", "digest", "random")
ROUNDS = 6  # alternating rounds per slot in a side-by-side run
# a worker tells the progress display (and a sampled timeline: 10 ticks in each 0.1 s bin, so a
# bin is off by a tick at most) about its calls this often, not on every call: ~1 us a tick
TICK_CALLS, TICK_S = 256, 0.01
KNOWN_KEY_BITS = {"rsa-sign": 2048, "ecdsa-sign": 256, "aes-encrypt": 256, "aes-ecb": 256}


class Progress:
    """How far a whole bench run is (every slot and round together), read by a display from
    another thread: measured time against the planned total, or operations against the count."""

    def __init__(
        self, total_s: float, total_ops: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total_s, self.total_ops, self.clock = total_s, total_ops, clock
        self.ops = 0
        self.errors = 0  # of the ops (a timeline's failures: timeline.Sampler reads both)
        self.slot = ""  # the slot being measured now
        self._done_s = 0.0  # measured time of the finished slices
        self._began: float | None = None  # start of the slice under way
        self._lock = threading.Lock()

    def begin(self, slot: str) -> None:
        self.slot, self._began = slot, self.clock()

    def end(self) -> None:
        if self._began is not None:
            self._done_s += self.clock() - self._began
            self._began = None

    def add(self, ops: int, errors: int = 0) -> None:
        with self._lock:
            self.ops += ops
            self.errors += errors

    @property
    def measuring(self) -> str:
        """The slot measured now; '' between measurements."""
        return self.slot if self._began is not None else ""

    def measured_s(self) -> float:
        began = self._began
        return self._done_s + (self.clock() - began if began is not None else 0.0)

    def fraction(self) -> float:
        if self.total_ops:
            return min(1.0, self.ops / self.total_ops)
        return min(1.0, self.measured_s() / self.total_s) if self.total_s else 1.0

    def eta_s(self) -> float | None:
        """Seconds of measuring left; with a count, from the rate so far (None before any)."""
        if not self.total_ops:
            return max(0.0, self.total_s - self.measured_s())
        done = self.fraction()
        return self.measured_s() * (1 - done) / done if done else None


@dataclass
class Result:
    slot: str
    operation: str
    threads: int
    ops: int = 0
    errors: int = 0
    seconds: float = 0.0  # measured time, all rounds together
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # ns, bounded memory
    member_share: dict[str, float] = field(default_factory=dict)
    first_error: str = ""

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "operation": self.operation,
            "threads": self.threads,
            "ops": self.ops,
            "errors": self.errors,
            "measured_s": round(self.seconds, 3),
            "ops_per_s": round(self.ops_per_s, 1),
            "latency_us": self.latency.percentiles_us(),
            "member_share": self.member_share,
            "first_error": self.first_error,
        }


def _known(session, known, tag: str) -> int:
    """The known test key as session objects (created on every member of an HA slot): the same
    key material on every member and in every run, so figures compare like with like."""
    handles = [
        session.create_object(t)
        for t in known.templates(
            token=False, private=True, label=f"bench-{tag}", key_id=f"bench-{tag}".encode()
        )
    ]
    return handles[-1]  # the private or secret part


def prepare(session, operation: str, key_size: int, data_size: int) -> Callable[[], Any]:
    """Returns the operation as a call; keys are the known test keys unless a size is asked."""
    data = os.urandom(data_size)
    tag = os.urandom(4).hex()
    if operation == "rsa-sign":
        if key_size and key_size != 2048:
            _, key = session.generate(KeySpec("rsa", key_size, f"bench-{tag}", b"", token=False))
        else:
            key = _known(session, KNOWN_RSA2048, tag)
        return lambda: session.sign(key, CKM_SHA256_RSA_PKCS, data)
    if operation == "ecdsa-sign":
        key = _known(session, KNOWN_EC_P256, tag)
        digest = data[:32].ljust(32, b"\0")
        return lambda: session.sign(key, CKM_ECDSA, digest)
    if operation == "aes-encrypt":
        key = _known(session, KNOWN_AES256, tag)
        iv = bytes(16)
        return lambda: session.encrypt(key, CKM_AES_CBC_PAD, data, iv)
    if operation == "aes-ecb":  # the AES operation p11-kit RPC can carry (no parameters)
        key = _known(session, KNOWN_AES256, tag)
        block = data[:16].ljust(16, b"\0") * max(1, data_size // 16)
        return lambda: session.encrypt(key, CKM_AES_ECB, block)
    if operation == "digest":
        return lambda: session.digest(CKM_SHA256, data)
    if operation == "random":
        return lambda: session.generate_random(data_size)
    raise ValueError(f"unknown operation {operation!r} (known: {', '.join(OPERATIONS)})")


def run_for(
    calls: list[Callable[[], Any]],
    seconds: float,
    result: Result,
    tick: Callable[[int, int], None] = lambda n, errors: None,
    count: int = 0,
    stop: threading.Event | None = None,
) -> None:
    """One thread per call object (each with its own session) for the given time, or until
    `count` calls (all threads together) when a count is given, or until `stop` is set (a
    threading.Event, or interruption.StopRequest). tick(calls, failed): how many calls (and of
    them failed) since the last tick, every TICK_CALLS calls or TICK_S seconds: never per call."""
    stop = stop or threading.Event()
    stop_at = time.perf_counter() + (seconds if not count else 1e9)
    lock = threading.Lock()
    started_calls = itertools.count(1)

    def worker(call: Callable[[], Any]) -> None:
        local, done, errors, first = LatencyHistogram(), 0, 0, ""
        untold, told_at = 0, time.perf_counter()  # calls not yet passed to tick, and when last
        errors_told = 0
        while (
            (now := time.perf_counter()) < stop_at
            and not stop.is_set()
            and (not count or next(started_calls) <= count)
        ):
            if untold and (untold >= TICK_CALLS or now - told_at >= TICK_S):
                tick(untold, errors - errors_told)
                untold, told_at, errors_told = 0, now, errors
            untold += 1
            start = time.perf_counter_ns()
            try:
                call()
            except Exception as exc:  # counted and reported: a benchmark must not stop on one
                errors += 1
                first = first or str(exc)
                continue
            local.record(time.perf_counter_ns() - start)
            done += 1
        with lock:
            result.latency.merge(local)
            result.ops += done
            result.errors += errors
            result.first_error = result.first_error or first
        tick(untold, errors - errors_told)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds += time.perf_counter() - started


def member_calls(slot) -> dict[str, int]:
    return slot.member_calls()


def rounds_for(slots: list) -> int:
    return ROUNDS if len(slots) > 1 else 1


def parameters(
    slots: list[tuple[str, Any]],
    operation: str,
    seconds: float,
    threads: int = 1,
    key_size: int = 0,
    data_size: int = 32,
    count: int = 0,
) -> dict[str, Any]:
    """The run as asked, for the JSON report: what another run must repeat to compare."""
    return {
        "operation": operation,
        "slots": [name for name, _ in slots],
        "members": [serial for _, slot in slots for serial in slot.member_calls()],
        "per_slot_s": None if count else seconds,
        "duration_s": None if count else seconds * len(slots),
        "count_per_slot": count or None,
        "threads": threads,
        "rounds": rounds_for(slots),
        "key_size_bits": key_size or KNOWN_KEY_BITS.get(operation),
        "data_size_bytes": data_size,
    }


def bench(
    slots: list[tuple[str, Any]],
    operation: str,
    seconds: float,
    threads: int = 1,
    key_size: int = 0,
    data_size: int = 32,
    progress: Progress | None = None,
    count: int = 0,
    stop: threading.Event | None = None,
) -> list[Result]:
    """`seconds` (or `count` operations) per slot; `progress` follows the whole run. When `stop`
    is set the run ends where it is: the figures so far, every session (and so every session key
    the run made) closed. The keys are session objects: nothing of a run outlives its sessions."""
    prepared: list[tuple[Result, Any, list, list]] = []
    stop = stop or threading.Event()
    try:
        _measure(slots, operation, seconds, threads, key_size, data_size, progress, count, stop, prepared)
    finally:
        for _, _, _, sessions in prepared:
            for s in sessions:
                try:
                    s.close()
                except CKRError:
                    pass  # closing after the run is best effort; the figures are taken
    return [r for r, _, _, _ in prepared]


def _measure(
    slots, operation, seconds, threads, key_size, data_size, progress, count, stop, prepared: list
) -> None:
    for name, slot in slots:
        if stop.is_set():
            return
        sessions: list = []
        prepared.append((Result(name, operation, threads), slot, [], sessions))
        for _ in range(threads):
            sessions.append(slot.open_session(rw=True))
        calls = prepared[-1][2]
        calls.extend(prepare(s, operation, key_size, data_size) for s in sessions)
        for call in calls:
            call()  # warm up: first-use costs (object lookups, anchors) are not measured
    rounds = rounds_for(slots)
    tick = progress.add if progress else (lambda n, errors: None)
    before = {id(slot): member_calls(slot) for _, slot, _, _ in prepared}
    for round_number in range(rounds):
        # with a count, exactly `count` per slot over all rounds
        share = count * (round_number + 1) // rounds - count * round_number // rounds
        for result, slot, calls, _ in prepared:
            if stop.is_set() or (count and not share):
                continue
            if progress:
                progress.begin(result.slot)
            run_for(calls, seconds / rounds, result, tick, share, stop)
            if progress:
                progress.end()
    for result, slot, _, _ in prepared:
        after = member_calls(slot)
        total = sum(after[k] - before[id(slot)].get(k, 0) for k in after) or 1
        result.member_share = {k: round((after[k] - before[id(slot)].get(k, 0)) / total, 3) for k in after}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def sampler(progress: Progress, threads: int):
    """The run's timeline, sampled from `progress` (timeline.Sampler): no work added to a call."""
    from .timeline import Sampler

    return Sampler(
        lambda: (progress.ops, progress.errors, progress.measured_s(), progress.measuring), threads
    )


def html_page(figures: list[dict[str, Any]], asked: dict[str, Any], sampled, ratio: dict | None) -> str:
    """The run as one self-contained page: calls per second over time (sampled), each slot's
    rounds shaded, the mean call time, and the figures."""
    import html
    from . import timeline

    rows = "".join(
        f"<tr><td>{html.escape(f['slot'])}</td><td>{f['ops']}</td><td>{f['ops_per_s']}</td>"
        f"<td>{f['latency_us']['p50']}</td><td>{f['latency_us']['p99']}</td>"
        f"<td>{f['latency_us']['max']}</td><td>{f['errors']}</td></tr>"
        for f in figures
    )
    said = f"; HA/direct {ratio['ha_over_direct']}" if ratio else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ckdemo bench</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
{timeline.STYLE}</style></head><body>
<h1>ckdemo bench: {html.escape(asked["operation"])}, {asked["threads"]} thread(s){html.escape(said)}</h1>
{timeline.svg(sampled.bins, sampled.duration_s, sampled.windows, latency="mean")}
<p>Bars: calls per second in each {sampled.bins.bin_s:g} s (blue), failures (red); line: the mean
call time in each (orange), from the closed loop ({asked["threads"]} thread(s) busy for the time
measured); shaded: the rounds of each slot. Sampled every {sampled.every_s:g} s from the run's own
counters: nothing was added to the calls measured.</p>
<table><tr><th>slot</th><th>ops</th><th>ops/s</th><th>p50 us</th><th>p99 us</th><th>max us</th><th>errors</th></tr>
{rows}</table>
</body></html>
"""
