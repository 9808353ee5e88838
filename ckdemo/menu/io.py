"""Where answers come from and where the screen goes: a terminal here, a script in replay/."""

from __future__ import annotations

import getpass
import sys
from typing import Protocol, TextIO


class EndOfInput(Exception):
    """No answer left: EOF on the terminal, or the end of a script, while a prompt waits."""


class InputAborted(Exception):
    """The input source cannot go on (e.g. a script that cannot be run as written): the menu
    loop stops and the caller reports it."""


def printable(answer: str) -> str:
    """An answer as text every later step can encode: bytes that were not UTF-8 (decoded as lone
    surrogates) become U+FFFD, so a label or PIN never fails half-way inside a PKCS#11 call."""
    return answer.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class MenuIO(Protocol):
    def write(self, text: str) -> None: ...
    def ask(self, prompt: str, secret: bool = False) -> str: ...
    def ask_choice(self, prompt: str) -> str: ...


class TerminalIO:
    """A person at a terminal (or a pipe): prompts on stdout, answers from stdin."""

    abandon_on_interrupt = True  # Ctrl-C drops the choice in progress, the menu goes on

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        if self.stdin.isatty():
            try:
                import readline  # noqa: F401  (input() gains editing and history)
            except ImportError:
                pass

    def write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def ask(self, prompt: str, secret: bool = False) -> str:
        if secret and self.stdin.isatty():
            try:
                return printable(getpass.getpass(prompt, stream=self.stdout))
            except EOFError:
                raise EndOfInput(prompt) from None
        if self.stdin is sys.stdin and self.stdout is sys.stdout and self.stdin.isatty():
            try:  # a person at a terminal: line editing and history through readline
                return printable(input(prompt))
            except EOFError:
                self.write("\n")
                raise EndOfInput(prompt) from None
        self.write(prompt)
        line = self.stdin.readline()
        if not line:
            self.write("\n")
            raise EndOfInput(prompt)
        return printable(line.rstrip("\r\n"))

    def ask_choice(self, prompt: str) -> str:
        return self.ask(prompt)
