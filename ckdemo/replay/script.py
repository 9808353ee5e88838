"""A replay script: what a person would type, one answer per line, plus @directives.

    # a comment line            (ignored, as are blank lines)
    3                           (an answer: a menu choice or the answer to a prompt)
    ${CKDEMO_USER_PIN}          (a secret from the environment, never printed)
    @expect CKR_PIN_INCORRECT   (the last choice must have ended with this result)
    @sleep 1.5                  (wait, e.g. for a recovery interval)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ScriptError(Exception):
    """The script cannot be run as written; the message names the line."""


@dataclass(frozen=True)
class Line:
    number: int
    text: str  # the answer as written (with ${NAME} unexpanded)

    @property
    def is_directive(self) -> bool:
        return self.text.startswith("@")

    @property
    def has_secret(self) -> bool:
        return bool(VARIABLE.search(self.text))


@dataclass(frozen=True)
class Directive:
    line: int
    name: str
    argument: str


DIRECTIVES = ("expect", "sleep")


def parse(text: str, source: str = "<script>") -> list[Line]:
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        line = Line(number, stripped)
        if line.is_directive:
            directive(line, source)  # reject bad directives before anything runs
        lines.append(line)
    return lines


def load(path: str | Path) -> list[Line]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ScriptError(f"script not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError(f"cannot read script {path}: {exc}") from None
    return parse(text, str(path))


def directive(line: Line, source: str = "<script>") -> Directive:
    name, _, argument = line.text[1:].partition(" ")
    name, argument = name.strip().lower(), argument.strip()
    if name not in DIRECTIVES:
        raise ScriptError(f"{source}:{line.number}: unknown directive @{name} "
                          f"(known: {', '.join('@' + d for d in DIRECTIVES)})")
    if name == "sleep":
        try:
            if float(argument) < 0:
                raise ValueError
        except ValueError:
            raise ScriptError(f"{source}:{line.number}: @sleep needs seconds, got {argument!r}") from None
    if name == "expect" and not argument:
        raise ScriptError(f"{source}:{line.number}: @expect needs a result name, e.g. CKR_OK")
    return Directive(line.number, name, argument)


def expand(line: Line, variables: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in variables:
            raise ScriptError(f"line {line.number}: ${{{name}}} is not set (export {name}=...)")
        return variables[name]
    return VARIABLE.sub(value, line.text)
