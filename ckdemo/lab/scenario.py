"""Fault lab scenarios: a TOML file with a timeline of named steps and/or seeded chaos, and what
the application is expected to do under each.

    seed = 7                      # the faults' random choices (--seed overrides)
    timeout = 60                  # seconds the application may run (default 300)
    expect = { app_exit = 0 }     # about the whole run
    [[step]]
    name = "three device errors on C_Sign"
    at = 1.0                      # seconds after the application started; or
                                  # after_calls = 40: once the application has made 40 calls
    fault = { calls = ["C_Sign"], error = "CKR_DEVICE_ERROR", count = 3 }
    expect = { app_failures = 3, app_recovers_within = 5.0 }
    [[step]]
    name = "member1 dies"
    at = 4.0
    member = { action = "fail", name = "member1" }   # also restore; kill, restart, hang, resume
                                                     # (a remote member's server process);
    # member = { action = "slow", name = "member2", ms = 300 }   (stopped 300 ms at a time: a
    #          remote member's answers come up to 300 ms late), and
    # member = { action = "flap", name = "member2", every = 2.0, down = 1.0 }: down and up again
    #          every 2 s; both last `for` seconds, else until the next step starts
    expect = { app_failures = 0 }
    [[step]]
    name = "appliance reboot"
    at = 8.0
    event = "restart_hsm"         # or reset_library, remove_token, insert_token, change_serial, change_slot,
                                  # clear (every fault ends)
    [chaos]                       # steps made from the seed: one fault every `every` seconds
    start = 1.0
    until = 20.0
    every = 2.0
    faults = [{ calls = "sign", error = "CKR_DEVICE_ERROR", count = 1 },
              { calls = "sign", latency = 300, for = 1.0 }]

A step lasts until the next one starts (the last until the application ends); its expectations
are about the calls in that window. Everything wrong in a file is one `ScenarioError` line that
names the file and the step.
"""

from __future__ import annotations

import math
import random
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..serve.faults import FaultError, FaultSpec
from .member_lab import ACTIONS, SETTINGS, MemberFaultError, checked

DEFAULT_TIMEOUT_S = 300.0
MAX_TIMEOUT_S = 24 * 3600.0
MAX_STEPS = 10_000
EVENTS = (
    "restart_hsm",
    "reset_library",
    "remove_token",
    "insert_token",
    "change_serial",
    "change_slot",
    "clear",
)
# fail, restore, kill, restart, hang, resume, slow, flap: what each does to a member of either
# kind is ckdemo/lab/member_lab.py's (docs/FAULTS.md); slow and flap take their own settings
MEMBER_ACTIONS = ACTIONS
MEMBER_KEYS = {action: frozenset(keys) for action, keys in SETTINGS.items()}
STEP_KEYS = frozenset({"name", "at", "after_calls", "fault", "event", "member", "expect"})
EXPECT_KEYS = frozenset({"app_failures", "app_failures_max", "app_recovers_within", "calls_min", "app_exit"})
TOP_KEYS = frozenset({"seed", "timeout", "expect", "step", "chaos", "name"})
CHAOS_KEYS = frozenset({"start", "until", "every", "faults", "seed"})


class ScenarioError(ValueError):
    """What is wrong with a scenario: one line, naming the file and the step."""


@dataclass(frozen=True)
class Expect:
    app_failures: int | None = None  # exactly this many failed calls seen by the application
    app_failures_max: int | None = None  # at most this many
    app_recovers_within: float | None = None  # s from the fault's end to its call's next success
    calls_min: int | None = None  # the application made at least this many calls
    app_exit: int | None = None  # (run level) the application's exit code

    def empty(self) -> bool:
        return self == Expect()


@dataclass(frozen=True)
class MemberAction:
    """What a step does to a member; slow and flap last for_s (None: until the next step)."""

    action: str
    name: str  # the member's label, serial or number
    ms: float | None = None  # slow: how long each stop lasts
    every_s: float | None = None  # flap: one down-and-up every so many seconds
    down_s: float | None = None  # flap: down for so long in each (default: half of every_s)
    for_s: float | None = None

    @property
    def lasts(self) -> bool:
        return self.action in MEMBER_KEYS

    def describe(self) -> str:
        said = f"member {self.name}: {self.action}"
        if self.action == "slow":
            said += f" (answers up to {self.ms:g} ms late)"
        elif self.action == "flap":
            said += f" (down {self.down_s:g} s in every {self.every_s:g} s)"
        return said + (f" for {self.for_s:g} s" if self.for_s is not None else "")


