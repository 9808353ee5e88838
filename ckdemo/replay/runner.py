"""Replays a script through the real menu loop and judges every step against its expectation."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, TextIO

from .. import codes
from ..menu.context import InputError
from ..menu.io import EndOfInput
from ..menu.loop import BAD_INPUT, NO_ANSWER, StepResult
from .script import Directive, Line, ScriptError, directive, expand

PSEUDO_RESULTS = (BAD_INPUT, NO_ANSWER)
MASK = "****"


def normalise_expectation(text: str, line: int) -> str:
    if text.upper() in PSEUDO_RESULTS:
        return text.upper()
    try:
        return codes.ckr_name(codes.ckr_value(text))
    except KeyError:
        raise ScriptError(f"line {line}: @expect {text}: not a CKR_* name or value "
                          f"(or {', '.join(PSEUDO_RESULTS)})") from None


@dataclass
class Step:
    result: StepResult
    line: int  # the script line of the menu choice
    seconds: float
    expected: str = "CKR_OK"

    @property
    def passed(self) -> bool:
        return self.result.status == self.expected

    def verdict(self) -> str:
        title = f"choice {self.result.choice} ({self.result.title})" if self.result.choice is not None \
            else f"input {self.result.title!r}"
        return (f"line {self.line}: {title} ended with {self.result.status}, "
                f"expected {self.expected}")


@dataclass
class Replay:
    """Feeds script lines to the menu as answers; the menu loop reports each finished step."""
    lines: list[Line]
    variables: Mapping[str, str]
    outputs: list[TextIO]
    keep_going: bool = False
    control: Callable[[Directive], str] | None = None  # HA directives (@fail, @restore, ...)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    steps: list[Step] = field(default_factory=list)
    _next: int = 0
    _choice_line: int = 0
    _choice_started: float = 0.0
    stopped_early: bool = False

    # MenuIO
    def write(self, text: str) -> None:
        for out in self.outputs:
            out.write(text)
            out.flush()

    def ask(self, prompt: str, secret: bool = False) -> str:
        if self._next >= len(self.lines):
            self.write(prompt + "\n")
            raise EndOfInput(prompt)
        line = self.lines[self._next]
        if line.is_directive:
            self.write(prompt + "\n")
            raise InputError(f"line {line.number}: {line.text} where an answer to "
                             f"'{prompt.strip()}' was due.")
        self._next += 1
        answer = expand(line, self.variables)
        shown = MASK if (secret or line.has_secret) else answer
        self.write(f"{prompt}{shown}\n")
        return answer

    def ask_choice(self, prompt: str) -> str:
        while self._next < len(self.lines) and self.lines[self._next].is_directive:
            line = self.lines[self._next]
            self._next += 1
            self.directive(directive(line))
        if self.steps and not self.steps[-1].passed and not self.keep_going:
            self.stopped_early = True
            raise EndOfInput(prompt)
        if self._next < len(self.lines):
            self._choice_line = self.lines[self._next].number
        self._choice_started = self.clock()
        return self.ask(prompt)

    # directives and results
    def directive(self, d: Directive) -> None:
        if d.name == "sleep":
            self.write(f"(sleeping {d.argument} s)\n")
            self.sleep(float(d.argument))
        elif d.name == "expect":
            if not self.steps:
                raise ScriptError(f"line {d.line}: @expect before any menu choice")
            step = self.steps[-1]
            step.expected = normalise_expectation(d.argument, d.line)
            mark = "ok" if step.passed else "NOT MET"
            self.write(f"@expect {step.expected}: {mark}\n")
        else:
            if self.control is None:
                raise ScriptError(f"line {d.line}: @{d.name} needs an HA group in the configuration")
            self.write(f"@{d.name} {d.argument}: {self.control(d)}\n")

    def observe(self, result: StepResult) -> None:
        self.steps.append(Step(result, self._choice_line, self.clock() - self._choice_started))

    @property
    def failed(self) -> list[Step]:
        return [s for s in self.steps if not s.passed]

    def summary(self) -> str:
        lines = [f"FAILED {s.verdict()}" for s in self.failed]
        ok = len(self.steps) - len(self.failed)
        lines.append(f"Replay: {len(self.steps)} steps, {ok} met their expectation, "
                     f"{len(self.failed)} did not" + (" (stopped at the first failure)"
                                                      if self.stopped_early else ""))
        return "\n".join(lines)


class ScriptVariables(Mapping):
    """${NAME} values: the harness's LAST_* handles as they are now, then secrets/environment."""

    def __init__(self, secrets: Mapping[str, str], handles: Mapping[str, int]) -> None:
        self.secrets, self.handles = secrets, handles

    def __getitem__(self, name: str) -> str:
        if name in self.handles:
            return str(self.handles[name])
        return self.secrets[name]

    def __iter__(self):
        yield from self.handles
        yield from self.secrets

    def __len__(self) -> int:
        return len(self.handles) + len(self.secrets)


def stdout_outputs(transcript: TextIO | None) -> list[TextIO]:
    return [sys.stdout] + ([transcript] if transcript else [])
