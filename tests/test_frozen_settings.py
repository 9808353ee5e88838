"""The configuration is read once into a frozen value and handed down: the global options
(commands/common.GlobalOptions) and the settings (settings.Settings). No command sets a field of
either afterwards; one that serves otherwise than the file says (serve --slots all, --isolated)
makes another value."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from conftest import requires_softhsm

from ckdemo.commands.common import GlobalOptions
from ckdemo.settings import load_settings

PACKAGE = Path(__file__).resolve().parent.parent / "ckdemo"


def test_the_global_options_cannot_change_once_read():
    options = GlobalOptions(home="/h", nolb=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.home = "/elsewhere"
    assert dataclasses.replace(options, home="/other").home == "/other" and options.home == "/h"


@requires_softhsm
def test_settings_cannot_change_once_read_and_an_override_is_another_value(shared_home):
    settings = load_settings(shared_home, balance=False)
    assert settings.balance is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.balance = True
    before = settings.conf.dumps()
    isolated = settings.isolated_as(True)
    shared = settings.isolated_as(False)
    assert (isolated.isolation(), shared.isolation()) == ("copies", "none")
    assert isolated.isolated_members() == settings.member_labels() and shared.isolated_members() == []
    assert settings.conf.dumps() == before  # the value read stays as read
    assert (shared_home / "Chrystoki.conf").read_text() == before  # nor is the file written


def _assigned_targets(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            yield from (node.targets if isinstance(node, ast.Assign) else [node.target])


def test_no_command_sets_a_field_of_the_options_the_settings_or_the_workspace_after_construction():
    """What the review found: ctx.obj["home"] = ..., workspace.options.show_menu = False,
    group.balance = False, settings.conf.set(...) in cli.py and commands/."""
    found = []
    for path in [PACKAGE / "cli.py", *sorted((PACKAGE / "commands").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        for target in _assigned_targets(tree):
            text = ast.unparse(target)
            if text == "ctx.obj":  # click's place for the value itself: made (or replaced) whole
                continue
            if isinstance(target, (ast.Attribute, ast.Subscript)) and text.split(".")[0].split("[")[0] in (
                "ctx",
                "settings",
                "workspace",
                "group",
                "options",
            ):
                found.append(f"{path.name}:{target.lineno} {text}")
        for node in ast.walk(tree):  # a setter called on the settings' configuration
            if isinstance(node, ast.Call) and ast.unparse(node.func).startswith("settings.conf."):
                if ast.unparse(node.func).rsplit(".", 1)[1] in ("set", "remove", "remove_section"):
                    found.append(f"{path.name}:{node.lineno} {ast.unparse(node.func)}")
    assert found == []
