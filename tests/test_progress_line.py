"""The progress line of the long runs (ckdemo/commands/progress.py) and the notices written
beside it: on a terminal a notice clears the line, stands on a line of its own and the progress
line is drawn again below it; through a pipe the notice alone is written."""

from __future__ import annotations

import io

from ckdemo.commands.progress import ProgressLine


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_notice_on_a_terminal_takes_a_line_of_its_own_above_the_progress():
    screen = Terminal()
    with ProgressLine(lambda: "soak [###] 1/3 s", screen) as progress:
        progress.say("soak: member 42 given up")
    text = screen.getvalue()
    assert "\r\x1b[Ksoak: member 42 given up\n" in text, repr(text)  # the line cleared first
    assert text.endswith("\rsoak [###] 1/3 s\x1b[K\n")  # the final state, drawn after the notice


def test_through_a_pipe_only_the_notice_is_written():
    piped = io.StringIO()
    with ProgressLine(lambda: "soak [###] 1/3 s", piped) as progress:
        progress.say("soak: waiting up to 15 s for member(s) 42 to be recovered")
    assert piped.getvalue() == "soak: waiting up to 15 s for member(s) 42 to be recovered\n"
