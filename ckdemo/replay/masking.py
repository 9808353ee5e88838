"""Masking of script variables: the value of a ${NAME} a script uses never reaches a line
ckdemo writes (screen, transcript, FAILED lines, JUnit names and messages).

Three rules, because answers come back in several shapes:
- every value of 4 characters or more is replaced by **** wherever it stands as a word of its
  own (not inside a longer run of letters and digits: a hex serial or signature that happens to
  hold "1234" stays readable); PKCS#11 tokens refuse PINs shorter than 4 (SoftHSM2 4, Luna 7);
- an answer that mixes a variable with other text (`${PIN}x`) is replaced as a whole, as
  the script line shows it (`****x`);
- a shorter value (e.g. TOUR_SLOT=5) is masked where the answer is echoed back
  ("Invalid input (****)") and in step titles, not in every "5" of the transcript.
The harness's own ${LAST_*} handles and ${HA_SLOT}/${MEMBER_SLOT_n} numbers are not secrets
and are shown.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from .script import VARIABLE, Line, from_harness

MASK = "****"
MIN_WORD_MASK = 4  # shorter values are masked only where an answer is echoed


def _word(value: str) -> str:
    return rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])"


def shown(line: Line) -> str:
    """The line as a transcript shows it: each secret ${NAME} as ****."""
    return VARIABLE.sub(lambda m: m.group(0) if from_harness(m.group(1)) else MASK, line.text)


class Masker:
    def __init__(self, lines: Iterable[Line], variables: Mapping[str, str]) -> None:
        names = {name for line in lines for name in VARIABLE.findall(line.text) if not from_harness(name)}
        values = set()
        for name in names:
            try:
                value = variables[name]
            except KeyError:
                continue
            if value:
                values.add(value)
        ordered = sorted(values, key=len, reverse=True)  # "12345" before "1234"
        self._long = [v for v in ordered if len(v) >= MIN_WORD_MASK]
        self._short = [v for v in ordered if len(v) < MIN_WORD_MASK]
        self._words = re.compile("|".join(_word(v) for v in self._long)) if self._long else None
        self._answers: dict[str, str] = {}  # answers that held a secret -> as the script shows them

    @property
    def active(self) -> bool:
        return bool(self._long or self._short)

    def answered(self, answer: str, line: Line) -> None:
        """A secret line was answered: remember how it is shown."""
        if answer.strip():
            self._answers[answer.strip()] = shown(line)

    def title(self, answer: str) -> str:
        """A step title that was an answer (a choice line): as the script shows it."""
        return self._answers.get(answer.strip(), self(answer))

    def __call__(self, text: str) -> str:
        if not text or not (self._answers or self._words):
            return text
        for answer, masked in sorted(self._answers.items(), key=lambda item: -len(item[0])):
            if answer in self._long or answer in self._short:
                continue  # a bare value: the word rule or the echo rule below covers it
            text = re.sub(_word(answer), lambda _: masked, text)
        for value in self._short:
            text = text.replace(f"Invalid input ({value})", f"Invalid input ({MASK})")
        if self._words is not None:
            text = self._words.sub(MASK, text)
        return text
