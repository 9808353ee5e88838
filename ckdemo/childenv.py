"""The environment of every process ckdemo starts: ckdemo's own, without its PIN variables.

Scripts read PINs from CKDEMO_USER_PIN / CKDEMO_SO_PIN (docs/SCRIPTS.md); a child process (a p11-kit
member server, the token set-up of `ckdemo init`) has no use for them, and /proc/<pid>/environ
of a long-running server would keep them readable for its whole life.
"""

from __future__ import annotations

import os


def is_pin_variable(name: str) -> bool:
    """CKDEMO_USER_PIN, CKDEMO_SO_PIN and any other CKDEMO_*PIN* name."""
    upper = name.upper()
    return upper.startswith("CKDEMO_") and "PIN" in upper


def child_environment(**extra: str) -> dict[str, str]:
    """os.environ without CKDEMO_*PIN* variables, plus `extra` (e.g. SOFTHSM2_CONF)."""
    env = {name: value for name, value in os.environ.items() if not is_pin_variable(name)}
    env.update(extra)
    return env
