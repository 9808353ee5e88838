"""Choice 98 Options: show and change harness settings."""

from __future__ import annotations

from ..menu.context import Context

SETTINGS = [
    ("show_menu", "Display the menu before every prompt"),
    ("hex_echo", "Show data (random bytes, signatures) in hex"),
    ("verbose_errors", "Print the detail line under a failed choice"),
    ("token_objects", "Unwrapped, derived and known keys default to token objects"),
]


def options(ctx: Context) -> None:
    current = ctx.workspace.options
    for n, (name, text) in enumerate(SETTINGS, start=1):
        ctx.say(f"({n}) {text}: {'yes' if getattr(current, name) else 'no'}")
    n = ctx.ask_int("Toggle which option (0 = none) : ", 0, len(SETTINGS))
    if n:
        name, text = SETTINGS[n - 1]
        setattr(current, name, not getattr(current, name))
        ctx.say(f"{text}: {'yes' if getattr(current, name) else 'no'}")
