"""A replay script: what a person would type, one answer per line, plus @directives.

# a comment line            (ignored, as are blank lines)
3                           (an answer: a menu choice or the answer to a prompt)
${CKDEMO_USER_PIN}          (a secret from the environment, never printed)
${LAST_SESSION}             (the handle the last Open Session returned; also LAST_OBJECT,
                             LAST_PUBLIC_KEY, LAST_PRIVATE_KEY: handles differ per module)
${HA_SLOT}                  (the HA virtual slot's number; HA_SLOT_<label> per group, and
                             MEMBER_SLOT_1..n the members' slots: set-ups number slots apart)
@default TOUR_SLOT ${HA_SLOT} (TOUR_SLOT when the environment does not set it)
""                          (an empty answer: Enter at a prompt; blank lines are skipped)
@expect CKR_PIN_INCORRECT   (the last choice must have ended with this result)
@expect-status member1 CKR_DEVICE_ERROR  (the HA Status (52) just shown has this row for the
                             member: label, serial or number in the group; `all`: every row)
@sleep 1.5                  (wait, e.g. for a recovery interval)
@fail member1               (HA member by label, serial or number: fails as a dead device)
@restore member1            (the member's token is reachable again; the HA group recovers it)
@hang member2 / @resume ... (a remote member's server stops answering / answers again)
@ha-interval 2              (recovery interval X for this run, seconds)
@ha-retry 3                 (recovery attempts N for this run; -1 unlimited, 0 off)
@needs-previous             (the next choice uses what the one before made: when that one
                             was skipped, this one is skipped too unless it succeeds)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from .. import codes
from ..config.ha import MAX_INTERVAL_S, MAX_RECONNECT_ATTEMPTS
from ..menu.io import InputAborted

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DIRECTIVE_LINE = re.compile(r"@[A-Za-z-]+(\s|$)")
UNDECODABLE = re.compile("[\ud800-\udfff]")
HANDLE_PREFIX = "LAST_"  # ${LAST_SESSION}, ${LAST_OBJECT}, ...: handles the run has just made
# slot numbers of this set-up: ${HA_SLOT}, ${HA_SLOT_<label>}, ${MEMBER_SLOT_<n>}
SLOT_VARIABLE = re.compile(r"HA_SLOT(_\w+)?|MEMBER_SLOT_\d+")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def from_harness(name: str) -> bool:
    """The harness's own values (handles, slot numbers) are shown; any other ${NAME} may hold a
    secret and is masked (masking.py)."""
    return name.startswith(HANDLE_PREFIX) or SLOT_VARIABLE.fullmatch(name) is not None


class ScriptError(InputAborted):
    """The script cannot be run as written; the message names the line."""


@dataclass(frozen=True)
class Line:
    number: int
    text: str  # the answer as written (with ${NAME} unexpanded)

    @property
    def is_directive(self) -> bool:
        """`@word ...` is a directive; `@/path`, `@./file`, `@name.ext` are answers (@file)."""
        return DIRECTIVE_LINE.match(self.text) is not None

    @property
    def has_secret(self) -> bool:
        """Variables may hold secrets and are masked, except the harness's handles and slots."""
        return any(not from_harness(name) for name in VARIABLE.findall(self.text))

    @property
    def slot_answer(self) -> bool:
        """The line is one slot variable and nothing else (`${HA_SLOT}`, `${TOUR_SLOT}`): the
        answer to "Select a slot", which CKDemo does not ask when the list holds one slot."""
        match = VARIABLE.fullmatch(self.text)
        return match is not None and (
            SLOT_VARIABLE.fullmatch(match.group(1)) is not None or match.group(1).endswith("_SLOT")
        )


@dataclass(frozen=True)
class Directive:
    line: int
    name: str
    argument: str


DIRECTIVES = (
    "expect",
    "expect-status",
    "sleep",
    "fail",
    "restore",
    "hang",
    "resume",
    "ha-interval",
    "ha-retry",
    "confirm-destructive",
    "needs-previous",
    "default",
)
FLAGS = ("confirm-destructive", "needs-previous")  # directives without an argument (replay/runner.py)
MAX_SLEEP_S = 3600.0  # @sleep: an hour at most (a longer wait is a mistake in the script)
# numeric directives: (parse, lowest, highest, what the number is)
NUMERIC = {
    "sleep": (float, 0.0, MAX_SLEEP_S, "seconds"),
    "ha-interval": (float, 0.0, MAX_INTERVAL_S, "seconds"),
    "ha-retry": (int, -1, MAX_RECONNECT_ATTEMPTS, "attempts, -1 unlimited, 0 off"),
}


