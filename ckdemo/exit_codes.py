"""What every ckdemo command exits with, in one table. docs/EXIT-CODES.md shows it (a test keeps
the two the same), so a CI job can tell "the HSM misbehaved" from "the job is misconfigured"."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExitCode:
    value: int
    name: str
    meaning: str


OK = 0
FAILED = 1
USAGE = 2
INTERNAL = 3
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C
BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a command whose reader went away

TABLE = (
    ExitCode(OK, "OK", "everything asked was done and every expectation met"),
    ExitCode(
        FAILED,
        "FAILED",
        "a step or an expectation failed: a script step missed its "
        "@expect, a bench or bench-serve call failed, a soak saw an "
        "application-visible failure or members ended up different",
    ),
    ExitCode(
        USAGE,
        "USAGE",
        "usage or configuration: a wrong option, a script that cannot be "
        "read or has no step, a state folder or library that cannot be used",
    ),
    ExitCode(
        INTERNAL,
        "INTERNAL",
        "an internal error (a ckdemo bug): one line on stderr, the traceback in HOME/errors.log",
    ),
    ExitCode(
        INTERRUPTED,
        "INTERRUPTED",
        "interrupted (Ctrl-C, SIGINT): bench, soak and "
        "bench-serve print the figures so far and remove what "
        "they created first",
    ),
    ExitCode(
        BROKEN_PIPE,
        "BROKEN_PIPE",
        "the reader of standard output went away (`ckdemo hagroup status | head -2`)",
    ),
)
