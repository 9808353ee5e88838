"""Replays a script through the real menu loop and judges every step against its expectation."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Callable, Mapping, TextIO

from .. import codes
from ..menu.context import InputError
from ..menu.io import EndOfInput
from ..menu.loop import BAD_INPUT, NO_ANSWER, StepResult
from ..menu.shown import HA_STATUS, HAStatusShown
from ..menu.table import BY_NUMBER, HELP, QUIT, USUAL_ANSWERS
from .masking import MASK, Masker, shown
from .script import Directive, Line, ScriptError, directive, expand

PSEUDO_RESULTS = (BAD_INPUT, NO_ANSWER)
CONFIRM_DIRECTIVE = "confirm-destructive"  # the next choice may destroy keys (6 Init Token on an HA member)
NEEDS_PREVIOUS = "needs-previous"  # the next choice uses what the one before made (a file, a key)


def _unmasked(text: str) -> str:
    return text


def normalise_expectation(text: str, line: int) -> str:
    if text.upper() in PSEUDO_RESULTS:
        return text.upper()
    try:
        return codes.ckr_name(codes.ckr_value(text))
    except KeyError:
        raise ScriptError(
            f"line {line}: @expect {text}: not a CKR_* name or value (or {', '.join(PSEUDO_RESULTS)})"
        ) from None


@dataclass
class Step:
    result: StepResult
    line: int  # the script line of the menu choice
    seconds: float
    expected: str = "CKR_OK"
    shown_choice: str | None = None  # the choice line as the script shows it, when it held a secret
    mask: Callable[[str], str] = _unmasked  # hides script variables in every text made from the step
    ordinal: int = 1  # among the run's steps of the same choice: 3 Login #2 is the second login
    transcript: list[str] = field(default_factory=list)  # what the step wrote, masked as the screen
    unmet: list[str] = field(default_factory=list)  # expectations on what it showed that failed
    skip_reason: str = ""  # the set-up cannot run the step (codes.NotCarried): neither met nor failed
    skip_cause: tuple[int, str] = (0, "")  # the script line and reason of the first skip it follows

    @property
    def skipped(self) -> bool:
        return bool(self.skip_reason)

    @property
    def passed(self) -> bool:
        """Not failed: met its expectations, or skipped."""
        return self.skipped or (self.result.status == self.expected and not self.unmet)

    @property
    def key(self) -> tuple[int | None, str]:
        """What makes steps "the same choice": the menu number and title, or the input (a choice
        line that held a secret counts as input: its number could be the secret)."""
        if self.result.choice is None or self.shown_choice is not None:
            return None, self.choice_text
        return self.result.choice, self.mask(self.result.title)

    @property
    def name(self) -> str:
        """A name that survives editing the script: no line number, an ordinal instead."""
        return step_name(*self.key, self.ordinal)

    @property
    def output(self) -> str:
        return "".join(self.transcript)

    @property
    def choice_text(self) -> str:
        """The choice as written in a report: its number, or the answer, masked."""
        if self.shown_choice is not None:
            return self.shown_choice
        return str(self.result.choice) if self.result.choice is not None else self.result.title

    def verdict(self) -> str:
        title = (
            f"choice {self.choice_text} ({self.result.title})"
            if self.result.choice is not None
            else f"input {self.choice_text!r}"
        )
        if self.result.status == self.expected and self.unmet:
            return self.mask(f"line {self.line}: {title}: {'; '.join(self.unmet)}")
        return self.mask(
            f"line {self.line}: {title} ended with {self.result.status}, expected {self.expected}"
        )


def status_rows_unmet(step: Step, d: Directive) -> str:
    """Why the HA Status rows `step` showed do not meet `@expect-status MEMBER CKR_...`; "" if
    they do. MEMBER: the label, serial or number in the group of a row, or `all` for every row."""
    ref, code = d.argument.split(None, 1)
    code = normalise_expectation(code.strip(), d.line)
    shown: HAStatusShown | None = step.result.shown.get(HA_STATUS)
    if shown is None:
        if step.result.status == "CKR_OK":  # the choice is not HA Status: the script is wrong
            raise ScriptError(
                f"line {d.line}: @expect-status follows a choice that shows no HA "
                f"Status (it belongs after 52 HA Status)"
            )
        return f"no HA Status was shown (the choice ended with {step.result.status})"
    if ref.lower() == "all":
        wrong = [row for row in shown.rows if row.status != code]
        return "; ".join(f"HSM {row.serial} ({row.label}) showed {row.status}" for row in wrong)
    rows = [row for row in shown.rows if ref in (row.label, row.serial, str(row.number))]
    if not rows:
        members = ", ".join(f"{row.number} {row.label} ({row.serial})" for row in shown.rows)
        return f"no member {ref!r} in HA group {shown.group}'s status (its members: {members})"
    row = rows[0]
    return "" if row.status == code else f"HSM {row.serial} ({row.label}) showed {row.status}"


def step_name(choice: int | None, title: str, ordinal: int) -> str:
    if choice is None:
        return f"input {title} #{ordinal}"
    return f"{choice} #{ordinal}" if title == str(choice) else f"{choice} {title} #{ordinal}"


@dataclass
class NotRun:
    """A step of the script that did not run: an earlier step failed and the replay stopped."""

    choice: int
    title: str
    line: int  # the script line of the choice
    lines: list[str]  # the choice and the answers read as its own, as the transcript shows them
    ordinal: int = 1

    @property
    def key(self) -> tuple[int, str]:
        return self.choice, self.title

    @property
    def name(self) -> str:
        return step_name(self.choice, self.title, self.ordinal)


class StepLog(list):
    """The steps of one replay, in order, and what a report needs beside them: when the run began
    (wall clock, and on the replay's clock for the suite time, sleeps included) and the script's
    steps that a failure kept from running."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self.began = clock()
        self.began_at = datetime.now()
        self.not_run: list[NotRun] = []

    def elapsed_s(self) -> float:
        return self.clock() - self.began

    def next_ordinal(self, key: tuple) -> int:
        return 1 + sum(1 for s in [*self, *self.not_run] if s.key == key)


def menu_choice(line: Line) -> int | None:
    """The line's menu number when it can be a choice (a number of the menu, quit or help)."""
    if line.is_directive or not line.text.isdigit():
        return None
    number = int(line.text)
    return number if number in BY_NUMBER or number in (QUIT, HELP) else None


def remaining_steps(lines: list[Line], answers: Mapping[int, int | None]) -> list[tuple[int, list[Line]]]:
    """(choice, its lines) for each menu choice of lines the replay has not read, up to quit.

    Which line is a choice is known for sure only as the menu runs (the answers a choice asks
    for depend on the token and on earlier answers). So: a choice this run has made, with the
    same number of answers each time (`answers`), takes that many lines again; one it has not
    made takes the answers its menu entry usually reads (menu.table.USUAL_ANSWERS); any other
    takes the lines up to the next menu number that opens a paragraph (after a comment, a
    blank line or a directive, as scripts are written) or the script's final 0. A line that is
    no menu number where a choice is due is left out."""
    found: list[tuple[int, list[Line]]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        number = menu_choice(line)
        if number is None:
            continue
        if number == QUIT:
            break
        if number == HELP:
            continue  # 99 shows the menu: no step
        own = [line]
        count = answers[number] if number in answers else USUAL_ANSWERS.get(number)
        while i < len(lines) and not lines[i].is_directive:
            if count is not None and len(own) > count:
                break
            if (
                count is None
                and menu_choice(lines[i]) is not None
                and (lines[i].number > lines[i - 1].number + 1 or _ends(lines, i))
            ):
                break
            own.append(lines[i])
            i += 1
        found.append((number, own))
    return found


def paragraph_end(lines: list[Line], i: int) -> int:
    """Index of the first line from i that opens the next paragraph: a directive, or a menu
    number after a comment or a blank line (or the script's final 0); len(lines) if none."""
    while i < len(lines) and not lines[i].is_directive:
        if (
            i > 0
            and menu_choice(lines[i]) is not None
            and (lines[i].number > lines[i - 1].number + 1 or _ends(lines, i))
        ):
            break
        i += 1
    return i


def _ends(lines: list[Line], i: int) -> bool:
    """lines[i] is a 0 that ends the script (only directives after it): quit, not an answer."""
    return lines[i].text == str(QUIT) and all(line.is_directive for line in lines[i + 1 :])


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
    steps: StepLog = field(init=False)
    _next: int = 0
    _choice_index: int = 0  # where in `lines` the choice in progress is
    _answers: dict[int, int | None] = field(
        default_factory=dict
    )  # choice -> answers it read, None if it varied
    _transcript: list[str] = field(default_factory=list)  # the current step's output
    _choice_line: int = 0
    _choice: Line | None = None  # the script line of the choice in progress
    _choice_started: float = 0.0
    _confirmed: bool = False  # @confirm-destructive before the choice in progress
    _needs_previous: bool = False  # @needs-previous before the choice in progress
    stopped_early: bool = False
    masker: Masker | None = None

    def __post_init__(self) -> None:
        if self.masker is None:
            self.masker = Masker(self.lines, self.variables)
        self.steps = StepLog(self.clock)

    # MenuIO
    def write(self, text: str) -> None:
        text = self.masker(text)  # no value of a ${NAME} leaves ckdemo (masking.py)
        self._transcript.append(text)
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
            raise InputError(
                f"line {line.number}: {line.text} where an answer to '{prompt.strip()}' was due."
            )
        self._next += 1
        answer = expand(line, self.variables)
        if line.has_secret:
            self.masker.answered(answer, line)
        self.write(f"{prompt}{MASK if (secret or line.has_secret) else answer}\n")
        return answer

    def lone_slot(self) -> None:
        """CKDemo picks a lone slot without asking (menu/context.py): the script's answer for it,
        a line that is only a slot variable (${HA_SLOT}, ${MEMBER_SLOT_1}, ${TOUR_SLOT}), is used
        up here, so one script runs whether the list holds one slot (HAOnly) or several."""
        if self._next >= len(self.lines) or not self.lines[self._next].slot_answer:
            return
        line = self.lines[self._next]
        self._next += 1
        if expand(line, self.variables).strip() != "1":
            raise InputError(f"line {line.number}: {shown(line)} is not slot#1, the only slot.")
        self.write(f"(the only slot, slot#1, is picked without asking: {shown(line)})\n")

    def confirm_destructive(self, question: str) -> bool:
        """A destructive step goes ahead in a script only after a @confirm-destructive line
        placed before its choice; no answer line is used, so a script never falls out of step."""
        if self._confirmed:
            self.write(f"{question} y (@{CONFIRM_DIRECTIVE})\n")
            return True
        self.write(f"{question} n (no @{CONFIRM_DIRECTIVE} before this choice)\n")
        return False

    def ask_choice(self, prompt: str) -> str:
        while self._next < len(self.lines) and self.lines[self._next].is_directive:
            line = self.lines[self._next]
            self._next += 1
            self.directive(directive(line))
        self._transcript = []  # from here on: the next step's output (or none's)
        if self.steps and not self.steps[-1].passed and not self.keep_going:
            self.stopped_early = True
            self._plan_not_run()
            raise EndOfInput(prompt)
        if self._next < len(self.lines):
            self._choice = self.lines[self._next]
            self._choice_line = self._choice.number
        self._choice_index = self._next
        self._choice_started = self.clock()
        return self.ask(prompt)

    def _plan_not_run(self) -> None:
        for number, own in remaining_steps(self.lines[self._next :], self._answers):
            title = BY_NUMBER[number].title
            self.steps.not_run.append(
                NotRun(
                    number,
                    title,
                    own[0].number,
                    [shown(l) for l in own],
                    self.steps.next_ordinal((number, title)),
                )
            )

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
            mark = "not judged, the step was skipped" if step.skipped else "ok" if step.passed else "NOT MET"
            self.write(f"@expect {step.expected}: {mark}\n")
        elif d.name == "expect-status":
            if not self.steps:
                raise ScriptError(f"line {d.line}: @expect-status before any menu choice")
            step = self.steps[-1]
            if step.skipped:
                self.write(f"@expect-status {d.argument}: not judged, the step was skipped\n")
                return
            unmet = status_rows_unmet(step, d)
            step.unmet += [f"@expect-status {d.argument} (line {d.line}) not met: {unmet}"] if unmet else []
            self.write(f"@expect-status {d.argument}: {'NOT MET, ' + unmet if unmet else 'ok'}\n")
        elif d.name == "default":
            name = d.argument.split(" ", 1)[0]
            if name in getattr(self.variables, "chosen", {}):
                self.write(
                    f"@default {d.argument}: not used, the command line (--token-label, --slot) sets {name}\n"
                )
            elif name in getattr(self.variables, "secrets", {}):
                self.write(f"@default {d.argument}: not used, the environment sets {name}\n")
            else:
                self.write(f"@default {d.argument}: used\n")
        elif d.name == CONFIRM_DIRECTIVE:
            self._confirmed = True
            self.write(f"@{CONFIRM_DIRECTIVE}: the next choice may destroy keys\n")
        elif d.name == NEEDS_PREVIOUS:
            self._needs_previous = True
        else:
            if self.control is None:
                raise ScriptError(f"line {d.line}: @{d.name} needs an HA group in the configuration")
            self.write(f"@{d.name} {d.argument}: {self.control(d)}\n")

    def observe(self, result: StepResult) -> None:
        shown_choice = None
        line = self._choice
        if line is not None and line.has_secret:  # the choice itself was a ${NAME}: out of step
            shown_choice = shown(line)
            result = replace(result, title=self.masker.title(result.title))
        result = replace(result, message=self.masker(result.message))
        self._confirmed = False  # @confirm-destructive covers one choice
        if result.choice is not None and result.status not in PSEUDO_RESULTS:
            # a choice that ran to its end read all its answers: a plan for the lines not run
            answered = self._next - self._choice_index - 1
            seen = self._answers.setdefault(result.choice, answered)
            if seen != answered:
                self._answers[result.choice] = None
        step = Step(
            result,
            self._choice_line,
            self.clock() - self._choice_started,
            shown_choice=shown_choice,
            mask=self.masker,
            transcript=self._transcript,
        )
        step.ordinal = self.steps.next_ordinal(step.key)
        step.skip_cause = self._skip_cause(step)
        line, why = step.skip_cause
        step.skip_reason = (
            why if line == step.line else f"it builds on line {line}'s choice, skipped: {why}" if line else ""
        )
        if step.skipped:
            self.write(f"(skipped, not failed: {step.skip_reason})\n")
            if self._needs_previous:
                self._pass_over_answers()
        self._needs_previous = False  # @needs-previous covers one choice
        self.steps.append(step)

    def _pass_over_answers(self) -> None:
        """A choice skipped after @needs-previous may have stopped before reading its answers
        (its input file is missing): the rest of its paragraph is its own, not the next choice."""
        end = paragraph_end(self.lines, self._next)
        if end > self._next:
            self.write(
                f"(passed over: the skipped choice's answers, script lines "
                f"{self.lines[self._next].number}-{self.lines[end - 1].number})\n"
            )
            self._next = end

    def _skip_cause(self, step: Step) -> tuple[int, str]:
        """(line, why) the step is skipped: the way to a member cannot carry its call; or, after
        @needs-previous, it did not succeed and the choice it builds on was skipped (that one's
        cause). (0, "") when it is judged as usual."""
        if step.result.not_carried:
            return step.line, step.result.not_carried
        before = self.steps[-1] if self.steps else None
        if (
            self._needs_previous
            and before is not None
            and before.skipped
            and step.result.status != step.expected
        ):
            return before.skip_cause
        return 0, ""

    @property
    def failed(self) -> list[Step]:
        return [s for s in self.steps if not s.passed]

    def summary(self) -> str:
        lines = [f"FAILED {s.verdict()}" for s in self.failed]
        skipped = [s for s in self.steps if s.skipped]
        lines += [
            s.mask(f"SKIPPED line {s.line}: choice {s.choice_text} ({s.result.title}): {s.skip_reason}")
            for s in skipped
        ]
        ok = len(self.steps) - len(self.failed) - len(skipped)
        lines.append(
            f"Replay: {len(self.steps)} steps, {ok} met their expectation, "
            f"{len(self.failed)} did not"
            + (f", {len(skipped)} skipped (this set-up cannot run them)" if skipped else "")
            + (" (stopped at the first failure)" if self.stopped_early else "")
        )
        return "\n".join(lines)


def stdout_outputs(transcript: TextIO | None) -> list[TextIO]:
    return [sys.stdout] + ([transcript] if transcript else [])
