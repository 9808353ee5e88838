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


class MenuIO(Protocol):
    def write(self, text: str) -> None: ...
    def ask(self, prompt: str, secret: bool = False) -> str: ...
    def ask_choice(self, prompt: str) -> str: ...


class TerminalIO:
    """A person at a terminal (or a pipe): prompts on stdout, answers from stdin."""

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout

    def write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def ask(self, prompt: str, secret: bool = False) -> str:
        if secret and self.stdin.isatty():
            try:
                return getpass.getpass(prompt, stream=self.stdout)
            except EOFError:
                raise EndOfInput(prompt) from None
        self.write(prompt)
        line = self.stdin.readline()
        if not line:
            self.write("\n")
            raise EndOfInput(prompt)
        return line.rstrip("\r\n")

    def ask_choice(self, prompt: str) -> str:
        return self.ask(prompt)
