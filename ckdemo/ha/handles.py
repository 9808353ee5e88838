"""Virtual session and object handles: one counter for the whole process.

PKCS#11 handles are unique per application. Every HA group draws its session and
object handles from this one counter, so two groups never hand out the same number, and the
counter starts far above the numbers modules give their own sessions and objects (SoftHSM counts
from 1, p11-kit from 17, Luna small numbers too), so a virtual handle is not a physical one.
"""

from __future__ import annotations

import itertools
import threading

VIRTUAL_HANDLE_BASE = 1_000_000  # virtual handles are 1000001, 1000002, ...

_next = itertools.count(VIRTUAL_HANDLE_BASE + 1)
_lock = threading.Lock()


def allocate() -> int:
    """A handle no other virtual session or object of this process has had."""
    with _lock:
        return next(_next)