def number(name: str, argument: str) -> float | int:
    """The argument of a numeric directive, checked (finite, in range); ValueError if not."""
    parse, lowest, highest, _ = NUMERIC[name]
    value = parse(argument)
    if isinstance(value, float) and not math.isfinite(value) or not lowest <= value <= highest:
        raise ValueError(argument)
    return value


def parse(text: str, source: str = "<script>") -> list[Line]:
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if UNDECODABLE.search(raw):  # bytes that are not UTF-8 (stdin decodes them as surrogates)
            raise ScriptError(f"{source}:{number}: not valid UTF-8 text")
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        line = Line(number, stripped)
        if line.is_directive:
            directive(line, source)  # reject bad directives before anything runs
        lines.append(line)
    return lines


def require_steps(lines: list[Line], source: str) -> None:
    """A script with no answer tests nothing: refused before anything runs, never a pass."""
    if all(line.is_directive for line in lines):
        raise ScriptError(
            f"{source}: no step to run (the script is empty, or holds only comments and directives)"
        )


def load(path: str | Path) -> list[Line]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ScriptError(f"script not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError(f"cannot read script {path}: {exc}") from None
    return parse(text, str(path))


def _is_ckr(text: str) -> bool:
    try:
        codes.ckr_value(text)
    except KeyError:
        return False
    return True


def directive(line: Line, source: str = "<script>") -> Directive:
    name, _, argument = line.text[1:].partition(" ")
    name, argument = name.strip().lower(), argument.strip()
    if name not in DIRECTIVES:
        raise ScriptError(
            f"{source}:{line.number}: unknown directive @{name} "
            f"(known: {', '.join('@' + d for d in DIRECTIVES)})"
        )
    if name in NUMERIC:
        try:
            number(name, argument)
        except ValueError:
            _, lowest, highest, what = NUMERIC[name]
            raise ScriptError(
                f"{source}:{line.number}: @{name} needs a number from {lowest:n} to "
                f"{highest:n} ({what}), got {argument!r}"
            ) from None
    if argument and name in FLAGS:
        raise ScriptError(f"{source}:{line.number}: @{name} takes no argument, got {argument!r}")
    if not argument and name not in FLAGS:
        raise ScriptError(
            f"{source}:{line.number}: @{name} needs an argument (e.g. @expect CKR_OK, @fail member1)"
        )
    if name == "expect-status":
        member, _, code = argument.partition(" ")
        if not code.strip() or " " in code.strip() or not _is_ckr(code.strip()):
            raise ScriptError(
                f"{source}:{line.number}: @expect-status needs a member (label, serial, "
                f"number in the group, or all) and a CKR_* name, e.g. @expect-status "
                f"member1 CKR_DEVICE_ERROR; got {argument!r}"
            )
    if name == "default":
        variable, _, value = argument.partition(" ")
        if not NAME.fullmatch(variable) or not value.strip() or from_harness(variable):
            raise ScriptError(
                f"{source}:{line.number}: @default needs a variable name and its value "
                f"(e.g. @default TOUR_SLOT ${{HA_SLOT}}), got {argument!r}"
            )
    return Directive(line.number, name, argument)


def defaults(lines: list[Line]) -> dict[str, str]:
    """{NAME: value as written} of the script's @default lines (the value may name ${HA_SLOT} ...)."""
    found = {}
    for line in lines:
        if line.is_directive:
            d = directive(line)
            if d.name == "default":
                variable, _, value = d.argument.partition(" ")
                found[variable] = value.strip()
    return found


EMPTY_ANSWER = '""'


def expand(line: Line, variables: dict[str, str]) -> str:
    if line.text == EMPTY_ANSWER:
        return ""

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in variables:
            raise ScriptError(f"line {line.number}: ${{{name}}} is not set (export {name}=...)")
        return variables[name]

    return VARIABLE.sub(value, line.text)