@dataclass(frozen=True)
class Step:
    name: str
    at: float  # seconds after the application started (after_calls: the earliest)
    fault: FaultSpec | None = None
    event: str | None = None
    member: MemberAction | None = None
    expect: Expect = field(default_factory=Expect)
    after_calls: int | None = None  # ... and once the application has made this many calls

    def describe(self) -> str:
        if self.fault is not None:
            return self.fault.describe()
        if self.member is not None:
            return self.member.describe()
        return {
            "restart_hsm": "HSM restart",
            "reset_library": "library reset",
            "remove_token": "token removed",
            "insert_token": "token inserted",
            "change_serial": "serial number changed",
            "change_slot": "slot changed",
            "clear": "every fault cleared",
        }.get(self.event or "", "nothing injected")


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    timeout_s: float
    steps: tuple[Step, ...]
    expect: Expect
    path: str


def load(path: str | Path, seed: int | None = None) -> Scenario:
    """The scenario in the TOML file `path`; `seed` replaces the file's."""
    where = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ScenarioError(f"{where}: no such scenario file") from None
    except IsADirectoryError:
        raise ScenarioError(f"{where}: a folder, not a scenario file") from None
    except OSError as error:
        raise ScenarioError(f"{where}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ScenarioError(f"{where}: not TOML: {error}") from None
    return parse(data, where, seed)


def parse(data: dict[str, Any], where: str = "scenario", seed: int | None = None) -> Scenario:
    _known_only(data, TOP_KEYS, where)
    chosen = seed if seed is not None else _int(data.get("seed", 0), f"{where}: seed", 0)
    timeout = _seconds(data.get("timeout", DEFAULT_TIMEOUT_S), f"{where}: timeout", MAX_TIMEOUT_S)
    if timeout <= 0:
        raise ScenarioError(f"{where}: timeout is above 0")
    raw_steps = data.get("step", [])
    if not isinstance(raw_steps, list):
        raise ScenarioError(f"{where}: steps are [[step]] tables")
    steps = [_step(raw, f"{where}: step {n + 1}", chosen, n) for n, raw in enumerate(raw_steps)]
    if "chaos" in data:
        steps += _chaos(data["chaos"], f"{where}: chaos", chosen, len(steps))
    if not steps:
        raise ScenarioError(f"{where}: no step (give [[step]] tables or a [chaos] table)")
    if len(steps) > MAX_STEPS:
        raise ScenarioError(f"{where}: {len(steps)} steps, at most {MAX_STEPS}")
    names = [s.name for s in steps]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ScenarioError(f"{where}: step names appear twice: {', '.join(twice)}")
    counted = [s for s in steps if s.after_calls is not None]
    if counted and len(counted) != len(steps):
        raise ScenarioError(
            f"{where}: give every step `at` or every step `after_calls`, not both kinds "
            "(the order of the steps must be known before the run)"
        )
    if counted:
        steps.sort(key=lambda s: s.after_calls)
    steps.sort(key=lambda s: s.at)  # stable: steps at the same time keep the file's order
    for step, following in zip(steps, steps[1:]):
        spec = step.fault
        lasts = (
            spec.after_s + spec.for_s
            if spec is not None and spec.for_s is not None
            else step.member.for_s
            if step.member is not None and step.member.for_s is not None and not counted
            else None
        )  # (a step after N calls has no time to end by)
        if lasts is not None and step.at + lasts > following.at + 1e-9:
            raise ScenarioError(
                f"{where}: step {step.name!r} lasts until {step.at + lasts:g} s, "
                f"into step {following.name!r} at {following.at:g} s: windows overlap (a shorter "
                "`for`, or a later next step), so each step's failures are its own"
            )
    expect = _expect(data.get("expect", {}), f"{where}: expect", run_level=True)
    name = data.get("name", Path(where).stem)
    if not isinstance(name, str):
        raise ScenarioError(f"{where}: name is a string")
    return Scenario(name, chosen, timeout, tuple(steps), expect, where)


def _step(raw: Any, where: str, seed: int, index: int) -> Step:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: a step is a table")
    _known_only(raw, STEP_KEYS, where)
    name = raw.get("name", f"step {index + 1}")
    if not isinstance(name, str) or not name.strip():
        raise ScenarioError(f"{where}: name is a non-empty string")
    where = f"{where} ({name})"
    if "at" not in raw and "after_calls" not in raw:
        raise ScenarioError(
            f"{where}: when? give at = seconds after the application started, "
            "or after_calls = the calls it has made by then"
        )
    at = _seconds(raw.get("at", 0.0), f"{where}: at", MAX_TIMEOUT_S)
    after_calls = _int(raw["after_calls"], f"{where}: after_calls", 1) if "after_calls" in raw else None
    actions = [k for k in ("fault", "event", "member") if k in raw]
    if len(actions) > 1:
        raise ScenarioError(f"{where}: one of fault, event, member per step (got {', '.join(actions)})")
    fault = event = member = None
    if "fault" in raw:
        given = raw["fault"]
        if isinstance(given, dict) and "seed" not in given:
            given = {**given, "seed": seed + index}  # each step its own stream, from the run's seed
        try:
            fault = FaultSpec.parse(given)
        except FaultError as error:
            raise ScenarioError(f"{where}: {error}") from None
    elif "event" in raw:
        event = raw["event"]
        if event not in EVENTS:
            raise ScenarioError(f"{where}: event is one of {', '.join(EVENTS)}, not {event!r}")
    elif "member" in raw:
        member = _member(raw["member"], where)
    return Step(
        name.strip(),
        at,
        fault,
        event,
        member,
        _expect(raw.get("expect", {}), f"{where}: expect"),
        after_calls,
    )


def _member(given: Any, where: str) -> MemberAction:
    if not isinstance(given, dict) or not {"action", "name"} <= set(given):
        raise ScenarioError(
            f'{where}: member = {{ action = "fail", name = "member1" }} '
            f"(actions: {', '.join(MEMBER_ACTIONS)})"
        )
    action = given["action"]
    if action not in MEMBER_ACTIONS or not isinstance(given["name"], str):
        raise ScenarioError(
            f"{where}: member action is one of {', '.join(MEMBER_ACTIONS)} and "
            "name a member's label, serial or number"
        )
    _known_only(
        given,
        frozenset({"action", "name"}) | MEMBER_KEYS.get(action, frozenset()),
        f"{where}: member {action}",
    )
    if action in MEMBER_KEYS:  # the numbers are checked where the control channel checks them
        try:
            lasting = checked(action, {k: v for k, v in given.items() if k in MEMBER_KEYS[action]})
        except MemberFaultError as error:
            raise ScenarioError(f"{where}: {error}") from None
        return MemberAction(action, given["name"], **lasting)
    return MemberAction(action, given["name"])


def _chaos(raw: Any, where: str, seed: int, first: int) -> list[Step]:
    """Steps drawn from `seed`: from `start` to `until`, one of `faults` every `every` seconds
    (each at a time drawn within its slot)."""
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: chaos is a table (start, until, every, faults)")
    _known_only(raw, CHAOS_KEYS, where)
    start = _seconds(raw.get("start", 0.0), f"{where}: start", MAX_TIMEOUT_S)
    until = _seconds(raw.get("until", start + 30.0), f"{where}: until", MAX_TIMEOUT_S)
    every = _seconds(raw.get("every", 2.0), f"{where}: every", MAX_TIMEOUT_S)
    if every <= 0 or until <= start:
        raise ScenarioError(f"{where}: every is above 0 and until after start")
    if (until - start) / every > MAX_STEPS:
        raise ScenarioError(f"{where}: more than {MAX_STEPS} faults: a larger every, or a shorter span")
    faults = raw.get("faults")
    if not isinstance(faults, list) or not faults:
        raise ScenarioError(f"{where}: faults is a list of fault tables to draw from")
    chance = random.Random(_int(raw.get("seed", seed), f"{where}: seed", 0))
    specs = []
    for n, given in enumerate(faults):
        try:
            specs.append(FaultSpec.parse(given))
        except FaultError as error:
            raise ScenarioError(f"{where}: fault {n + 1}: {error}") from None
    steps = []
    slot, n = start, 0
    while slot < until:
        at = round(slot + chance.uniform(0, every) * 0.5, 3)
        spec = replace(chance.choice(specs), seed=chance.randrange(1 << 30))
        steps.append(Step(f"chaos {n + 1}", at, fault=spec))
        slot += every
        n += 1
    return steps


def _expect(raw: Any, where: str, run_level: bool = False) -> Expect:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expect is a table, e.g. {{ app_failures = 0 }}")
    _known_only(raw, EXPECT_KEYS, where, "expectation(s)")
    if "app_exit" in raw and not run_level:
        raise ScenarioError(f"{where}: app_exit is about the whole run: put it in the top-level expect")
    if "app_failures" in raw and "app_failures_max" in raw:
        raise ScenarioError(f"{where}: app_failures or app_failures_max, not both")
    return Expect(
        app_failures=_int(raw["app_failures"], f"{where}: app_failures", 0)
        if "app_failures" in raw
        else None,
        app_failures_max=(
            _int(raw["app_failures_max"], f"{where}: app_failures_max", 0)
            if "app_failures_max" in raw
            else None
        ),
        app_recovers_within=(
            _seconds(raw["app_recovers_within"], f"{where}: app_recovers_within", MAX_TIMEOUT_S)
            if "app_recovers_within" in raw
            else None
        ),
        calls_min=_int(raw["calls_min"], f"{where}: calls_min", 0) if "calls_min" in raw else None,
        app_exit=_int(raw["app_exit"], f"{where}: app_exit", 0, 255) if "app_exit" in raw else None,
    )


def _known_only(table: dict, known: frozenset[str], where: str, what: str = "key(s)") -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ScenarioError(
            f"{where}: unknown {what} {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )


def _int(value: Any, where: str, least: int, most: int = (1 << 62)) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise ScenarioError(f"{where} is a whole number from {least} to {most}, not {value!r}")
    return value


def _seconds(value: Any, where: str, most: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= most
    ):
        raise ScenarioError(f"{where} is a number of seconds from 0 to {most:.0f}, not {value!r}")
    return float(value)
