"""Which ckdemo wrote a document, and when: the first fields of every JSON document a command
prints or writes (state views, long runs, the fault lab's report)."""

from __future__ import annotations

from datetime import datetime, timezone


def ckdemo_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ckdemo")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def timestamp() -> str:
    """Now, UTC, ISO 8601 with milliseconds and a Z: 2026-12-07T17:29:21.028Z."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
