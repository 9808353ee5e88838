"""Letting go of a member session whose member is being given up on: errors are expected there."""

from __future__ import annotations

from ..codes import CKRError


def close_quietly(session) -> None:
    try:
        session.close()
    except CKRError:
        pass  # the member is being given up on: its session goes with it


def logout_quietly(session) -> None:
    try:
        session.logout()
    except CKRError:
        pass  # already logged out, or the member is gone: the goal state holds
