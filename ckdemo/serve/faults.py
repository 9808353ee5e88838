"""Faults a running `ckdemo serve` injects into applications' calls: the fault lab's rules.

A fault is one rule: WHICH calls (names or groups, every connection or one), WHAT happens to a
call it takes (an error code instead of the call, added latency, a hang, a closed connection, a
wrong output), and WHEN it takes one (the next N, every Nth, with a probability from a seeded
generator, from a start for a duration). `FaultBook` holds the rules of one server; the request
loop asks it `for_call()` before each call (nothing to do, and nearly nothing spent, when it holds
no rule). Server-wide events (an HSM restart, a library reset) are not rules: they happen once,
at the next call of every connection open then (`epoch`).

Every spelling a user may type is checked here, once, with one clear line for what is wrong
(`FaultError`): the control channel, the `ckdemo fault` command and scenario files all build
faults through `FaultSpec.parse`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..codes import CKR_OK, ckr_name, ckr_value
from ..rpc.calls import BY_NAME

# call groups a fault may name instead of listing calls
GROUPS: dict[str, tuple[str, ...]] = {
    "sign": ("C_SignInit", "C_Sign", "C_SignUpdate", "C_SignFinal"),
    "verify": ("C_VerifyInit", "C_Verify", "C_VerifyUpdate", "C_VerifyFinal"),
    "encrypt": ("C_EncryptInit", "C_Encrypt", "C_EncryptUpdate", "C_EncryptFinal"),
    "decrypt": ("C_DecryptInit", "C_Decrypt", "C_DecryptUpdate", "C_DecryptFinal"),
    "digest": ("C_DigestInit", "C_Digest", "C_DigestUpdate", "C_DigestKey", "C_DigestFinal"),
    "random": ("C_SeedRandom", "C_GenerateRandom"),
    "keys": ("C_GenerateKey", "C_GenerateKeyPair", "C_WrapKey", "C_UnwrapKey", "C_DeriveKey"),
    "objects": (
        "C_CreateObject",
        "C_CopyObject",
        "C_DestroyObject",
        "C_GetObjectSize",
        "C_GetAttributeValue",
        "C_SetAttributeValue",
        "C_FindObjectsInit",
        "C_FindObjects",
        "C_FindObjectsFinal",
    ),
    "session": (
        "C_OpenSession",
        "C_CloseSession",
        "C_CloseAllSessions",
        "C_GetSessionInfo",
        "C_Login",
        "C_Logout",
    ),
    "slot": (
        "C_GetInfo",
        "C_GetSlotList",
        "C_GetSlotInfo",
        "C_GetTokenInfo",
        "C_GetMechanismList",
        "C_GetMechanismInfo",
        "C_WaitForSlotEvent",
    ),
}
GROUPS["crypto"] = (
    GROUPS["sign"] + GROUPS["verify"] + GROUPS["encrypt"] + GROUPS["decrypt"] + GROUPS["digest"]
)
CALL_NAMES = frozenset(name for name in BY_NAME if name.startswith("C_"))
# calls whose reply ends in the output an application relies on: a `corrupt` fault flips its last
# byte (a wrong signature, ciphertext, digest or random: does the application check?)
OUTPUT_CALLS = frozenset(
    {
        "C_Sign",
        "C_SignFinal",
        "C_Encrypt",
        "C_EncryptFinal",
        "C_Decrypt",
        "C_DecryptFinal",
        "C_Digest",
        "C_DigestFinal",
        "C_GenerateRandom",
        "C_WrapKey",
    }
)
# a fault never takes these: the application must be able to start and stop
NEVER = frozenset({"C_Initialize", "C_Finalize"})

MAX_SECONDS = 24 * 3600.0  # a hang, latency, start or duration beyond a day is a typo
MAX_COUNT = 1 << 31
KINDS = ("error", "latency", "hang", "disconnect", "corrupt")


class FaultError(ValueError):
    """A fault that cannot be: the one line to show the user."""


@dataclass(frozen=True)
class FaultSpec:
    """One rule as the user gave it (validated). `calls` empty: every call but NEVER."""

    kind: str
    calls: tuple[str, ...] = ()
    error: int | None = None  # kind "error": the code answered instead of calling
    latency_ms: float = 0.0  # kind "latency": added before the call is answered
    jitter_ms: float = 0.0  # ... plus or minus up to this much
    hang_s: float | None = None  # kind "hang": no answer for this long (None: until cleared)
    count: int | None = None  # at most this many calls taken
    every: int = 1  # take every Nth matching call
    probability: float = 1.0  # ... each with this chance (seeded)
    after_s: float = 0.0  # from this long after it was added
    for_s: float | None = None  # ... for this long (None: until cleared or counted out)
    connection: int | None = None  # one connection (serve's number), or all
    seed: int = 0

    @classmethod
    def parse(cls, given: dict[str, Any]) -> "FaultSpec":
        """From the JSON/TOML shape: {"calls": [...] | "C_Sign,C_Decrypt", "error": "CKR_...",
        "latency": ms, "jitter": ms, "hang": s | true, "disconnect": true, "corrupt": true,
        "count", "every", "probability", "after", "for", "connection", "seed"}."""
        if not isinstance(given, dict):
            raise FaultError("a fault is a table of settings (calls, error, latency, ...)")
        unknown = sorted(set(given) - _KEYS)
        if unknown:
            raise FaultError(
                f"unknown fault setting(s) {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(_KEYS))})"
            )
        kinds = [kind for kind in KINDS if given.get(kind) not in (None, False)]
        if len(kinds) != 1:
            raise FaultError(
                "a fault does one thing: give exactly one of --error, --latency, --hang, "
                f"--disconnect, --corrupt (got {', '.join(kinds) or 'none'})"
            )
        kind = kinds[0]
        calls = _calls(given.get("calls"))
        spec: dict[str, Any] = {"kind": kind, "calls": calls}
        if kind == "error":
            spec["error"] = _code(given["error"])
        elif kind == "latency":
            spec["latency_ms"] = _seconds(given["latency"], "latency", 1000.0 * MAX_SECONDS)
            spec["jitter_ms"] = _seconds(given.get("jitter", 0), "jitter", spec["latency_ms"])
        elif kind == "hang":
            hang = given["hang"]
            spec["hang_s"] = None if hang is True else _seconds(hang, "hang", MAX_SECONDS, positive=True)
        elif kind == "corrupt":
            wrong = sorted(set(calls or ()) - OUTPUT_CALLS)
            if not calls or wrong:
                raise FaultError(
                    "--corrupt changes an output: name calls that return one "
                    f"({', '.join(sorted(OUTPUT_CALLS))})" + (f", not {', '.join(wrong)}" if wrong else "")
                )
        if "jitter" in given and kind != "latency":
            raise FaultError("--jitter goes with --latency")
        if given.get("count") is not None:
            spec["count"] = _whole(given["count"], "count", 1)
        spec["every"] = _whole(given.get("every", 1), "every", 1)
        probability = _number(given.get("probability", 1.0), "probability")
        if not 0.0 < probability <= 1.0:
            raise FaultError(f"a probability is above 0 and at most 1, not {probability:g}")
        spec["probability"] = probability
        spec["after_s"] = _seconds(given.get("after", 0), "after", MAX_SECONDS)
        if given.get("for") is not None:
            spec["for_s"] = _seconds(given["for"], "for", MAX_SECONDS, positive=True)
        if given.get("connection") is not None:
            spec["connection"] = _whole(given["connection"], "connection", 1)
        spec["seed"] = _whole(given.get("seed", 0), "seed", 0)
        return cls(**spec)

    def describe(self) -> str:
        """'C_Sign: CKR_DEVICE_ERROR, next 3 calls' and the like: one line for a list."""
        what = {
            "error": lambda: ckr_name(self.error or 0),
            "latency": lambda: (
                f"+{self.latency_ms:g} ms" + (f" +/- {self.jitter_ms:g} ms" if self.jitter_ms else "")
            ),
            "hang": lambda: "hang " + (f"{self.hang_s:g} s" if self.hang_s else "until cleared"),
            "disconnect": lambda: "connection closed, no reply",
            "corrupt": lambda: "output changed (last byte)",
        }[self.kind]()
        when = [f"next {self.count} call(s)" if self.count else "every call"]
        if self.every > 1:
            when.append(f"1 in {self.every}")
        if self.probability < 1.0:
            when.append(f"p={self.probability:g} (seed {self.seed})")
        if self.after_s:
            when.append(f"from +{self.after_s:g} s")
        if self.for_s:
            when.append(f"for {self.for_s:g} s")
        if self.connection:
            when.append(f"connection {self.connection} only")
        return f"{','.join(self.calls) or 'every call'}: {what}, {', '.join(when)}"

    def as_json(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["calls"] = list(self.calls)
        if self.error is not None:
            shown["error"] = ckr_name(self.error)
        return shown


@dataclass
class Fault:
    """A rule in force: its spec, when it was added, and what it has done."""

    id: int
    spec: FaultSpec
    added: float  # monotonic
    matched: int = 0  # matching calls seen
    injected: int = 0  # ... of which it took
    released: threading.Event = field(default_factory=threading.Event)  # ends its hangs
    _chance: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._chance = random.Random(f"{self.spec.seed}/{self.id}")

    def takes(self, connection: int, name: str, now: float, sizing: bool = False) -> bool:
        spec = self.spec
        if spec.connection is not None and spec.connection != connection:
            return False
        if sizing and spec.kind == "corrupt":
            return False  # a size answer carries no output to change
        if spec.calls and name not in spec.calls:
            return False
        if now < self.added + spec.after_s or self.spent(now):
            return False
        self.matched += 1
        if self.matched % spec.every:
            return False
        if spec.probability < 1.0 and self._chance.random() >= spec.probability:
            return False
        self.injected += 1
        return True

    def spent(self, now: float) -> bool:
        spec = self.spec
        return (spec.count is not None and self.injected >= spec.count) or (
            spec.for_s is not None and now >= self.added + spec.after_s + spec.for_s
        )

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.spec.as_json(),
            "matched": self.matched,
            "injected": self.injected,
            "spent": self.spent(now),
            "age_s": round(now - self.added, 3),
            "describe": self.spec.describe(),
        }


@dataclass(frozen=True)
class CallRecord:
    """One call an application made, as a journal gets it (the fault lab's report)."""

    connection: int
    name: str
    started: float  # monotonic
    seconds: float  # until the reply (or the disconnect)
    injection: "Injection | None"
    result: int | None  # CK_RV answered; None: no reply (disconnected)


@dataclass(frozen=True)
class Injection:
    """What happens to one call: at most one of each kind, from the faults that took it."""

    faults: tuple[int, ...]
    error: int | None = None
    delay_s: float = 0.0
    hangs: tuple[Fault, ...] = ()
    disconnect: bool = False
    corrupt: bool = False

    def describe(self) -> str:
        parts = []
        if self.delay_s:
            parts.append(f"+{self.delay_s * 1000:.0f} ms")
        if self.hangs:
            parts.append("hang")
        if self.disconnect:
            parts.append("disconnect")
        if self.error is not None:
            parts.append(ckr_name(self.error))
        if self.corrupt:
            parts.append("corrupt output")
        return ", ".join(parts)


class FaultBook:
    """The faults of one server. Thread-safe; every connection thread asks it before each call."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, log: Callable[[str], None] = lambda line: None
    ) -> None:
        self.clock = clock
        self.log = log
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._next = 1
        # server-wide events, each counted: a connection older than the count has one due
        self.restarts = 0
        self.resets = 0
        self.removals = 0  # token removed (every session ends, TOKEN_NOT_PRESENT until inserted)
        self.insertions = 0
        self.serial_changes = 0  # the token's serial number reads differently from then on
        self.slot_changes = 0  # the token is in another slot from then on (faulted.SlotMoved)
        self.active = False  # any rule, event or journal: the request loop's one cheap test
        self.closed = False
        self.journals: tuple[Callable[[CallRecord], None], ...] = ()

    def watch(self, journal: Callable[[CallRecord], None]) -> None:
        """Tell `journal` every call from now on; it runs in connection threads."""
        with self._lock:
            if journal not in self.journals:
                self.journals += (journal,)
            self._update()

    def unwatch(self, journal: Callable[[CallRecord], None]) -> None:
        with self._lock:
            self.journals = tuple(j for j in self.journals if j != journal)
            self._update()

    def _update(self) -> None:
        self.active = (
            bool(self._faults)
            or bool(self.journals)
            or (self.restarts + self.resets + self.removals + self.serial_changes + self.slot_changes) > 0
        )

    def add(self, spec: FaultSpec) -> Fault:
        with self._lock:
            fault = Fault(self._next, spec, self.clock())
            self._next += 1
            self._faults.append(fault)
            self._update()
        self.log(f"fault {fault.id} added: {spec.describe()}")
        return fault

    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def clear(self, fault_id: int | None = None) -> list[Fault]:
        """Remove one fault (or all); hangs they hold end now. The faults removed."""
        with self._lock:
            gone = [f for f in self._faults if fault_id is None or f.id == fault_id]
            if fault_id is not None and not gone:
                raise FaultError(f"no fault {fault_id} (ckdemo fault list shows them)")
            self._faults = [f for f in self._faults if f not in gone]
            self._update()
        for fault in gone:
            fault.released.set()
            self.log(f"fault {fault.id} cleared after {fault.injected} call(s) taken")
        return gone

    def close(self) -> None:
        """The server stops: every hang ends, no fault is left behind."""
        self.closed = True
        self.clear()

    def restart_hsm(self) -> int:
        with self._lock:
            self.restarts += 1
            self._update()
        self.log("fault: HSM restart (every session ends, every login is lost)")
        return self.restarts

    def reset_library(self) -> int:
        with self._lock:
            self.resets += 1
            self._update()
        self.log("fault: library reset (CKR_CRYPTOKI_NOT_INITIALIZED until C_Initialize)")
        return self.resets

    @property
    def removed(self) -> bool:
        return self.removals > self.insertions

    def remove_token(self) -> None:
        with self._lock:
            if self.removals > self.insertions:
                raise FaultError("the token is removed already (insert it first)")
            self.removals += 1
            self._update()
        self.log("fault: token removed (sessions end; CKR_TOKEN_NOT_PRESENT until it is inserted)")

    def insert_token(self) -> None:
        with self._lock:
            if self.removals == self.insertions:
                raise FaultError("the token is in its slot (remove it first)")
            self.insertions += 1
            self._update()
        self.log("fault: token inserted again")

    def change_serial(self) -> int:
        with self._lock:
            self.serial_changes += 1
            self._update()
        self.log(f"fault: the token's serial number changes (change {self.serial_changes})")
        return self.serial_changes

    def change_slot(self) -> int:
        with self._lock:
            self.slot_changes += 1
            self._update()
        self.log(
            f"fault: the token moves to another slot (change {self.slot_changes}): slot ids "
            "kept from before are CKR_SLOT_ID_INVALID"
        )
        return self.slot_changes

    def for_call(self, connection: int, name: str, sizing: bool = False) -> Injection | None:
        """What to do to this call of this connection; None: answer it as usual. `sizing`: the
        call only asks for an output's size (no corrupt fault takes it)."""
        if name in NEVER:
            return None
        now = self.clock()
        taken: list[Fault] = []
        with self._lock:
            for fault in self._faults:
                if fault.takes(connection, name, now, sizing):
                    taken.append(fault)
        if not taken:
            return None
        error, delay, hangs, disconnect, corrupt = None, 0.0, [], False, False
        for fault in taken:
            spec = fault.spec
            if spec.kind == "error" and error is None:
                error = spec.error
            elif spec.kind == "latency":
                jitter = spec.jitter_ms * (2 * fault._chance.random() - 1) if spec.jitter_ms else 0.0
                delay += max(0.0, spec.latency_ms + jitter) / 1000.0
            elif spec.kind == "hang":
                hangs.append(fault)
            elif spec.kind == "disconnect":
                disconnect = True
            elif spec.kind == "corrupt":
                corrupt = name in OUTPUT_CALLS
        return Injection(tuple(f.id for f in taken), error, delay, tuple(hangs), disconnect, corrupt)

    def wait_out(self, injection: Injection) -> None:
        """The injection's latency, then its hangs (each until its time is up or it is cleared)."""
        if injection.delay_s:
            time.sleep(injection.delay_s)
        for fault in injection.hangs:
            fault.released.wait(fault.spec.hang_s)


_KEYS = frozenset(
    {
        "calls",
        "error",
        "latency",
        "jitter",
        "hang",
        "disconnect",
        "corrupt",
        "count",
        "every",
        "probability",
        "after",
        "for",
        "connection",
        "seed",
    }
)


_LOWER = {name.lower(): name for name in CALL_NAMES - NEVER}


def _calls(given: Any) -> tuple[str, ...]:
    if given is None or given == "" or given == []:
        return ()
    names = given.split(",") if isinstance(given, str) else given
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise FaultError("calls are PKCS#11 function names (C_Sign) or groups, comma separated")
    found: list[str] = []
    for raw in names:
        name = raw.strip()
        if name.lower() in GROUPS:
            found += GROUPS[name.lower()]
        elif name in CALL_NAMES and name not in NEVER:
            found.append(name)
        elif name in NEVER:
            raise FaultError(f"{name} is never faulted (the application must be able to start and stop)")
        elif name.lower() in _LOWER:
            found.append(_LOWER[name.lower()])
        else:
            raise FaultError(
                f"unknown call {name!r}: a PKCS#11 function such as C_Sign, or a "
                f"group: {', '.join(sorted(GROUPS))}"
            )
    return tuple(dict.fromkeys(found))


def _code(given: Any) -> int:
    if isinstance(given, bool) or not isinstance(given, (str, int)):
        raise FaultError(f"--error takes a CKR_* name or number, not {given!r}")
    try:
        code = ckr_value(str(given))
    except KeyError as error:
        raise FaultError(str(error.args[0])) from None
    if code == CKR_OK or code > 0xFFFFFFFF:
        raise FaultError(f"--error needs a failure code, not {given!r}")
    return code


def _number(given: Any, what: str) -> float:
    if isinstance(given, bool) or not isinstance(given, (int, float, str)):
        raise FaultError(f"--{what} takes a number, not {given!r}")
    try:
        value = float(given)
    except ValueError:
        raise FaultError(f"--{what} takes a number, not {given!r}") from None
    if not math.isfinite(value):
        raise FaultError(f"--{what} takes a finite number, not {given!r}")
    return value


def _seconds(given: Any, what: str, most: float, positive: bool = False) -> float:
    value = _number(given, what)
    if value < 0 or (positive and value == 0) or value > most:
        low = "above 0" if positive else "0 or more"
        raise FaultError(f"--{what} is {low} and at most {most:.0f}, not {value:g}")
    return value


def _whole(given: Any, what: str, least: int) -> int:
    value = _number(given, what)
    if value != int(value) or not least <= value < MAX_COUNT:
        raise FaultError(f"--{what} is a whole number from {least}, not {given!r}")
    return int(value)
