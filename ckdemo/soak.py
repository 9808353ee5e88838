"""`ckdemo soak`: a chaos run on the HA slot. A workload signs (RSA), encrypts and decrypts
(AES-CBC-PAD) and every GENERATE_EVERY rounds generates an AES key on the HA slot (replicated to
every member under the domain keys) while a seeded chaos thread kills members and brings them
back, never all at once. Reports what the
application saw, the latency around each failure, every recovery and the call that triggered
it, and at the end whether every member holds the same objects with the same key material.
A member automatic recovery gives up on (soak_dropouts.py) is said when it happens, not waited
for at the end, and cleared of the run's objects through its own slot.

Works through the slot interface only (fail/restore are real SIGKILLs for remote members).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .codes import CKRError
from .soak_dropouts import Dropouts
from . import timeline
from .histogram import LatencyHistogram
from .timeline import Bins, Line, Window
from .known_keys import KNOWN_AES256, KNOWN_RSA2048
from .model import (
    CKA_CLASS,
    CKA_ID,
    CKA_LABEL,
    CKA_MODULUS,
    CKO_PRIVATE_KEY,
    CKO_PUBLIC_KEY,
    CKO_SECRET_KEY,
    CKU_USER,
    CKM_SHA256_RSA_PKCS,
    KeySpec,
)

CKM_AES_ECB = 0x1081  # the fingerprint of an AES key: its check value
CKM_AES_CBC_PAD = 0x1085  # the workload's cipher: its IV travels as a flat byte parameter
GENERATE_EVERY = 16  # rounds between two key generations on the HA slot
WINDOW_S = 2.0  # latency "around a failure": the calls in flight at the kill and begun this long after it
SETTLE_S = 15.0  # at the end, how long to wait for the members that can still come back
BLOCK = bytes(range(16))  # what each C_Encrypt+C_Decrypt round trip carries
IV = bytes(16)
SIGN_DATA_BYTES = 32  # what each C_Sign signs ("soak N", padded)
RSA_KEY_BITS, AES_KEY_BITS = 2048, 256  # the known keys the workload uses (known_keys.py)


@dataclass
class Chaos:
    seed: int
    kill_every_s: tuple[float, float] | None = (2.0, 4.0)  # between kills, drawn uniformly (None: no kill)
    down_for_s: tuple[float, float] = (0.5, 1.5)  # how long a member stays down (or hung)
    hang_every_s: tuple[float, float] | None = None  # between hangs (SIGSTOP; remote members only)


@dataclass
class Report:
    parameters: dict[str, Any] = field(default_factory=dict)  # the run as asked (run() fills it)
    began_at: float | None = None  # time.monotonic() when the workload began: a display reads it
    settling: bool = False  # the workload is over; waiting for the members that can come back
    cleaning: bool = False  # removing the run's objects from every member
    interrupted: bool = False  # stopped early (Ctrl-C): the figures cover what ran
    seconds: float = 0.0
    operations: int = 0
    failures: list[str] = field(default_factory=list)
    kills: list[tuple[float, str]] = field(default_factory=list)  # (time, member serial): kills and hangs
    hangs: set[int] = field(default_factory=set)  # which of `kills` are hangs (SIGSTOP), by index
    restores: list[tuple[float, str]] = field(default_factory=list)
    recoveries: list[tuple[float, str, str]] = field(default_factory=list)  # (time, serial, call)
    # latencies in bounded memory (histogram.py): the RSS figure the soak reports stays flat
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    windows: "FailureWindows" = field(default_factory=lambda: FailureWindows())
    timeline: Bins = field(default_factory=Bins)  # every call over time, bounded (timeline.py)
    consistency: dict[str, Any] = field(default_factory=dict)
    rss_start_kb: int = 0
    rss_end_kb: int = 0
    slowest: tuple[int, float] = (0, 0.0)  # (ns, when it began, s): the run's slowest call
    dropouts: Dropouts | None = None  # members given up (run() sets it when the workload begins)

    def record(self, began_s: float, seconds: float, failed: bool = False) -> None:
        """One call, `began_s` after the workload began, that took `seconds`."""
        ns = int(seconds * 1e9)
        if ns > self.slowest[0]:
            self.slowest = (ns, began_s)
        self.timeline.add(began_s, seconds, failed)
        self.latency.record(ns)
        self.windows.record(self.kills, began_s, ns)

    def p99_ms(self) -> float:
        return self.latency.percentile(99) / 1e6

    def as_dict(self) -> dict[str, Any]:
        baseline = self.p99_ms()
        around = self.windows.rows(self.kills)
        for index, row in enumerate(around):
            row["kind"] = "hang" if index in self.hangs else "kill"
        return {
            "parameters": self.parameters,
            "interrupted": self.interrupted,
            "elapsed_s": round(self.seconds, 1),
            "operations": self.operations,
            "application_failures": len(self.failures),
            "failure_samples": self.failures[:5],
            "kills": len(self.kills) - len(self.hangs),
            "hangs": len(self.hangs),
            "restores": len(self.restores),
            "recoveries": [{"t_s": round(t, 2), "member": s, "call": c} for t, s, c in self.recoveries],
            "p99_ms": round(baseline, 2),
            "slowest_ms": round(self.slowest[0] / 1e6, 2),
            "slowest_at_s": round(self.slowest[1], 2),
            "around_failures": around,
            "worst_added_p99_ms": round(max((r["p99_ms"] for r in around), default=0.0) - baseline, 2),
            "consistency": self.consistency,
            **(self.dropouts.as_dict() if self.dropouts else {"given_up": [], "leftovers": []}),
            "rss_start_kb": self.rss_start_kb,
            "rss_end_kb": self.rss_end_kb,
            "rss_growth_kb": self.rss_end_kb - self.rss_start_kb,
        }


class FailureWindows:
    """Latency around each kill: every call running at the kill instant (the one in flight waits
    for the member to be given up) or begun within WINDOW_S after it, that is each call (start,
    end) with start < kill + WINDOW_S and end >= kill; one histogram per window still open, a
    window that closed keeps only its figures. The chaos thread appends a kill just after making
    it, so the calls that ended in the last WINDOW_S are kept (`recent`) to fill a window opened
    late."""

    def __init__(self) -> None:
        self.recent: deque[tuple[float, int]] = deque()  # (start s, ns), ended in the last WINDOW_S
        self.open: dict[int, tuple[LatencyHistogram, list[int]]] = {}  # kill index -> (hist, [slowest])
        self.closed: dict[int, dict[str, float]] = {}
        self.seen = 0  # kills opened so far

    @staticmethod
    def inside(when: float, began_s: float, ns: int) -> bool:
        """Is the call that began at `began_s` and took `ns` in the window of a kill at `when`?"""
        return began_s < when + WINDOW_S and began_s + ns / 1e9 >= when

    def record(self, kills: list[tuple[float, str]], began_s: float, ns: int) -> None:
        """One call, recorded when it ended (the workload's calls come one after another)."""
        while self.seen < len(kills):
            when = kills[self.seen][0]
            window = self.open[self.seen] = (LatencyHistogram(), [0])
            for t, earlier in self.recent:
                if self.inside(when, t, earlier):
                    self._add(window, earlier)
            self.seen += 1
        ended = began_s + ns / 1e9
        self.recent.append((began_s, ns))
        while self.recent and self.recent[0][0] + self.recent[0][1] / 1e9 < ended - WINDOW_S:
            self.recent.popleft()
        for index, window in list(self.open.items()):
            when = kills[index][0]
            if began_s >= when + WINDOW_S:
                self._close(index)
            elif self.inside(when, began_s, ns):
                self._add(window, ns)

    @staticmethod
    def _add(window: tuple[LatencyHistogram, list[int]], ns: int) -> None:
        window[0].record(ns)
        window[1][0] = max(window[1][0], ns)

    def _close(self, index: int) -> None:
        histogram, slowest = self.open.pop(index)
        self.closed[index] = {
            "slowest_ms": round(slowest[0] / 1e6, 2),
            "p99_ms": round(histogram.percentile(99) / 1e6, 2),
        }

    def rows(self, kills: list[tuple[float, str]]) -> list[dict[str, Any]]:
        for index in list(self.open):
            self._close(index)
        return [
            {
                "t_s": round(when, 2),
                "member": serial,
                **self.closed.get(index, {"slowest_ms": 0.0, "p99_ms": 0.0}),
            }
            for index, (when, serial) in enumerate(kills)
        ]


def html_page(report: "Report") -> str:
    """The soak as one self-contained page: the figures, and the timeline the fault lab draws
    (ckdemo.timeline), each kill or hang shaded until its member was back, recoveries dashed."""
    import html

    figures = report.as_dict()
    back = {}  # member serial -> restore times, in order
    for when, serial in report.restores:
        back.setdefault(serial, []).append(when)
    windows = []
    for index, (when, serial) in enumerate(report.kills):
        kind = "hang" if index in report.hangs else "kill"
        ends = [t for t in back.get(serial, []) if t >= when]
        windows.append(
            Window(
                when,
                ends[0] if ends else report.seconds,
                f"{kind} {serial[:6]}",
                f"{kind} of member {serial} at {when:.2f} s",
            )
        )
    lines = [
        Line(when, f"member {serial} recovered inside call {call}")
        for when, serial, call in report.recoveries
    ]
    rows = "".join(
        f"<tr><td>{r['kind']}</td><td>{r['t_s']}</td><td>{html.escape(r['member'])}</td>"
        f"<td>{r['slowest_ms']}</td><td>{r['p99_ms']}</td></tr>"
        for r in figures["around_failures"]
    )
    consistency = figures["consistency"]
    given_up = "".join(
        f"<p>Member {html.escape(g['member'])} given up at {g['t_s']} s: {g['attempts']} of {g['retry']} "
        f"recovery attempt(s) failed, {g['interval_s']:g} s apart.</p>"
        for g in figures["given_up"]
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ckdemo soak</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
{timeline.STYLE}</style></head><body>
<h1>ckdemo soak: {figures["operations"]} operations in {figures["elapsed_s"]} s,
{figures["application_failures"]} application-visible failure(s)</h1>
<p>Seed {html.escape(str(report.parameters.get("seed")))}; {figures["kills"]} kill(s), {figures["hangs"]} hang(s),
p99 {figures["p99_ms"]} ms; members identical at the end: {consistency.get("identical")}.</p>
{given_up}
{timeline.svg(report.timeline, report.seconds, windows, lines)}
<p>{timeline.legend(report.timeline.bin_s)}</p>
<table><tr><th></th><th>at s</th><th>member</th><th>slowest ms (in flight or begun in the next {WINDOW_S:g} s)</th><th>p99 ms</th></tr>{rows}</table>
</body></html>
"""


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _create_keys(session, tag: str) -> tuple[int, int]:
    """The run's keys, on every member: the known RSA and AES keys under labels of this run."""
    handles = []
    for known in (KNOWN_RSA2048, KNOWN_AES256):
        for template in known.templates(
            token=True,
            private=True,
            label=f"soak-{tag}",
            key_id=f"soak-{tag}-{known.key_id[-1:].decode()}".encode(),
        ):
            handles.append(session.create_object(template))
    _, rsa_private, aes = handles
    return rsa_private, aes


def parameters(group, seconds: float, chaos: Chaos, interval_s: float) -> dict[str, Any]:
    return {
        "seed": chaos.seed,
        "duration_s": seconds,
        "interval_s": interval_s,
        "retry": group.policy.retries,
        "kill_every_s": list(chaos.kill_every_s) if chaos.kill_every_s else None,
        "hang_every_s": list(chaos.hang_every_s) if chaos.hang_every_s else None,
        "down_for_s": list(chaos.down_for_s),
        "group": group.label,
        "members": [m.serial for m in group.members],
        "rsa_key_bits": RSA_KEY_BITS,
        "aes_key_bits": AES_KEY_BITS,
        "sign_data_bytes": SIGN_DATA_BYTES,
        "encrypt_data_bytes": len(BLOCK),
        "generate_every_rounds": GENERATE_EVERY,
        "window_s": WINDOW_S,
    }


def run(
    group,
    seconds: float,
    chaos: Chaos,
    pin: str,
    interval_s: float = 0.5,
    report: Report | None = None,
    interrupt: threading.Event | None = None,
    say: Callable[[str], None] = lambda line: None,
    tool: str = "pkcs11-tool --module <the member's PKCS#11 library>",
) -> Report:
    """`report`, when given, is filled as the run goes (a progress display reads it). When
    `interrupt` is set the workload ends there; the members are still brought back, compared and
    cleared of the run's objects. `say` gets a line when a member is given up and when the end
    waits for members; `tool` starts the pkcs11-tool line a leftover is removed with."""
    report = report if report is not None else Report()
    interrupt = interrupt or threading.Event()
    report.rss_start_kb = rss_kb()
    report.parameters = parameters(group, seconds, chaos, interval_s)
    group.policy.configure(interval_s=interval_s)
    if group.credentials is None:
        group.login(CKU_USER, pin)
    session = group.open_session(rw=True)
    tag = os.urandom(3).hex()
    rsa, aes = _create_keys(session, tag)
    start = report.began_at = time.monotonic()
    dropouts = report.dropouts = Dropouts(group, start, say)
    stop = threading.Event()
    chaos_thread = threading.Thread(
        target=_chaos, args=(group, chaos, start, seconds, stop, report), daemon=True
    )
    chaos_thread.start()
    seen = len(group.log.events)
    generated: list[int] = []
    n = 0
    while time.monotonic() - start < seconds and not interrupt.is_set():
        n += 1
        data = (b"soak %d" % n).ljust(SIGN_DATA_BYTES, b".")
        calls = [
            ("C_Sign", lambda: session.sign(rsa, CKM_SHA256_RSA_PKCS, data)),
            (
                "C_Encrypt+C_Decrypt",
                lambda: session.decrypt(
                    aes, CKM_AES_CBC_PAD, session.encrypt(aes, CKM_AES_CBC_PAD, BLOCK, IV), IV
                ),
            ),
        ]
        if n % GENERATE_EVERY == 0:
            calls.append(
                (
                    "C_GenerateKey",
                    lambda: generated.extend(
                        session.generate(KeySpec("aes", 32, f"soak-{tag}", f"soak-{tag}-gen-{n}".encode()))
                    ),
                )
            )
        for name, call in calls:
            began = time.monotonic()
            failed = False
            try:
                result = call()
                if name == "C_Encrypt+C_Decrypt" and result != BLOCK:
                    report.failures.append(f"{began - start:.2f}s {name}: decrypted bytes differ")
                    failed = True
            except CKRError as exc:
                report.failures.append(f"{began - start:.2f}s {name}: {exc}")
                failed = True
            report.record(began - start, time.monotonic() - began, failed)
            report.operations += 1
            if len(group.log.events) == seen:
                continue
            for event in group.log.events[seen:]:
                if event.event == "recovered":
                    report.recoveries.append((time.monotonic() - start, event.member, f"#{n} {name}"))
            seen = len(group.log.events)
            dropouts.check()
    stop.set()
    chaos_thread.join()
    report.interrupted = interrupt.is_set()
    report.seconds = time.monotonic() - start
    report.settling = True
    _settle(group, session, dropouts, say)
    dropouts.reach(pin)  # members still out of service: through their own slot
    report.consistency = _compare(group, f"soak-{tag}")
    report.settling, report.cleaning = False, True
    report.consistency["generated_keys"] = len(generated)
    _remove_run_objects(session, f"soak-{tag}", group)
    dropouts.clear(f"soak-{tag}", tool)
    for left in dropouts.leftovers:
        say(left.line())
    report.cleaning = False
    session.close()
    report.rss_end_kb = rss_kb()
    return report


def _remove_run_objects(session, label: str, group=None) -> None:
    """Every object of the run (its label), found on the HA slot and destroyed on every member:
    the handles noted along the way miss a key whose C_GenerateKey answer a failure swallowed.
    Then, straight on each member in service, whatever still carries the run's label (a copy
    the group does not know of: made by a member that failed before answering, or kept apart
    under a marked label `soak-... #ha-...`): the run's objects are the soak's own."""
    try:
        handles = session.find_objects({CKA_LABEL: label})
    except CKRError:
        handles = []  # the consistency figures already say the members are not all there
    for handle in handles:
        try:
            session.destroy_object(handle)
        except CKRError:
            pass  # a member still down keeps its copy; the next resynchronisation removes it
    for member in group.members if group is not None else []:
        if not member.active:
            continue
        try:
            own = group.session_for(member)
            for handle in own.find_objects({}):
                found = own.get_attributes(handle, [CKA_LABEL]).get(CKA_LABEL) or ""
                if str(found).startswith(label):
                    own.destroy_object(handle)
        except CKRError:
            continue  # that member failed meanwhile: its copies go when it is resynchronised


def _chaos(group, chaos: Chaos, start: float, seconds: float, stop: threading.Event, report: Report) -> None:
    """Kills (and hangs, when asked) on their own seeded schedules; never every member at once."""
    rng = random.Random(chaos.seed)
    down: dict[Any, tuple[float, str]] = {}  # member -> (when to bring it back, "kill" or "hang")
    due = {
        kind: rng.uniform(*every)
        for kind, every in (("kill", chaos.kill_every_s), ("hang", chaos.hang_every_s))
        if every
    }
    while not stop.is_set():
        now = time.monotonic() - start
        for member, (back_at, kind) in list(down.items()):
            if now >= back_at:
                member.slot.restore() if kind == "kill" else member.slot.resume()
                report.restores.append((now, member.serial))
                del down[member]
        # never all at once, as the HA layer sees it: a member whose server is back is not
        # serving again until a call has recovered it (and resynchronised the keys made meanwhile)
        for kind, when in list(due.items()):
            serving = [m for m in group.members if m not in down and m.active]
            if now >= when and now < seconds - 1.0 and len(serving) > 1:
                victim = rng.choice(serving)
                victim.slot.fail() if kind == "kill" else victim.slot.hang()
                if kind == "hang":
                    report.hangs.add(len(report.kills))
                report.kills.append((now, victim.serial))
                down[victim] = (now + rng.uniform(*chaos.down_for_s), kind)
                every = chaos.kill_every_s if kind == "kill" else chaos.hang_every_s
                due[kind] = now + rng.uniform(*every)
        stop.wait(0.02)
    for member, (_, kind) in down.items():  # the run is over: everybody back
        member.slot.restore() if kind == "kill" else member.slot.resume()
        report.restores.append((time.monotonic() - start, member.serial))


def _settle(
    group, session, dropouts: Dropouts, say: Callable[[str], None], timeout_s: float = SETTLE_S
) -> None:
    """Calls until every member that can still come back is back (recovery runs inside calls),
    saying first which ones it waits for; none for a member given up."""
    dropouts.check()
    waited = [m for m in group.members if dropouts.can_come_back(m)]
    if not waited:
        return
    say(
        f"soak: waiting up to {timeout_s:g} s for member(s) {', '.join(m.serial for m in waited)} "
        f"to be recovered (an attempt every {group.policy.interval_s:g} s)"
    )
    deadline = time.monotonic() + timeout_s
    while any(dropouts.can_come_back(m) for m in waited) and time.monotonic() < deadline:
        try:
            session.generate_random(8)
        except CKRError:
            pass  # a call is what drives recovery; its answer does not matter here
        dropouts.check()
        time.sleep(min(0.1, group.policy.interval_s / 2))
    late = [m.serial for m in waited if dropouts.can_come_back(m)]
    if late:
        say(f"soak: still out of service after {timeout_s:g} s: member(s) {', '.join(late)}")


def _compare(group, label: str) -> dict[str, Any]:
    """Do the members hold the same objects of the run with the same key material?"""
    result: dict[str, Any] = {"all_members_active": all(m.active for m in group.members)}
    fingerprints = {}
    for member in group.members:
        try:
            fingerprints[member.serial] = _fingerprint(member.slot, label)
        except CKRError as exc:
            fingerprints[member.serial] = f"unreadable: {exc.name}"
    result["members"] = fingerprints
    result["identical"] = len({repr(v) for v in fingerprints.values()}) == 1
    return result


def _fingerprint(slot, label: str) -> dict[str, str]:
    """Public values of the run's objects on one member: RSA modulus hash, AES KCV."""
    import hashlib

    physical = slot.open_session(rw=False)
    try:
        found = {}
        for cls in (CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY):
            for handle in physical.find_objects({CKA_CLASS: cls, CKA_LABEL: label}):
                key_id = physical.get_attributes(handle, [CKA_ID])[CKA_ID]
                if cls == CKO_SECRET_KEY:
                    value = physical.encrypt(handle, CKM_AES_ECB, bytes(16))[:3].hex()  # KCV
                else:
                    modulus = physical.get_attributes(handle, [CKA_MODULUS])[CKA_MODULUS]
                    value = hashlib.sha256(modulus).hexdigest()[:16]
                found[f"{cls}:{bytes(key_id).decode(errors='replace')}"] = value
        return dict(sorted(found.items()))
    finally:
        physical.close()
